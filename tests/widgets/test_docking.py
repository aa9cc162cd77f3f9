"""Docks opened one by one from Plugins ▸ tomolens become tabs that scroll; the window stays on the screen."""

from qtpy.QtWidgets import QScrollArea

from tomolens._widgets.detect import DetectWidget
from tomolens._widgets.segment import SegmentWidget
from tomolens._widgets.tomogram import TomogramWidget

PLUGIN = "napari-tomolens"


def test_plugin_menu_docks_become_scrolling_tabs_and_the_window_fits_the_screen(make_napari_viewer, qtbot):
    """As the Plugins menu does (add_plugin_dock_widget without tabify): Tomogram, Detect particles and Segment
    used to stack and grow a 950 px window to 2000-3300 px; now each joins the first as a tab, scrolls, and the
    window is no taller than its screen. napari's dock_widgets still give the magicgui widgets."""
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1200, 700)
    docks = {}
    for name in ("Tomogram", "Detect particles", "Segment"):
        docks[name], _ = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        qtbot.waitUntil(lambda dock=docks[name]: isinstance(dock.widget(), QScrollArea), timeout=5000)
    first = docks["Tomogram"]
    assert {d.name for d in window.tabifiedDockWidgets(first)} == {
        docks["Detect particles"].name,
        docks["Segment"].name,
    }
    assert all(dock.minimumHeight() <= 250 for dock in docks.values())
    assert window.height() <= window.screen().availableGeometry().height()
    inner = [viewer.window.dock_widgets[d.name] for d in docks.values()]
    assert [type(w) for w in inner] == [TomogramWidget, DetectWidget, SegmentWidget]
