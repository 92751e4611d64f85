"""Every relative link in README.md and docs/*.md points at a file of the repository, and every
``#anchor`` at a heading of its page (GitHub's heading ids)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The page without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)


def anchors(page: Path) -> set[str]:
    """GitHub's ids of a page's headings: lower case, punctuation dropped, spaces to '-'."""
    ids = set()
    for line in _prose(page.read_text()).splitlines():
        if match := re.match(r"#{1,6}\s+(.*)", line):
            heading = match.group(1).strip().lower()
            ids.add(re.sub(r"[^\w\- ]", "", heading).replace(" ", "-"))
    return ids


def broken_links() -> list[str]:
    broken = []
    for page in PAGES:
        for link in LINK.findall(_prose(page.read_text())):
            if "://" in link or link.startswith("mailto:"):
                continue
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: {link}"
            if not target.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and target.suffix == ".md" and anchor not in anchors(target):
                broken.append(f"{where} (no such heading)")
    return broken


def test_every_relative_link_in_the_readme_and_docs_resolves():
    assert len(PAGES) > 1
    assert broken_links() == []


if __name__ == "__main__":
    problems = broken_links()
    links = sum(len(LINK.findall(_prose(p.read_text()))) for p in PAGES)
    print(f"{len(PAGES)} pages, {links} links, {len(problems)} broken")
    print("\n".join(problems))
