"""``tomolens train --task TASK …``: one training command for every trainable task.

How a task plugs in
-------------------
``TRAIN_TASKS`` maps a task name to a module ``tomolens.<task>.train`` that defines

- ``register_train_args(group)`` *(optional)* — add the task's own options to an
  ``argparse`` argument group.  Option names must be unique across tasks, so prefix
  task-only options with the task (``--detect-…``, ``--segment-…``);
- ``run_train(args) -> int`` — build the network and targets, call
  :func:`tomolens.models.training.train_model`, save the model with its card, print a
  summary and return 0.

The engine options below (data, patch size, epochs, device, output…) are shared by
every task and defined here once; :func:`training_volumes` turns the data options into
(tomogram, labels, voxel size) triples, from MRC files or from the simulator, so a task
only converts labels into its targets.  A task module that does not exist yet is left
out of ``--task``'s choices; one that exists but fails to import raises.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
from collections.abc import Sequence

import numpy as np

from tomolens.params import Param, add_arguments

log = logging.getLogger(__name__)

#: task name → module with ``run_train(args)`` (and optionally ``register_train_args``).
TRAIN_TASKS = {
    "detect": "tomolens.detect.train",
    "segment": "tomolens.segment.train",
    "classify": "tomolens.classify.train",
    "embed": "tomolens.embed.train",
}

TRAIN_PARAMS = (
    Param("out", "model", "Output model path (NAME.pt with NAME.json card beside it)", type=str),
    Param("epochs", 30, "Maximum training epochs", min=1),
    Param("steps_per_epoch", 40, "Optimiser steps per epoch", min=1),
    Param("batch_size", 4, "Patches per optimiser step", min=1),
    Param("patch", 32, "Cubic patch edge in voxels (divisible by 2**depth)", min=8),
    Param("learning_rate", 1e-3, "AdamW learning rate", min=1e-6, max=1.0),
    Param("patience", 6, "Early stopping: epochs without improvement of the smoothed validation loss", min=1),
    Param("min_epochs", 0, "Early stopping: never stop before this many epochs", min=0),
    Param(
        "stop_window",
        3,
        "Early stopping: the validation value that must improve is the median of the last N "
        "epochs' (1 = the raw value; 3 or 5 ride out a noisy epoch)",
        min=1,
    ),
    Param("val_patches", 32, "Validation patches (drawn once from the validation volumes)", min=1),
    Param("base_channels", 16, "U-Net width of the first level", min=2),
    Param("depth", 2, "U-Net down/up blocks", min=1, max=5),
    Param("seed", 0, "Random seed of sampling, augmentation and initialisation"),
    Param("device", "auto", "Torch device", choices=("auto", "cpu", "cuda", "mps")),
    Param("threads", 0, "CPU threads for torch (0 = all cores but one)", min=0),
    Param(
        "cpu_precision",
        "auto",
        "Precision of training forward passes on the CPU: auto = bfloat16 where the CPU "
        "has bfloat16 instructions (AVX512-BF16/AMX; 1.6-1.9x faster there), else float32 (detection and "
        "segmentation; classification trains in float32)",
        choices=("auto", "float32", "bfloat16"),
    ),
    Param(
        "max_minutes",
        0.0,
        "Stop after this many minutes (0 = no limit). The result then depends on the "
        "machine's load; the budget that makes a run reproducible is epochs x steps",
        min=0.0,
    ),
    Param("checkpoint", "", "Checkpoint file written every epoch (default: OUT.ckpt)", type=str),
    Param("resume", False, "Continue from the checkpoint"),
    Param(
        "bin",
        1,
        "Train at bin × the voxel size (anti-aliased resampling; the card records the "
        "coarser size; inference rescales inputs to it)",
        min=1,
        max=8,
    ),
    Param("voxel_size_A", 0.0, "Voxel size of the training files in Å (0 = from the MRC header)", min=0.0),
    Param("sim_train", 0, "Simulated training tomograms (instead of / besides files)", min=0),
    Param("sim_val", 0, "Simulated validation tomograms", min=0),
    Param("sim_seed", 1000, "Seed of the first simulated tomogram (validation seeds follow)"),
    Param("sim_shape", "64,128,128", "Simulated tomogram shape z,y,x in voxels", type=str),
    Param("sim_snr", "0.03,0.05,0.1,inf", "Simulated SNRs, cycled over tomograms", type=str),
    Param("sim_volume_fraction", 0.2, "Simulated crowding (volume fraction of particles)", min=0.0, max=0.6),
    Param("sim_voxel_size_A", 10.0, "Simulated voxel size in Å", min=1.0),
)


def engine_param(name: str, **changes) -> Param:
    """One of :data:`TRAIN_PARAMS` for a task's shared Param tuple.

    Name and default must stay the engine's (the CLI has one option per name for every
    task); ``changes`` may set e.g. ``help`` or ``advanced`` for the task's widget.
    """
    from dataclasses import replace

    if {"name", "default"} & set(changes):
        raise ValueError(f"engine_param({name!r}): the name and default of an engine option cannot change.")
    return replace(next(p for p in TRAIN_PARAMS if p.name == name), **changes)


def available_tasks() -> list[str]:
    """Task names whose training module exists in this installation."""
    out = []
    for name, module in TRAIN_TASKS.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # the task's package does not exist yet
            found = False
        if found:
            out.append(name)
    return out


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``tomolens train`` to the top-level CLI."""
    tasks = available_tasks()
    p = sub.add_parser(
        "train",
        help="train a model (--task " + "|".join(tasks) + ") and write it with its model card",
        description=__doc__.split("\n\n")[0].replace("``", ""),
    )
    p.add_argument("--task", required=True, choices=tasks, help="what the model is for")
    p.add_argument("--tomograms", nargs="*", default=[], metavar="MRC", help="training tomograms")
    p.add_argument(
        "--labels",
        nargs="*",
        default=[],
        metavar="MRC",
        help="label volumes paired with --tomograms (instances for detect)",
    )
    p.add_argument("--val-tomograms", nargs="*", default=[], metavar="MRC", help="validation tomograms")
    p.add_argument("--val-labels", nargs="*", default=[], metavar="MRC", help="validation labels")
    add_arguments(p, TRAIN_PARAMS)
    for name in tasks:
        module = importlib.import_module(TRAIN_TASKS[name])
        if hasattr(module, "register_train_args"):
            module.register_train_args(p.add_argument_group(name))
    p.set_defaults(func=_dispatch)


