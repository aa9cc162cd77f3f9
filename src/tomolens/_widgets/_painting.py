"""The docks' small plots: QPainter helpers and the live loss plot (segment and classifier training)."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPointF
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget


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


class LossPlot(QWidget):
    """A small live plot of training (blue) and validation (orange) loss per epoch (QPainter).

    With nothing held out (segmentation from painted slices), the orange curve is the loss on the
    painted (training) voxels.
    """

    def __init__(self) -> None:
        super().__init__()
        self.setMinimumHeight(70)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.series: dict[str, list[float]] = {"loss": [], "val_loss": []}

    def set_history(self, history: list[dict]) -> None:
        """Plot ``history`` (dicts with ``loss`` and ``val_loss``)."""
        self.series = {k: [float(h[k]) for h in history if k in h] for k in ("loss", "val_loss")}
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt name)
        painter = framed_painter(self)
        w, h, pad = self.width(), self.height(), 6
        values = [v for s in self.series.values() for v in s if np.isfinite(v)]
        n = max((len(s) for s in self.series.values()), default=0)
        if not values or n < 1:
            painter.drawText(pad, h // 2, "loss curve appears during training")
            painter.end()
            return
        lo, hi = min(values), max(values)
        span = hi - lo or 1.0
        for key, colour in (("loss", "#4c9be8"), ("val_loss", "#f39c12")):
            pts = [
                QPointF(pad + (w - 2 * pad) * (i / max(n - 1, 1)), h - pad - (h - 2 * pad) * (v - lo) / span)
                for i, v in enumerate(self.series[key])
            ]
            draw_curve(painter, pts, colour)
        painter.setPen(QPen(QColor("#bbbbbb")))
        painter.drawText(pad, pad + 10, f"{hi:.3g}")
        painter.drawText(pad, h - pad, f"{lo:.3g}")
        painter.end()
