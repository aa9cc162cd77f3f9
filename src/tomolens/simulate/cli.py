"""CLI: ``tomolens simulate``, ``tomolens simulate-dataset`` and ``tomolens
simulate-subtomograms``; shared PARAMS.

The same :data:`PARAMS` tuple builds the CLI options and the "Simulate" dock widget.
``tomolens simulate --domain randomised|shifted`` draws every setting from the seed
(:mod:`tomolens.simulate.domain`); only ``--size-*``, ``--seed`` and ``--maps-dir`` apply.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from tomolens.cli_args import output_folder
from tomolens.cli_progress import run_cli_job
from tomolens.params import Param, add_arguments, values_from_args
from tomolens.simulate.subtomograms import SubtomogramConfig, simulate_subtomograms
from tomolens.simulate.tomogram import MODES, POLARITIES, SimulationConfig, simulate_tomogram

PARAMS = (
    Param("templates", "all", "Comma-separated phantom names or MRC paths; 'all' = every built-in phantom."),
    Param("size_x", 128, "Tomogram width in voxels.", min=8, max=4096),
    Param("size_y", 128, "Tomogram height in voxels.", min=8, max=4096),
    Param("size_z", 64, "Slab thickness in voxels.", min=8, max=2048),
    Param("voxel_size_A", 10.0, "Voxel size in Å.", min=1.0, max=100.0, step=0.5),
    Param("n_particles", 0, "Number of particles; 0 = pack to the volume fraction instead.", min=0, max=100000),
    Param(
        "volume_fraction",
        0.2,
        "Fraction of the volume filled by particles (when n_particles is 0).",
        min=0.0,
        max=0.45,
        step=0.01,
    ),
    Param(
        "snr",
        0.05,
        "Signal-to-noise ratio var(signal)/var(noise) on the projections; 0 = no noise.",
        min=0.0,
        max=1000.0,
        step=0.01,
    ),
    Param("tilt_range_deg", 60.0, "Tilt range ± degrees.", min=1.0, max=90.0, step=1.0),
    Param("tilt_step_deg", 3.0, "Tilt step in degrees.", min=0.1, max=30.0, step=0.5),
    Param("defocus_um", 3.0, "Defocus in µm (positive = underfocus).", min=0.0, max=20.0, step=0.1),
    Param("n_membranes", 0, "Number of vesicles (lipid bilayer shells).", min=0, max=100),
    Param("n_filaments", 0, "Number of filaments (microtubule-like tubes and actin-like rods).", min=0, max=100),
    Param("seed", 0, "Random seed: the same seed gives the same tomogram.", min=0, max=2**31 - 1),
    Param(
        "polarity",
        "bright",
        "Contrast of dense matter in the tomogram: bright (inverted) or dark (raw cryo-ET).",
        choices=POLARITIES,
    ),
    Param(
        "mode",
        "tiltseries",
        "Image formation: tilt series + WBP, or the fast 3D Fourier filter.",
        choices=MODES,
        advanced=True,
    ),
    Param("voltage_kv", 300.0, "Acceleration voltage in kV.", min=60.0, max=1000.0, advanced=True),
    Param("cs_mm", 2.7, "Spherical aberration in mm.", min=0.0, max=10.0, advanced=True),
    Param("amplitude_contrast", 0.07, "Amplitude contrast fraction.", min=0.0, max=1.0, step=0.01, advanced=True),
    Param("b_factor_A2", 0.0, "B-factor in Å² (envelope exp(-B k²/4)).", min=0.0, max=10000.0, advanced=True),
)

SUBTOMO_PARAMS = (
    Param("templates", "all", "Comma-separated phantom names or MRC paths; 'all' = every built-in phantom."),
    Param("n_per_class", 100, "Subtomograms per class.", min=3, max=100000),
    Param("box", 32, "Box size in voxels.", min=8, max=256),
    Param("voxel_size_A", 10.0, "Voxel size in Å.", min=1.0, max=100.0),
    Param("snrs", "0.03,0.05,inf", "Comma-separated SNRs (inf = no noise); one dataset folder each."),
    Param(
        "jitter_A",
        20.0,
        "Maximum random shift of the particle from the box centre, per axis, in Å.",
        min=0.0,
        max=1000.0,
    ),
    Param("crowding", True, "Pack random neighbours around the particle."),
    Param("crowding_fraction", 0.2, "Volume fraction of the neighbours.", min=0.0, max=0.4),
    Param("tilt_range_deg", 60.0, "Tilt range ± degrees (missing wedge).", min=1.0, max=90.0),
    Param("defocus_um", 3.0, "Defocus in µm.", min=0.0, max=20.0),
    Param("seed", 0, "Random seed.", min=0, max=2**31 - 1),
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parse_templates(text: str | None) -> list[str] | None:
    """'all' or '' -> None (all phantoms); otherwise a list of names/paths."""
    if text is None or str(text).strip().lower() in ("", "all"):
        return None
    return [t.strip() for t in str(text).split(",") if t.strip()]


def config_from_values(values: dict[str, Any]) -> SimulationConfig:
    """A :class:`SimulationConfig` from PARAMS values (CLI or widget)."""
    snr = float(values["snr"])
    n = int(values["n_particles"])
    return SimulationConfig(
        shape_zyx=(int(values["size_z"]), int(values["size_y"]), int(values["size_x"])),
        voxel_size_A=float(values["voxel_size_A"]),
        templates=parse_templates(values["templates"]),
        n_particles=n if n > 0 else None,
        volume_fraction=float(values["volume_fraction"]),
        snr=math.inf if snr <= 0 else snr,
        tilt_range_deg=float(values["tilt_range_deg"]),
        tilt_step_deg=float(values["tilt_step_deg"]),
        defocus_um=float(values["defocus_um"]),
        voltage_kv=float(values["voltage_kv"]),
        cs_mm=float(values["cs_mm"]),
        amplitude_contrast=float(values["amplitude_contrast"]),
        b_factor_A2=float(values["b_factor_A2"]),
        n_membranes=int(values["n_membranes"]),
        n_filaments=int(values["n_filaments"]),
        mode=str(values["mode"]),
        seed=int(values["seed"]),
        polarity=str(values.get("polarity", "bright")),
    )


def _parse_snrs(text: str) -> tuple[float, ...]:
    try:
        return tuple(math.inf if s.strip().lower() == "inf" else float(s) for s in str(text).split(","))
    except ValueError as err:
        raise ValueError(f"snrs must be comma-separated numbers or 'inf', got {text!r}.") from err


#: PARAMS that apply with ``--domain`` (everything else is drawn from the seed).
DOMAIN_PARAMS = ("size_x", "size_y", "size_z", "seed")


def _domain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--maps-dir",
        default="auto",
        help="folder of maps_10A/*.mrc for domain mode; 'auto' = $TOMOLENS_MAPS_DIR or ../shared/data/"
        "maps_10A if present; 'none' = pseudo-proteins only",
    )


def _maps_dir(text: str):
    return None if str(text).lower() == "none" else text


def _simulate_domain(args: argparse.Namespace, values: dict) -> int:
    from tomolens.simulate.domain_dataset import domain_config, domain_metadata
    from tomolens.simulate.domain_scene import simulate_domain_tomogram

    changed = [p.name for p in PARAMS if p.name not in DOMAIN_PARAMS and values[p.name] != p.default]
    if changed:
        print(
            f"tomolens simulate: error: --domain draws every setting from the seed; do not also give "
            f"{', '.join('--' + c.replace('_', '-') for c in changed)}.",
            file=sys.stderr,
        )
        return 2
    shape = (int(values["size_z"]), int(values["size_y"]), int(values["size_x"]))
    cfg = domain_config(args.domain, int(values["seed"]), shape, _maps_dir(args.maps_dir))
    sim = run_cli_job(simulate_domain_tomogram(cfg))
    paths = sim.save(args.out, domain_metadata(args.domain, cfg))
    print(
        f"{args.domain} domain tomogram {shape} at {cfg.voxel_size_A} Å ({cfg.polarity}, {cfg.reconstruction}): "
        f"{len(sim.particles)} particles, {len(sim.structures)} structures"
    )
    for name, path in paths.items():
        print(f"{name:15s} {path}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    values = values_from_args(args, PARAMS)
    if args.domain:
        return _simulate_domain(args, values)
    cfg = config_from_values(values)
    sim = run_cli_job(simulate_tomogram(cfg))
    paths = sim.save(args.out)
    print(
        f"{len(sim.particles)} particles, volume fraction {sim.volume_fraction:.3f}, "
        f"measured SNR {sim.measured_snr:.4g} (on the {sim.snr_domain})"
    )
    for name, path in paths.items():
        print(f"{name:15s} {path}")
    return 0


def _simulate_dataset(args: argparse.Namespace) -> int:
    from tomolens.simulate.domain_dataset import write_domain_dataset

    shape = (args.size_z, args.size_y, args.size_x)
    path = run_cli_job(
        write_domain_dataset(args.out, args.n, args.first_seed, args.domain, shape, _maps_dir(args.maps_dir))
    )
    print(f"{args.n} {args.domain} tomograms, manifest {path}")
    return 0


def _simulate_subtomograms(args: argparse.Namespace) -> int:
    v = values_from_args(args, SUBTOMO_PARAMS)
    cfg = SubtomogramConfig(
        templates=parse_templates(v["templates"]),
        n_per_class=int(v["n_per_class"]),
        box=int(v["box"]),
        voxel_size_A=float(v["voxel_size_A"]),
        snrs=_parse_snrs(v["snrs"]),
        jitter_A=float(v["jitter_A"]),
        crowding=bool(v["crowding"]),
        crowding_fraction=float(v["crowding_fraction"]),
        tilt_range_deg=float(v["tilt_range_deg"]),
        defocus_um=float(v["defocus_um"]),
        seed=int(v["seed"]),
    )
    paths = run_cli_job(simulate_subtomograms(cfg, args.out))
    for name, path in paths.items():
        print(f"{name:15s} {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="simulate a crowded tomogram with ground-truth labels and particles")
    p.add_argument("--out", type=output_folder, required=True, help="output folder")
    p.add_argument(
        "--domain",
        choices=("randomised", "shifted"),
        default=None,
        help="domain-randomised training tomogram, or a shifted-domain test tomogram (settings outside "
        "the training ranges); every setting is drawn from --seed",
    )
    _domain_arguments(p)
    add_arguments(p, PARAMS)
    p.set_defaults(func=_simulate)

    p = sub.add_parser(
        "simulate-dataset", help="write N domain-randomised (or shifted-domain) tomograms and a manifest.json"
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
    p.add_argument(
        "--domain",
        choices=("randomised", "shifted"),
        default="randomised",
        help="training set (randomised) or test set (shifted); use disjoint seeds for the two",
    )
    p.add_argument("--n", type=_positive_int, required=True, help="number of tomograms")
    p.add_argument("--first-seed", type=int, default=0, help="seed of the first tomogram; the others follow")
    for axis, default in (("z", 64), ("y", 256), ("x", 256)):
        p.add_argument(f"--size-{axis}", type=_positive_int, default=default, help=f"tomogram size along {axis}")
    _domain_arguments(p)
    p.set_defaults(func=_simulate_dataset)

    p = sub.add_parser("simulate-subtomograms", help="simulate a labelled subtomogram dataset (train/val/test per SNR)")
    p.add_argument("--out", type=output_folder, required=True, help="output folder")
    add_arguments(p, SUBTOMO_PARAMS)
    p.set_defaults(func=_simulate_subtomograms)
