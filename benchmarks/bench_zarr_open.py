"""Opening a 2 GB OME-Zarr tomogram: time to the first slice on screen, and peak memory.

1. Makes (once) a disk-backed synthetic OME-Zarr of 512 × 1024 × 1024 float32 voxels
   (2 GiB at full resolution, blosc-compressed Gaussian noise, which hardly compresses,
   like a real tomogram) with two more pyramid levels, written chunk by chunk so that
   making it never holds more than a chunk in memory.
2. In a fresh process: starts a napari viewer (Qt under Xvfb), opens the folder with
   tomolens's reader, renders the canvas (``viewer.screenshot``) and reports the time
   from "open" to the first slice rendered, and the process's peak resident memory
   before and after.  Also times tomolens's reader alone reading the middle slice.

Writes ``benchmarks/results/zarr_open.json`` and prints a table.  Usage::

    xvfb-run -a python benchmarks/bench_zarr_open.py [--folder /tmp/bench_zarr] [--machine TEXT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MACHINE = "2-core CPU, no GPU (shared with other jobs)"
SHAPE = (512, 1024, 1024)
CHUNK = (64, 256, 256)
LEVELS = 3
VOXEL_A = 10.0


def make_zarr(path: Path) -> float:
    """Write the synthetic pyramid chunk by chunk; returns seconds taken."""
    import zarr
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_multiscales_metadata

    t0 = time.perf_counter()
    group = zarr.group(parse_url(str(path), mode="w").store)
    arrays = [
        group.create_dataset(str(i), shape=tuple(s // 2**i for s in SHAPE), chunks=CHUNK, dtype="f4")
        for i in range(LEVELS)
    ]
    rng = np.random.default_rng(0)
    for z in range(0, SHAPE[0], CHUNK[0]):
        for y in range(0, SHAPE[1], CHUNK[1]):
            for x in range(0, SHAPE[2], CHUNK[2]):
                block = rng.standard_normal(CHUNK, dtype=np.float32)
                arrays[0][z : z + CHUNK[0], y : y + CHUNK[1], x : x + CHUNK[2]] = block
                for i in range(1, LEVELS):
                    f = 2**i
                    small = block.reshape(CHUNK[0] // f, f, CHUNK[1] // f, f, CHUNK[2] // f, f).mean(axis=(1, 3, 5))
                    arrays[i][
                        z // f : (z + CHUNK[0]) // f, y // f : (y + CHUNK[1]) // f, x // f : (x + CHUNK[2]) // f
                    ] = small
    datasets = [
        {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [VOXEL_A * 2**i] * 3}]}
        for i in range(LEVELS)
    ]
    write_multiscales_metadata(group, datasets, axes=[{"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"])
    return time.perf_counter() - t0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(path: Path) -> dict:
    """In this process: reader alone, then napari open + first render."""
    from tomolens.io.zarr_io import read_ome_zarr

    rss_start = _peak_rss_mb()
    t0 = time.perf_counter()
    vol = read_ome_zarr(path)
    middle = np.asarray(vol.data[SHAPE[0] // 2])
    reader_s = time.perf_counter() - t0
    assert middle.shape == SHAPE[1:]

    import napari

    viewer = napari.Viewer(show=False)
    rss_viewer = _peak_rss_mb()
    t0 = time.perf_counter()
    [layer] = viewer.open(str(path), plugin="napari-tomolens")
    shot = viewer.screenshot(canvas_only=True)
    first_slice_s = time.perf_counter() - t0
    result = {
        "reader_middle_slice_s": reader_s,
        "napari_open_to_first_render_s": first_slice_s,
        "multiscale_levels": len(layer.data),
        "screenshot_shape": list(shot.shape),
        "peak_rss_before_viewer_mb": rss_start,
        "peak_rss_viewer_started_mb": rss_viewer,
        "peak_rss_after_first_render_mb": _peak_rss_mb(),
    }
    result["added_by_opening_mb"] = result["peak_rss_after_first_render_mb"] - rss_viewer
    viewer.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/bench_zarr"))
    parser.add_argument("--machine", default=MACHINE)
    parser.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = args.folder / "tomogram_2GiB.zarr"
    if args.measure_only:
        print(json.dumps(measure(path)))
        return 0
    args.folder.mkdir(parents=True, exist_ok=True)
    made_s = None if (path / "0").is_dir() else make_zarr(path)
    on_disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    out = subprocess.run(
        [sys.executable, __file__, "--folder", str(args.folder), "--measure-only"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ},
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(
        {
            "shape_zyx": list(SHAPE),
            "dtype": "float32",
            "full_resolution_gib": np.prod(SHAPE) * 4 / 2**30,
            "on_disk_gb": on_disk / 1e9,
            "chunks": list(CHUNK),
            "make_s": made_s,
            "machine": args.machine,
            "platform": platform.platform(),
        }
    )
    from tomolens import __version__

    result["tomolens"] = __version__
    dest = Path(__file__).resolve().parent / "results" / "zarr_open.json"
    dest.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key:34s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
