"""Simulator speed and SNR accuracy.

1. A 512×512×200 tomogram at 10 Å with ≥ 1,000 particles (all built-in phantoms), two
   vesicles and two filaments, a ±60°/3° tilt series with CTF and noise at SNR 0.05,
   reconstructed by weighted back-projection: wall time per stage, peak resident memory,
   and the measured SNR (on the projections) against the requested one.
2. A subtomogram dataset (10 phantom classes × N, 32³, SNR 0.03/0.05/∞): time per
   subtomogram.

Writes ``benchmarks/results/simulate.json`` and prints a table.  Usage::

    python benchmarks/bench_simulate.py [--shape 200 512 512] [--n-particles 1000] [--machine TEXT]

Run with ``taskset -c 0,1`` (and OMP_NUM_THREADS=2) to pin it to two cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from tomolens import __version__
from tomolens.io import atomic_path
from tomolens.jobs import run_job
from tomolens.simulate import (
    SimulationConfig,
    SubtomogramConfig,
    builtin_template_names,
    simulate_subtomograms,
    simulate_tomogram,
)

MACHINE = "2-core CPU, no GPU (shared with other jobs)"


class StageTimer:
    """Progress callback that adds up wall time per stage (the message before the first ':')."""

    def __init__(self) -> None:
        self.t0 = self.last = time.perf_counter()
        self.stage = "start"
        self.times: dict[str, float] = {}

    def __call__(self, progress) -> None:
        now = time.perf_counter()
        self.times[self.stage] = self.times.get(self.stage, 0.0) + now - self.last
        self.last = now
        self.stage = progress.message.split(":")[0]


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (s); less sensitive than wall time to
    other jobs sharing the cores."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(200, 512, 512), metavar=("Z", "Y", "X"))
    parser.add_argument("--n-particles", type=int, default=1000)
    parser.add_argument("--snr", type=float, default=0.05)
    parser.add_argument("--subtomos-per-class", type=int, default=20)
    parser.add_argument("--machine", default=MACHINE)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "simulate.json")
    args = parser.parse_args()

    cfg = SimulationConfig(
        shape_zyx=tuple(args.shape),
        voxel_size_A=10.0,
        n_particles=args.n_particles,
        snr=args.snr,
        tilt_range_deg=60.0,
        tilt_step_deg=3.0,
        n_membranes=2,
        n_filaments=2,
        mode="tiltseries",
        seed=0,
    )
    timer = StageTimer()
    load_before = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), cpu_seconds()
    sim = run_job(simulate_tomogram(cfg), on_progress=timer)
    total, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    load_after = os.getloadavg()[0]
    timer(type("P", (), {"message": "end"})())
    tomo = {
        "shape_zyx": list(args.shape),
        "voxel_size_A": 10.0,
        "n_particles": len(sim.particles),
        "n_templates": len(builtin_template_names()),
        "n_membranes": 2,
        "n_filaments": 2,
        "volume_fraction": round(sim.volume_fraction, 4),
        "tilts": len(sim.tilt_angles_deg),
        "tilt_range_deg": 60.0,
        "tilt_step_deg": 3.0,
        "wall_s": round(total, 2),
        "cpu_s": round(cpu, 2),
        "load_average_1min": [round(load_before, 1), round(load_after, 1)],
        "stages_s": {k: round(v, 2) for k, v in timer.times.items() if k not in ("start", "end")},
        "peak_rss_gib": round(peak_rss_gib(), 2),
        "snr_requested": args.snr,
        "snr_measured": round(sim.measured_snr, 5),
        "snr_domain": sim.snr_domain,
        "snr_error_pct": round(100 * abs(sim.measured_snr - args.snr) / args.snr, 3),
    }
    del sim

    n_cls = 10
    scfg = SubtomogramConfig(
        templates=builtin_template_names()[:n_cls],
        n_per_class=args.subtomos_per_class,
        box=32,
        snrs=(0.03, 0.05, math.inf),
        seed=0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = run_job(simulate_subtomograms(scfg, tmp))
        sub_wall = time.perf_counter() - t0
        meta = json.loads(Path(paths["dataset"]).read_text())
    n_sub = n_cls * args.subtomos_per_class
    subtomos = {
        "classes": n_cls,
        "per_class": args.subtomos_per_class,
        "box": 32,
        "snrs": meta["snr_folders"],
        "wall_s": round(sub_wall, 2),
        "ms_per_subtomogram_all_snrs": round(1000 * sub_wall / n_sub, 1),
        "measured_snr": meta["measured_snr"],
    }

    result = {
        "benchmark": "simulate",
        "tomolens": __version__,
        "machine": args.machine,
        "cpu_count_visible": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "tomogram": tomo,
        "subtomograms": subtomos,
        "command": "python benchmarks/bench_simulate.py "
        + " ".join(["--shape", *map(str, args.shape), "--n-particles", str(args.n_particles)]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    print(f"machine: {args.machine} ({result['cpu_count_visible']} cores visible)")
    print(
        "| tomogram (z,y,x) | particles | fraction | tilts | wall (s) | CPU (s) | load | peak RSS (GiB) "
        "| SNR asked | SNR measured |"
    )
    print(
        f"| {tuple(args.shape)} | {tomo['n_particles']} | {tomo['volume_fraction']:.3f} | {tomo['tilts']} | "
        f"{tomo['wall_s']:.1f} | {tomo['cpu_s']:.1f} | {load_before:.0f} | {tomo['peak_rss_gib']:.2f} | {args.snr} "
        f"| {tomo['snr_measured']:.4f} |"
    )
    print("stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in tomo["stages_s"].items()))
    print(f"subtomograms: {n_sub} × 3 SNRs in {sub_wall:.1f} s = {subtomos['ms_per_subtomogram_all_snrs']} ms each")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
