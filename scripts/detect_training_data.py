"""Write the simulated tomograms the shipped detection model ``detect_default`` trains on.

``python scripts/detect_training_data.py OUT_DIR --seeds 700-719`` writes ``tSEED.mrc``
(tomogram) and ``lSEED.mrc`` (particle instance labels) for every seed: 64×128×128 voxels
of 10 Å, all 13 built-in phantoms, tilt series + WBP.  Even seeds are "cell-like" (one
vesicle, two filaments, volume fraction 0.15, like the sample data), odd seeds bare
(volume fraction 0.2); the SNR cycles 0.03, 0.05, 0.1, ∞ every two seeds.  The labels keep
particles only (membrane and filament voxels are 0), so the detector learns vesicles and
filaments as background.  Then train as recorded in the model card
(``tomolens train --task detect --tomograms t700.mrc … --labels l700.mrc … --bin 2 …``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from tomolens.io.mrc import write_mrc
from tomolens.jobs import run_job
from tomolens.simulate.tomogram import SimulationConfig, simulate_tomogram

SNRS = (0.03, 0.05, 0.1, math.inf)
#: Settings cycle with the seed's offset from this one, so any seed range reproduces the same files.
FIRST_SEED = 700


def config_for(seed: int) -> SimulationConfig:
    """The simulation settings of one training seed (see the module docstring)."""
    i = seed - FIRST_SEED
    cell = i % 2 == 0
    return SimulationConfig(
        shape_zyx=(64, 128, 128),
        voxel_size_A=10.0,
        volume_fraction=0.15 if cell else 0.2,
        snr=SNRS[(i // 2) % 4],
        n_membranes=1 if cell else 0,
        n_filaments=2 if cell else 0,
        seed=seed,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--seeds", default="700-719", help="first-last seed (inclusive), or one seed")
    args = parser.parse_args(argv)
    parts = [int(v) for v in args.seeds.split("-")]
    first, last = parts[0], parts[-1]
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in range(first, last + 1):
        cfg = config_for(seed)
        sim = run_job(simulate_tomogram(cfg))
        particle_classes = [k for k, n in enumerate(sim.class_names) if n not in ("background", "membrane", "filament")]
        labels = np.where(np.isin(sim.semantic, particle_classes), sim.instances, 0).astype(np.int32)
        write_mrc(args.out / f"t{seed}.mrc", sim.tomogram, cfg.voxel_size_A)
        write_mrc(args.out / f"l{seed}.mrc", labels, cfg.voxel_size_A, is_labels=True)
        print(
            f"seed {seed}: SNR {cfg.snr:g}, {'cell-like' if cfg.n_membranes else 'bare'}, "
            f"{len(np.unique(labels)) - 1} particles",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
