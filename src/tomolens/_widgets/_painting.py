"""QPainter helpers shared by the docks' small plots (loss curves, precision–recall)."""

from __future__ import annotations

from qtpy.QtCore import QPointF
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF


def framed_painter(widget, left: int = 0, top: int = 0, right: int = 1, bottom: int = 1) -> QPainter:
    """An antialiased painter on ``widget`` that has drawn the plot frame (insets in px)."""
    painter = QPainter(widget)
    painter.setRenderHint(QPainter.Antialiasing)
    painter.setPen(QPen(QColor("#666666")))
    painter.drawRect(left, top, widget.width() - left - right, widget.height() - top - bottom)
    return painter


def draw_curve(painter: QPainter, points: list[QPointF], colour: str) -> None:
    """A 2 px polyline through ``points`` (a dot when there is one point)."""
    painter.setPen(QPen(QColor(colour), 2))
    if len(points) == 1:
        painter.drawEllipse(points[0], 2, 2)
    elif points:
        painter.drawPolyline(QPolygonF(points))
