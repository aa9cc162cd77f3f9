"""Regenerate sample_data/ bit for bit from tomolens's own simulator.

    python sample_data/make_sample_data.py            # rewrite the files here
    python sample_data/make_sample_data.py --check    # regenerate into a temp folder, compare SHA256SUMS

What it makes (all from one seeded simulation, nothing downloaded):

- ``crowded_dark.mrc``: 64 × 256 × 256 voxels of 10 Å (z, y, x), float16, **dark contrast**
  (dense matter dark, as raw cryo-ET): crowded phantom particles (15 % of the volume), two
  vesicle membranes and three filaments, a ±60°/3° tilt series with CTF at SNR 0.1,
  weighted back-projection; the simulator's bright tomogram negated (mean 0, std 1).
- ``crowded_dark_labels.mrc``: its ground-truth semantic labels, int8 (0 background, one
  value per phantom class, then membrane and filament; names in ``labels.txt``).
- ``crowded_dark_particles.star``: the particles as a RELION 5 particles file
  (``data_optics`` + ``data_particles``: ``rlnTomoName``, ``rlnCoordinateX/Y/Z`` in
  pixels, ``rlnAngleRot/Tilt/Psi``, ``rlnClassNumber``, ``rlnParticleDiameter`` is not RELION's
  so the radius goes in ``radius_A``).
- ``crowded_dark_particles.tbl`` (+ ``.doc``): the same as a Dynamo table (angles converted
  to tdrot/tilt/narot).
- ``copick/``: a copick project (``copick_config.json``, one run ``crowded_dark``) with the
  picks of each phantom class by user ``tomolens``, session ``0``.
- ``SHA256SUMS``: checksums of all of the above.

Seeds: the simulation seed is fixed (``SEED``); every writer is deterministic (no
timestamps).  The same versions of numpy/scipy give identical bytes; see ``--check``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 2026
NAME = "crowded_dark"
#: Size and settings of the committed sample.
SETTINGS = dict(
    shape_zyx=(64, 256, 256),
    voxel_size_A=10.0,
    volume_fraction=0.15,
    snr=0.1,
    n_membranes=2,
    n_filaments=3,
    mode="tiltseries",
    seed=SEED,
)

log = logging.getLogger("make_sample_data")


def _write_mrc(path: Path, data: np.ndarray, voxel_size_A: float, labels: list[str]) -> None:
    import mrcfile

    from tomolens.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(data)
            mrc.voxel_size = voxel_size_A
            for i, text in enumerate(labels):
                mrc.header.label[i] = text.encode("ascii")[:80]
            mrc.header.nlabl = len(labels)


def make_sample_data(out: Path, settings: dict | None = None) -> list[Path]:
    """Simulate the sample and write every file into ``out``; returns the paths written."""
    from tomolens.io.coords import ParticleTable, write_coordinates
    from tomolens.io.copick_io import CopickObject, create_project, open_project, write_copick_picks
    from tomolens.io.dynamo_io import write_dynamo
    from tomolens.io.mrc import LABELS_TAG
    from tomolens.jobs import run_job
    from tomolens.simulate import SimulationConfig, simulate_tomogram

    cfg = SimulationConfig(**(settings or SETTINGS))
    out.mkdir(parents=True, exist_ok=True)
    sim = run_job(simulate_tomogram(cfg))
    vs = float(sim.voxel_size_A)
    provenance = f"tomolens sample_data/make_sample_data.py seed {cfg.seed}"
    dark = (-sim.tomogram).astype(np.float16)  # the simulator is bright; raw cryo-ET is dark
    _write_mrc(out / f"{NAME}.mrc", dark, vs, [provenance, "contrast: dark (dense matter dark)"])
    _write_mrc(out / f"{NAME}_labels.mrc", sim.semantic.astype(np.int8), vs, [LABELS_TAG, provenance])
    (out / "labels.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(sim.class_names)))

    particles = sim.particles
    features = particles.features[["class", "class_name", "rot", "tilt", "psi", "radius_A"]].copy()
    features.insert(0, "tomo_name", NAME)
    import pandas as pd

    optics = pd.DataFrame(
        {
            "rlnOpticsGroup": [1],
            "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnTomoTiltSeriesPixelSize": [vs],
            "rlnImagePixelSize": [vs],
            "rlnImageDimensionality": [3],
        }
    )
    features["rlnOpticsGroup"] = 1
    table = ParticleTable(particles.coords_zyx, features, vs, optics)
    star = write_coordinates(out / f"{NAME}_particles.star", table, comment=provenance)
    # starfile stamps the time of writing in a comment; drop it so the bytes repeat
    star.write_text(
        "".join(
            line
            for line in star.read_text().splitlines(keepends=True)
            if not line.startswith("# Created by the starfile")
        )
    )
    write_dynamo(out / f"{NAME}_particles.tbl", table)

    classes = features.drop_duplicates("class").sort_values("class")
    objects = [CopickObject(str(r.class_name), int(r["class"]), float(r.radius_A), True) for _, r in classes.iterrows()]
    config = create_project(out / "copick" / "copick_config.json", objects, name="tomolens sample")
    root = open_project(config)
    for obj in objects:
        rows = (features["class_name"] == obj.name).to_numpy()
        part = ParticleTable(particles.coords_zyx[rows], features[rows].reset_index(drop=True), vs)
        write_copick_picks(root, NAME, obj.name, part, user_id="tomolens", session_id="0")
    files = sorted(
        p
        for p in out.rglob("*")
        if p.is_file() and p.name != "SHA256SUMS" and p.suffix != ".py" and p.name != "README.md"
    )
    sums = "".join(f"{sha256(p)}  {p.relative_to(out).as_posix()}\n" for p in files)
    (out / "SHA256SUMS").write_text(sums)
    log.info("wrote %d files to %s", len(files), out)
    return files


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="regenerate in a temporary folder and compare")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.check:
        make_sample_data(HERE)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        make_sample_data(Path(tmp))
        new = (Path(tmp) / "SHA256SUMS").read_text()
    old = (HERE / "SHA256SUMS").read_text()
    if new != old:
        print("sample_data differs from a fresh regeneration:\n" + new, file=sys.stderr)
        return 1
    print("sample_data regenerates bit for bit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
