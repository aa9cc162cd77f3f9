"""Every relative link and image in README.md and docs/*.md points to a file that exists."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target); the target ends at whitespace or ')'
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def relative_links(text: str) -> list[str]:
    """Targets of the Markdown links in ``text`` that are paths (no URL scheme, no pure #anchor)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold no links
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_link_pattern_finds_links_and_skips_urls():
    text = "see [a](docs/a.md#x), ![i](img/p.png) and [w](https://napari.org)\n```\n[no](x.md)\n```"
    assert relative_links(text) == ["docs/a.md#x", "img/p.png"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    missing = [
        t for t in relative_links(page.read_text(encoding="utf-8")) if not (page.parent / t.split("#")[0]).exists()
    ]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


def test_every_docs_page_is_linked_from_the_readme_or_the_site_nav():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    unlinked = [p.name for p in PAGES[1:] if f"docs/{p.name}" not in readme and p.name not in nav]
    assert not unlinked, f"docs pages reachable from nowhere: {unlinked}"
