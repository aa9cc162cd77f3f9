"""From probability maps to instance labels and particle centres (no network needed).

:func:`postprocess` is cheap compared with the network, so widgets keep the
probability maps and call it again whenever a threshold or the size range changes.
Steps (scikit-image and scipy throughout):

1. threshold the mask probability → foreground;
2. candidate peaks of the centre map (``skimage.feature.peak_local_max``, minimum height
   ``centre_threshold``);
3. **the radius of each candidate**: the particle radius given for the run when it is above 0,
   else (``particle_radius_A = 0``, "auto") *estimated from the centre map*: the network is
   trained to output ``(1 − r/R)·exp(−r²/2R²)`` inside a particle of radius ``R``
   (:mod:`tomolens.detect.targets`), which falls to half its peak at ``r = HALF_MAX_RADIUS·R``
   (≈ 0.45 R); the volume of the peak's half-maximum region (the part connected to the peak)
   gives ``r`` and so ``R``.  This is what makes the particle size a property of each run and
   of each particle rather than of the model card: large particles are not split, small ones
   not merged;
4. non-maximum suppression, strongest peak first: a candidate closer than
   ``min_distance_fraction × R`` (R of the stronger, kept peak) to a kept peak is dropped —
   *and its basin joins that peak's particle*;
5. marker watershed of the inverted centre map inside the foreground plus the particles'
   hulls (centre map > 0.15, which covers the holes of rings and shells;
   ``skimage.segmentation.watershed``) → one basin per candidate, merged as in step 4; the
   instance is the basin's part of the foreground;
6. drop instances outside the size range (Å³) and fragments much smaller than the
   median particle (``fragment_fraction``), and those scoring below ``min_score``;
7. per instance (``skimage.measure.regionprops``): the centre (``centre_method``) — "peak"
   (default): the centroid of the top of its centre-map peaks (≥ half the strongest, the
   suppressed peaks of step 4 included, so two equally strong lobes give the point between
   them), or "mass": the instance's centre of mass weighted by the mask probability (hollow and
   multi-lobe particles whose lobes the network sees unequally); volume in Å³; ``radius_A``
   (step 3); score = mean mask probability × peak centre value — or, when the model card has a
   score calibration (:mod:`tomolens.detect.calibrate`), the calibrated probability that the
   candidate is a true particle (the raw score kept as ``raw_score``); ``min_score`` applies to it.

Defaults chosen on data no benchmark scores (the shipped detector on the in-domain training
seeds 500–503, dark; F1 at half the true radius): card radius 53.8 Å with fraction 0.7 (the
old default) 0.566; auto radius with fraction 0.5: "peak" 0.564, "mass" 0.531 (0.4: 0.558;
0.6: 0.561).  The estimate there: median 110–113 Å against true radii of median 95–103 Å.
On a shifted-domain validation tomogram (seed 9150) the shipped network's centre maps are
too broad: the estimate is 218 Å against 90 Å and F1 0.12 against 0.127 with the card's
radius — the network, not the radius, is what fails there (issue 19).
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

from tomolens.detect.calibrate import calibrated_scores
from tomolens.io.coords import ParticleTable
from tomolens.params import Param, validate_values

log = logging.getLogger(__name__)

#: Centre-map level that bounds a particle's watershed basin outside the mask (ring holes).
CENTRE_REGION = 0.15


def _half_max_radius() -> float:
    """``x`` with ``(1 − x)·exp(−x²/2) = 1/2``: the centre target's half-maximum radius over R."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if (1 - mid) * np.exp(-mid * mid / 2) > 0.5 else (lo, mid)
    return (lo + hi) / 2


#: The centre target falls to half its peak at this fraction of the particle radius (≈ 0.45).
HALF_MAX_RADIUS = _half_max_radius()

#: Post-processing settings shared by :func:`postprocess`, the CLI and the widget.
POSTPROCESS_PARAMS = (
    Param("mask_threshold", 0.5, "Mask probability above which a voxel is particle", min=0.0, max=1.0, step=0.05),
    Param(
        "centre_threshold",
        0.3,
        "Minimum centre-map value of a particle centre (0 at boundary, 1 at centre)",
        min=0.0,
        max=1.0,
        step=0.05,
    ),
    Param(
        "particle_radius_A",
        0.0,
        "Particle radius in Å (0 = auto: estimated for each particle from the data)",
        min=0.0,
        step=5.0,
    ),
    Param("min_volume_A3", 2.0e4, "Smallest particle volume kept, Å³", min=0.0, step=1e4),
    Param("max_volume_A3", 0.0, "Largest particle volume kept, Å³ (0 = no limit)", min=0.0, step=1e5),
    Param(
        "centre_method",
        "peak",
        "Centre of a particle: the top of its centre-map peak(s), or its centre of mass "
        "(mask-weighted; for hollow and multi-lobe particles)",
        choices=("peak", "mass"),
        advanced=True,
    ),
    Param(
        "min_score",
        0.0,
        "Drop particles scoring below this (score in 0..1)",
        min=0.0,
        max=1.0,
        step=0.05,
        advanced=True,
    ),
    Param(
        "fragment_fraction",
        0.2,
        "Drop isolated fragments smaller than this fraction of the median particle volume",
        min=0.0,
        max=1.0,
        step=0.05,
        advanced=True,
    ),
    Param(
        "min_distance_fraction",
        0.5,
        "Minimum centre distance as a fraction of the particle radius",
        min=0.1,
        max=2.0,
        step=0.1,
        advanced=True,
    ),
)


