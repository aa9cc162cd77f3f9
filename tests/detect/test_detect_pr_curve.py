"""Precision–recall over the score threshold (greedy matching in score order)."""

import numpy as np
import pytest

from tomolens.evaluate import match_centres, precision_recall_curve


def test_curve_on_a_constructed_case():
    true = np.array([[0, 0, 0], [0, 0, 100], [0, 100, 0], [100, 0, 0]], float)
    # three good picks (scores 0.9, 0.8, 0.4), one far false pick (0.7), one duplicate of a true one (0.3)
    pred = np.array([[0, 0, 2], [0, 0, 98], [50, 50, 50], [0, 101, 0], [1, 0, 0]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.4, 0.3])
    curve = precision_recall_curve(pred, scores, true, 10.0)
    np.testing.assert_allclose(curve.thresholds, [0.9, 0.8, 0.7, 0.4, 0.3])
    np.testing.assert_allclose(curve.precision, [1, 1, 2 / 3, 3 / 4, 3 / 5])
    np.testing.assert_allclose(curve.recall, [0.25, 0.5, 0.5, 0.75, 0.75])
    assert curve.best_threshold == 0.4 and curve.best_f1 == pytest.approx(0.75)
    # at the lowest threshold it agrees with the optimal one-to-one matching here
    m = match_centres(pred, true, 10.0)
    assert (m.precision, m.recall) == pytest.approx((curve.precision[-1], curve.recall[-1]))


def test_per_particle_tolerance_and_empty_inputs():
    true = np.array([[0, 0, 0], [0, 0, 100]], float)
    pred = np.array([[0, 0, 8], [0, 0, 108]], float)
    curve = precision_recall_curve(pred, [0.5, 0.6], true, np.array([5.0, 10.0]))
    np.testing.assert_allclose(curve.recall, [0.5, 0.5])  # only the second (tolerance 10) is a hit
    empty = precision_recall_curve(np.zeros((0, 3)), [], true, 5.0)
    assert len(empty.thresholds) == 0 and empty.best_f1 == 0.0
    with pytest.raises(ValueError, match="2 picks but 1 scores"):
        precision_recall_curve(pred, [0.5], true, 5.0)
