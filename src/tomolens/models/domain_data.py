"""Training volumes from a domain-randomised dataset folder (``tomolens simulate-dataset``).

A dataset folder holds ``manifest.json`` and one ``tomo_<seed>/`` folder per tomogram
(tomogram.mrc, semantic.mrc, instances.mrc, particles.csv, config.json).  Its tomograms come
at many voxel sizes (5–20 Å) and both contrast polarities; a model trains at one voxel size
in the bright convention, so :func:`load_domain_volumes` brings every tomogram to the model's
voxel size with :func:`tomolens.models.tiling.rescale_volume` (the resampling that inference
applies to a user's tomogram, so training sees the same blur) and labels nearest-neighbour,
and negates the dark ones (their polarity is known from the simulation: no guessing).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class DomainVolume:
    """One dataset tomogram at the model's voxel size.

    Attributes
    ----------
    tomogram : ndarray float32 (z, y, x)
        Bright convention, not normalised (the trainer z-scores).
    semantic, instances : ndarray (z, y, x)
        Labels on the same grid (uint8 classes, uint32 instances; instances None when not read).
    particle_ids : ndarray int64 or None
        Instance ids of the macromolecules (the detector's particles; None when not read).
    seed : int
    source_voxel_size_A : float
    """

    tomogram: np.ndarray
    semantic: np.ndarray
    instances: np.ndarray | None
    particle_ids: np.ndarray | None
    seed: int
    source_voxel_size_A: float


def read_manifest(folder: str | os.PathLike) -> dict:
    """The dataset's manifest, with a clear error when the folder is not a dataset."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise ValueError(
            f"{folder} is not a tomolens dataset (no manifest.json); make one with "
            "'tomolens simulate-dataset --out DIR --n N'."
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}).") from err
    if not isinstance(manifest, dict) or not isinstance(manifest.get("tomograms"), list) or not manifest["tomograms"]:
        raise ValueError(f"{path} lists no tomograms.")
    return manifest


#: Largest training volume kept per tomogram at the model's voxel size (z, y, x voxels): a 20 Å
#: tomogram of 64×256×256 becomes 128×512×512 at 10 Å, and 96 of those do not fit in memory.
MAX_SHAPE = (64, 256, 256)


