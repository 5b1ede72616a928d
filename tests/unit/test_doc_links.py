"""Every documentation page and section the code, the tests and the docs point a reader to
exists: ``docs/architecture.md#caches`` in a docstring, ``[rerank.md](rerank.md#…)`` in a
page, ``README.md``. A renamed heading or a page that is not in the repository fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    *sorted((ROOT / "clipsearch").rglob("*.py")),
    *sorted((ROOT / "tests").rglob("*.py")),
    *sorted((ROOT / "benchmarks").rglob("*.py")),
    *sorted((ROOT / "scripts").rglob("*.py")),
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "README.md",
    ROOT / "pyproject.toml",
    ROOT / "Makefile",
]
SOURCES.remove(Path(__file__).resolve())  # its own docstring and patterns are examples
# A page named from the repository root (docs/x.md, README.md, an UPPER-CASE.md file at the
# root), optionally with a section anchor.
ROOTED_REF = re.compile(r"(?<![\w/.-])((?:docs/[\w-]+|[A-Z][A-Z_]+)\.md)(?:#([\w-]+))?")
# A relative Markdown link inside a page: [text](page.md#anchor).
PAGE_LINK = re.compile(r"\]\(([\w./-]+\.md)(?:#([\w-]+))?\)")
FENCE = re.compile(r"^(```|~~~)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown page (outside code fences)."""
    out: set[str] = set()
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced and (m := re.match(r"#{1,6}\s+(.*?)\s*#*$", line)):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


def references() -> list[tuple[str, Path, str | None]]:
    """(where, page, anchor) for every page reference in SOURCES."""
    refs = []
    for src in SOURCES:
        text = src.read_text(encoding="utf-8")
        where = str(src.relative_to(ROOT))
        for m in ROOTED_REF.finditer(text):
            refs.append((where, ROOT / m.group(1), m.group(2)))
        if src.suffix == ".md":
            for m in PAGE_LINK.finditer(text):
                refs.append((where, (src.parent / m.group(1)).resolve(), m.group(2)))
    return refs


def test_the_scan_finds_the_references_it_checks():
    refs = references()
    pages = {page.name for _, page, _ in refs}
    assert {"architecture.md", "README.md", "rerank.md"} <= pages
    assert any(anchor == "caches" for _, _, anchor in refs)


def test_slugs_follow_githubs_rule(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "# Writing a reranker: the rescoring hook (`clipsearch.search.rescore`)\n"
        "```\n# not a heading\n```\n## Crash safety and concurrency\n"
    )
    assert anchors(page) == {
        "writing-a-reranker-the-rescoring-hook-clipsearchsearchrescore",
        "crash-safety-and-concurrency",
    }


def test_every_referenced_page_and_section_exists():
    broken = []
    for where, page, anchor in references():
        if not page.is_file():
            broken.append(f"{where}: {page.name} is not in the repository")
        elif anchor is not None and anchor not in anchors(page):
            broken.append(f"{where}: {page.name} has no heading for #{anchor}")
    assert not broken, "\n".join(sorted(set(broken)))
