"""Benchmark the GUI stall of the dock widgets: the longest gap of napari's event loop.

A 10 ms ``QTimer`` runs on the GUI thread and records the time between its ticks.  The
longest gap is the longest time the GUI was frozen.  Each measurement runs in a fresh viewer
(a separate process) holding a 256×256×128 tomogram at 10 Å (spheres in noise).

Per widget, in the same process:

- ``ours``: the widget's job run from its Run button (``detect_job``, ``segment_job``,
  ``simulate``, ``classify``, ``tomogram``) or, for ``detect``, ``segment`` and ``orient``, a
  precomputed result delivered through the widget's own JobRunner, prepare function and
  result handler, until its result is shown.  The gaps are split at the moment the result
  reached the GUI thread: ``computing`` (while the worker runs) and ``showing`` (placing the
  result's layers);
- ``napari``: napari's own cost of adding the same layers by hand — ``Layer.create`` of each
  layer's ``as_layer_data_tuple()`` (the same data and settings, under a new name) and
  ``viewer.add_layer``, both on the GUI thread, one layer per event-loop turn, as
  ``viewer.add_labels`` etc. do.  It runs after the widget's layers are shown (napari's lazy
  imports and caches warm); with ``--napari-first`` every other repeat of the precomputed
  widgets runs it first instead;
- the full (generation 2) garbage collections during each phase and how long they took.

``at_once``: the precomputed detection with all layers added in one call (the code before
issue 22).  ``rethreshold_detect`` and ``rethreshold_segment``: after a result is shown,
post-processing settings are changed one after the other (re-applied in the worker, the
current code), then re-applied and placed on the GUI thread in one call (the code before).
``--stack-dumps FILE`` writes every thread's stack every 100 ms of a stall (faulthandler).

Usage::

    xvfb-run -a python benchmarks/bench_gui_stall.py [--widgets detect segment ...] [--repeats 2]

Prints a table and writes ``benchmarks/results/gui_stall.json`` (rows of the widgets not run
are kept).
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
WIDGETS = ("detect", "segment", "simulate", "classify", "orient", "tomogram", "detect_job", "segment_job")
#: Re-applying post-processing settings to a shown result: the setting changes, one after the other as a user
#: makes them, and (measured second) the code before this change, which computed and placed it on the GUI thread.
RETHRESHOLD = {
    "rethreshold_detect": ("detect_job", {"mask_threshold": 0.4, "centre_threshold": 0.5}),
    "rethreshold_segment": ("segment", {"threshold": 0.5, "min_size_voxels": 20}),
}
#: Widgets run from their Run button on a real job (the others show a precomputed result).
JOBS = ("detect_job", "segment_job", "simulate", "classify", "tomogram")


class GapMeter:
    """Intervals between ticks of a 10 ms QTimer on the GUI thread, with the time each one ended, and the
    pauses of Python's cyclic garbage collector (any thread) while it runs."""

    def __init__(self) -> None:
        import gc

        from qtpy.QtCore import QTimer

        self.gc_pauses: list[tuple[float, int, float]] = []  # (end time, generation, seconds)
        self._gc_start = 0.0
        gc.callbacks.append(self._gc)
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self.gaps: list[tuple[float, float]] = []  # (end time, gap) in seconds
        self._last = None

    def _gc(self, phase: str, info: dict) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_start = now
        elif self.timer.isActive():
            self.gc_pauses.append((now, info["generation"], now - self._gc_start))

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.gaps.append((now, now - self._last))
        self._last = now

    def start(self) -> None:
        self.gaps, self.gc_pauses, self._last = [], [], time.perf_counter()
        self.timer.start()

    def dump_stalls(self, path: str) -> None:
        """From now on, write every thread's stack to ``path`` every 100 ms while the GUI thread does not tick.

        faulthandler's watchdog is a C thread: it reports even while a C call holds the GIL.
        """
        import faulthandler

        self._dump_file = open(path, "a")  # noqa: SIM115  (open until the process exits)

        def arm() -> None:
            faulthandler.dump_traceback_later(0.1, repeat=True, file=self._dump_file)

        self.timer.timeout.connect(arm)

    def stop(self) -> None:
        import faulthandler

        self.timer.stop()
        faulthandler.cancel_dump_traceback_later()
        self._tick()

    def summary(self, after: float = -np.inf, before: float = np.inf) -> dict:
        """Longest gap and the gaps over 100 ms among those ending in (after, before]."""
        gaps = [g for end, g in self.gaps if after < end <= before]
        full = [p for end, generation, p in self.gc_pauses if after < end <= before and generation == 2]
        return {
            "longest_gap_s": round(max(gaps, default=0.0), 4),
            "gaps_over_100ms": [round(g, 3) for g in gaps if g > 0.1],
            "full_gc_pauses_s": [round(p, 3) for p in full],
        }


