"""Fuzz suite: over 1,000 generated malformed files through napari's read path (issue 22).

Every file must either open as layers napari can show, or be refused with an expected error
whose message names the file — no crash, no hang (10 s per case), no allocation beyond 1 GiB
(the runner caps its address space).  The cases run in one subprocess so that a hard crash or
an allocation bomb fails this test instead of killing pytest.
"""

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz_inputs import generate

RUNNER = Path(__file__).with_name("fuzz_runner.py")


@pytest.fixture(scope="module")
def fuzz_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    paths = generate(folder / "cases", seed=2022)
    result = folder / "results.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(RUNNER), str(folder / "cases"), str(result), "10", "1024"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    current = result.with_suffix(".current")
    assert proc.returncode == 0, (
        f"the runner died (status {proc.returncode}) on {current.read_text() if current.exists() else '?'}:\n"
        f"{proc.stderr[-3000:]}"
    )
    return paths, json.loads(result.read_text())


def test_over_a_thousand_cases_of_every_kind(fuzz_results):
    paths, results = fuzz_results
    assert len(results) == len(paths) >= 1000
    kinds = collections.Counter(r["file"].split("_")[0] for r in results)
    assert {"hdr", "trunc", "random", "data", "star", "csv", "txt", "ours", "stack4d"} <= set(kinds)


def test_no_crash_hang_or_unshowable_layer(fuzz_results):
    _, results = fuzz_results
    problems = [r for r in results if r["outcome"] not in ("read", "refused")]
    assert not problems, "\n".join(f"{r['file']}: {r['outcome']}: {r['detail']}" for r in problems[:30])


def test_both_outcomes_occur(fuzz_results):
    """The generator is not degenerate: many files open, many are refused."""
    _, results = fuzz_results
    counts = collections.Counter(r["outcome"] for r in results)
    assert counts["read"] >= 100 and counts["refused"] >= 300, counts
