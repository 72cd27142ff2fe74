"""The README and the guides in docs/ hold together: every relative link leads
to a file, every `#anchor` to a heading, and the README stays a front page that
links to each guide."""

import re
from pathlib import Path

import pytest

from server.settings import CHECKOUT

README = CHECKOUT / "README.md"
DOCUMENTS = [README, *sorted((CHECKOUT / "docs").glob("*.md"))]

# A front page is read in one sitting.
FRONT_PAGE_LINES = 200

_FENCED = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6} (.+)$", re.MULTILINE)


def _prose(markdown: str) -> str:
    """The text outside code: a `# comment` in a bash block is no heading, and
    `[x](y)` in a code span is no link."""
    return _CODE_SPAN.sub("", _FENCED.sub("", markdown))


def _relative_links(markdown: str) -> list[str]:
    return [
        target
        for target in _LINK.findall(_prose(markdown))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:
    ]


def _anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings outside code: lower case,
    punctuation (backticks too) dropped, spaces as hyphens."""
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in _HEADING.findall(_FENCED.sub("", markdown))
    }


def _target(document: Path, link: str) -> tuple[Path, str]:
    path, _, anchor = link.partition("#")
    return ((document.parent / path).resolve() if path else document), anchor


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_relative_link_leads_to_a_file_and_heading(document: Path) -> None:
    broken = []
    for link in _relative_links(document.read_text()):
        target, anchor = _target(document, link)
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and anchor not in _anchors(target.read_text()):
            broken.append(f"{link}: no such heading")
    assert broken == [], document.name


def test_the_readme_links_to_every_guide() -> None:
    linked = {_target(README, link)[0] for link in _relative_links(README.read_text())}
    guides = set(DOCUMENTS[1:])
    assert sorted(path.name for path in guides - linked) == []


def test_the_readme_is_a_front_page() -> None:
    assert len(README.read_text().splitlines()) < FRONT_PAGE_LINES