def _wait(app, condition, timeout_s: float) -> None:
    end = time.perf_counter() + timeout_s
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError("the widget did not finish in time")
        app.processEvents()
        time.sleep(0.002)


def _pump(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.005)


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


def _orientation_result(n_images: int = 1000, size: int = 64, seed: int = 0):
    """A recovery result of the orientation widget's shape (quaternions, errors, an n³ reconstruction)."""
    from scipy import ndimage

    from tomolens.orient.pipeline import OrientationResult

    rng = np.random.default_rng(seed)
    quats = rng.normal(size=(n_images, 4))
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    volume = ndimage.gaussian_filter(rng.normal(size=(size,) * 3), 2.0).astype(np.float32)
    return OrientationResult(quats, rng.uniform(0, 30, n_images), volume, timings_s={"recover": 1.0})


def _segmentation_result(instances, n_classes: int = 4):
    """A segmentation of the shape the shipped model gives: (C, z, y, x) probabilities and classes."""
    from tomolens.segment.predict import SegmentationResult

    classes = (instances % n_classes).astype(np.uint8)
    probabilities = np.full((n_classes, *instances.shape), 0.1, np.float32)
    for k in range(n_classes):
        probabilities[k][classes == k] = 0.7
    return SegmentationResult(probabilities, classes, [f"class {k}" for k in range(n_classes)], 10.0)


def _returning(result):
    from tomolens.jobs import Progress

    yield Progress(1, 1, "done")
    return result


def _delivering(widget, runner, result, show, prepare) -> tuple:
    """The widget, its runner and a start function that delivers ``result`` as its job would (prepare, show)."""
    return widget, runner, lambda: runner.start(_returning(result), show, prepare=prepare)


def _start(name: str, viewer, image, data) -> tuple:
    """Create the dock widget ``name`` in ``viewer``, and a function that starts it (as its Run button does)."""
    tomo, instances, centres = data
    if name in ("detect", "at_once", "detect_job"):
        from tomolens._widgets.detect import DetectWidget, detection_layers

        widget = DetectWidget(viewer)
        if name == "detect_job":
            return widget, widget.runner, widget.start_detection
        widget._source_name, widget._source_in_A = image.name, True
        show = widget._show if name == "detect" else (lambda prepared: list(widget._show(prepared)) and None)
        result = _precomputed_result(instances, centres)
        prepare = lambda r: (r, detection_layers(r, image.name))  # noqa: E731  (as start_detection passes it)
        return _delivering(widget, widget.runner, result, show, prepare)
    if name in ("segment", "segment_job"):
        from tomolens._widgets.segment import SegmentWidget, class_voxels, segmentation_layers

        widget = SegmentWidget(viewer)
        if name == "segment_job":
            return widget, widget.predict_runner, widget.start_prediction
        widget._source = image.name
        result = _segmentation_result(instances)
        prepare = lambda r: (r, segmentation_layers(r, image.name), class_voxels(r))  # noqa: E731
        return _delivering(widget, widget.predict_runner, result, widget._show, prepare)
    if name == "simulate":
        from tomolens._widgets.simulate import SimulateWidget

        widget = SimulateWidget(viewer)
        size = {"size_z": SHAPE[0], "size_y": SHAPE[1], "size_x": SHAPE[2]}
        widget.panel.set_values({**size, "n_particles": 300, "mode": "fourier", "seed": 1})
        return widget, widget.runner, widget.start
    if name == "classify":
        from tomolens._widgets.classify import ClassifyWidget

        widget = ClassifyWidget(viewer)
        widget.params.controls["device"].value = "cpu"
        return widget, widget.runner, widget.start_classification
    if name == "orient":
        from tomolens._widgets.orient import OrientationWidget, orientation_layers

        widget = OrientationWidget(viewer)
        meta = {"name": image.name, "pixel": 10.0, "n": 64, "has_truth": True}
        widget._result_meta = dict(meta)
        result = _orientation_result()
        prepare = lambda r: (r, orientation_layers(r, meta))  # noqa: E731  (as start_recovery passes it)
        return _delivering(widget, widget.runner, result, widget.show_result, prepare)
    if name == "tomogram":
        from tomolens._widgets.tomogram import TomogramWidget

        widget = TomogramWidget(viewer)
        return widget, widget.runner, widget.start_binning
    raise ValueError(f"unknown widget {name!r}; choose from {WIDGETS + ('at_once',)}")


