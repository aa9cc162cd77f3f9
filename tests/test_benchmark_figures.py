"""Every benchmark figure quoted in README.md and docs/*.md matches its results JSON (benchmarks/figures.py)."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def figures():
    spec = importlib.util.spec_from_file_location("bench_figures", ROOT / "benchmarks" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_quote_their_json(figures):
    count, problems = figures.check_docs()
    assert count >= 3, "the docs should tie their benchmark figures to the JSON with <!-- bench:… --> markers"
    assert not problems, "\n".join(problems)


@pytest.fixture
def results(tmp_path):
    (tmp_path / "x.json").write_text(
        json.dumps(
            {
                "acc": {"0.05": {"text": "97.8 ± 0.9 % (3 seeds)", "mean": 0.97812}},
                "rows": [{"f1": 0.4873}],
                "sets": {"in-domain (dark)": {"f1": 0.5386}, "in_domain/snr_0.03": {"ari": 0.336}},
            }
        )
    )
    return tmp_path


@pytest.mark.parametrize(
    "line",
    [
        "| 0.05 | 97.8 ± 0.9 % (3 seeds)<!-- bench:x.json:acc/0.05/text --> |",
        "accuracy 97.81 %<!-- bench:x.json:acc/0.05/mean*100 -->",
        "F1 0.49 <!-- bench:x.json:rows/0/f1 --> and 0.487<!-- bench:x.json:rows/0/f1 -->",
        # keys with spaces, and a key that contains "/" itself
        "F1 0.54<!-- bench:x.json:sets/in-domain (dark)/f1 -->, ARI 0.34<!-- bench:x.json:sets/in_domain/snr_0.03/ari -->",
    ],
)
def test_matching_figures_pass(figures, results, line):
    count, problems = figures.check_markdown(line, results)
    assert count >= 1 and problems == []


@pytest.mark.parametrize(
    "line, why",
    [
        (
            "| 0.05 | 96.0 ± 0.9 % (3 seeds)<!-- bench:x.json:acc/0.05/text --> |",
            "the JSON says '97.8 ± 0.9 % (3 seeds)'",
        ),
        ("accuracy 97.9 %<!-- bench:x.json:acc/0.05/mean*100 -->", "shows 97.9 but the JSON gives 97.8"),
        ("F1 0.50<!-- bench:x.json:rows/0/f1 -->", "shows 0.50 but the JSON gives 0.49"),
        ("F1 0.49<!-- bench:x.json:rows/1/f1 -->", "'1' is not an index of a list of 1"),
        ("F1 0.49<!-- bench:x.json:rows/0/f2 -->", "no key 'f2'"),
        ("ARI 0.34<!-- bench:x.json:sets/in_domain/snr_0.05/ari -->", "no key 'in_domain'"),
        ("F1 0.55<!-- bench:x.json:sets/in-domain (dark)/f1 -->", "shows 0.55 but the JSON gives 0.54"),
        ("F1 0.49<!-- bench:y.json:rows/0/f1 -->", "no results file y.json"),
        ("F1 0.49<!-- bench:x.json:acc -->", "not a figure"),
        ("the F1<!-- bench:x.json:rows/0/f1 -->", "no number before the marker"),
        # the second marker's figure is only the text after the first marker
        ("0.49<!-- bench:x.json:rows/0/f1 --> and <!-- bench:x.json:rows/0/f1 -->", "no number before the marker"),
    ],
)
def test_drifted_figures_are_reported(figures, results, line, why):
    _, problems = figures.check_markdown(line, results, "page.md")
    assert len(problems) == 1 and why in problems[0] and problems[0].startswith("page.md:1:")


def test_readme_and_every_docs_page_are_scanned(figures, tmp_path):
    (tmp_path / "docs" / "deep").mkdir(parents=True)
    for name in ("README.md", "docs/a.md", "docs/deep/b.md"):
        (tmp_path / name).write_text("x")
    assert [p.relative_to(tmp_path).as_posix() for p in figures.markdown_files(tmp_path)] == [
        "README.md",
        "docs/a.md",
        "docs/deep/b.md",
    ]
