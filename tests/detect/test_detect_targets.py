import numpy as np
import pytest
from skimage.feature import peak_local_max

from tomolens.detect.targets import centre_map, detection_targets


def test_centre_map_of_a_ball():
    inst = np.zeros((21, 21, 21), np.int32)
    zz, yy, xx = np.indices(inst.shape)
    inst[(zz - 10) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2 <= 36] = 1
    cm = centre_map(inst)
    assert cm[10, 10, 10] == pytest.approx(1.0)
    assert cm[inst == 0].max() == 0
    boundary = inst.astype(bool) & ~np.pad(inst, 1)[2:, 1:-1, 1:-1].astype(bool)
    assert cm[boundary].max() < 0.25
    # monotone from the centre outwards along x
    profile = cm[10, 10, 10:17]
    assert np.all(np.diff(profile) < 0)


def test_touching_spheres_and_a_ring_each_get_one_peak(spheres):
    _, inst, centres = spheres
    t = detection_targets(inst)
    assert t.shape == (2, *inst.shape) and t.dtype == np.float32
    np.testing.assert_array_equal(t[0], inst > 0)
    peaks = peak_local_max(t[1], min_distance=2, threshold_abs=0.5, exclude_border=False)
    assert len(peaks) == len(centres)
    # a torus-like ring: its own distance map has a ridge, the hull-based map one central peak
    ring = np.zeros((9, 31, 31), np.int32)
    _, yy, xx = np.indices(ring.shape)
    r = np.hypot(yy - 15, xx - 15)
    ring[2:7][(r[2:7] > 8) & (r[2:7] < 12)] = 1
    cm = centre_map(ring)
    ring_peaks = peak_local_max(cm, min_distance=2, threshold_abs=0.3, exclude_border=False)
    assert len(ring_peaks) == 1
    assert np.abs(ring_peaks[0] - [4, 15, 15]).max() <= 1


def test_centre_map_rejects_bad_labels():
    with pytest.raises(ValueError, match="3D"):
        centre_map(np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError, match="integers"):
        centre_map(np.zeros((4, 4, 4), np.float32))
