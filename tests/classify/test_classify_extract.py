"""Extraction of subtomograms at known positions, edges and bad input."""

import numpy as np
import pytest

from tomolens.classify.extract import box_in_voxels, extract_subtomograms
from tomolens.jobs import run_job


@pytest.fixture
def ramp():
    # value encodes the voxel index: v = 10000 z + 100 y + x
    z, y, x = np.meshgrid(np.arange(20), np.arange(30), np.arange(40), indexing="ij")
    return (10000 * z + 100 * y + x).astype(np.float32)


def test_known_positions_return_the_right_voxels(ramp, tmp_path):
    path = tmp_path / "ramp.npy"
    np.save(path, ramp)
    mm = np.load(path, mmap_mode="r")
    coords = np.array([[10, 15, 20], [5.4, 7.6, 30.2]])
    ex = run_job(extract_subtomograms(mm, coords, box=6, normalise=False))
    assert ex.subtomograms.shape == (2, 6, 6, 6)
    np.testing.assert_array_equal(ex.subtomograms[0], ramp[7:13, 12:18, 17:23])
    # rounded to (5, 8, 30): the centre voxel sits at index box // 2
    assert ex.subtomograms[1][3, 3, 3] == 10000 * 5 + 100 * 8 + 30
    assert len(ex.padded) == 0 and len(ex.skipped) == 0


def test_edge_pad_fills_with_box_mean_and_reports(ramp):
    coords = np.array([[1, 15, 20], [10, 15, 20], [10, 29, 39]])
    ex = run_job(extract_subtomograms(ramp, coords, box=6, edge="pad", normalise=False))
    assert list(ex.padded) == [0, 2]
    inner = ramp[0:4, 12:18, 17:23]
    np.testing.assert_array_equal(ex.subtomograms[0, 2:], inner)
    np.testing.assert_allclose(ex.subtomograms[0, :2], inner.mean(), rtol=1e-6)
    # centre (10, 29, 39): y rows 26..29 and x columns 36..39 exist, the rest is padded
    np.testing.assert_array_equal(ex.subtomograms[2, :, :4, :4], ramp[7:13, 26:30, 36:40])
    np.testing.assert_allclose(ex.subtomograms[2, :, 4:, :], ramp[7:13, 26:30, 36:40].mean(), rtol=1e-6)


def test_edge_skip_leaves_out_and_reports(ramp):
    coords = np.array([[1, 15, 20], [10, 15, 20], [10, 29, 39]])
    ex = run_job(extract_subtomograms(ramp, coords, box=6, edge="skip", normalise=False))
    assert list(ex.indices) == [1] and list(ex.skipped) == [0, 2] and len(ex.padded) == 0
    np.testing.assert_array_equal(ex.subtomograms[0], ramp[7:13, 12:18, 17:23])


def test_normalisation_is_per_cube_zscore(ramp):
    ex = run_job(extract_subtomograms(ramp, np.array([[10, 15, 20], [12, 10, 10]]), box=8))
    flat = ex.subtomograms.reshape(2, -1)
    np.testing.assert_allclose(flat.mean(1), 0, atol=1e-4)
    np.testing.assert_allclose(flat.std(1), 1, atol=1e-4)


def test_bad_input_messages(ramp):
    with pytest.raises(ValueError, match="outside the tomogram") as err:
        run_job(extract_subtomograms(ramp, np.array([[10, 15, 20], [25, 1, 1]]), box=6))
    assert f"{tuple(ramp.shape)}; the first is point 1 at (z, y, x) (25.0, 1.0, 1.0)" in str(err.value)
    with pytest.raises(ValueError, match="larger than the tomogram") as err:
        run_job(extract_subtomograms(ramp, np.array([[10, 15, 20]]), box=24))
    shape = " × ".join(str(n) for n in ramp.shape)
    assert f"({shape} voxels, z × y × x)" in str(err.value) and "np.int64" not in str(err.value)
    with pytest.raises(ValueError, match="edge must be"):
        run_job(extract_subtomograms(ramp, np.array([[10, 15, 20]]), box=6, edge="wrap"))
    assert box_in_voxels(320, 10) == 32
    with pytest.raises(ValueError, match="voxel size"):
        box_in_voxels(320, 0)