def _dispatch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tomolens.io.atomic import check_writable_target

    for written in (Path(args.out).with_suffix(".pt"), Path(args.out).with_suffix(".json")):
        check_writable_target(written)  # before training, not after it
    if getattr(args, "points", None) and args.task != "detect":
        raise ValueError(f"--points trains a detector: use --task detect (not {args.task}).")
    module = importlib.import_module(TRAIN_TASKS[args.task])
    return int(module.run_train(args) or 0)


def command_line(args: argparse.Namespace | Sequence[str] | None) -> str:
    """The command as typed (for model cards).

    Parameters
    ----------
    args : argparse.Namespace or sequence of str or None
        The namespace parsed by :func:`tomolens.cli.main` (which records the argument
        list it parsed, so an in-process ``main([...])`` is reported right), an argument
        list, or None for ``sys.argv``.
    """
    import shlex
    import sys

    from tomolens.cli import ARGV_ATTR

    if isinstance(args, argparse.Namespace):
        args = getattr(args, ARGV_ATTR, None)
    argv = sys.argv[1:] if args is None else args
    return "tomolens " + " ".join(shlex.quote(str(a)) for a in argv)


def _parse_floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise ValueError(f"Expected comma-separated numbers, got {text!r}.") from err


def simulated_volumes(
    args: argparse.Namespace, count: int, first_seed: int, labels_kind: str, keep_simulations: bool = False
):
    """``count`` simulated (tomogram, labels, voxel size) triples with consecutive seeds.

    With ``keep_simulations`` the simulator's result objects are returned instead (with
    their ground-truth particle tables, for evaluation).
    """
    from tomolens.jobs import run_job
    from tomolens.simulate import SimulationConfig, simulate_tomogram

    shape = tuple(int(v) for v in _parse_floats(args.sim_shape))
    if len(shape) != 3:
        raise ValueError(f"--sim-shape needs three numbers z,y,x; got {args.sim_shape!r}.")
    snrs = _parse_floats(args.sim_snr)
    out = []
    for i in range(count):
        seed = first_seed + i
        snr = snrs[i % len(snrs)]
        cfg = SimulationConfig(
            shape_zyx=shape,
            voxel_size_A=args.sim_voxel_size_A,
            volume_fraction=args.sim_volume_fraction,
            snr=snr,
            seed=seed,
        )
        log.info("simulating tomogram seed %d, SNR %s", seed, snr)
        sim = run_job(simulate_tomogram(cfg))
        if keep_simulations:
            out.append(sim)
            continue
        out.append((np.asarray(sim.tomogram, np.float32), np.asarray(getattr(sim, labels_kind)), sim.voxel_size_A))
    return out


