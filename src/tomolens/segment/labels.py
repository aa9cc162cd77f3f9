"""Label conventions of semantic segmentation, checks of painted labels, ground-truth conversion.

The one convention
------------------
Class *index* ``k`` (0 = background, 1.. = structures, the order of ``class_names``) is
stored in a napari Labels layer or an MRC file as the label *value* ``k + 1``:

- **painted (training) labels**: 0 = not painted (ignored by the loss), 1 = background,
  2 = ``class_names[1]``, 3 = ``class_names[2]``, …;
- **predicted labels**: the same values, except that background is written as 0 so it
  stays transparent — a structure has the same value (and colour) in the painted and the
  predicted layer, and a prediction can be copied into the painted layer and corrected.

The network's output channel ``k`` is class index ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Default classes of the shipped model (index = class index).
DEFAULT_CLASSES = ("background", "membrane", "filament", "particle")

#: Label value of class index k is k + LABEL_OFFSET.
LABEL_OFFSET = 1


def label_value(class_index: int) -> int:
    """The Labels-layer value of class index ``class_index`` (painted and predicted)."""
    return int(class_index) + LABEL_OFFSET


def check_class_names(class_names: Sequence[str]) -> list[str]:
    """Validate class names: at least two, unique, non-empty; the first is the background.

    Raises
    ------
    ValueError
        With what is wrong and what to do.
    """
    names = [str(n).strip() for n in class_names]
    if len(names) < 2:
        raise ValueError(
            f"Segmentation needs at least two classes (background and one structure); got {names}. "
            "Name the classes, for example 'background, membrane'."
        )
    if any(not n for n in names):
        raise ValueError(f"Class names must not be empty; got {names}.")
    if len(set(names)) != len(names):
        raise ValueError(f"Class names must be unique; got {names}.")
    return names


def parse_class_names(text: str) -> list[str]:
    """Class names from a comma-separated string (``"background, membrane"``)."""
    return check_class_names([t for t in text.split(",") if t.strip()])


def check_painted_labels(labels: np.ndarray, image_shape: Sequence[int], class_names: Sequence[str]) -> np.ndarray:
    """Check painted labels against the tomogram and the class names.

    Parameters
    ----------
    labels : ndarray of int, shape (z, y, x)
        Painted labels (0 = not painted, 1 = background, k + 1 = class k).
    image_shape : tuple of int
        Shape (z, y, x) of the tomogram.
    class_names : sequence of str
        Class names; ``len(class_names)`` classes are allowed.

    Returns
    -------
    ndarray of int16, shape (z, y, x)
        The labels, checked.

    Raises
    ------
    ValueError
        Different shape, nothing painted, only one class painted, or values beyond the
        named classes — each with what to do.
    """
    names = check_class_names(class_names)
    labels = np.asarray(labels)
    if tuple(labels.shape) != tuple(image_shape):
        raise ValueError(
            f"The labels have shape {tuple(labels.shape)} but the tomogram has {tuple(image_shape)}: "
            "paint in a Labels layer created for this tomogram (same shape)."
        )
    if labels.dtype.kind not in "iub":
        raise ValueError(f"Labels must be integers; got {labels.dtype}.")
    values = np.unique(labels)
    if values.min() < 0:
        raise ValueError(f"Labels must not be negative; found {int(values.min())}.")
    painted = values[values > 0]
    if painted.size == 0:
        raise ValueError(
            "No voxels are painted: paint a few slices (1 = background, "
            + ", ".join(f"{label_value(i)} = {n}" for i, n in enumerate(names[1:], start=1))
            + ") and train again."
        )
    too_high = painted[painted > len(names)]
    if too_high.size:
        raise ValueError(
            f"Label values {too_high.tolist()} have no class: {len(names)} classes are named "
            f"({', '.join(f'{label_value(i)} = {n}' for i, n in enumerate(names))}). "
            "Add class names or repaint those voxels."
        )
    if painted.size < 2:
        only = names[int(painted[0]) - LABEL_OFFSET]
        raise ValueError(
            f"Only one class ({only!r}, value {int(painted[0])}) is painted: paint at least two classes, "
            "for example background (1) around a structure (2), so the network can tell them apart."
        )
    return labels.astype(np.int16, copy=False)


def painted_slices(labels: np.ndarray, axis: int = 0) -> list[int]:
    """Indices along ``axis`` of the slices that contain painted voxels."""
    other = tuple(a for a in range(labels.ndim) if a != axis)
    return [int(i) for i in np.flatnonzero(np.any(np.asarray(labels) > 0, axis=other))]


def class_lookup(
    source_names: Sequence[str], target_names: Sequence[str] = DEFAULT_CLASSES, other: str = "particle"
) -> np.ndarray:
    """Lookup table mapping source class indices to target class indices.

    Names present in ``target_names`` keep their class; ``"background"`` maps to 0; every
    other source name (for example a simulator template) maps to ``other``.
    """
    targets = list(target_names)
    if other not in targets:
        raise ValueError(f"{other!r} is not one of the target classes {targets}.")
    lut = np.zeros(len(source_names), np.int16)
    for i, name in enumerate(source_names):
        lut[i] = targets.index(name) if name in targets else targets.index(other)
    lut[[i for i, n in enumerate(source_names) if n == "background"]] = 0
    return lut


def semantic_to_classes(
    semantic: np.ndarray, source_names: Sequence[str], target_names: Sequence[str] = DEFAULT_CLASSES
) -> np.ndarray:
    """Dense class indices (int16, 0 = background) from a simulator's semantic labels."""
    return class_lookup(source_names, target_names)[np.asarray(semantic).astype(np.intp)]


def sparse_from_classes(classes: np.ndarray, slices: Sequence[int], axis: int = 0) -> np.ndarray:
    """Painted labels keeping only ``slices`` along ``axis`` of dense class indices.

    Stands in for a user who painted those slices completely (value = class + 1).
    """
    classes = np.asarray(classes)
    painted = np.zeros(classes.shape, np.int16)
    index = [slice(None)] * classes.ndim
    index[axis] = list(slices)
    painted[tuple(index)] = classes[tuple(index)] + LABEL_OFFSET
    return painted


def evenly_spaced_slices(n_slices: int, size: int, margin_fraction: float = 0.15) -> list[int]:
    """``n_slices`` slice indices spread evenly over ``size``, away from the edges."""
    lo, hi = int(size * margin_fraction), int(np.ceil(size * (1 - margin_fraction))) - 1
    return sorted({int(round(v)) for v in np.linspace(lo, max(lo, hi), n_slices)})
