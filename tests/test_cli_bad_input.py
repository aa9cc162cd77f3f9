"""Every sub-command × bad input: one clear line on stderr, exit status 2, no traceback unless -v."""

import os
import subprocess
import sys

import numpy as np
import pytest

import tomolens.io.cli
from tomolens.cli import main
from tomolens.io.coords import ParticleTable, write_coordinates
from tomolens.io.mrc import write_mrc


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_mrc(root / "tomo.mrc", np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32), 10.0)
    write_mrc(root / "vs0.mrc", np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32), None)
    write_mrc(root / "labels.mrc", np.zeros((16, 16, 16), np.uint16), 10.0, is_labels=True)
    write_mrc(root / "stack.mrcs", np.zeros((4, 16, 16), np.float32), 10.0)
    write_coordinates(root / "picks.star", ParticleTable(np.full((2, 3), 8.0), pixel_size_A=10.0))
    (root / "folder").mkdir()
    readonly = root / "readonly.star"
    readonly.write_text("keep")
    readonly.chmod(0o444)
    return root


# {in}: the input under test; {tomo}, {picks}, {stack}, {labels}, {preset}: valid files; {out}: a writable output
COMMANDS = {
    "info": "info {in}",
    "convert-coords": "convert-coords {in} {out}.star",
    "detect": "detect {in} --out {out}",
    "evaluate": "evaluate {in} {picks}",
    "classify": "classify {in} {picks} --out {out}.star",
    "subdivide": "subdivide {in} {picks} --out {out}.star",
    "segment": "segment {in} --out {out}",
    "batch": "batch {preset} {in} --out {out}",
    "train": "train --task detect --tomograms {in} --labels {labels} --out {out} --epochs 1",
    "orient simulate": "orient simulate {in} {out}.mrcs",
    "orient train": "orient train {out}.pt --maps {in}",
    "orient recover": "orient recover {in}",
}
#: Where each command takes a voxel or pixel size, and the input file of the size cases.
SIZE_OPTION = {
    "convert-coords": ("--pixel-size", "{picks}"),
    "detect": ("--voxel-size", "{tomo}"),
    "evaluate": ("--pixel-size", "{picks}"),
    "classify": ("--voxel-size", "{tomo}"),
    "subdivide": ("--voxel-size", "{tomo}"),
    "segment": ("--voxel-size", "{tomo}"),
    "batch": ("--voxel-size-A", "{tomo}"),
    "train": ("--voxel-size-A", "{tomo}"),
    "orient simulate": ("--voxel-size", "{tomo}"),
    "orient recover": ("--pixel-size", "{stack}"),
}
#: Commands without an input file: only outputs and sizes can be wrong.
NO_INPUT = {"simulate": "simulate --out {out}", "simulate-subtomograms": "simulate-subtomograms --out {out}"}
#: How each command names its output (for the unwritable-output cases).
OUTPUT_ARG = {
    "convert-coords": "{out}.star",
    "detect": "--out {out}",
    "classify": "--out {out}.star",
    "subdivide": "--out {out}.star",
    "segment": "--out {out}",
    "batch": "--out {out}",
    "orient simulate": "{out}.mrcs",
    "orient train": "{out}.pt",
    "simulate": "--out {out}",
    "simulate-subtomograms": "--out {out}",
    "train": "--out {out}",
}
#: Commands whose output is a folder (created if missing): a file in its place is the bad case.
FOLDER_OUTPUTS = {"batch", "simulate", "simulate-subtomograms"}
VALID_INPUT = {
    "info": "{tomo}",
    "convert-coords": "{picks}",
    "detect": "{tomo}",
    "evaluate": "{picks}",
    "classify": "{tomo}",
    "subdivide": "{tomo}",
    "segment": "{tomo}",
    "batch": "{tomo}",
    "train": "{tomo}",
    "orient simulate": "{tomo}",
    "orient train": "{tomo}",
    "orient recover": "{stack}",
}


