"""Orientation recovery end to end: settings, and the one function behind the CLI and widget.

``recover_from_stack`` embeds the projections with a distance network, recovers their
orientations, then (``refine``, on by default) fixes the frame that distances leave open by
common lines and refines the orientations by projection matching
(:mod:`tomolens.orient.refine`); when the true orientations are known it aligns the result
to them (O(4), see :func:`tomolens.orient.rotations.align_orientations`; with a point group,
up to the group, :func:`tomolens.orient.symmetry.align_orientations_symmetric`) and reports the
errors; it then reconstructs a map (from the aligned orientations when the truth is known)
and, given the true map, its FSC.  Without refinement and without the truth, the
reconstruction uses orientations that distances define only up to a left factor, and is
blurred.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tomolens.jobs import Progress
from tomolens.orient.symmetry import COMMON_GROUPS
from tomolens.params import Param

log = logging.getLogger(__name__)

#: The default distance model: trained on projections of 5j0n (the shipped orient_distance_shrec10A
#: was trained on the 10 Å SHREC maps and never saw 5j0n). Distance networks are particle-specific.
DEFAULT_MODEL = "orient_distance_5j0n"

SIMULATE_PARAMS = (
    Param("n_projections", 1000, "number of projections", int, min=10, max=1_000_000),
    Param("seed", 0, "random seed of orientations, shifts, defoci and noise", int, min=0),
    Param(
        "snr",
        0.0,
        "noise as a signal-to-noise ratio: the mean variance of the noise-free projections / "
        "the noise variance, so it means the same on any map (0: no noise; the paper's variance 16 is SNR 0.133 "
        "on 5j0n)",
        float,
        min=0.0,
    ),
    Param(
        "noise_variance",
        0.0,
        "alternatively, an absolute noise variance (the paper's 16; its SNR depends on the "
        "map's values and box: not with snr)",
        float,
        min=0.0,
    ),
    Param("max_shift_A", 0.0, "in-plane shifts uniform in ± this, Å", float, min=0.0, advanced=True),
    Param("defocus_A", 0.0, "apply a CTF at this defocus ±20 % (Å; 0: no CTF)", float, min=0.0, advanced=True),
    Param(
        "full_sphere",
        False,
        "viewing directions on the whole sphere (default: one hemisphere, "
        "which removes the mirror ambiguity as the paper does)",
        bool,
        advanced=True,
    ),
)

TRAIN_PARAMS = (
    Param(
        "pixel_size_A",
        0.0,
        "pixel size of the network input, Å (0: from the maps, so that the widest "
        "particle fills the input window with 15 % to spare; 8.5 Å for 5j0n)",
        float,
        min=0.0,
        max=50.0,
    ),
    Param("input_size", 32, "network input side, pixels (multiple of 8)", int, min=16, max=128, step=8),
    Param("projections_per_map", 1500, "clean projections simulated per training map", int, min=100),
    Param("train_steps", 3000, "training steps (one map, a batch of images and all their pairs each)", int, min=1),
    Param("batch_size", 64, "images per training step", int, min=8, max=512, advanced=True),
    Param("learning_rate", 1e-3, "Adam step size for training", float, min=1e-6, max=1.0, advanced=True),
    Param("max_minutes", 0.0, "stop training after this many minutes (0: no limit)", float, min=0.0),
    Param("seed", 0, "random seed of training", int, min=0, advanced=True),
    Param(
        "symmetry",
        "C1",
        "point group of the training maps (axes found on each map): the network learns "
        "distances up to it, min over g of d(A, B g), since projections at A and A g are identical",
        str,
        choices=COMMON_GROUPS,
    ),
)

RECOVER_PARAMS = (
    Param("model", DEFAULT_MODEL, "distance model: a shipped name or a .pt/.json path", str),
    Param(
        "initialisation",
        "spectral",
        "start of the Adam recovery: 'spectral' (closed form from anchor distances) or 'random' (the paper)",
        str,
        choices=("spectral", "random"),
    ),
    Param("recover_steps", 1000, "Adam steps of the recovery", int, min=1),
    Param("pairs_per_step", 20000, "random pairs per Adam step", int, min=100, advanced=True),
    Param("recover_learning_rate", 0.01, "Adam step size of the recovery", float, min=1e-6, max=1.0, advanced=True),
    Param("n_anchors", 500, "images of the spectral start", int, min=10, advanced=True),
    Param(
        "local_scale",
        0.0,
        "weight pairs by exp(-d/local_scale) (radians; 0: equal weights as the paper)",
        float,
        min=0.0,
        advanced=True,
    ),
    Param("seed", 0, "random seed of the recovery", int, min=0, advanced=True),
    Param(
        "refine",
        True,
        "after recovery, fix the frame by common lines and refine by projection matching "
        "against the reconstruction (for projections without CTF)",
        bool,
    ),
    Param(
        "refine_max_shift_A",
        0.0,
        "refinement also searches each projection's in-plane shift up to this (Å; 0: the projections are centred)",
        float,
        min=0.0,
        advanced=True,
    ),
    Param(
        "refine_gold_standard",
        False,
        "refinement matches each half set only against its own map (RELION's "
        "gold standard: an unbiased half-set FSC, slightly less accurate on small sets)",
        bool,
        advanced=True,
    ),
    Param(
        "symmetry",
        "C1",
        "point group of the particle (RELION's: Cn/Dn with the n-fold axis along z, T, O, I = I2, I1…I4; "
        "C1: none): refinement and reconstruction average over it and errors are measured up to it",
        str,
        choices=COMMON_GROUPS,
    ),
    Param("reconstruct", True, "reconstruct a map from the projections and recovered orientations", bool),
    Param(
        "recon_pad_factor",
        1.0,
        "zero padding of the Fourier reconstruction (2: fewer artefacts, slower)",
        float,
        min=1.0,
        max=3.0,
        advanced=True,
    ),
)


@dataclass
class OrientationResult:
    """What ``recover_from_stack`` found.

    Attributes
    ----------
    quats : ndarray, shape (N, 4)
        Recovered orientations; aligned to the truth when it was given.
    errors_deg : ndarray, shape (N,) or None
        Per-projection error after alignment, degrees (truth given).
    reconstruction : ndarray, shape (n, n, n) or None
    fsc : tomolens.orient.reconstruct.FSCResult or None
    timings_s : dict
        Wall time of each stage, seconds.
    distance_errors : dict
        Mean/median absolute error of the estimated distances, degrees (truth given).
    loss_history : list of float
    errors_before_refinement_deg : ndarray, shape (N,) or None
        Errors of the orientations from distances alone (truth given, refinement run); with a
        symmetry, after the common-line frame (aligning up to a group needs the frame fixed, see
        :func:`tomolens.orient.symmetry.align_orientations_symmetric`).
    refinement : dict
        ``frame`` (common-line scores, see :func:`tomolens.orient.refine.fix_frame`) and
        ``passes`` (projection-matching history); empty without refinement.
    shifts_A : ndarray, shape (N, 2) or None
        In-plane shifts (x, y) of the image content found by refinement, Å (with
        ``refine_max_shift_A`` > 0).
    symmetry : str
        The point group used (errors are up to it; the reconstruction is averaged over it).
    symmetry_score : float or None
        How symmetric the true map (or, without it, the first reconstruction) is under the
        group, 0…1 (see :func:`tomolens.orient.symmetry.symmetry_score`).
    warnings : list of str
        Problems found on the way (a symmetry the map lacks, a particle wider than the network's
        window, a map that looks symmetric while ``symmetry`` is C1…).
    """

    quats: np.ndarray
    errors_deg: np.ndarray | None = None
    reconstruction: np.ndarray | None = None
    fsc: object | None = None
    timings_s: dict = field(default_factory=dict)
    distance_errors: dict = field(default_factory=dict)
    loss_history: list = field(default_factory=list)
    errors_before_refinement_deg: np.ndarray | None = None
    refinement: dict = field(default_factory=dict)
    shifts_A: np.ndarray | None = None
    symmetry: str = "C1"
    symmetry_score: float | None = None
    warnings: list = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the CLI and the widget's status."""
        lines = [
            f"{len(self.quats)} orientations recovered in {sum(self.timings_s.values()):.1f} s"
            + (f" (symmetry {self.symmetry})" if self.symmetry != "C1" else "")
        ]
        if self.errors_deg is not None:
            prefix = "" if self.symmetry == "C1" else f"up to {self.symmetry}: "
            lines.append(
                f"{prefix}mean orientation error {self.errors_deg.mean():.2f}° "
                f"(median {np.median(self.errors_deg):.2f}°)"
            )
            if self.errors_before_refinement_deg is not None:
                lines.append(
                    f"before refinement {self.errors_before_refinement_deg.mean():.2f}° "
                    f"(median {np.median(self.errors_before_refinement_deg):.2f}°)"
                )
        if self.fsc is not None:
            lines.append(
                f"FSC resolution {self.fsc.resolution_05_A:.1f} Å (0.5), {self.fsc.resolution_0143_A:.1f} Å (0.143)"
            )
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def recover_from_stack(
    images: np.ndarray,
    pixel_size_A: float,
    values: dict,
    truth_quats: np.ndarray | None = None,
    reference_map: np.ndarray | None = None,
    model=None,
) -> Generator[Progress, None, OrientationResult]:
    """Recover the orientations of a projection stack (job).

    Parameters
    ----------
    images : ndarray, shape (N, n, n)
        Projections (square).
    pixel_size_A : float
        Their pixel size, Å.
    values : dict
        Settings named as in :data:`RECOVER_PARAMS` (missing ones take their defaults).
    truth_quats : ndarray, shape (N, 4), optional
        True orientations: the result is aligned to them and errors are measured.
    reference_map : ndarray, shape (z, y, x), optional
        The true map (padded to a cube of side n) for the FSC of the reconstruction.
    model : (network, ModelCard), optional
        A loaded distance model; otherwise ``values["model"]`` is loaded.

    Returns
    -------
    OrientationResult
    """
    import torch

    from tomolens.models.card import load_model
    from tomolens.orient.files import check_stack
    from tomolens.orient.network import distance_errors_deg, embed_images
    from tomolens.orient.project import box_warnings, pad_to_cube
    from tomolens.orient.reconstruct import fourier_shell_correlation, reconstruct_fourier
    from tomolens.orient.recover import EmbeddingDistances, recover_orientations
    from tomolens.orient.refine import fix_frame, refine_orientations
    from tomolens.orient.symmetry import (
        SYMMETRY_THRESHOLD,
        Symmetry,
        check_symmetry,
        find_symmetry_frame,
        symmetric_errors_deg,
        symmetrise_volume,
    )
    from tomolens.params import validate_values

    settings = validate_values(values, RECOVER_PARAMS)
    images = check_stack(images)
    if not pixel_size_A or pixel_size_A <= 0:
        raise ValueError("The stack's pixel size is unknown; set it (Å) before recovering orientations.")
    if truth_quats is not None and len(truth_quats) != len(images):
        raise ValueError(f"The truth has {len(truth_quats)} orientations for {len(images)} images.")
    symmetry = Symmetry(settings["symmetry"])
    warnings: list[str] = []
    reference = None
    truth_symmetry = symmetry  # the group in the truth's frame: RELION's setting unless the true map says otherwise
    net, card = model if model is not None else load_model(settings["model"], "cpu", expected_task="orient")
    trained_for = sorted(set((card.extra or {}).get("symmetry", {}).values()) or {"C1"})
    if trained_for != [symmetry.name]:
        warnings.append(
            f"The distance network was trained for {', '.join(trained_for)} symmetry, but recovery "
            f"assumes {symmetry.name}: train one with `tomolens orient train --symmetry "
            f"{symmetry.name}` on the particle's map, so that its distances are up to the group."
        )
    if reference_map is not None:
        reference = pad_to_cube(reference_map)
        if reference.shape[0] != images.shape[1]:
            raise ValueError(
                f"The reference map pads to a {reference.shape[0]}³ cube but the images are "
                f"{images.shape[1]}² pixels; the FSC needs the map at the images' pixel size and box."
            )
        window = float(card.voxel_size_A) * float(card.patch_size[0] if card.patch_size else net.input_size)
        warnings += box_warnings(reference, float(pixel_size_A), window)
        if symmetry.name != "C1":
            truth_symmetry, warning = check_symmetry(reference, symmetry)
            warnings += [warning] if warning else []
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    with torch.inference_mode(False):
        embeddings = yield from embed_images(net, card, images, float(pixel_size_A))
    timings["embedding"] = time.monotonic() - t0
    t0 = time.monotonic()
    result = yield from recover_orientations(
        EmbeddingDistances(embeddings),
        initialisation=settings["initialisation"],
        steps=settings["recover_steps"],
        pairs_per_step=settings["pairs_per_step"],
        learning_rate=settings["recover_learning_rate"],
        n_anchors=settings["n_anchors"],
        local_scale=settings["local_scale"] or None,
        seed=settings["seed"],
        symmetry=symmetry.name,
    )
    timings["recovery"] = time.monotonic() - t0
    out = OrientationResult(
        result.quats,
        timings_s=timings,
        loss_history=result.loss_history,
        symmetry=symmetry.name,
        symmetry_score=truth_symmetry.score,
        warnings=warnings,
    )
    quats = result.quats
    recon_symmetry = None  # the group in the frame of the orientations that are reconstructed
    if settings["refine"]:
        if truth_quats is not None and symmetry.name == "C1":
            out.errors_before_refinement_deg, _ = symmetric_errors_deg(quats, truth_quats, truth_symmetry)
        t0 = time.monotonic()
        quats, frame = yield from fix_frame(images, quats, float(pixel_size_A), seed=settings["seed"])
        timings["frame"] = time.monotonic() - t0
        if truth_quats is not None and symmetry.name != "C1":  # up to a group, alignment needs the frame fixed
            out.errors_before_refinement_deg, _ = symmetric_errors_deg(quats, truth_quats, truth_symmetry)
        t0 = time.monotonic()
        check: dict = {}
        quats, shifts_px, passes = yield from refine_orientations(
            images,
            quats,
            float(pixel_size_A),
            max_shift_px=settings["refine_max_shift_A"] / float(pixel_size_A),
            symmetry=symmetry.name,
            info=check,
            gold_standard=settings["refine_gold_standard"],
        )
        timings["refinement"] = time.monotonic() - t0
        out.quats, out.refinement = quats, {"frame": frame, "passes": passes, "check": check}
        recon_symmetry = Symmetry(symmetry.name)  # refinement turned the orientations into RELION's setting
        if check.get("kept_start"):
            warnings.append(
                "Refinement scored lower than its start by half-set FSC, so the orientations from "
                "distances and common lines are returned: the distance network may not know this "
                "particle (train one on its map) or the symmetry may be wrong."
            )
        if reference is None and "symmetry_score" in check:
            out.symmetry_score = check["symmetry_score"]
            if check["symmetry_score"] < SYMMETRY_THRESHOLD:
                warnings.append(
                    f"The first reconstruction scores {check['symmetry_score']:.2f} for "
                    f"{symmetry.name} symmetry: the particle may not have it."
                )
        if settings["refine_max_shift_A"] > 0:
            out.shifts_A = shifts_px * float(pixel_size_A)
    if truth_quats is not None:
        # shifts are the images' own (content offset in pixels): aligning the orientations leaves them as they are
        out.errors_deg, out.quats = symmetric_errors_deg(quats, truth_quats, truth_symmetry)
        out.distance_errors = distance_errors_deg(embeddings, np.asarray(truth_quats), symmetry=truth_symmetry)
        recon_symmetry = truth_symmetry
    elif settings["reconstruct"] and not settings["refine"]:
        log.warning(
            "No true orientations: the reconstruction uses the recovered orientations as they are, "
            "which distances define only up to a global transform; it may be distorted."
        )
    if settings["reconstruct"]:
        t0 = time.monotonic()
        shifts = None if out.shifts_A is None else out.shifts_A / float(pixel_size_A)
        out.reconstruction = yield from reconstruct_fourier(
            images, out.quats, shifts, pad_factor=settings["recon_pad_factor"]
        )
        if symmetry.name != "C1":
            if recon_symmetry is None:  # neither refined nor aligned: find the axes on the map itself
                recon_symmetry = find_symmetry_frame(out.reconstruction, symmetry.name)
            out.reconstruction = symmetrise_volume(out.reconstruction, recon_symmetry)
        timings["reconstruction"] = time.monotonic() - t0
        if reference is not None:
            out.fsc = fourier_shell_correlation(out.reconstruction, reference, float(pixel_size_A))
    for warning in warnings:
        log.warning("%s", warning)
    log.info("%s", out.summary())
    return out


