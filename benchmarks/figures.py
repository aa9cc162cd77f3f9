"""Check that every benchmark figure quoted in the docs matches its results JSON.

A figure in ``README.md`` or ``docs/**/*.md`` is tied to its JSON by a marker right after
it, on the same line (an HTML comment, invisible in the rendered page)::

    | 0.05 | 97.8 ± 0.9 % (3 seeds)<!-- bench:classify.json:classification/0.05/resnet/accuracy/text --> |
    F1 0.49<!-- bench:detect.json:accuracy/0/net_f1 --> on phantoms

- ``classify.json`` is a file of ``benchmarks/results/``; the path after it walks the JSON
  with ``/`` (dict keys as written, list indices as integers; keys may contain dots and
  spaces, and a key that itself contains ``/``, such as ``in_domain/snr_0.03``, is found
  by joining steps: ``results/in_domain/snr_0.03/classifier.ari_k_true/mean``).
- A **string** value (such as the ``text`` of :func:`tomolens.evaluate.seed_summary`:
  ``"97.8 ± 0.9 % (3 seeds)"``) must be exactly the text that ends right before the marker.
- A **number** must equal the last number before the marker, rounded to as many decimals
  as that number shows; append ``*100`` to the path to quote a fraction as a percentage
  (``…/accuracy/mean*100``).

Run ``python benchmarks/figures.py`` to list every mismatch (exit status 1 when there is
one); ``tests/test_benchmark_figures.py`` runs the same check in the test suite.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MARKER = re.compile(r"<!--\s*bench:(?P<file>[\w.\-]+\.json):(?P<path>[^*>]+?)(?:\*(?P<scale>[\d.]+))?\s*-->")
NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?")  # not the 1 of "F1"


def markdown_files(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown page under docs/ (whatever their layout)."""
    files = [root / "README.md"] if (root / "README.md").is_file() else []
    return files + sorted((root / "docs").rglob("*.md"))


def lookup(data, path: str):
    """The value at a ``/``-separated path; KeyError naming the first step that is missing.

    A dict key that contains ``/`` itself is matched by joining the fewest steps that name it.
    """
    value, steps = data, path.split("/")
    while steps:
        step = steps[0]
        if isinstance(value, list):
            if not step.isdigit() or int(step) >= len(value):
                raise KeyError(f"{step!r} is not an index of a list of {len(value)}")
            value, steps = value[int(step)], steps[1:]
            continue
        joined = [n for n in range(1, len(steps) + 1) if isinstance(value, dict) and "/".join(steps[:n]) in value]
        if not joined:
            raise KeyError(f"no key {step!r}")
        value, steps = value["/".join(steps[: joined[0]])], steps[joined[0] :]
    return value


def check_figure(before: str, value, scale: float = 1.0) -> str | None:
    """Why the text ``before`` a marker does not quote ``value`` (None when it does)."""
    before = before.rstrip()
    if isinstance(value, str):
        return None if before.endswith(value) else f"the JSON says {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"the JSON value is a {type(value).__name__}, not a figure (point the marker at a number or text)"
    numbers = NUMBER.findall(before)
    if not numbers:
        return f"no number before the marker (the JSON says {value * scale})"
    shown = numbers[-1]
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    expected = round(float(value) * scale, decimals)
    if not math.isclose(float(shown), expected, abs_tol=10 ** -(decimals + 3)):
        return f"the page shows {shown} but the JSON gives {expected:.{decimals}f}"
    return None


def check_markdown(text: str, results: Path = RESULTS, where: str = "") -> tuple[int, list[str]]:
    """(markers found, problems) of one Markdown text."""
    cache: dict[str, object] = {}
    problems, count = [], 0
    for line_no, line in enumerate(text.splitlines(), 1):
        for m in MARKER.finditer(line):
            count += 1
            place = f"{where}:{line_no}: {m.group('file')}:{m.group('path')}"
            name = m.group("file")
            if name not in cache:
                path = results / name
                cache[name] = json.loads(path.read_text()) if path.is_file() else None
            if cache[name] is None:
                problems.append(f"{place}: no results file {name} in {results}")
                continue
            try:
                value = lookup(cache[name], m.group("path"))
            except KeyError as err:
                problems.append(f"{place}: {err.args[0]}")
                continue
            # the figure is the text between the previous marker (or the start of the line) and this one
            start = max([p.end() for p in MARKER.finditer(line, 0, m.start())], default=0)
            why = check_figure(line[start : m.start()], value, float(m.group("scale") or 1.0))
            if why:
                problems.append(f"{place}: {why}")
    return count, problems


def check_docs(root: Path = ROOT, results: Path = RESULTS) -> tuple[int, list[str]]:
    """(markers found, problems) over README.md and docs/**/*.md."""
    total, problems = 0, []
    for path in markdown_files(root):
        count, found = check_markdown(path.read_text(encoding="utf-8"), results, str(path.relative_to(root)))
        total += count
        problems += found
    return total, problems


def main() -> int:
    count, problems = check_docs()
    for p in problems:
        print(p)
    print(f"{count} benchmark figures checked, {len(problems)} mismatched")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