def _run(capsys, template, files, **values):
    if "{preset}" in template and not (files / "preset.json").exists():
        assert main(["batch-example"]) == 0
        (files / "preset.json").write_text(capsys.readouterr().out)
    names = {
        "tomo": files / "tomo.mrc",
        "vs0": files / "vs0.mrc",
        "picks": files / "picks.star",
        "stack": files / "stack.mrcs",
        "labels": files / "labels.mrc",
        "preset": files / "preset.json",
        "out": files / "out" / "result",
    }
    (files / "out").mkdir(exist_ok=True)
    argv = template.format(**{**{k: str(v) for k, v in names.items()}, **values}).split()
    argv = [a.format(**{k: str(v) for k, v in names.items()}) for a in argv]
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse refused an argument
        code = stop.code
    err = capsys.readouterr().err
    return code, err


def _assert_one_clear_line(code, err, *expected):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("tomolens ") and "error:" in lines[0], err
    assert "Traceback" not in err
    for text in expected:
        assert text in lines[0], lines[0]


#: Commands whose input is a coordinate file (the missing input gets a coordinate extension).
COORDINATE_INPUT = {"convert-coords", "evaluate"}


def _cases():
    for name, template in COMMANDS.items():
        yield pytest.param(name, template, "{missing}", "No such", id=f"{name}-missing")
        folder_message = "holds no tomograms" if name == "batch" else "folder"  # batch takes folders
        yield pytest.param(name, template, "{folder}", folder_message, id=f"{name}-folder")


@pytest.mark.parametrize(("name", "template", "bad", "message"), list(_cases()))
def test_bad_input_file(files, capsys, name, template, bad, message):
    missing = files / ("missing.star" if name in COORDINATE_INPUT else "missing.mrc")
    bad = bad.format(missing=missing, folder=files / "folder")
    code, err = _run(capsys, template.replace("{in}", bad), files)
    _assert_one_clear_line(code, err, message)


def _output_cases():
    for name, arg in OUTPUT_ARG.items():
        template = COMMANDS.get(name) or NO_INPUT[name]
        template = template.replace("{in}", VALID_INPUT.get(name, ""))
        for where, bad in (("no-folder", "{nofolder}"), ("read-only", "{readonly}")):
            if name in FOLDER_OUTPUTS and where == "no-folder":
                continue  # output folders are created with their parents
            if where == "read-only" and "{out}." not in arg and name not in FOLDER_OUTPUTS:
                continue  # stems: a read-only file is not their target
            bad_arg = (
                arg.replace("{out}" + arg.split("{out}")[1], bad) if where == "read-only" else arg.replace("{out}", bad)
            )
            where = "a-file" if name in FOLDER_OUTPUTS else where
            yield pytest.param(template.replace(arg, bad_arg), id=f"{name}-{where}")


@pytest.mark.parametrize("template", list(_output_cases()))
def test_unwritable_output_fails_before_any_work(files, capsys, template):
    values = {"nofolder": str(files / "no" / "such" / "folder" / "x"), "readonly": str(files / "readonly.star")}
    code, err = _run(
        capsys, template.replace("{nofolder}", values["nofolder"]).replace("{readonly}", values["readonly"]), files
    )
    _assert_one_clear_line(code, err)
    assert "does not exist" in err or "read-only" in err or "not a folder" in err


def _size_cases():
    for name, (option, valid) in {
        **SIZE_OPTION,
        "simulate": ("--voxel-size-A", ""),
        "simulate-subtomograms": ("--voxel-size-A", ""),
    }.items():
        template = (COMMANDS.get(name) or NO_INPUT[name]).replace("{in}", valid)
        for value in ("nan", "0", "-5", "inf"):
            if value == "0" and name == "train":
                continue  # train's --voxel-size-A 0 means "from the MRC header"
            yield pytest.param(f"{template} {option} {value}", option, id=f"{name}-{value}")


@pytest.mark.parametrize(("template", "option"), list(_size_cases()))
def test_bad_voxel_size_is_refused_up_front(files, capsys, template, option):
    code, err = _run(capsys, template, files)
    _assert_one_clear_line(code, err, option)
    assert not any((files / "out").iterdir())