def training_job(maps, values: dict, val_maps=(), name: str = "orient_distance"):
    """The distance-training job for ``maps`` with the values of :data:`TRAIN_PARAMS` (CLI and widget alike)."""
    from tomolens.orient.network import train_distance_model

    return train_distance_model(
        maps,
        val_maps,
        pixel_size_A=network_pixel_size(maps, values["input_size"], values["pixel_size_A"]),
        input_size=values["input_size"],
        projections_per_map=values["projections_per_map"],
        steps=values["train_steps"],
        batch_size=values["batch_size"],
        learning_rate=values["learning_rate"],
        max_minutes=values["max_minutes"] or None,
        seed=values["seed"],
        name=name,
    )


def network_pixel_size(maps, input_size: int, pixel_size_A: float = 0.0, margin: float = 1.15) -> float:
    """The distance network's input pixel size, Å: ``pixel_size_A`` when set, else from the maps.

    With ``pixel_size_A`` = 0, the window ``input_size`` × pixel covers the widest particle
    (:func:`tomolens.orient.project.particle_diameter_A`) × ``margin``, and the pixel is never
    finer than the maps' voxels.

    Parameters
    ----------
    maps : sequence of tomolens.orient.network.TrainingMap
    input_size : int
        Network input side, pixels.
    """
    from tomolens.orient.project import particle_diameter_A

    if pixel_size_A and pixel_size_A > 0:
        return float(pixel_size_A)
    widest = max(particle_diameter_A(m.volume, m.voxel_size_A) for m in maps)
    pixel = max(max(m.voxel_size_A for m in maps), widest * margin / input_size)
    log.info(
        "network input: %.2f Å pixels, a %.0f Å window for particles up to %.0f Å", pixel, pixel * input_size, widest
    )
    return float(pixel)


def load_training_maps(paths: list[str | Path], symmetry: str = "C1"):
    """Read maps for training: a list of :class:`tomolens.orient.network.TrainingMap`, each with ``symmetry``."""
    from tomolens.io import read_mrc
    from tomolens.orient.network import TrainingMap

    out = []
    for p in paths:
        vol = read_mrc(p)
        if vol.kind != "volume" or vol.data.ndim != 3:
            raise ValueError(f"{Path(p).name} is a {vol.kind}, not a 3D map; train on density maps (.mrc).")
        if vol.voxel_size_A is None:
            raise ValueError(f"{Path(p).name} has no voxel size in its header; set it before training.")
        out.append(TrainingMap(np.asarray(vol.data, np.float32), float(vol.voxel_size_A[-1]), Path(p).stem, symmetry))
    return out
