"""Input normalisation robust to offsets, dtypes, padding, outliers and ramps."""

import numpy as np
import pytest

from tomolens.preprocess import Normalisation, estimate_normalisation, normalisation_for_view


@pytest.fixture(scope="module")
def vol():
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 64, 72)).astype(np.float32)


def test_a_plain_volume_gets_its_z_score(vol):
    norm = estimate_normalisation(vol)
    out = norm.apply(vol, (0, 0, 0))
    assert abs(out.mean()) < 0.01 and out.std() == pytest.approx(1.0, abs=0.02)
    np.testing.assert_allclose(out, (vol - vol.mean()) / vol.std(), atol=0.05)


@pytest.mark.parametrize("case", ["offset_int16", "uint8", "float16", "ramp", "padding", "outliers"])
def test_real_file_quirks_normalise_to_the_same_values(vol, case):
    reference = estimate_normalisation(vol).apply(vol, (0, 0, 0))
    start = (0, 0, 0)
    if case == "offset_int16":
        data = (vol * 50 + 3000).astype(np.int16)
    elif case == "uint8":
        data = np.clip(vol * 30 + 128, 0, 255).astype(np.uint8)
    elif case == "float16":
        data = (vol * 1000 + 10000).astype(np.float16)
    elif case == "ramp":
        z, y, x = np.mgrid[: vol.shape[0], : vol.shape[1], : vol.shape[2]]
        data = vol + 0.04 * x - 0.05 * z + 0.02 * y
    elif case == "padding":
        data = np.zeros((60, 90, 100), np.float32)
        data[10:50, 13:77, 14:86] = vol * 4 + 100
        start = (10, 13, 14)
    else:
        data = vol.copy()
        data.flat[::997] = -500.0  # gold beads / hot pixels: 0.1 % of the voxels
    norm = estimate_normalisation(data)
    sl = tuple(slice(s, s + n) for s, n in zip(start, vol.shape))
    out = norm.apply(data[sl], start)
    keep = np.ones(vol.shape, bool)
    if case == "outliers":
        keep.flat[::997] = False
    corr = np.corrcoef(out[keep], reference[keep])[0, 1]
    assert corr > 0.99
    assert np.abs(out[keep] - reference[keep]).mean() < 0.08, case


def test_inversion_and_views_give_the_same_values(vol):
    z, y, x = np.mgrid[: vol.shape[0], : vol.shape[1], : vol.shape[2]]
    data = vol + 0.05 * x + 0.03 * z - 0.02 * y
    norm = estimate_normalisation(data)
    assert any(norm.ramp)
    whole = norm.apply(data, (0, 0, 0))
    np.testing.assert_allclose(norm.inverted(True).apply(data, (0, 0, 0)), -whole, atol=1e-6)
    assert norm.inverted(False) is norm
    for view in (lambda a: np.moveaxis(a, 2, 0), lambda a: np.flip(np.rot90(a, 3, axes=(1, 2)), -1)):
        v_norm = normalisation_for_view(norm, data.shape, view)
        v_data = np.ascontiguousarray(view(data))
        np.testing.assert_allclose(
            v_norm.apply(v_data[2:10, 5:20, 3:30], (2, 5, 3)), view(whole)[2:10, 5:20, 3:30], atol=1e-4
        )


def test_constant_and_non_finite_volumes_are_refused():
    with pytest.raises(ValueError, match="constant"):
        estimate_normalisation(np.full((16, 16, 16), 7.0, np.float32))
    bad = np.zeros((16, 16, 16), np.float32)
    bad[3, 3, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        estimate_normalisation(bad)
    assert Normalisation(1.0, 2.0).apply(np.array([5.0])) == pytest.approx(2.0)
