import numpy as np
import pandas as pd
import pytest

from tomolens.evaluate import evaluate_tables, match_centres
from tomolens.io.coords import ParticleTable


def test_perfect_and_empty_cases():
    pts = np.array([[0, 0, 0], [50, 0, 0], [0, 80, 0]], float)
    m = match_centres(pts + 1, pts, 5)
    assert (m.true_positives, m.false_positives, m.false_negatives) == (3, 0, 0)
    assert m.f1 == 1.0 and m.mean_distance_A == pytest.approx(np.sqrt(3))
    none = match_centres(np.zeros((0, 3)), pts, 5)
    assert none.precision == 0.0 and none.recall == 0.0 and none.f1 == 0.0
    assert match_centres(np.zeros((0, 3)), np.zeros((0, 3)), 5).f1 == 1.0  # nothing to find, nothing found


def test_matching_is_one_to_one_and_optimal():
    true = np.array([[0, 0, 0], [8, 0, 0]], float)
    # two predictions near the first truth; greedy nearest would pair (0→0) and leave (1) unmatched
    pred = np.array([[3, 0, 0], [1, 0, 0]], float)
    m = match_centres(pred, true, 7.5)
    assert m.true_positives == 2  # (3→8 is 5 Å, 1→0 is 1 Å)
    assert sorted(m.pairs) == [(0, 1), (1, 0)]
    # duplicates count as false positives
    dup = match_centres(np.array([[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0]]), true[:1], 2)
    assert (dup.true_positives, dup.false_positives, dup.precision) == (1, 2, pytest.approx(1 / 3))


def test_precision_recall_f1_numbers():
    true = np.array([[i * 100.0, 0, 0] for i in range(10)])
    pred = np.vstack([true[:8] + [4, 0, 0], [[1000, 1000, 1000], [2000, 0, 0]]])
    m = match_centres(pred, true, 5)
    assert m.precision == pytest.approx(0.8) and m.recall == pytest.approx(0.8) and m.f1 == pytest.approx(0.8)
    assert match_centres(pred, true, 3).true_positives == 0
    # per-particle tolerance
    tol = np.full(10, 3.0)
    tol[:4] = 5.0
    assert match_centres(pred, true, tol).true_positives == 4


def test_evaluate_tables_default_tolerance_from_radius():
    true = ParticleTable(np.array([[10, 10, 10], [30, 30, 30]], float), pd.DataFrame({"radius_A": [40.0, 40.0]}), 10.0)
    pred = ParticleTable(np.array([[11.5, 10, 10], [32.5, 30, 30]], float), pixel_size_A=10.0)
    m = evaluate_tables(pred, true)
    assert m.tolerance_A == 20.0 and m.true_positives == 1
    with pytest.raises(ValueError, match="tolerance"):
        evaluate_tables(pred, ParticleTable(true.coords_zyx, pixel_size_A=10.0))
    with pytest.raises(ValueError, match="positive"):
        match_centres(pred.coords_zyx, true.coords_zyx, 0)
