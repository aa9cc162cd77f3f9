"""tomolens docks opened one by one from *Plugins ▸ tomolens* become tabs that scroll, so the window fits the screen.

napari's Plugins menu docks a widget with ``tabify=False``: each new dock is stacked under the
others in the right-hand area, and a dock is as tall as its widgets need (Tomogram 633 px, Detect
1038, Segment 1205): with the three open the window grew to 2000–3300 px on a 1000 px screen,
pushing *Train* and *Predict* off it.  A tomolens widget therefore marks itself
(:func:`tabify_when_docked`); once napari has wrapped it in its ``QDockWidget`` (the next
event-loop turn), :func:`fit_tomolens_dock` puts the widget in a scroll area, makes the dock a tab
beside a tomolens dock already open in the same area (as ``add_dock_widget(..., tabify=True)``
would) and brings a window taller than its screen back onto it.  Docks of other plugins and
floating docks are left alone; a dock that is already a tab (the workbench of
:mod:`tomolens._widgets.launch` tabifies its own) is not moved.
"""

from __future__ import annotations

from qtpy.QtCore import QTimer
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QDockWidget, QFrame, QMainWindow, QScrollArea, QWidget

#: The least height of a tomolens dock's scroll area, px (the rest of the dock scrolls).
MIN_DOCK_HEIGHT_PX = 200
#: Qt property set on the native widget of every tomolens dock.
TOMOLENS_DOCK = "tomolens_dock"


def tabify_when_docked(widget) -> None:
    """Mark ``widget`` (a magicgui widget or a QWidget) as a tomolens dock and, once it is docked, make its dock a
    tab beside an open tomolens dock."""
    native: QWidget = getattr(widget, "native", widget)
    native.setProperty(TOMOLENS_DOCK, True)
    # a timer owned by the widget: it never fires for a widget deleted before the next event-loop turn
    timer = QTimer(native)
    timer.setSingleShot(True)
    timer.timeout.connect(lambda: fit_tomolens_dock(native))
    timer.timeout.connect(timer.deleteLater)
    timer.start(0)


def _is_tomolens(dock: QDockWidget) -> bool:
    inner = dock.widget()
    if inner is None:
        return False
    return bool(inner.property(TOMOLENS_DOCK)) or any(
        bool(child.property(TOMOLENS_DOCK)) for child in inner.findChildren(QWidget)
    )


def _scrolling(dock: QDockWidget) -> None:
    """Put the dock's widget in a vertical scroll area (once), so that the dock can be shorter than its widgets."""
    inner = dock.widget()
    if inner is None or isinstance(inner, QScrollArea):
        return
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    if hasattr(inner, "_magic_widget"):  # napari's dock.inner_widget() still finds the magicgui widget
        scroll._magic_widget = inner._magic_widget  # noqa: SLF001
    dock.setWidget(scroll)
    scroll.setWidget(inner)
    # as wide as the widget needs (no horizontal scrolling); an explicit minimum height, which the dock's layout
    # takes instead of the widget's full height
    scroll.setMinimumWidth(inner.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width())
    scroll.setMinimumHeight(MIN_DOCK_HEIGHT_PX)
    dock.setMinimumHeight(MIN_DOCK_HEIGHT_PX)


def _fit_on_screen(window: QMainWindow) -> None:
    """Bring a window that grew taller than its screen's available height back onto the screen."""
    screen = window.screen()
    if screen is None:
        return
    height = screen.availableGeometry().height()
    window.layout().activate()  # the docks' new (scrolling) minimum heights, before resizing
    if window.height() > height:
        window.resize(window.width(), height)


def fit_tomolens_dock(native: QWidget) -> QDockWidget | None:
    """Make the dock holding ``native`` scroll, tabify it with an open tomolens dock, fit the window on its screen.

    Returns
    -------
    QDockWidget or None
        The dock it became a tab of, or None (not docked in a main window, floating, already a tab, or no
        other tomolens dock open in its area).
    """
    dock = native.parentWidget()
    while dock is not None and not isinstance(dock, QDockWidget):
        dock = dock.parentWidget()
    if dock is None or dock.isFloating() or not isinstance(dock.parentWidget(), QMainWindow):
        return None
    window: QMainWindow = dock.parentWidget()
    _scrolling(dock)
    joined = None if window.tabifiedDockWidgets(dock) else _join_tomolens_tabs(window, dock)
    _fit_on_screen(window)
    return joined


def _join_tomolens_tabs(window: QMainWindow, dock: QDockWidget) -> QDockWidget | None:
    """Tabify ``dock`` with the first other visible tomolens dock of its area; that dock, or None."""
    area = window.dockWidgetArea(dock)
    for other in window.findChildren(QDockWidget):
        if (
            other is not dock
            and not other.isFloating()
            and other.isVisible()
            and window.dockWidgetArea(other) == area
            and _is_tomolens(other)
        ):
            window.tabifyDockWidget(other, dock)
            dock.show()
            dock.raise_()
            return other
    return None