def test_unexpected_errors_and_ctrl_c(files, capsys, monkeypatch):
    def boom(args):
        return 1 // 0

    monkeypatch.setattr(tomolens.io.cli, "_info", boom)
    code, err = _run(capsys, "info {tomo}", files)
    _assert_one_clear_line(code, err, "ZeroDivisionError", "run with -v")
    code, err = _run(capsys, "-v info {tomo}", files)
    assert code == 2 and "Traceback" in err and "ZeroDivisionError" in err

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(tomolens.io.cli, "_info", interrupted)
    code, err = _run(capsys, "info {tomo}", files)
    assert code == 130 and err.strip() == "tomolens info: interrupted; nothing more was written."
    import signal

    from tomolens.io import atomic

    assert signal.getsignal(signal.SIGTERM) is atomic._on_sigterm  # SIGTERM removes temporary files


def test_real_process_stderr_is_one_line(files):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-m", "tomolens.cli", "info", str(files / "missing.mrc")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith("tomolens info: error: No such MRC file") and "missing.mrc" in lines[0]
    ), lines


def test_detect_help_shows_the_defaults_used(capsys):
    with pytest.raises(SystemExit):
        main(["detect", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for value in ("0.3 for detect_default", "0.2 for detect_default"):
        assert value in text
    # the radius is the run's: auto (estimated per particle) unless given, whatever the card says
    assert "53.8 for detect_default" not in text and "0 = auto: estimated for each particle" in text


@pytest.mark.parametrize("voxel", ["1e-3", "9e4"])
def test_detect_with_an_absurd_voxel_size_fails_before_the_network(files, capsys, voxel):
    code, err = _run(capsys, f"detect {{tomo}} --out {{out}} --voxel-size {voxel}", files)
    _assert_one_clear_line(code, err, "check the voxel size")


def test_range_errors_state_the_allowed_range(files, capsys):
    code, err = _run(capsys, "detect {tomo} --out {out} --batch-size 0", files)
    _assert_one_clear_line(code, err, "batch_size: 0 is below the minimum 1 (allowed: 1..64)")
    code, err = _run(capsys, "detect {tomo} --out {out} --overlap nan", files)
    _assert_one_clear_line(code, err, "overlap: nan is not a finite number")


def test_warnings_are_one_line(files, tmp_path):
    write_mrc(tmp_path / "unknown.mrc", np.zeros((4, 4, 4), np.float32), None)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-m", "tomolens.cli", "info", str(tmp_path / "unknown.mrc")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("WARNING tomolens: unknown.mrc: the header voxel size"), lines


#: Commands that run a model on a tomogram, on one whose header has no voxel size (0).
UNKNOWN_VOXEL_SIZE = {
    "detect": "detect {vs0} --out {out}",
    "segment": "segment {vs0} --out {out}",
    "classify": "classify {vs0} {picks} --out {out}.star",
    "subdivide": "subdivide {vs0} {picks} --out {out}.star",
    "pick-by-example": "pick-by-example --tomogram {vs0} --examples {picks} --out {out}.star",
    "batch": "batch {preset} {tomo} {vs0} --out {out}",
    "train": "train --task detect --tomograms {vs0} --labels {labels} --out {out} --epochs 1",
}


@pytest.mark.parametrize("template", UNKNOWN_VOXEL_SIZE.values(), ids=UNKNOWN_VOXEL_SIZE.keys())
def test_unknown_voxel_size_is_refused_not_guessed(files, capsys, template):
    """Header voxel size 0: no command runs a model on a guessed voxel size (the model's gave 1421 picks instead
    of 74 on the real microtubule); one line names the file and says to pass --voxel-size-A or fix the header,
    and nothing is written."""
    before = sorted((files / "out").rglob("*")) if (files / "out").exists() else []
    code, err = _run(capsys, template, files)
    _assert_one_clear_line(code, err, "vs0.mrc: the voxel size is unknown", "pass --voxel-size-A", "header")
    assert sorted((files / "out").rglob("*")) == before


def test_the_voxel_size_option_runs_a_tomogram_without_one(files, capsys):
    """--voxel-size-A (and its alias --voxel-size) gives the voxel size the header lacks: detect runs."""
    for option in ("--voxel-size-A", "--voxel-size"):
        code, err = _run(capsys, f"detect {{vs0}} --out {{out}}_{option.strip('-')} {option} 10", files)
        assert code == 0, err
        assert (files / "out" / f"result_{option.strip('-')}_centres.star").is_file()