def _file_volumes(tomos: Sequence[str], labels: Sequence[str], voxel_size_A: float):
    from tomolens.io.checks import tomogram_voxel_size
    from tomolens.io.mrc import read_mrc

    if len(tomos) != len(labels):
        raise ValueError(f"Give one label file per tomogram: {len(tomos)} tomograms, {len(labels)} label files.")
    out = []
    for t, lab in zip(tomos, labels):
        vol, lab_vol = read_mrc(t), read_mrc(lab)
        if vol.data.shape != lab_vol.data.shape:
            raise ValueError(f"{lab} has shape {lab_vol.data.shape}, but {t} has {vol.data.shape}.")
        vs = tomogram_voxel_size(voxel_size_A, vol.voxel_size_A, t)
        out.append((np.asarray(vol.data, np.float32), np.asarray(lab_vol.data), float(vs)))
    return out


def training_volumes(args: argparse.Namespace, labels_kind: str = "instances", require_val: bool = True):
    """(train, val) lists of (tomogram zyx float32, labels zyx, voxel size Å) from the options.

    Simulated validation tomograms use the seeds right after the training ones.  With
    ``require_val`` False, validation data may be absent (segmentation then validates as its
    ``--segment-hold-out`` says).
    """
    train = _file_volumes(args.tomograms, args.labels, args.voxel_size_A)
    val = _file_volumes(args.val_tomograms, args.val_labels, args.voxel_size_A)
    if args.sim_train:
        train += simulated_volumes(args, args.sim_train, args.sim_seed, labels_kind)
    if args.sim_val:
        val += simulated_volumes(args, args.sim_val, args.sim_seed + args.sim_train, labels_kind)
    if not train:
        raise ValueError("No training data: give --tomograms/--labels or --sim-train N.")
    if not val and require_val:
        raise ValueError("No validation data: give --val-tomograms/--val-labels or --sim-val N.")
    return train, val


def bin_volumes(volumes, factor: int):
    """(tomogram, labels, voxel size) triples resampled to ``factor`` × coarser voxels.

    Tomograms go through :func:`tomolens.models.tiling.rescale_volume` — the same
    resampling inference applies — and labels nearest-neighbour onto the same grid.
    """
    from tomolens.models.tiling import rescale_labels, rescale_volume

    if factor == 1:
        return list(volumes)
    out = []
    for image, labels, vs in volumes:
        small = rescale_volume(image, 1.0 / factor)
        out.append((small, rescale_labels(labels, small.shape), vs * factor))
    return out


def train_config(args: argparse.Namespace, device: str):
    """A :class:`TrainConfig` from the engine options."""
    from pathlib import Path

    from tomolens.models.training import TrainConfig

    return TrainConfig(
        patch_size=(args.patch,) * 3,
        batch_size=args.batch_size,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        val_patches=args.val_patches,
        learning_rate=args.learning_rate,
        patience=args.patience,
        min_epochs=args.min_epochs,
        stop_window=args.stop_window,
        seed=args.seed,
        device=device,
        checkpoint=args.checkpoint or str(Path(args.out).with_suffix(".ckpt")),
        resume=args.resume,
        max_minutes=args.max_minutes or None,
        cpu_bf16=cpu_bf16(args.cpu_precision),
    )


def cpu_bf16(cpu_precision: str) -> bool | None:
    """:attr:`TrainConfig.cpu_bf16` of a ``cpu_precision`` setting ("auto", "float32" or "bfloat16")."""
    if cpu_precision not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"cpu_precision must be 'auto', 'float32' or 'bfloat16'; got {cpu_precision!r}.")
    return None if cpu_precision == "auto" else cpu_precision == "bfloat16"
