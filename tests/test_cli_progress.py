"""Progress of the tomolens commands: a bar on a terminal, plain lines elsewhere, nothing with --quiet."""

import io
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from tomolens.cli_progress import run_cli_job
from tomolens.jobs import Progress

SRC = str(Path(__file__).resolve().parents[1] / "src")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def slow_job(n=3, pause_s=0.12):
    for i in range(n):
        time.sleep(pause_s)  # longer than tqdm's 0.1 s refresh interval: every step is drawn
        yield Progress(i + 1, n, "predicting patches", {"epoch": i + 1})
    return "result"


def test_terminal_shows_a_bar_with_rate_and_time_left(capsys, caplog):
    term = Terminal()
    with caplog.at_level(logging.INFO, logger="tomolens"):  # as `tomolens` without --quiet
        assert run_cli_job(slow_job(), line=lambda p: f"epoch {p.info['epoch']}", stream=term) == "result"
    out = term.getvalue()
    assert "predicting patches:" in out and "%|" in out and "3/3" in out
    assert "it/s" in out or "s/it" in out  # the rate
    assert "<00:0" in out  # elapsed<remaining
    assert "epoch 3" in capsys.readouterr().out  # the extra lines go to stdout, above the bar


def test_not_a_terminal_logs_plain_lines_without_control_characters(caplog):
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="tomolens"):
        run_cli_job(slow_job(pause_s=0), stream=stream)
    assert stream.getvalue() == ""  # no bar
    lines = [r.getMessage() for r in caplog.records if r.name == "tomolens.jobs"]
    assert lines == ["[1/3] predicting patches", "[2/3] predicting patches", "[3/3] predicting patches"]
    assert not any("\r" in line or "\x1b" in line for line in lines)


def test_quiet_logger_level_shows_nothing(caplog, capsys):
    term = Terminal()
    with caplog.at_level(logging.WARNING, logger="tomolens"):
        run_cli_job(slow_job(pause_s=0), line=lambda p: "epoch line", stream=term)
    assert term.getvalue() == "" and "epoch line" not in capsys.readouterr().out
    assert not [r for r in caplog.records if r.name == "tomolens.jobs"]


def _simulate(tmp_path, *flags):
    cmd = [
        sys.executable,
        "-m",
        "tomolens.cli",
        *flags,
        "simulate",
        "--out",
        str(tmp_path / "sim"),
        "--size-x",
        "32",
        "--size-y",
        "32",
        "--size-z",
        "16",
        "--n-particles",
        "2",
        "--templates",
        "globule",
        "--n-membranes",
        "0",
        "--n-filaments",
        "0",
        "--mode",
        "fourier",
    ]
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)


def test_command_through_a_pipe_logs_steps_and_quiet_hides_them(tmp_path):
    plain = _simulate(tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "INFO tomolens.jobs: [" in plain.stderr and "packing particles" in plain.stderr
    assert "\r" not in plain.stderr and "\x1b" not in plain.stderr and "%|" not in plain.stderr
    quiet = _simulate(tmp_path, "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert "tomolens.jobs" not in quiet.stderr and "INFO" not in quiet.stderr
    assert "2 particles" in quiet.stdout  # the result is still printed
