"""Particle detection in crowded tomograms (seed 002): mask + centre networks, then watershed.

Use :func:`detect_particles` (a job) for network + post-processing, and
:func:`postprocess` to re-apply thresholds and size limits to kept probability maps.
Torch is only imported when a model runs.
"""

from tomolens.detect.detector import DETECT_PARAMS, DetectionResult, detect_particles
from tomolens.detect.postprocess import POSTPROCESS_PARAMS, postprocess
from tomolens.detect.targets import centre_map, detection_targets

__all__ = [
    "DETECT_PARAMS",
    "POSTPROCESS_PARAMS",
    "DetectionResult",
    "centre_map",
    "detect_particles",
    "detection_targets",
    "postprocess",
]
