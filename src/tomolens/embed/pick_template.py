"""Pick by example without a network: templates from the clicked examples or a reference map.

The tomogram is turned bright (dense matter bright, the pipeline's polarity decision) and
z-scored.  Per target, a cube of ``2 ⌈r⌉ + 3`` voxels (``r`` the particle radius in voxels)
is cut around each example.  ``combine="average"`` aligns the examples to the first one by
the same rotation search and averages them into one less noisy template;
``combine="each"`` keeps every example as its own template.  A reference map instead is
resampled to the tomogram's voxel size (low-passed to the tomogram's Nyquist first), turned
bright, and its radius is the map's own.  :func:`tomolens.embed.template_match.match_templates`
then scores every voxel (masked Pearson correlation, maximum over rotations and templates):
that map is the similarity map whose peaks :func:`tomolens.embed.pick.pick_peaks` picks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator

import numpy as np

from tomolens.jobs import Progress

log = logging.getLogger(__name__)

COMBINE_CHOICES = ("average", "each")


def reference_template(path: str | os.PathLike, voxel_size_A: float | None, shape_zyx) -> tuple:
    """A reference map as a bright template at the tomogram's voxel size.

    Returns
    -------
    (cube float32 (b, b, b), radius in voxels, name, list of notes for the user)

    Raises
    ------
    ValueError
        Unreadable map, no voxel size (map or tomogram), no positive density, or a map
        larger than the tomogram.
    """
    from tomolens.embed.template_match import cut_box, template_box
    from tomolens.io.mrc import MrcReadError, read_mrc
    from tomolens.simulate.domain_imaging import butterworth_lowpass
    from tomolens.simulate.templates import template_from_map

    name = os.path.basename(os.fspath(path))
    try:
        vol = read_mrc(path)
    except (FileNotFoundError, IsADirectoryError, MrcReadError) as err:
        raise ValueError(f"Cannot read the reference map {name}: {err}") from err
    if vol.voxel_size_A is None or not float(vol.voxel_size_A[-1]) > 0:
        raise ValueError(
            f"The reference map {name} has no voxel size in its header; write one into it (e.g. with "
            "mrcfile or `tomolens convert --voxel-size`) so it can be resampled to the tomogram."
        )
    if voxel_size_A is None:
        raise ValueError(
            "The tomogram has no voxel size, so the reference map cannot be resampled to it; give its voxel size."
        )
    src = float(vol.voxel_size_A[-1])
    data = np.asarray(vol.data, np.float32)
    notes = []
    if data.ndim != 3:
        raise ValueError(f"The reference map {name} must be 3D; got shape {data.shape}.")
    if -float(data.min()) > float(data.max()):
        data = -data
        notes.append(f"reference map {name} is dark (dense matter negative): inverted to match the tomogram")
    if abs(src / voxel_size_A - 1) > 1e-3:
        if src < voxel_size_A:
            data = butterworth_lowpass(data, src / voxel_size_A)
        notes.append(f"reference map {name} resampled from {src:g} to the tomogram's {voxel_size_A:g} Å/voxel")
    try:
        t = template_from_map(data, src, float(voxel_size_A), os.path.splitext(name)[0])
    except ValueError as err:
        raise ValueError(f"Reference map {name}: {err}") from err
    radius = max(t.radius_A / voxel_size_A, 1.0)
    box = template_box(radius)
    if box > min(shape_zyx):
        raise ValueError(
            f"The reference map {name} ({2 * t.radius_A:.0f} Å across) is larger than the tomogram "
            f"({min(shape_zyx) * voxel_size_A:.0f} Å along its shortest side); check the voxel sizes."
        )
    c = t.density.shape[0] // 2
    return cut_box(t.density, (c, c, c), box), radius, os.path.splitext(name)[0], notes


def template_similarity(
    tomogram: np.ndarray,
    groups: dict[str, np.ndarray],
    voxel_size_A: float | None,
    radius_A: float = 100.0,
    angular_step_deg: float = 40.0,
    combine: str = "each",
    reference: str | os.PathLike | None = None,
    polarity: str = "auto",
    bin_factor: int = 1,
    tilt_range_deg: float = 0.0,
) -> Generator[Progress, None, tuple]:
    """Template-matching similarity per target (a job).

    Parameters
    ----------
    tomogram : array, shape (z, y, x)
    groups : dict of str to ndarray (N, 3)
        Example positions per target, tomogram voxels (checked by the caller); with a
        ``reference`` they are only scored on its map.
    voxel_size_A : float or None
        The tomogram's voxel size (None: ``radius_A`` is read as voxels of 1 Å).
    radius_A : float
        Particle radius, Å (mask and box of the example templates).
    angular_step_deg : float
        Step of the rotation grid.
    combine : {"average", "each"}
    reference : path, optional
        Reference map MRC used as the only template (target named after the file).
    polarity : {"auto", "dark", "bright"}
    bin_factor : int, 1-4
        Match on the tomogram binned by this factor (block means; 2: 8 times fewer voxels);
        the maps are then on the binned grid.
    tilt_range_deg : float
        When > 0, the rotated templates get the missing wedge of a ±tilt range series about y.

    Returns
    -------
    (maps float32 (T, z, y, x), target names, example agreement list, info dict)
    """
    from tomolens.embed.template_match import (
        align_and_average,
        cut_box,
        match_templates,
        rotation_grid,
        template_box,
    )
    from tomolens.polarity import decide_polarity

    if combine not in COMBINE_CHOICES:
        raise ValueError(f"combine must be one of {COMBINE_CHOICES}; got {combine!r}.")
    data = np.asarray(tomogram)
    rotations = rotation_grid(angular_step_deg)
    notes: list[str] = []
    if int(bin_factor) != bin_factor or not 1 <= bin_factor <= 4:
        raise ValueError(f"bin must be a whole number from 1 to 4; got {bin_factor!r}.")
    bin_factor = int(bin_factor)
    binned_shape = tuple(-(-n // bin_factor) for n in data.shape)
    work_voxel = voxel_size_A * bin_factor if voxel_size_A else None
    if reference:
        cube, radius, ref_name, ref_notes = reference_template(reference, work_voxel, binned_shape)
        notes += ref_notes
        for n in ref_notes:
            log.info(n)
    else:
        radius = float(radius_A) / float(voxel_size_A or 1.0) / bin_factor
        if template_box(radius) > min(binned_shape):
            raise ValueError(
                f"A particle radius of {radius_A:g} Å ({radius:.1f} voxels) does not fit in the tomogram "
                f"{binned_shape}; "
                + (
                    "the tomogram has no voxel size, so 1 Å per voxel was assumed: set its voxel size."
                    if not voxel_size_A
                    else "give the particle's radius in Å."
                )
            )
        if radius < 1.5:
            raise ValueError(
                f"A particle radius of {radius_A:g} Å is only {radius:.1f} voxels"
                + (f" after binning by {bin_factor}" if bin_factor > 1 else "")
                + "; template matching needs at least 1.5 voxels (give the radius in Å, check the voxel size"
                + (", bin less)." if bin_factor > 1 else ").")
            )
    decision = decide_polarity(data, polarity, "bright", voxel_size_A)
    yield Progress(0, 1, decision.message)
    vol = np.array(data, np.float32)
    vol -= float(vol.mean())
    vol /= float(vol.std()) or 1.0
    if decision.invert:
        np.negative(vol, out=vol)
    if bin_factor > 1:
        from skimage.transform import downscale_local_mean

        vol = downscale_local_mean(vol, (bin_factor,) * 3).astype(np.float32)
        notes.append(
            f"matched on the tomogram binned by {bin_factor} ({work_voxel:g} Å/voxel)"
            if work_voxel
            else f"matched on the tomogram binned by {bin_factor}"
        )
    # binned voxel g is the block mean of tomogram voxels g·b … g·b + b − 1, centred on g·b + origin
    origin = (bin_factor - 1) / 2

    def binned(coords: np.ndarray) -> np.ndarray:
        return (np.asarray(coords, float) - origin) / bin_factor

    box = template_box(radius)
    maps, names, agreement = [], [], []
    targets = {ref_name: np.concatenate([np.empty((0, 3)), *groups.values()])} if reference else groups
    for name, coords in targets.items():
        if reference:
            templates = [cube]
        else:
            cubes = [cut_box(vol, c, box) for c in binned(coords)]
            if combine == "average" and len(cubes) > 1:
                templates = [(yield from align_and_average(cubes, radius, rotations))]
            else:
                templates = cubes
        score, _ = yield from match_templates(
            vol, templates, radius, rotations, f"matching {name}", tilt_range_deg=tilt_range_deg
        )
        maps.append(score)
        names.append(name)
        at = np.clip(np.rint(binned(coords)).astype(int), 0, np.array(vol.shape) - 1)
        agreement.append(score[at[:, 0], at[:, 1], at[:, 2]].astype(np.float32))
    info = {
        "method": "template",
        "voxel_size_A": voxel_size_A,
        "radius_voxels": round(radius, 2),
        "box": box,
        "stride_model_voxels": 1,
        "bin": bin_factor,
        "tilt_range_deg": tilt_range_deg,
        "origin_voxels": origin,
        "angular_step_deg": angular_step_deg,
        "rotations": len(rotations),
        "combine": combine,
        "reference": os.fspath(reference) if reference else None,
        "polarity": decision.to_dict(),
        "notes": notes,
    }
    return np.stack(maps), names, agreement, info