#: Settings a card's tuned post-processing values no longer decide: the particle size is a property of the
#: run (typed, or estimated per particle with ``particle_radius_A = 0``), not of the data a model was trained on
#: (the shipped card's 54 Å was half the true median radius of its own training particles).
PER_RUN = ("particle_radius_A", "min_volume_A3")


def card_postprocess_defaults(card) -> dict[str, Any]:
    """A model card's tuned post-processing values (``extra["postprocess"]``) that apply to a run.

    Thresholds tuned on the model's validation data apply; :data:`PER_RUN` settings do not, so the
    particle radius is the run's (auto by default) and the card's is only shown as a hint
    (:func:`card_radius_A`).
    """
    post = card.extra.get("postprocess", {}) if isinstance(getattr(card, "extra", None), dict) else {}
    names = {q.name for q in POSTPROCESS_PARAMS}
    return {k: v for k, v in post.items() if k in names and k not in PER_RUN}


def card_radius_A(card) -> float | None:
    """The particle radius (Å) a model card reports for its training particles, if any."""
    extra = card.extra if isinstance(getattr(card, "extra", None), dict) else {}
    value = extra.get("particle_radius_A", extra.get("postprocess", {}).get("particle_radius_A"))
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def min_distance_voxels(radius_A: float, voxel_size_A: float, fraction: float = 0.7) -> int:
    """Minimum distance between centres in voxels: ``fraction × radius`` (at least 1)."""
    return max(1, int(round(fraction * radius_A / voxel_size_A)))


def peak_radii(centre: np.ndarray, peaks: np.ndarray, max_radius: int = 40) -> np.ndarray:
    """Particle radius (voxels) at each peak of a centre map, from its half-maximum region.

    Parameters
    ----------
    centre : ndarray, float32, shape (z, y, x)
        Centre map (0..1).
    peaks : ndarray of int, shape (n, 3)
        Peak positions (voxels).
    max_radius : int
        Largest radius looked for (voxels): the half-maximum region is measured in a box of
        ``HALF_MAX_RADIUS × max_radius`` voxels around each peak.

    Returns
    -------
    ndarray, float, shape (n,)
        ``r / HALF_MAX_RADIUS`` with ``r`` the equivalent-sphere radius of the voxels connected to
        the peak where the map is ≥ half the peak's value (at least 1 voxel).
    """
    half = int(np.ceil(HALF_MAX_RADIUS * max_radius)) + 1
    out = np.ones(len(peaks), float)
    for i, pk in enumerate(np.asarray(peaks, int)):
        lo = np.maximum(pk - half, 0)
        box = tuple(slice(a, b) for a, b in zip(lo, np.minimum(pk + half + 1, centre.shape)))
        region, _ = ndimage.label(centre[box] >= 0.5 * centre[tuple(pk)])
        n = int(np.count_nonzero(region == region[tuple(pk - lo)]))
        out[i] = max((3 * n / (4 * np.pi)) ** (1 / 3) / HALF_MAX_RADIUS, 1.0)
    return out


