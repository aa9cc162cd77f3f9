"""benchmarks/plot_results.py draws its figures from the results JSON (matplotlib: the docs extra)."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_figures_are_drawn_from_the_results_json(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib comes with the docs extra")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import plot_results
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    results = tmp_path / "results"
    results.mkdir()
    for name in ("detect.json", "classify.json", "shifted.json", "segment_domain.json", "orient_maps.json"):
        (results / name).write_text((ROOT / "benchmarks" / "results" / name).read_text())
    assert plot_results.main(["--results", str(results), "--out", str(tmp_path / "img")]) == 0
    for name in (
        "bench_detect.png",
        "bench_classify.png",
        "bench_shifted.png",
        "bench_segment_domain.png",
        "bench_orient_maps.png",
    ):
        png = (tmp_path / "img" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # a missing results file is an error that names it, not a silent empty figure
    (results / "classify.json").unlink()
    with pytest.raises(FileNotFoundError, match="classify.json"):
        plot_results.main(["--results", str(results), "--out", str(tmp_path / "img")])
