"""A small Qt scatter plot with rubber-band selection (no matplotlib, no pyqtgraph).

:class:`ScatterPlot` draws one selectable dot per point in a ``QGraphicsScene``; dragging
on empty space draws a rubber band that selects the dots inside it (Ctrl adds to the
selection).  ``selection_changed`` emits the selected point indices; :meth:`select`
highlights indices chosen elsewhere without emitting.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QBrush, QColor, QPainter, QPen
from qtpy.QtWidgets import QGraphicsEllipseItem, QGraphicsItem, QGraphicsScene, QGraphicsView

#: Scene size of the plotted data, scene units.
EXTENT = 400.0
DOT_RADIUS = 4.0


class ScatterPlot(QGraphicsView):
    """A 2D scatter plot whose dots can be selected with a rubber band.

    Signals
    -------
    selection_changed(numpy.ndarray)
        Sorted int64 indices of the selected points, after a user selection.
    """

    selection_changed = Signal(object)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setDragMode(QGraphicsView.RubberBandDrag)
        self.setRubberBandSelectionMode(Qt.IntersectsItemShape)
        self.setRenderHint(QPainter.Antialiasing)
        self.setMinimumHeight(220)
        self.setToolTip("2D embedding of the particles' features: drag to select particles in the layer.")
        self._items: dict[int, QGraphicsEllipseItem] = {}
        self._quiet = False
        self._normal_pen = QPen(QColor("#202020"), 0.5)
        self._selected_pen = QPen(QColor("#ffffff"), 2.5)
        self.scene().selectionChanged.connect(self._on_scene_selection)

    def set_data(self, xy: np.ndarray, colors: list[str] | None = None, tooltips: list[str] | None = None) -> None:
        """Plot points.

        Parameters
        ----------
        xy : ndarray, shape (N, 2)
            Coordinates; rows with NaN are not drawn (index kept).
        colors : list of str, optional
            One colour (``"#rrggbb"``) per point.
        tooltips : list of str, optional
            One tooltip per point.
        """
        self._quiet = True
        try:
            self.scene().clear()
            self._items = {}
            xy = np.asarray(xy, float)
            ok = np.all(np.isfinite(xy), axis=1)
            if ok.any():
                lo, hi = xy[ok].min(0), xy[ok].max(0)
                span = np.where(hi - lo > 0, hi - lo, 1.0)
                pos = (xy - lo) / span * EXTENT
                pos[:, 1] = EXTENT - pos[:, 1]  # y up
                for i in np.flatnonzero(ok):
                    item = QGraphicsEllipseItem(-DOT_RADIUS, -DOT_RADIUS, 2 * DOT_RADIUS, 2 * DOT_RADIUS)
                    item.setPos(float(pos[i, 0]), float(pos[i, 1]))
                    item.setFlag(QGraphicsItem.ItemIsSelectable, True)
                    item.setBrush(QBrush(QColor(colors[i] if colors else "#1f77b4")))
                    item.setPen(self._normal_pen)
                    item.setData(0, int(i))
                    if tooltips:
                        item.setToolTip(tooltips[i])
                    self.scene().addItem(item)
                    self._items[int(i)] = item
            margin = 3 * DOT_RADIUS
            self.scene().setSceneRect(-margin, -margin, EXTENT + 2 * margin, EXTENT + 2 * margin)
            self.fitInView(self.scene().sceneRect(), Qt.KeepAspectRatio)
        finally:
            self._quiet = False

    @property
    def n_points(self) -> int:
        return len(self._items)

    def selected_indices(self) -> np.ndarray:
        """Sorted indices of the selected dots."""
        return np.array(sorted(int(it.data(0)) for it in self.scene().selectedItems()), np.int64)

    def select(self, indices) -> None:
        """Select exactly these indices (from elsewhere); ``selection_changed`` is not emitted."""
        wanted = {int(i) for i in indices}
        self._quiet = True
        try:
            for i, item in self._items.items():
                item.setSelected(i in wanted)
        finally:
            self._quiet = False
        self._restyle()

    def select_rect(self, x0: float, y0: float, x1: float, y1: float) -> None:
        """Select the dots inside a rectangle given in scene units, as a rubber band does."""
        from qtpy.QtGui import QPainterPath

        path = QPainterPath()
        path.addRect(min(x0, x1), min(y0, y1), abs(x1 - x0), abs(y1 - y0))
        self.scene().setSelectionArea(path, Qt.ReplaceSelection, Qt.IntersectsItemShape)

    def scene_position(self, index: int) -> tuple[float, float]:
        """Scene coordinates of one point's dot."""
        p = self._items[int(index)].pos()
        return float(p.x()), float(p.y())

    def _restyle(self) -> None:
        for item in self._items.values():
            chosen = item.isSelected()
            item.setPen(self._selected_pen if chosen else self._normal_pen)
            item.setZValue(1 if chosen else 0)

    def _on_scene_selection(self) -> None:
        if self._quiet:
            return
        self._restyle()
        self.selection_changed.emit(self.selected_indices())

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt override)
        super().resizeEvent(event)
        if not self.scene().sceneRect().isEmpty():
            self.fitInView(self.scene().sceneRect(), Qt.KeepAspectRatio)
