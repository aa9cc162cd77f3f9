"""A small precision–recall plot for the Detect dock (QPainter, no plotting library)."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPointF
from qtpy.QtGui import QColor, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

from tomolens._widgets._painting import draw_curve, framed_painter

from tomolens.evaluate import PrecisionRecallCurve


class PrecisionRecallPlot(QWidget):
    """Precision (up) against recall (right) over the score threshold, with two marked points.

    The white dot is what the dock keeps now (every pick at or above its *min score*); the green
    dot is the threshold of the highest F1.
    """

    def __init__(self) -> None:
        super().__init__()
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.curve: PrecisionRecallCurve | None = None
        self.setToolTip(
            "Precision against recall of the picks scoring at least each threshold (greedy "
            "matching in score order). White: the picks kept now; green: the threshold of the best F1."
        )

    def set_curve(self, curve: PrecisionRecallCurve | None) -> None:
        """Show ``curve`` (None clears the plot)."""
        self.curve = curve
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt name)
        w, h, pad = self.width(), self.height(), 18
        painter = framed_painter(self, left=pad, top=4, right=5, bottom=pad)
        painter.setPen(QPen(QColor("#bbbbbb")))
        painter.drawText(2, 14, "P")
        painter.drawText(w - 14, h - 4, "R")
        curve = self.curve
        if curve is None or len(curve.thresholds) == 0:
            painter.drawText(pad + 6, h // 2, "choose a ground truth to see precision–recall")
            painter.end()
            return

        def at(recall: float, precision: float) -> QPointF:
            return QPointF(pad + (w - pad - 5) * recall, 4 + (h - pad - 4) * (1 - precision))

        points = [at(r, p) for r, p in zip(curve.recall, curve.precision)]
        draw_curve(painter, points, "#4c9be8")
        best = int(np.argmax(curve.f1))
        for index, colour in ((best, "#2ecc71"), (len(points) - 1, "#ffffff")):
            painter.setPen(QPen(QColor(colour), 2))
            painter.setBrush(QColor(colour))
            painter.drawEllipse(points[index], 3.5, 3.5)
        painter.end()
