"""Classification datasets: simulator splits on disk, or class-labelled particles.

A dataset directory holds ``train.npz``, ``val.npz`` and ``test.npz`` as written by
``tomolens.simulate.simulate_subtomograms`` (one directory per SNR): ``x`` float32
``(N, b, b, b)``, ``y`` int64 ``(N,)``, ``class_names`` (strings), and a
``dataset.json`` beside them with the voxel size.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tomolens.classify.extract import extract_subtomograms, zscore
from tomolens.jobs import Progress, relay

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """One split of a classification dataset.

    Attributes
    ----------
    x : ndarray, float32, shape (N, b, b, b)
        Z-scored cubes.
    y : ndarray, int64, shape (N,)
        Class indices.
    """

    x: np.ndarray
    y: np.ndarray


@dataclass
class ClassDataset:
    """Train/validation/test splits with their class names and voxel size (Å)."""

    train: Split
    val: Split
    test: Split
    class_names: list[str]
    voxel_size_A: float | None
    source: str = ""

    @property
    def box(self) -> int:
        return int(self.train.x.shape[1])


def load_split(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read one ``.npz`` split: cubes (z-scored here), labels, class names."""
    from tomolens.simulate import load_subtomogram_split

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"No dataset split {path}; a dataset folder holds train.npz, val.npz and test.npz.")
    x, y, names = load_subtomogram_split(path)
    x = np.array(x, np.float32)
    return zscore(x), y, names


def load_dataset(folder: str | os.PathLike) -> ClassDataset:
    """Read a dataset folder (``train/val/test.npz`` + optional ``dataset.json``)."""
    folder = Path(folder)
    splits, names = {}, None
    for split in SPLITS:
        x, y, split_names = load_split(folder / f"{split}.npz")
        if names is not None and split_names != names:
            raise ValueError(f"{split}.npz has classes {split_names}, other splits {names}.")
        names = split_names
        splits[split] = Split(x, y)
    voxel = None
    meta_path = folder / "dataset.json"
    if not meta_path.is_file():
        meta_path = folder.parent / "dataset.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        voxel = meta.get("voxel_size_A") or (meta.get("config", {}) or {}).get("voxel_size_A")
    return ClassDataset(splits["train"], splits["val"], splits["test"], names, voxel, str(folder))


def dataset_from_points(
    tomogram: np.ndarray,
    coords_zyx: np.ndarray,
    labels,
    box: int,
    voxel_size_A: float | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    edge: str = "pad",
) -> Generator[Progress, None, ClassDataset]:
    """Cut subtomograms at class-labelled particles of one tomogram and split them (a job).

    Parameters
    ----------
    tomogram : array, shape (z, y, x)
    coords_zyx : array, shape (N, 3), voxels
    labels : sequence of N class names or numbers; empty/NaN labels are left out
    box : int
        Cube edge, voxels.
    val_fraction, test_fraction : float
        Stratified fractions for validation (early stopping) and test (scoring only).

    Returns
    -------
    ClassDataset
    """
    return (
        yield from dataset_from_tomograms(
            [(tomogram, coords_zyx, labels)], box, voxel_size_A, val_fraction, test_fraction, seed, edge
        )
    )


def _label_text(label) -> str:
    """A label as a class name: '' for missing, '3' for 3 and 3.0 alike (pandas turns an integer
    column with a blank into floats)."""
    if label is None or (isinstance(label, float) and np.isnan(label)):
        return ""
    if isinstance(label, (float, np.floating)) and float(label).is_integer():
        return str(int(label))
    return str(label)


def dataset_from_tomograms(
    items: Sequence[tuple[np.ndarray, np.ndarray, Sequence]],
    box: int,
    voxel_size_A: float | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    edge: str = "pad",
) -> Generator[Progress, None, ClassDataset]:
    """Cut subtomograms at the class-labelled particles of several tomograms, pool them and
    split them stratified by class (a job).

    Parameters
    ----------
    items : sequence of (tomogram (z, y, x) array, coords_zyx (N, 3) voxels, N labels)
        Labels are class names or numbers; empty/NaN labels are left out.  The classes are
        the union over all tomograms (sorted by name); a class may be absent from some.
    box : int
        Cube edge, voxels.
    val_fraction, test_fraction : float
        Stratified fractions of the pooled particles for validation (early stopping) and
        test (scoring only).

    Returns
    -------
    ClassDataset
    """
    from sklearn.model_selection import train_test_split

    if not items:
        raise ValueError("No tomograms given: training from points needs at least one tomogram with labelled points.")
    texts = []
    for k, (_, coords_zyx, labels) in enumerate(items):
        labels = np.asarray(labels, dtype=object)
        if len(labels) != len(coords_zyx):
            where = f" (tomogram {k + 1})" if len(items) > 1 else ""
            raise ValueError(f"{len(coords_zyx)} points but {len(labels)} labels{where}.")
        texts.append(np.array([_label_text(lab) for lab in labels], dtype=object).astype(str))
    names = sorted(set(np.concatenate(texts)) - {""})
    if len(names) < 2:
        raise ValueError(f"Training needs points of at least 2 classes; the labels hold {names or 'none'}.")
    counts = {n: int(sum(np.sum(t == n) for t in texts)) for n in names}
    few = [n for n, c in counts.items() if c < 3]
    if few:
        raise ValueError(f"Classes {few} have fewer than 3 labelled points ({counts}); label more particles.")
    cubes, ys = [], []
    for k, ((tomogram, coords_zyx, _), text) in enumerate(zip(items, texts)):
        keep = np.flatnonzero(text != "")
        prefix = "" if len(items) == 1 else f"tomogram {k + 1}/{len(items)}: "
        extraction = yield from relay(
            extract_subtomograms(tomogram, np.asarray(coords_zyx)[keep], box, edge=edge),
            lambda p: Progress(p.done, p.total, prefix + p.message, p.info),
        )
        cubes.append(extraction.subtomograms)
        ys.append(np.array([names.index(t) for t in text[keep][extraction.indices]], np.int64))
    x, y = np.concatenate(cubes), np.concatenate(ys)
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_fraction / (1 - test_fraction), stratify=y[rest], random_state=seed
    )
    source = "labelled points" if len(items) == 1 else f"labelled points of {len(items)} tomograms"
    return ClassDataset(
        Split(x[train], y[train]), Split(x[val], y[val]), Split(x[test], y[test]), names, voxel_size_A, source
    )
