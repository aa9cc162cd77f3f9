"""Benchmark the GUI stall of the detection widget: the longest gap of napari's event loop.

A 10 ms ``QTimer`` runs on the GUI thread and records the time between its ticks.  The
longest gap is the longest time the GUI was frozen.  It is measured in two phases on a
256×256×128 tomogram (10 Å, spheres in noise):

- ``job``: the whole detection job (the shipped ``detect_default`` model, run in the
  widget's worker thread), from pressing Detect until the result is shown;
- ``add_result``: only the showing of a precomputed result (mask and instance Labels of
  256×256×128, 300 centres as Points), through the widget's JobRunner.  It is measured two
  ways: ``staged`` (the widget's generator adds one layer per event-loop turn, the current
  code) and ``at_once`` (all layers added in one call, the code before issue 22).

Usage::

    xvfb-run -a python benchmarks/bench_gui_stall.py [--repeats 3] [--skip-job]

Prints a table and writes ``benchmarks/results/gui_stall.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

SHAPE = (128, 256, 256)
RESULTS = Path(__file__).parent / "results" / "gui_stall.json"


class GapMeter:
    """Longest interval between ticks of a 10 ms QTimer on the GUI thread."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self.gaps: list[float] = []
        self._last = None

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.gaps.append(now - self._last)
        self._last = now

    def start(self) -> None:
        self.gaps, self._last = [], time.perf_counter()
        self.timer.start()

    def stop(self) -> float:
        self.timer.stop()
        self._tick()
        return max(self.gaps) if self.gaps else 0.0


def _wait(app, condition, timeout_s: float) -> None:
    end = time.perf_counter() + timeout_s
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError("the widget did not finish in time")
        app.processEvents()
        time.sleep(0.002)


def _data(seed: int = 0):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    instances = np.zeros(SHAPE, np.int32)
    centres = rng.uniform(12, np.array(SHAPE) - 12, (300, 3))
    for i, c in enumerate(centres, start=1):
        z, y, x = np.round(c).astype(int)
        instances[z - 4 : z + 5, y - 4 : y + 5, x - 4 : x + 5] = i
    tomo = ndimage.gaussian_filter((instances > 0).astype(np.float32), 1.0) + rng.normal(0, 0.3, SHAPE)
    return tomo.astype(np.float32), instances, centres


def _precomputed_result(instances, centres):
    from tomolens.detect.detector import DetectionResult
    from tomolens.io.coords import ParticleTable

    n = len(centres)
    features = pd.DataFrame(
        {
            "score": np.linspace(0, 1, n),
            "volume_A3": np.full(n, 7.29e5),
            "instance_id": np.arange(1, n + 1),
            "radius_A": np.full(n, 45.0),
        }
    )
    return DetectionResult(
        np.zeros((2, 64, 128, 128), np.float32),
        (instances > 0).astype(np.uint8),
        instances,
        ParticleTable(centres, features, 10.0),
        10.0,
        20.0,
        {"particle_radius_A": 40.0},
    )


def _returning(result):
    from tomolens.jobs import Progress

    yield Progress(1, 1, "done")
    return result


def measure(phase: str, mode: str) -> dict:
    """One measurement in a fresh viewer (this process): the longest gap and the wall time."""
    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    from tomolens._widgets.detect import DetectWidget

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    tomo, instances, centres = _data()
    viewer = napari.Viewer(show=True)
    image = viewer.add_image(tomo, name="tomo", scale=(10.0,) * 3, units=("angstrom",) * 3)
    widget = DetectWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.reset_choices()
    widget.image.value = image
    app = QApplication.instance()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.01)
    meter = GapMeter()
    meter.start()
    t0 = time.perf_counter()
    if phase == "job":
        widget.start_detection()
    else:
        widget._source_name, widget._source_in_A = "tomo", True
        show = widget._show if mode == "staged" else (lambda r: list(widget._show(r)) and None)
        widget.runner.start(_returning(_precomputed_result(instances, centres)), show)
    _wait(app, lambda: not widget.runner.running, 1800)
    longest = meter.stop()
    row = {
        "phase": phase,
        "mode": mode,
        "longest_gap_s": round(longest, 4),
        "gaps_over_100ms": [round(g, 3) for g in meter.gaps if g > 0.1],
        "wall_s": round(time.perf_counter() - t0, 3),
        "particles": 0 if widget.result is None else len(widget.result.particles),
    }
    os._exit(print(json.dumps(row), flush=True) or 0)  # skip teardown: napari#6472 may crash in it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-job", action="store_true", help="only the add_result phase")
    parser.add_argument("--child", nargs=2, metavar=("PHASE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(*args.child)
        return
    plan = [("add_result", mode) for mode in ("at_once", "staged") for _ in range(args.repeats)]
    plan += [] if args.skip_job else [("job", "staged")]
    rows = []
    load = os.getloadavg()[0]
    for phase, mode in plan:
        out = subprocess.run(
            [sys.executable, __file__, "--child", phase, mode], capture_output=True, text=True, timeout=1800
        )
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode != 0 or not lines:
            raise RuntimeError(f"{phase}/{mode} failed (status {out.returncode}): {out.stderr[-2000:]}")
        rows.append(json.loads(lines[-1]))
        print(rows[-1], flush=True)
    summary = {}
    for row in rows:
        key = f"{row['phase']}:{row['mode']}"
        summary[key] = max(summary.get(key, 0.0), row["longest_gap_s"])
    print("\nlongest event-loop gap (s), worst of the repeats:")
    for key, value in summary.items():
        print(f"  {key:<22} {value:.3f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Xvfb + llvmpipe, "
                f"load average {load:.1f} at the start",
                "shape_zyx": SHAPE,
                "timer_interval_s": 0.01,
                "rows": rows,
                "worst": summary,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