def central_slices(volume_shape, shape) -> tuple[slice, ...]:
    """The slices of the central part of at most ``shape`` of a volume of ``volume_shape``."""
    starts = [max(0, (n - m) // 2) for n, m in zip(volume_shape, shape)]
    return tuple(slice(s, s + min(n, m)) for s, n, m in zip(starts, volume_shape, shape))


def central_crop(volume: np.ndarray, shape) -> np.ndarray:
    """The central part of ``volume`` of at most ``shape`` (a view)."""
    return volume[central_slices(volume.shape, shape)]


def load_domain_volumes(
    folder: str | os.PathLike, voxel_size_A: float, limit: int = 0, max_shape=MAX_SHAPE, with_instances: bool = True
) -> list[DomainVolume]:
    """Every tomogram of a dataset folder, at ``voxel_size_A`` and bright (module docstring).

    Tomograms larger than ``max_shape`` at the model's voxel size keep their central
    ``max_shape`` part (labels alike), so that a dataset of many coarse tomograms fits in memory.

    Parameters
    ----------
    folder : path
        Dataset folder with ``manifest.json``.
    voxel_size_A : float
        The model's voxel size.
    limit : int
        Read only the first ``limit`` tomograms (0 = all).
    max_shape : (int, int, int) or None
        Largest volume kept (its centre).
    with_instances : bool
        Also read the instance labels and particle ids (detection); without, they are None
        (segmentation needs only the semantic labels).
    """
    from tomolens.io.mrc import read_mrc
    from tomolens.models.tiling import rescale_labels, rescale_volume

    if not (np.isfinite(voxel_size_A) and voxel_size_A > 0):
        raise ValueError(f"The model's voxel size must be a positive number of Å; got {voxel_size_A}.")
    manifest = read_manifest(folder)
    entries = manifest["tomograms"][:limit] if limit else manifest["tomograms"]
    out = []
    for entry in entries:
        sub = Path(folder) / str(entry["folder"])
        config = json.loads((sub / "config.json").read_text())
        polarity = config.get("polarity") or config.get("config", {}).get("polarity", "bright")
        vol = read_mrc(sub / "tomogram.mrc")
        source_vs = float(vol.voxel_size_A[-1]) if vol.voxel_size_A else float(entry["config"]["voxel_size_A"])
        data = np.asarray(vol.data, np.float32)
        if polarity == "dark":
            data = -data
        zoom = source_vs / voxel_size_A
        tomo = rescale_volume(data, zoom) if abs(zoom - 1) > 0.01 else data
        labels = [
            rescale_labels(np.asarray(read_mrc(sub / f"{name}.mrc").data), tomo.shape)
            for name in (("semantic", "instances") if with_instances else ("semantic",))
        ]
        if max_shape is not None:
            tomo, *labels = (np.ascontiguousarray(central_crop(a, max_shape)) for a in (tomo, *labels))
        semantic, instances = labels[0], (labels[1] if with_instances else None)
        ids = np.array([], np.int64) if with_instances else None
        if with_instances and (sub / "particles.csv").is_file():
            import pandas as pd

            table = pd.read_csv(sub / "particles.csv")
            if "instance_id" in table:
                if "class_name" in table:  # gold beads and other non-macromolecules are not the detector's
                    table = table[table["class_name"].astype(str) == "macromolecule"]
                ids = table["instance_id"].to_numpy(np.int64)
        out.append(DomainVolume(tomo, semantic, instances, ids, int(entry["seed"]), source_vs))
        log.info("dataset tomogram %s: %g Å %s -> %s at %g Å", sub.name, source_vs, polarity, tomo.shape, voxel_size_A)
    return out


def detection_volumes(folders, voxel_size_A: float, limit: int = 0) -> tuple[list, list[DomainVolume]]:
    """(tomogram, macromolecule instances, voxel size) triples of dataset folders for detection training.

    Instances of everything that is not a macromolecule (gold beads, membranes, filaments) are set
    to 0: the detector learns to pick macromolecules only.  Also returns the volumes (for the card).
    """
    volumes = [
        v
        for f in ([folders] if isinstance(folders, (str, os.PathLike)) else folders)
        for v in load_domain_volumes(f, voxel_size_A, limit, with_instances=True)
    ]
    out = []
    for v in volumes:
        keep = np.isin(v.instances, v.particle_ids) if v.particle_ids is not None else v.instances > 0
        out.append((v.tomogram, np.where(keep, v.instances, 0).astype(np.int32), float(voxel_size_A)))
    return out, volumes


def check_domain_options(args) -> None:
    """``tomolens train --domain-data``'s rules, before any data is read: dataset folders alone, and a
    validation dataset (``--domain-val``) beside them.  Raises ValueError saying what to change."""
    if args.tomograms or args.sim_train:
        raise ValueError("--domain-data trains on a dataset folder alone; leave out --tomograms and --sim-train.")
    if not args.domain_val:
        raise ValueError("Give --domain-val DIR (a validation dataset with other seeds) with --domain-data.")


def domain_training_note(args, volumes: list[DomainVolume], val_volumes: list[DomainVolume]) -> str:
    """The card's ``training_data`` line for ``--domain-data``/``--domain-val``; ValueError when the two share
    seeds (validation must be other tomograms)."""
    if {v.seed for v in volumes} & {v.seed for v in val_volumes}:
        raise ValueError("--domain-data and --domain-val share seeds; validation must be other tomograms.")
    return dataset_summary(args.domain_data, volumes) + "; validation " + dataset_summary(args.domain_val, val_volumes)


def dataset_summary(folders, volumes: list[DomainVolume]) -> str:
    """One line for a model card's ``training_data`` (``folders``: one path or several)."""
    folders = [folders] if isinstance(folders, (str, os.PathLike)) else list(folders)
    domains = sorted({str(read_manifest(f).get("domain", "?")) for f in folders})
    seeds = [v.seed for v in volumes]
    names = ", ".join(Path(f).name for f in folders)
    return (
        f"domain-randomised dataset {names} ({'/'.join(domains)}), {len(volumes)} tomograms, "
        f"seeds {min(seeds)}..{max(seeds)}, source voxel sizes {min(v.source_voxel_size_A for v in volumes):g}-"
        f"{max(v.source_voxel_size_A for v in volumes):g} Å; ranges in extra.training_ranges"
    )
