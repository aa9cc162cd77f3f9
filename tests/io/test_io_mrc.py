import warnings

import mrcfile
import numpy as np
import pytest

from tomolens.io.mrc import MrcReadError, UnknownVoxelSizeWarning, contrast_limits, read_mrc, write_mrc


def make_volume(shape=(20, 30, 40), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_write_read_round_trip_keeps_axes_dtype_and_voxel_size(tmp_path):
    vol = make_volume()
    vol[3, 4, 5] = 42.0
    write_mrc(tmp_path / "t.mrc", vol, voxel_size_A=(8.0, 7.0, 6.0))
    # Files speak x, y, z: check the header with mrcfile directly.
    with mrcfile.open(tmp_path / "t.mrc") as mrc:
        assert (mrc.header.nx, mrc.header.ny, mrc.header.nz) == (40, 30, 20)
        assert float(mrc.voxel_size.x) == pytest.approx(6.0)
        assert float(mrc.voxel_size.z) == pytest.approx(8.0)
    out = read_mrc(tmp_path / "t.mrc")
    assert out.kind == "volume" and not out.is_labels
    assert out.voxel_size_A == pytest.approx((8.0, 7.0, 6.0))
    assert out.data.dtype == np.float32 and out.data.shape == (20, 30, 40)
    assert isinstance(out.data, np.memmap)
    assert out.data[3, 4, 5] == 42.0
    np.testing.assert_array_equal(out.data, vol)


def test_labels_round_trip_reopen_as_labels(tmp_path):
    labels = np.zeros((10, 12, 14), np.int64)
    labels[2:5, 3:6, 4:7] = 3
    labels[7, 8, 9] = 60000
    write_mrc(tmp_path / "l.mrc", labels, voxel_size_A=10.0, is_labels=True)
    out = read_mrc(tmp_path / "l.mrc")
    assert out.is_labels and out.data.dtype == np.uint16
    np.testing.assert_array_equal(out.data, labels)


def test_too_many_labels_is_a_clear_error_and_writes_nothing(tmp_path):
    labels = np.zeros((4, 4, 4), np.int64)
    labels[0, 0, 0] = 70000
    with pytest.raises(ValueError, match="16-bit"):
        write_mrc(tmp_path / "l.mrc", labels, is_labels=True)
    assert list(tmp_path.iterdir()) == []


def test_unknown_voxel_size_warns_and_is_none(tmp_path):
    write_mrc(tmp_path / "a.mrc", make_volume(), voxel_size_A=1.0)
    with pytest.warns(UnknownVoxelSizeWarning, match="unknown"):
        assert read_mrc(tmp_path / "a.mrc").voxel_size_A is None
    write_mrc(tmp_path / "b.mrc", make_volume(), voxel_size_A=None)
    with pytest.warns(UnknownVoxelSizeWarning):
        assert read_mrc(tmp_path / "b.mrc").voxel_size_A is None


def test_truncated_file_is_refused(tmp_path):
    write_mrc(tmp_path / "t.mrc", make_volume(), voxel_size_A=5.0)
    raw = (tmp_path / "t.mrc").read_bytes()
    (tmp_path / "cut.mrc").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MrcReadError, match="truncated"):
        read_mrc(tmp_path / "cut.mrc")


def test_non_mrc_file_is_refused(tmp_path):
    (tmp_path / "fake.mrc").write_bytes(b"this is a text file pretending to be an MRC" * 40)
    with pytest.raises(MrcReadError, match="not an MRC file"):
        read_mrc(tmp_path / "fake.mrc")


def test_unsupported_mode_is_refused(tmp_path):
    with mrcfile.new(tmp_path / "c.mrc") as mrc:
        mrc.set_data(np.zeros((4, 4, 4), np.complex64))
    with pytest.raises(MrcReadError, match="mode 4"):
        read_mrc(tmp_path / "c.mrc")


def test_nan_in_data_is_refused_on_read_and_write(tmp_path):
    vol = make_volume()
    vol[0, 0, 0] = np.nan
    with mrcfile.new(tmp_path / "n.mrc") as mrc:
        mrc.set_data(vol)
    with pytest.raises(MrcReadError, match="NaN or Inf"):
        read_mrc(tmp_path / "n.mrc")
    with pytest.raises(ValueError, match="NaN or Inf"):
        write_mrc(tmp_path / "w.mrc", vol)
    assert not (tmp_path / "w.mrc").exists()


def test_failed_write_keeps_the_existing_good_file(tmp_path):
    good = make_volume()
    write_mrc(tmp_path / "keep.mrc", good, voxel_size_A=4.0)
    before = (tmp_path / "keep.mrc").read_bytes()
    with pytest.raises(ValueError):
        write_mrc(tmp_path / "keep.mrc", np.zeros((2, 2, 2, 2), np.float32))
    bad = good.copy()
    bad[1, 1, 1] = np.inf
    with pytest.raises(ValueError):
        write_mrc(tmp_path / "keep.mrc", bad)
    assert (tmp_path / "keep.mrc").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mrc"]


def test_unwritable_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_mrc(tmp_path / "missing" / "x.mrc", make_volume())
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        import os

        if os.access(locked, os.W_OK):  # root ignores permissions
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(PermissionError, match="permission denied"):
            write_mrc(locked / "x.mrc", make_volume())
    finally:
        locked.chmod(0o700)


def test_stack_and_single_image(tmp_path):
    stack = make_volume((5, 16, 16))
    write_mrc(tmp_path / "s.mrcs", stack, voxel_size_A=2.0)
    s = read_mrc(tmp_path / "s.mrcs")
    assert s.kind == "stack" and s.data.shape == (5, 16, 16)
    assert s.voxel_size_A == pytest.approx((1.0, 2.0, 2.0))
    write_mrc(tmp_path / "i.mrc", stack[0], voxel_size_A=2.0)
    i = read_mrc(tmp_path / "i.mrc")
    assert i.kind == "image" and i.data.shape == (16, 16)


def test_contrast_limits_from_subsample_are_robust():
    data = np.random.default_rng(1).normal(size=(64, 64, 64)).astype(np.float32)
    data[0, 0, 0] = 1e6
    lo, hi = contrast_limits(data)
    assert -4 < lo < -2 and 2 < hi < 4


def test_large_volume_opens_without_loading(tmp_path):
    # 128 MiB on disk; reading must not touch the data block (memory-mapped).
    path = tmp_path / "big.mrc"
    with mrcfile.new_mmap(path, shape=(128, 512, 512), mrc_mode=2) as mrc:
        mrc.data[::16] = 1.0
        mrc.voxel_size = 10.0
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vol = read_mrc(path)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert vol.data.shape == (128, 512, 512)
    assert (after - before) < 64 * 1024  # KiB: far less than the 128 MiB file


def test_write_onto_a_folder_fails_cleanly(tmp_path):
    (tmp_path / "taken.mrc").mkdir()
    with pytest.raises(OSError):
        write_mrc(tmp_path / "taken.mrc", make_volume())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.mrc"]
    assert (tmp_path / "taken.mrc").is_dir()


def test_written_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        write_mrc(tmp_path / "p.mrc", make_volume())
        assert stat.S_IMODE((tmp_path / "p.mrc").stat().st_mode) == 0o644
        (tmp_path / "p.mrc").chmod(0o640)
        write_mrc(tmp_path / "p.mrc", make_volume())  # replacing keeps the old file's mode
        assert stat.S_IMODE((tmp_path / "p.mrc").stat().st_mode) == 0o640
    finally:
        os.umask(umask)
