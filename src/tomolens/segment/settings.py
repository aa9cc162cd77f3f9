"""Settings of segmentation training, shared by the Segment widget's Train box, ``tomolens train
--task segment``, batch presets and the benchmark: the parameter tables, the widget's starting
values, and the small rules that turn values into :func:`tomolens.segment.train.train_segmenter`
arguments (starting model, 2D patch size, what validates).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tomolens.models.cli import engine_param
from tomolens.params import Param
from tomolens.segment.predict import DEFAULT_MODEL, model_kind_of

#: Segmentation-only settings: ``tomolens train --task segment`` options and widget controls.
SEGMENT_TRAIN_PARAMS = (
    Param(
        "segment_model",
        "2d",
        "2d: slice U-Net trained on painted slices (the default: painted labels are "
        "sparse z-slices, in the widget and in label files); 3d: volumetric U-Net, for complete labels",
        choices=("2d", "3d"),
    ),
    Param(
        "segment_dice_weight",
        1.0,
        "Weight of the soft Dice term added to cross-entropy (0 = none)",
        min=0.0,
        advanced=True,
    ),
    Param(
        "segment_slice_axes",
        "z",
        "2D only: learn from slices along z, or also from the orthogonal slices through the painted voxels (zyx)",
        choices=("z", "zyx"),
        advanced=True,
    ),
    Param(
        "segment_context",
        4,
        "2D only: neighbouring slices on each side that the slice U-Net reads with "
        "each slice, as extra input channels (a 2.5D slab of 2n + 1 slices; they average the noise of "
        "low-SNR tomograms; 0 = the slice alone)",
        min=0,
        max=16,
        advanced=True,
    ),
    Param(
        "segment_start_from",
        "none",
        "Fine-tune this model (a shipped name such as segment_default, or a .pt "
        "file; kind, width, depth and context are then the model's; for classes other than the model's it gets a "
        "new output layer: a class named like one of its classes starts from it, the others are learnt from the "
        "painting), or none to train a new network",
        type=str,
    ),
    Param(
        "segment_hold_out",
        "auto",
        "Without separate validation data: 'strip' holds back the last quarter "
        "(along y) of every painted slice to choose the best epoch and stop early; 'none' trains on every "
        "painted voxel for the whole time/epochs and keeps the last (averaged) weights; 'auto' = none for a "
        "new network, strip when fine-tuning (the starting model is kept unless the painting beats it)",
        choices=("auto", "strip", "none"),
        advanced=True,
    ),
)

#: ``segment_start_from`` value meaning "a new network".
NEW_NETWORK = "none"

#: Settings of segmentation training, shared by the Segment widget's Train box and
#: ``tomolens train --task segment``: the segment-only options above plus the engine's
#: options with the engine's names and defaults (epochs 30, 40 steps per epoch, patch 32,
#: learning rate 1e-3; 2D models train on patches of at least 96, see :func:`patch_for`).
TRAIN_PARAMS = (
    SEGMENT_TRAIN_PARAMS[4],
    SEGMENT_TRAIN_PARAMS[0],
    engine_param("epochs"),
    engine_param(
        "max_minutes",
        help="Stop training after this many minutes, keeping the best epoch (the last when "
        "nothing is held out; 0 = no limit)",
    ),
    engine_param("steps_per_epoch"),
    engine_param(
        "patch",
        help="Patch edge in voxels (divisible by 2**depth; 3D patches are cubes; 2D models use at least 96)",
        advanced=True,
    ),
    engine_param("batch_size", advanced=True),
    engine_param("base_channels", advanced=True),
    engine_param("depth", advanced=True),
    engine_param("learning_rate", advanced=True),
    SEGMENT_TRAIN_PARAMS[1],
    engine_param("patience", advanced=True),
    SEGMENT_TRAIN_PARAMS[2],
    SEGMENT_TRAIN_PARAMS[3],
    SEGMENT_TRAIN_PARAMS[5],
    engine_param("seed", advanced=True),
    engine_param("device", advanced=True),
    engine_param("threads", advanced=True),
    engine_param("cpu_precision", advanced=True),
)

#: Where the Segment widget's Train box starts from other values than ``tomolens train``: a
#: time limit, so that Train with the widget's defaults returns within minutes on a laptop
#: CPU (the epoch kept is the best so far, or the last when nothing is held out), and enough
#: epochs and patience to use those minutes (a few painted slices kept improving for 5 minutes;
#: 30 epochs with patience 6 stopped after 15–50 epochs, well before), with a network one
#: level deeper than the CLI's default, a
#: learning rate of 2e-3 and batches of 8 (chosen on validation tomograms 7100–7101: from 5
#: painted slices, membrane / filament Dice 0.69 / 0.54 and 0.63 / 0.42 with the engine's depth
#: 2, 1e-3 and 4 → 0.76 / 0.65 and 0.75 / 0.48; later, batches of 4 with 96-voxel patches
#: gave 0.85 / 0.64 on 7100 against 0.85 / 0.65 with 8).  Depth applies to new networks only; a
#: fine-tuned model keeps its own.  The widget's ``segment_start_from`` starts at the shipped
#: default model whatever the class names (:data:`WIDGET_START_VALUES`; other classes than the
#: model's get a new output layer, :mod:`tomolens.segment.start`).
WIDGET_TRAIN_VALUES = {
    "max_minutes": 5.0,
    "epochs": 200,
    "patience": 30,
    "depth": 3,
    "learning_rate": 2e-3,
    "batch_size": 8,
}

#: What the Train box shows when the widget opens: :data:`WIDGET_TRAIN_VALUES` and fine-tuning the
#: shipped default model.
WIDGET_START_VALUES = {**WIDGET_TRAIN_VALUES, "segment_start_from": DEFAULT_MODEL}

#: Parameter names of :data:`TRAIN_PARAMS` that :func:`train_segmenter` calls otherwise.
_KWARG_NAMES = {
    "segment_model": "model_kind",
    "segment_dice_weight": "dice_weight",
    "segment_slice_axes": "slice_axes",
    "segment_start_from": "start_from",
    "segment_context": "context",
    "segment_hold_out": "hold_out",
}


def start_model(value: str | Path | None) -> str | None:
    """The model to fine-tune named by a ``segment_start_from`` value, None for a new network."""
    text = str(value or "").strip()
    return None if text.lower() in ("", NEW_NETWORK) else text


def trained_kind(model_kind: str, start_from: str | Path | None) -> str:
    """The kind ("2d"/"3d") training will produce: the starting model's, else ``model_kind``.

    An unreadable starting model returns ``model_kind``; :func:`train_segmenter` then
    reports the problem.
    """
    if not start_model(start_from):
        return model_kind
    from tomolens.models.card import read_card, resolve_model

    try:
        return model_kind_of(read_card(resolve_model(start_model(start_from))))
    except (ValueError, OSError):
        return model_kind


#: Smallest training patch edge of a slice network: 2D patches are cheap and need context
#: (from 5 painted slices of validation tomograms 7100–7101 in the Train box's 5 minutes,
#: filament / membrane Dice 0.60 / 0.83 and 0.59 / 0.83 with 64-voxel patches, 0.65 / 0.85 and
#: 0.60 / 0.87 with 96; 128 with a deeper network: 0.63 / 0.83 on 7100).
MIN_SLICE_PATCH = 96


def patch_for(kind: str, patch: int) -> int:
    """The training patch edge: 2D slice patches are at least :data:`MIN_SLICE_PATCH`."""
    return max(int(patch), MIN_SLICE_PATCH) if kind == "2d" else int(patch)


def train_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :func:`train_segmenter` from :data:`TRAIN_PARAMS` values.

    Renames the segment-only settings and applies the 2D patch rule (2D slice patches
    are at least :data:`MIN_SLICE_PATCH` voxels wide, as they are cheap and need context).
    """
    kwargs = {_KWARG_NAMES.get(k, k): v for k, v in values.items()}
    if "start_from" in kwargs:
        kwargs["start_from"] = start_model(kwargs["start_from"])
    if "max_minutes" in kwargs:
        kwargs["max_minutes"] = kwargs["max_minutes"] or None
    if "patch" in kwargs:
        kwargs["patch"] = patch_for(
            trained_kind(kwargs.get("model_kind", "2d"), kwargs.get("start_from")), kwargs["patch"]
        )
    return kwargs


def resolve_hold_out(hold_out: str, fine_tuning: bool) -> str:
    """What validates training without separate validation data: "strip" or "none".

    "auto" is "none" for a new network (a few painted slices are too few to give a quarter
    away: on validation tomograms 7100–7101, 5 painted slices, filament Dice 0.56 / 0.50 with
    the strip held back and 0.60 / 0.59 trained on all of it) and "strip" when fine-tuning (the
    starting weights are kept unless an epoch beats them on held-back voxels).
    """
    if hold_out not in ("auto", "strip", "none"):
        raise ValueError(f"hold_out must be 'auto', 'strip' or 'none'; got {hold_out!r}.")
    if hold_out == "auto":
        return "strip" if fine_tuning else "none"
    return hold_out
