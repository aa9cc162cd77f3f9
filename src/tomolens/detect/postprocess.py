"""From probability maps to instance labels and particle centres (no network needed).

:func:`postprocess` is cheap compared with the network, so widgets keep the
probability maps and call it again whenever a threshold or the size range changes.
Steps (scikit-image and scipy throughout):

1. threshold the mask probability → foreground;
2. peaks of the centre map (``skimage.feature.peak_local_max``, minimum distance from
   the particle radius, minimum height ``centre_threshold``);
3. marker watershed of the inverted centre map inside the foreground plus the
   particles' hulls (centre map > 0.15, which covers the holes of rings and shells;
   ``skimage.segmentation.watershed``) → one basin per peak; the instance is the
   basin's part of the foreground;
4. drop instances outside the size range (Å³) and fragments much smaller than the
   median particle (``fragment_fraction``), and those scoring below ``min_score``;
5. per instance (``skimage.measure.regionprops``): centroid of the top of its peak
   (centre map ≥ half its maximum) weighted by the centre map, volume in Å³, score = mean mask probability × peak centre value.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.measure import regionprops
from skimage.segmentation import relabel_sequential, watershed

from tomolens.io.coords import ParticleTable
from tomolens.params import Param, validate_values

log = logging.getLogger(__name__)

#: Centre-map level that bounds a particle's watershed basin outside the mask (ring holes).
CENTRE_REGION = 0.15

#: Post-processing settings shared by :func:`postprocess`, the CLI and the widget.
POSTPROCESS_PARAMS = (
    Param("mask_threshold", 0.5, "Mask probability above which a voxel is particle", min=0.0, max=1.0, step=0.05),
    Param("centre_threshold", 0.3, "Minimum centre-map value of a particle centre (0 at boundary, 1 at centre)",
          min=0.0, max=1.0, step=0.05),
    Param("particle_radius_A", 60.0, "Typical particle radius in Å (sets the minimum distance between centres)",
          min=1.0, step=5.0),
    Param("min_volume_A3", 2.0e4, "Smallest particle volume kept, Å³", min=0.0, step=1e4),
    Param("max_volume_A3", 0.0, "Largest particle volume kept, Å³ (0 = no limit)", min=0.0, step=1e5),
    Param("min_score", 0.0, "Drop particles scoring below this (score in 0..1)", min=0.0, max=1.0, step=0.05,
          advanced=True),
    Param("fragment_fraction", 0.2, "Drop isolated fragments smaller than this fraction of the median particle volume",
          min=0.0, max=1.0, step=0.05, advanced=True),
    Param("min_distance_fraction", 0.7, "Minimum centre distance as a fraction of the particle radius",
          min=0.1, max=2.0, step=0.1, advanced=True),
)


def min_distance_voxels(radius_A: float, voxel_size_A: float, fraction: float = 0.7) -> int:
    """Minimum distance between centres in voxels: ``fraction × radius`` (at least 1)."""
    return max(1, int(round(fraction * radius_A / voxel_size_A)))


def postprocess(prob_maps: np.ndarray, voxel_size_A: float, params: dict[str, Any] | None = None
                ) -> tuple[np.ndarray, np.ndarray, ParticleTable]:
    """Turn mask and centre probability maps into instances and centres.

    Parameters
    ----------
    prob_maps : ndarray, float32, shape (2, z, y, x)
        Channel 0: mask probability; channel 1: centre map (0..1).
    voxel_size_A : float
        Voxel size in Å (for volumes and the minimum distance).
    params : dict, optional
        Values for :data:`POSTPROCESS_PARAMS`; missing ones take their defaults.

    Returns
    -------
    mask : ndarray, uint8, shape (z, y, x)
        1 where the mask probability exceeds the threshold.
    instances : ndarray, int32, shape (z, y, x)
        Kept particles labelled 1..N (sequential), 0 elsewhere.
    particles : ParticleTable
        N centres (voxels, z, y, x) with features ``score``, ``volume_A3``,
        ``instance_id``, ``centre_value``, ``mask_probability``.
    """
    p = validate_values(params or {}, POSTPROCESS_PARAMS)
    prob_maps = np.asarray(prob_maps)
    if prob_maps.ndim != 4 or prob_maps.shape[0] != 2:
        raise ValueError(f"Probability maps must have shape (2, z, y, x); got {prob_maps.shape}.")
    if not voxel_size_A or voxel_size_A <= 0:
        raise ValueError("Post-processing needs the voxel size in Å (got none).")
    mask_prob, centre = prob_maps[0], prob_maps[1]
    mask = mask_prob > p["mask_threshold"]
    voxel_A3 = float(voxel_size_A) ** 3
    min_dist = min_distance_voxels(p["particle_radius_A"], voxel_size_A, p["min_distance_fraction"])
    peaks = peak_local_max(centre, min_distance=min_dist, threshold_abs=p["centre_threshold"],
                           exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    if len(peaks):
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    # basins span the particle's hull (the centre map is > 0 in a ring's hole), instances only the mask
    region = mask | (centre > CENTRE_REGION)
    basins = watershed(-centre, markers, mask=region).astype(np.int32) if len(peaks) else markers
    instances = np.where(mask, basins, 0).astype(np.int32)
    # centroid from the top of each peak (centre map ≥ half its maximum in the basin)
    peak_of = np.zeros(int(basins.max()) + 1, np.float32)
    if len(peaks):
        peak_of[1:] = ndimage.maximum(centre, basins, np.arange(1, basins.max() + 1))
    top = np.where(centre >= 0.5 * peak_of[basins], centre, 0).astype(np.float32)
    props = regionprops(basins, intensity_image=top)
    mask_props = {r.label: r for r in regionprops(instances, intensity_image=mask_prob)}
    props = [r for r in props if r.label in mask_props]
    volumes = np.array([mask_props[r.label].area for r in props], float) * voxel_A3
    median = float(np.median(volumes)) if len(volumes) else 0.0
    keep_ids, rows, coords = [], [], []
    for r, vol in zip(props, volumes):
        if vol < p["min_volume_A3"] or (p["max_volume_A3"] > 0 and vol > p["max_volume_A3"]):
            continue
        if vol < p["fragment_fraction"] * median:
            continue
        centre_value = float(peak_of[r.label])
        mask_mean = float(mask_props[r.label].intensity_mean)
        score = mask_mean * centre_value
        if score < p["min_score"]:
            continue
        keep_ids.append(r.label)
        coords.append(np.asarray(r.centroid_weighted))
        rows.append({"score": score, "volume_A3": vol, "centre_value": centre_value,
                     "mask_probability": mask_mean})
    kept = np.zeros(int(instances.max()) + 1, np.int32)
    kept[keep_ids] = keep_ids
    instances = kept[instances]
    instances, fw, _ = relabel_sequential(instances)
    features = pd.DataFrame(rows, columns=["score", "volume_A3", "centre_value", "mask_probability"])
    features.insert(2, "instance_id", np.asarray(fw[np.asarray(keep_ids, int)], int) if keep_ids else [])
    table = ParticleTable(np.asarray(coords, float).reshape(-1, 3), features, float(voxel_size_A))
    log.info("post-processing: %d peaks → %d particles", len(peaks), len(table))
    return mask.astype(np.uint8), instances.astype(np.int32), table
