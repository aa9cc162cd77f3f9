"""Open napari with every tomolens dock widget and a sample loaded (the raw, dark one of sample_data/ when present).

``python -m tomolens._widgets.launch [--sample KEY] [--screenshot PNG]``; with
``--screenshot`` the window is drawn, saved as a PNG and closed (for headless checks).
"""

from __future__ import annotations

import argparse
import logging

import napari
from npe2 import PluginManager

from tomolens._napari.layers import show_layer_particles

PLUGIN = "napari-tomolens"


#: The sample the workbench opens by default (the generated one when sample_data/ is absent).
DARK_SAMPLE = "crowded_dark"

#: Tab titles of the docked widgets: one word each, so that all tabs stay readable side by side
#: (the dock's title bar and the Plugins menu keep the manifest's full names).
TAB_TITLES = {
    "Tomogram": "Tomogram",
    "Simulate": "Simulate",
    "Detect particles": "Detect",
    "Segment": "Segment",
    "Classify": "Classify",
    "Subdivide": "Subdivide",
    "Picks and copick": "Picks",
    "Orientation recovery": "Orient",
}


def manifest():
    pm = PluginManager.instance()
    pm.discover()
    return pm.get_manifest(PLUGIN)


def open_workbench(viewer: napari.Viewer, sample: str | None = None) -> list[str]:
    """Dock every tomolens widget (tabbed on the right) and open a sample; returns widget names."""
    mf = manifest()
    contributions = mf.contributions
    samples = [s.key for s in (contributions.sample_data or [])]
    if sample is None and samples:
        # what users have: the raw (dark) sample of sample_data/ when the source tree is here
        from tomolens._napari.sample_files import sample_data_dir

        try:
            sample_data_dir()
            sample = DARK_SAMPLE if DARK_SAMPLE in samples else samples[0]
        except FileNotFoundError:
            sample = samples[0]
    if samples:
        viewer.open_sample(PLUGIN, sample)
        for layer in viewer.layers:
            if isinstance(layer, napari.layers.Points):
                show_layer_particles(viewer, layer)
    names = [w.display_name for w in (contributions.widgets or [])]
    docks = []
    for name in names:
        dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=True)
        dock.setWindowTitle(TAB_TITLES.get(name, name))
        docks.append(dock)
        layer = widget.layer_picker.value if name == "Tomogram" and samples else None
        if layer is not None:
            # a raw slice is noise to the eye: show the mean of the slab the picks are shown in (one particle
            # diameter, set above), through the dock's own display filter
            axis = viewer.dims.not_displayed[0] if viewer.dims.not_displayed else 0
            widget.slab_slices.value = max(1, round(viewer.dims.thickness[axis] / float(layer.scale[axis])))
            widget.display_filter.value = "slab mean"
            widget.apply_display_filter()
    if docks:
        from qtpy.QtCore import Qt, QTimer
        from qtpy.QtWidgets import QTabWidget

        # the tabs run down the window's right edge: eight titles fit there whole, where along the
        # bottom of a ~450 px wide dock they were cut to "To…", "Si…"
        viewer.window._qt_window.setTabPosition(
            Qt.DockWidgetArea.RightDockWidgetArea,  # noqa: SLF001
            QTabWidget.TabPosition.East,
        )

        # Tabified docks show the last one added; bring the first (Tomogram) forward
        # once the window has been laid out.
        QTimer.singleShot(0, docks[0].raise_)
    return names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sample",
        default=None,
        help="sample key (default: crowded_dark from sample_data/, else the generated crowded one)",
    )
    parser.add_argument("--screenshot", default=None, help="save a PNG of the window and exit")
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(1600, 1000),
        metavar=("WIDTH", "HEIGHT"),
        help="window size in pixels (default: 1600 1000)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    viewer = napari.Viewer(title="napari-tomolens")
    viewer.window.resize(*args.size)
    open_workbench(viewer, args.sample)
    if args.screenshot:
        from qtpy.QtCore import QTimer

        def shoot() -> None:
            from napari._qt.dialogs.qt_notification import NapariQtNotification

            for toast in viewer.window._qt_window.findChildren(NapariQtNotification):  # noqa: SLF001
                toast.close()  # no notification over the canvas in the picture
            viewer.screenshot(args.screenshot, canvas_only=False)
            logging.getLogger(__name__).info("saved %s", args.screenshot)
            viewer.close()

        QTimer.singleShot(1500, shoot)
    napari.run()


if __name__ == "__main__":
    main()