def _measure_ours(app, name, viewer, image, data, dump: str | None = None, keep_widget: bool = False):
    """Run the widget ``name`` until its result is shown; the gaps while computing and while showing."""
    widget, runner, start = _start(name, viewer, image, data)
    viewer.window.add_dock_widget(widget)
    widget.reset_choices()
    for picker in ("image", "image_picker", "layer_picker"):
        if hasattr(widget, picker):
            getattr(widget, picker).value = image
    if name == "classify":
        widget.points_picker.value = viewer.layers["picks"]
    if name == "tomogram":  # choosing the tomogram measured its contrast: wait for that job first
        _wait(app, lambda: not widget.contrast_runner.running, 300)
    _pump(app, 0.3)
    before = set(map(id, viewer.layers))
    meter = GapMeter()
    arrived = {"t": np.inf}
    if dump:
        meter.dump_stalls(dump)
    meter.start()
    t0 = time.perf_counter()
    start()
    if runner.worker is None:
        raise RuntimeError(f"{name}: the job did not start: {runner.status.value}")
    runner.worker.returned.connect(lambda *_: arrived.update(t=time.perf_counter()))
    _wait(app, lambda: not runner.running, 1800)
    meter.stop()
    if not np.isfinite(arrived["t"]):
        raise RuntimeError(f"{name}: no result: {runner.status.value}")
    row = {
        "computing": meter.summary(before=arrived["t"]),
        "showing": meter.summary(after=arrived["t"]),
        "job_s": round(arrived["t"] - t0, 3),
        "wall_s": round(time.perf_counter() - t0, 3),
    }
    if keep_widget:
        return widget, runner
    added = [layer for layer in viewer.layers if id(layer) not in before]
    if name == "classify":  # classify adds no layer: it colours the picks; napari's cost of adding them coloured
        added = [viewer.layers["picks"]]
    return row, [layer.as_layer_data_tuple() for layer in added]


def _measure_napari(app, viewer, specs: list) -> dict:
    """napari's own cost: ``Layer.create`` + ``viewer.add_layer`` of each spec on the GUI thread, one per turn."""
    import napari

    from tomolens._widgets._runner import JobRunner

    runner = JobRunner("by hand")

    def add_by_hand(specs):
        for data, state, kind in specs:
            state = {**state, "name": f"{state['name']} (napari)"}
            viewer.add_layer(napari.layers.Layer.create(data, state, kind))
            yield

    meter = GapMeter()
    meter.start()
    t0 = time.perf_counter()
    runner.start(_returning(specs), add_by_hand)
    _wait(app, lambda: not runner.running, 600)
    meter.stop()
    return {**meter.summary(), "wall_s": round(time.perf_counter() - t0, 3)}


def _measure_rethreshold(app, viewer, widget, runner, post: dict) -> dict:
    """The longest gaps while ``post`` settings are re-applied: in the worker (now), then on the GUI thread."""
    from tomolens._widgets._layers import place_layer

    panel = widget.params if hasattr(widget, "runner") and runner is widget.runner else widget.predict_params
    out = {}
    for where in ("worker", "gui_thread_before"):
        meter = GapMeter()
        meter.start()
        t0 = time.perf_counter()
        if where == "worker":
            for key, value in post.items():  # one change after the other, as a user makes them
                panel.controls[key].value = value
        else:  # what reapply did before: compute and place on the GUI thread, in one call
            widget.result = widget.result.reapply(**post)
            if hasattr(widget, "_source_name"):
                from tomolens._widgets.detect import detection_layers

                layers = detection_layers(widget.result, widget._source_name)
            else:
                from tomolens._widgets.segment import segmentation_layers

                layers = segmentation_layers(widget.result, widget._source, probabilities=False)
            for layer in layers:
                place_layer(viewer, layer)
        _wait(app, lambda: not runner.running, 600)
        _pump(app, 0.3)
        meter.stop()
        out[where] = {**meter.summary(), "wall_s": round(time.perf_counter() - t0 - 0.3, 3)}
    return out


