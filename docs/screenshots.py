"""Regenerate the README screenshots: ``xvfb-run -a python docs/screenshots.py``.

Opens the crowded sample, runs each widget's main job through its own buttons the way a
user would, waits for the worker, and saves the window as ``docs/img/<widget>.png``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

OUT = Path(__file__).parent / "img"


def wait_for(runner, timeout_s: float = 600.0) -> None:
    start = time.time()
    while runner.running and time.time() - start < timeout_s:
        QApplication.processEvents()
        time.sleep(0.05)
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)


def shoot(viewer, name: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(OUT / f"{name}.png"), canvas_only=False)
    print("saved", OUT / f"{name}.png")


def main(which: list[str]) -> None:
    from tomolens._widgets.detect import DetectWidget
    from tomolens._widgets.tomogram import TomogramWidget

    viewer = napari.Viewer(title="napari-tomolens")
    viewer.window.resize(1500, 950)
    viewer.open_sample("napari-tomolens", "crowded")
    tomo = viewer.layers["sample tomogram"] if "sample tomogram" in viewer.layers else viewer.layers[0]
    if "tomogram" in which:
        widget = TomogramWidget(viewer)
        dock = viewer.window.add_dock_widget(widget, name="Tomogram")
        widget.reset_choices()
        widget.layer_picker.value = tomo
        wait_for(widget.runner)
        shoot(viewer, "tomogram")
        viewer.window.remove_dock_widget(dock)
    if "detect" in which:
        widget = DetectWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Detect particles")
        widget.reset_choices()
        widget.start_detection()
        wait_for(widget.runner)
        for name in ("sample particles", "sample instances", "sample semantic"):
            if name in viewer.layers:
                viewer.layers[name].visible = False
        for layer in viewer.layers:
            if layer.name.endswith(("instances", "centres")) and layer.name.startswith(tomo.name):
                layer.visible = True
        shoot(viewer, "detect")
    viewer.close()


if __name__ == "__main__":
    main(sys.argv[1:] or ["tomogram", "detect"])
