"""The docks' small plots draw their curves (loss per epoch, precision–recall)."""

import numpy as np

from tomolens.evaluate import precision_recall_curve


def _colours(widget) -> set[tuple[int, int, int]]:
    widget.resize(240, 120)
    image = widget.grab().toImage()
    return {image.pixelColor(x, y).getRgb()[:3] for x in range(image.width()) for y in range(image.height())}


def test_precision_recall_plot_draws_the_curve_and_both_points(qapp):
    from tomolens._widgets.pr_plot import PrecisionRecallPlot

    true = np.array([[0, 0, 0], [0, 0, 100], [0, 100, 0]], float)
    # hit, miss, hit, hit, miss: the best F1 (4 picks) is not the last point (5 picks)
    pred = np.array([[0, 0, 1], [50, 50, 50], [0, 0, 99], [0, 99, 0], [70, 70, 70]], float)
    plot = PrecisionRecallPlot()
    empty = _colours(plot)
    plot.set_curve(precision_recall_curve(pred, [0.9, 0.8, 0.5, 0.2, 0.1], true, 5.0))
    drawn = _colours(plot) - empty
    assert (0x4C, 0x9B, 0xE8) in drawn  # the curve
    assert (0x2E, 0xCC, 0x71) in drawn and (255, 255, 255) in drawn  # best-F1 and current points


def test_loss_plot_draws_both_curves(qapp):
    from tomolens._widgets._painting import LossPlot

    plot = LossPlot()
    plot.set_history([{"loss": 1.0 / (i + 1), "val_loss": 1.2 / (i + 1)} for i in range(6)])
    drawn = _colours(plot)
    assert (0x4C, 0x9B, 0xE8) in drawn and (0xF3, 0x9C, 0x12) in drawn