def measure(name: str, napari_first: bool, dump: str | None = None) -> None:
    """One measurement in a fresh viewer (this process); prints one JSON row."""
    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    from tomolens._widgets._runner import warm_layer_imports

    rethreshold_name, (name, post) = name, RETHRESHOLD.get(name, (name, None))
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    warm_layer_imports()  # as every job's worker does before the job; here also for the by-hand baseline
    data = _data()
    viewer = napari.Viewer(show=True)
    scale = {"scale": (10.0,) * 3, "units": ("angstrom",) * 3}
    image = viewer.add_image(data[0], name="tomo", contrast_limits=(-1.0, 2.0), **scale)
    if name == "classify":
        viewer.add_points(data[2], name="picks", size=9, **scale)
    app = QApplication.instance()
    _pump(app, 0.3)
    row = {
        "widget": name,
        "real_job": name in JOBS,
        "napari_first": napari_first,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if napari_first:  # the same layers by hand, first in the viewer: needs the layers, so compute them
        specs = _specs_without_gui(name, image, data)
        row["napari"] = _measure_napari(app, viewer, specs)
        _pump(app, 0.3)
    if post is not None:
        widget, runner = _measure_ours(app, name, viewer, image, data, dump, keep_widget=True)
        row = {"widget": rethreshold_name, "settings": post, "load_average_1min": row["load_average_1min"]}
        row.update(_measure_rethreshold(app, viewer, widget, runner, post))
        os._exit(print(json.dumps(row), flush=True) or 0)
    ours, specs = _measure_ours(app, name, viewer, image, data, dump)
    row.update(ours)
    row["layers"] = [f"{kind} {tuple(np.shape(d))}" for d, _, kind in specs]
    if not napari_first and name != "at_once":
        _pump(app, 0.3)
        row["napari"] = _measure_napari(app, viewer, specs)
    os._exit(print(json.dumps(row), flush=True) or 0)  # skip teardown: napari#6472 may crash in it


def _specs_without_gui(name: str, image, data) -> list:
    """The detection's or orientation's layer-data tuples (the widgets with a precomputed result)."""
    if name == "detect":
        from tomolens._widgets.detect import detection_layers

        layers = detection_layers(_precomputed_result(*data[1:]), image.name)
    elif name == "segment":
        from tomolens._widgets.segment import segmentation_layers

        layers = segmentation_layers(_segmentation_result(data[1]), image.name)
    elif name == "orient":
        from tomolens._widgets.orient import orientation_layers

        layers = orientation_layers(_orientation_result(), {"name": image.name, "pixel": 10.0, "n": 64})
    else:
        raise ValueError(f"--napari-first needs a precomputed result: detect, segment or orient, not {name!r}")
    return [layer.as_layer_data_tuple() for layer in layers]


def _rows_table(rows: list[dict]) -> str:
    lines = [f"{'widget':<20} {'napari 1st':<10} {'computing':>9} {'showing':>8} {'napari':>7}  load"]
    for r in rows:
        if "worker" in r:  # a re-threshold row: now (worker) and before (GUI thread)
            lines.append(
                f"{r['widget']:<20} {'':<10} {'worker':>9} {r['worker']['longest_gap_s']:>8.3f} "
                f"{r['gui_thread_before']['longest_gap_s']:>7.3f}  {r['load_average_1min']}  (last: GUI thread before)"
            )
            continue
        napari_gap = r.get("napari", {}).get("longest_gap_s", float("nan"))
        lines.append(
            f"{r['widget']:<20} {str(r['napari_first']):<10} {r['computing']['longest_gap_s']:>9.3f} "
            f"{r['showing']['longest_gap_s']:>8.3f} {napari_gap:>7.3f}  {r['load_average_1min']}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widgets", nargs="+", default=list(WIDGETS), choices=WIDGETS + ("at_once", *RETHRESHOLD))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--napari-first", action="store_true", help="alternate: every other repeat adds napari's layers first"
    )
    parser.add_argument(
        "--stack-dumps", metavar="FILE", help="write all threads' stacks to FILE at each stall over 100 ms (ours)"
    )
    parser.add_argument("--child", nargs=2, metavar=("WIDGET", "NAPARI_FIRST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.child[0], args.child[1] == "1", args.stack_dumps)
        return
    rows = []
    for name in args.widgets:
        for k in range(args.repeats):
            first = args.napari_first and k % 2 == 1 and name in ("detect", "segment", "orient")
            out = subprocess.run(
                [sys.executable, __file__, "--child", name, "1" if first else "0"]
                + (["--stack-dumps", args.stack_dumps] if args.stack_dumps else []),
                capture_output=True,
                text=True,
                timeout=1800,
            )
            lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
            if out.returncode != 0 or not lines:
                raise RuntimeError(f"{name} failed (status {out.returncode}): {out.stderr[-3000:]}")
            rows.append(json.loads(lines[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print()
    print(_rows_table(rows))
    old = json.loads(RESULTS.read_text()).get("rows", []) if RESULTS.is_file() else []
    kept = [r for r in old if r.get("widget") and r["widget"] not in args.widgets]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Xvfb + llvmpipe; "
                "each row has the 1-minute load average when its process started",
                "shape_zyx": SHAPE,
                "timer_interval_s": 0.01,
                "rows": kept + rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
