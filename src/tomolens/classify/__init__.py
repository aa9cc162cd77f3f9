"""Subtomogram classification: extraction, 3D CNN classifiers, training and inference.

Importing this package loads numpy only; torch is imported by the modules that need it
(:mod:`tomolens.classify.networks`, :mod:`tomolens.classify.train`,
:mod:`tomolens.classify.predict`).
"""

from tomolens.classify.extract import Extraction, box_in_voxels, extract_subtomograms

__all__ = ["Extraction", "box_in_voxels", "extract_subtomograms"]