def suppress(peaks: np.ndarray, heights: np.ndarray, radius_of, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Non-maximum suppression with a radius per peak.

    Strongest first, a peak within ``fraction × radius`` of a kept (stronger) peak — that peak's
    radius — joins it; otherwise it is kept and joins itself.  ``radius_of(indices)`` gives the
    radii (voxels) of peaks and is called only for kept ones.

    Returns
    -------
    owner : ndarray of int, shape (n,)
        Index of the kept peak each peak joins.
    radii : ndarray of float, shape (n,)
        Radius of each kept peak (NaN for the others).
    """
    from scipy.spatial import cKDTree

    order = np.argsort(-np.asarray(heights), kind="stable")
    owner = np.full(len(peaks), -1, int)
    radii = np.full(len(peaks), np.nan)
    tree = cKDTree(peaks) if len(peaks) else None
    for i in order:
        if owner[i] >= 0:
            continue
        owner[i] = i
        radii[i] = float(radius_of(np.array([i]))[0])
        for j in tree.query_ball_point(peaks[i], fraction * radii[i]):
            if owner[j] < 0:
                owner[j] = i
    return owner, radii


def postprocess(
    prob_maps: np.ndarray,
    voxel_size_A: float,
    params: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
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
    calibration : dict, optional
        A checked score calibration (:func:`tomolens.detect.calibrate.check_calibration`): the
        score becomes the probability of a true particle, the raw score is kept as ``raw_score``,
        and ``min_score`` applies to the calibrated score.

    Returns
    -------
    mask : ndarray, uint8, shape (z, y, x)
        1 where the mask probability exceeds the threshold.
    instances : ndarray, int32, shape (z, y, x)
        Kept particles labelled 1..N (sequential), 0 elsewhere.
    particles : ParticleTable
        N centres (voxels, z, y, x) with features ``score``, ``volume_A3``,
        ``instance_id``, ``radius_A``, ``centre_value``, ``mask_probability`` (and ``raw_score``
        with a calibration).
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
    given = float(p["particle_radius_A"])
    # candidates: a fixed radius sets peak_local_max's distance as before; auto looks at every local maximum
    first = min_distance_voxels(given, voxel_size_A, p["min_distance_fraction"]) if given > 0 else 2
    peaks = peak_local_max(centre, min_distance=first, threshold_abs=p["centre_threshold"], exclude_border=False)
    heights = centre[tuple(peaks.T)] if len(peaks) else np.zeros(0, np.float32)
    if given > 0:
        owner, radii = suppress(
            peaks, heights, lambda i: np.full(len(i), given / voxel_size_A), p["min_distance_fraction"]
        )
    else:
        owner, radii = suppress(peaks, heights, lambda i: peak_radii(centre, peaks[i]), p["min_distance_fraction"])
    kept_peaks = np.unique(owner)
    # basin label of each candidate = 1 + index of its kept peak among the kept ones
    label_of = np.zeros(len(peaks), np.int32)
    label_of[kept_peaks] = np.arange(1, len(kept_peaks) + 1, dtype=np.int32)
    markers = np.zeros(mask.shape, np.int32)
    if len(peaks):
        markers[tuple(peaks.T)] = label_of[owner]
    # basins span the particle's hull (the centre map is > 0 in a ring's hole), instances only the mask
    region = mask | (centre > CENTRE_REGION)
    basins = watershed(-centre, markers, mask=region).astype(np.int32) if len(peaks) else markers
    instances = np.where(mask, basins, 0).astype(np.int32)
    n_basins = len(kept_peaks)
    peak_of = np.zeros(n_basins + 1, np.float32)
    radius_of = np.zeros(n_basins + 1, float)
    if n_basins:
        peak_of[1:] = heights[kept_peaks]
        radius_of[1:] = radii[kept_peaks] * voxel_size_A
    if p["centre_method"] == "peak":  # centroid of the top of each peak (centre map ≥ half its maximum)
        weights, where = np.where(centre >= 0.5 * peak_of[basins], centre, 0).astype(np.float32), basins
    else:  # centre of mass of the particle, weighted by the mask probability
        weights, where = mask_prob.astype(np.float32), instances
    props = {r.label: r for r in regionprops(where, intensity_image=weights)}
    mask_props = [r for r in regionprops(instances, intensity_image=mask_prob) if r.label in props]
    volumes = np.array([r.area for r in mask_props], float) * voxel_A3
    median = float(np.median(volumes)) if len(volumes) else 0.0
    keep_ids, rows, coords = [], [], []
    for r, vol in zip(mask_props, volumes):
        if vol < p["min_volume_A3"] or (p["max_volume_A3"] > 0 and vol > p["max_volume_A3"]):
            continue
        if vol < p["fragment_fraction"] * median:
            continue
        centre_value = float(peak_of[r.label])
        mask_mean = float(r.intensity_mean)
        keep_ids.append(r.label)
        coords.append(np.asarray(props[r.label].centroid_weighted))
        rows.append(
            {
                "score": mask_mean * centre_value,
                "volume_A3": vol,
                "radius_A": float(radius_of[r.label]),
                "centre_value": centre_value,
                "mask_probability": mask_mean,
            }
        )
    features = pd.DataFrame(rows, columns=["score", "volume_A3", "radius_A", "centre_value", "mask_probability"])
    if calibration is not None and len(features):  # the probability of a true particle replaces the raw score
        features.insert(1, "raw_score", features["score"].to_numpy())
        features["score"] = calibrated_scores(features, calibration)
    chosen = features["score"].to_numpy(float) >= p["min_score"] if len(features) else np.zeros(0, bool)
    keep_ids = [k for k, c in zip(keep_ids, chosen) if c]
    coords = [c for c, ok in zip(coords, chosen) if ok]
    features = features[chosen].reset_index(drop=True)
    kept = np.zeros(int(instances.max()) + 1, np.int32)
    kept[keep_ids] = keep_ids
    instances = kept[instances]
    instances, fw, _ = relabel_sequential(instances)
    features.insert(
        2 if calibration is None else 3,
        "instance_id",
        np.asarray(fw[np.asarray(keep_ids, int)], int) if keep_ids else [],
    )
    table = ParticleTable(np.asarray(coords, float).reshape(-1, 3), features, float(voxel_size_A))
    log.info(
        "post-processing: %d peaks → %d candidates after suppression → %d particles (radius %s)",
        len(peaks),
        len(kept_peaks),
        len(table),
        f"{given:g} Å given" if given > 0 else f"auto, median {np.median(radius_of[1:]):.0f} Å" if n_basins else "auto",
    )
    return mask.astype(np.uint8), instances.astype(np.int32), table
