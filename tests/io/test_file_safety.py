"""What each reader refuses and what each writer guarantees (issue 22); see docs/file_safety.md."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from malformed import patch_data, patch_header, valid_mrc
from tomolens._napari.layers import points_layer_data, volume_layer_data
from tomolens.io.atomic import atomic_path, remove_stale_temporaries
from tomolens.io.coords import CoordinateFileError, ParticleTable, read_coordinates, write_coordinates
from tomolens.io.mrc import MrcReadError, UnknownVoxelSizeWarning, contrast_limits, read_mrc, write_mrc


def _layer(layer_data):
    """Build the napari layer as napari does after a reader returns (no viewer needed)."""
    import napari.layers

    data, kwargs, kind = layer_data
    return getattr(napari.layers, kind.capitalize())(data, **kwargs)


# --- MRC reader ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ispg": 401, "nz": 4, "mz": 2}, "holds 2 volumes of 2 sections"),
        ({"ispg": 401, "mz": 0}, "not a multiple of mz = 0"),
        ({"ispg": 401, "nz": 4, "mz": 3}, "not a multiple of mz = 3"),
        ({"nx": -8}, "empty or negative size"),
        ({"nz": -(2**31)}, "empty or negative size"),
        ({"ny": 0}, "empty or negative size"),
        ({"nsymbt": 2**31 - 1}, "extended header of 2,147,483,647 bytes"),
        ({"nsymbt": -5}, "extended header of -5 bytes"),
        ({"mode": 4}, "mode 4"),
        ({"machst": (0x99, 0x99, 0, 0)}, "unknown byte-order stamp"),
        ({"nx": 2**30, "ny": 2**30}, "truncated"),
    ],
)
def test_corrupt_headers_are_refused_with_the_file_name(tmp_path, fields, message):
    path = patch_header(valid_mrc(tmp_path / "bad.mrc"), **fields)
    with pytest.raises(MrcReadError, match=message) as err:
        read_mrc(path)
    assert str(err.value).startswith("bad.mrc ")


def test_huge_extended_header_is_refused_before_allocating(tmp_path):
    import resource

    path = patch_header(valid_mrc(tmp_path / "ext.mrc", shape=(16, 32, 32)), nsymbt=2**31 - 1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(MrcReadError, match="extended header"):
        read_mrc(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB


def test_volume_stack_of_one_volume_reads(tmp_path):
    path = patch_header(valid_mrc(tmp_path / "one.mrc"), ispg=401, mz=4)
    vol = read_mrc(path)
    assert vol.data.shape == (4, 6, 8) and vol.kind == "volume"
    _layer(volume_layer_data(vol))


def test_nan_and_inf_anywhere_are_found(tmp_path):
    # 64³ voxels: the old strided subsample read every other voxel and missed odd indices
    for value, index in ((np.nan, 64 * 64 * 64 - 1), (np.inf, 12345)):
        path = patch_data(valid_mrc(tmp_path / "nan.mrc", shape=(64, 64, 64)), index, value)
        with pytest.raises(MrcReadError, match="nan.mrc contains 1 NaN or Inf values"):
            read_mrc(path)


@pytest.mark.parametrize("value", [3.4e38, -3.4e38, 0.0, 1e-30])
def test_constant_volumes_get_valid_contrast_limits(tmp_path, value):
    path = write_mrc(tmp_path / "c.mrc", np.full((3, 5, 7), value, np.float32), 10.0)
    vol = read_mrc(path)
    low, high = contrast_limits(vol.data)
    assert np.isfinite([low, high]).all() and high > low and high <= np.finfo(np.float32).max
    layer = _layer(volume_layer_data(vol))
    assert layer.contrast_limits[1] > layer.contrast_limits[0]


@pytest.mark.parametrize(
    "cell", [(np.nan, 10.0, 10.0), (np.inf, np.inf, np.inf), (-80.0, -60.0, -40.0), (1e38, 1e38, 1e38)]
)
def test_unusable_header_voxel_sizes_are_unknown(tmp_path, cell):
    path = patch_header(valid_mrc(tmp_path / "v.mrc"), cella=cell)
    with pytest.warns(UnknownVoxelSizeWarning, match="v.mrc"):
        vol = read_mrc(path)
    assert vol.voxel_size_A is None
    assert _layer(volume_layer_data(vol)).scale.tolist() == [1.0, 1.0, 1.0]


def test_sampling_zero_does_not_divide_by_zero(tmp_path):
    path = patch_header(valid_mrc(tmp_path / "m.mrc"), mx=0, my=0, mz=0)
    with pytest.warns(UnknownVoxelSizeWarning):
        assert read_mrc(path).voxel_size_A is None


def test_labels_stay_memory_mapped_and_painting_never_touches_the_file(tmp_path):
    path = valid_mrc(tmp_path / "lab.mrc", shape=(8, 16, 16), is_labels=True)
    before = path.read_bytes()
    vol = read_mrc(path)
    data, kwargs, kind = volume_layer_data(vol)
    assert kind == "labels" and isinstance(data, np.memmap) and data.mode == "c"
    layer = _layer((data, kwargs, kind))
    layer.data[2, 3, 4] = 9  # what a paint stroke does
    assert layer.data[2, 3, 4] == 9 and path.read_bytes() == before


def test_special_files_and_folders_are_named_as_such(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder, not a MRC file"):
        read_mrc(tmp_path)
    fifo = tmp_path / "pipe.mrc"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="is a pipe, not a regular MRC file"):
        read_mrc(fifo)
    with pytest.raises(OSError, match="is a device, not a regular coordinate file"):
        read_coordinates("/dev/zero")
    with pytest.raises(FileNotFoundError, match="No such coordinate file"):
        read_coordinates(tmp_path / "missing.star")


# --- coordinate readers -----------------------------------------------------------------------------------

STAR_HEAD = "data_particles\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n_rlnCoordinateZ #3\n"


def test_star_loop_without_rows_is_refused_also_when_we_wrote_it(tmp_path):
    (tmp_path / "e.star").write_text(STAR_HEAD + "_rlnImagePixelSize #4\n")
    with pytest.raises(CoordinateFileError, match="e.star holds no particles"):
        read_coordinates(tmp_path / "e.star")
    write_coordinates(tmp_path / "ours.star", ParticleTable(np.zeros((0, 3)), pixel_size_A=10.0))
    with pytest.raises(CoordinateFileError, match="ours.star holds no particles"):
        read_coordinates(tmp_path / "ours.star")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("zero.star", STAR_HEAD + "_rlnImagePixelSize #4\n1 2 3 0\n"),
        ("nan.star", STAR_HEAD + "_rlnImagePixelSize #4\n1 2 3 nan\n"),
        ("neg.csv", "x,y,z,pixel_size_A\n1,2,3,-5\n"),
        ("inf.csv", "x,y,z,pixel_size_A\n1,2,3,inf\n"),
    ],
)
def test_unusable_pixel_sizes_in_files_are_unknown(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    with pytest.warns(UserWarning, match=f"{name}: .* not a positive pixel size"):
        table = read_coordinates(tmp_path / name)
    assert table.pixel_size_A is None
    assert _layer(points_layer_data(table)).scale.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("abc.csv", "x,y,z\n1,2,3\n4,abc,6\n", "abc.csv, line 3, column y: 'abc' is not a finite number"),
        ("nan.csv", "x,y,z\n1,nan,3\n", "nan.csv, line 2, column y"),
        ("big.star", STAR_HEAD + "1 2 3\n4 5 1e400\n", "big.star, particle 2, column rlnCoordinateZ"),
        ("inf.star", STAR_HEAD + "inf 2 3\n", "inf.star, particle 1, column rlnCoordinateX"),
        ("nan.txt", "1 2 3\n4 nan 6\n", "nan.txt, particle 2: .* is not a finite position"),
        ("word.txt", "1 2 abc\n", "word.txt is not a plain 'x y z' text file"),
    ],
)
def test_bad_coordinates_name_file_line_and_column(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(CoordinateFileError, match=message):
        read_coordinates(tmp_path / name)


def test_non_utf8_text_is_named(tmp_path):
    (tmp_path / "latin.csv").write_bytes("x,y,z,note\n1,2,3,caf\xe9\n".encode("latin-1"))
    with pytest.raises(CoordinateFileError, match="latin.csv is not UTF-8 text"):
        read_coordinates(tmp_path / "latin.csv")
    (tmp_path / "latin.txt").write_bytes(b"1 2 3 \xff\xfe\n")
    with pytest.raises(CoordinateFileError, match="latin.txt is not UTF-8 text"):
        read_coordinates(tmp_path / "latin.txt")


@pytest.mark.parametrize("px", [0.0, -5.0, float("nan"), float("inf")])
def test_given_pixel_size_must_be_positive_and_finite(tmp_path, px):
    (tmp_path / "p.csv").write_text("x,y,z\n1,2,3\n")
    with pytest.raises(ValueError, match="pixel size must be a positive number"):
        read_coordinates(tmp_path / "p.csv", pixel_size_A=px)


# --- writers ----------------------------------------------------------------------------------------------


def test_writers_refuse_values_they_cannot_store(tmp_path):
    with pytest.raises(ValueError, match="beyond float32"):
        write_mrc(tmp_path / "big.mrc", np.full((2, 2, 2), 1e39))
    for vs in (float("nan"), 0.0, (10.0, -1.0, 10.0), float("inf")):
        with pytest.raises(ValueError, match="voxel size to write"):
            write_mrc(tmp_path / "vs.mrc", np.zeros((2, 2, 2), np.float32), vs)
    table = ParticleTable(np.array([[1.0, 2.0, 3.0], [np.nan, 1.0, 1.0]]))
    with pytest.raises(CoordinateFileError, match="particle 2 has the position"):
        write_coordinates(tmp_path / "nan.star", table)
    with pytest.raises(ValueError, match="pixel size to write"):
        write_coordinates(tmp_path / "px.star", ParticleTable(np.ones((1, 3)), pixel_size_A=float("nan")))
    assert list(tmp_path.iterdir()) == []


def test_line_break_in_a_text_feature(tmp_path):
    table = ParticleTable(np.ones((2, 3)), pd.DataFrame({"note": ["fine", "two\nlines"]}), 10.0)
    with pytest.raises(CoordinateFileError, match="feature 'note' of particle 2 contains a line break"):
        write_coordinates(tmp_path / "n.star", table)
    write_coordinates(tmp_path / "n.csv", table)  # CSV quotes it
    assert read_coordinates(tmp_path / "n.csv").features["note"].tolist() == ["fine", "two\nlines"]


def test_read_only_target_is_refused_and_kept(tmp_path):
    target = write_mrc(tmp_path / "keep.mrc", np.zeros((2, 2, 2), np.float32), 10.0)
    before = target.read_bytes()
    target.chmod(0o444)
    with pytest.raises(PermissionError, match="keep.mrc.*the file is read-only"):
        write_mrc(target, np.ones((2, 2, 2), np.float32), 10.0)
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["keep.mrc"]


def test_write_fsyncs_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    with atomic_path(tmp_path / "f.txt") as tmp:
        tmp.write_text("data")
    assert events[:2] == ["fsync", "replace"] and events[2:] == ["fsync"]  # the file, then the folder


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    pid = int(dead.stdout)
    stale = tmp_path / f".t.mrc.{pid}.abcd.tmp"
    stale.write_bytes(b"x" * 1000)
    live = tmp_path / f".t.mrc.{os.getpid()}.efgh.tmp"
    live.write_bytes(b"y")
    other = tmp_path / ".t.mrc.notours.tmp"
    other.write_bytes(b"z")
    write_mrc(tmp_path / "t.mrc", np.zeros((2, 2, 2), np.float32), 10.0)
    assert not stale.exists() and live.exists() and other.exists()
    assert remove_stale_temporaries(tmp_path / "t.mrc") == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_a_write_leaves_no_temporary_file(tmp_path, sig):
    script = textwrap.dedent(f"""
        import sys, time
        from tomolens.io.atomic import atomic_path, install_sigterm_cleanup
        assert install_sigterm_cleanup()
        with atomic_path({str(tmp_path / "out.bin")!r}) as tmp:
            tmp.write_bytes(b"x" * 1_000_000)
            print("writing", flush=True)
            time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "writing"
    assert len(list(tmp_path.glob(".out.bin.*.tmp"))) == 1
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert proc.returncode != 0
    assert list(tmp_path.iterdir()) == []


def test_scale_kwargs_of_any_dimension():
    from tomolens._napari.layers import scale_kwargs

    assert scale_kwargs(10.0, 4)["axis_labels"] == ("axis 0", "z", "y", "x")  # was KeyError: 4
    assert scale_kwargs(None, 2)["axis_labels"] == ("y", "x")
    assert scale_kwargs((1.0, 5.0, 5.0), 3, kind="stack")["scale"] == (1.0, 5.0, 5.0)
