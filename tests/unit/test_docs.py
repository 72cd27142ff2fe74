"""The README and the guides in docs/ hold together: every relative link leads
to a file, every `#anchor` to a heading, and the README stays a front page that
links to each guide."""

import re
from pathlib import Path

import pytest

from server.settings import CHECKOUT

README = CHECKOUT / "README.md"
DOCUMENTS = [README, *sorted((CHECKOUT / "docs").glob("*.md"))]

# Guides written on other branches of the same change (the API's, and the client
# libraries'); the README already links to them. Empty this once they are merged.
NOT_YET_MERGED = {CHECKOUT / "docs" / name for name in ("api.md", "clients-python.md")}

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
        if target in NOT_YET_MERGED:
            continue
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and anchor not in _anchors(target.read_text()):
            broken.append(f"{link}: no such heading")
    assert broken == [], document.name


def test_the_readme_links_to_every_guide() -> None:
    linked = {_target(README, link)[0] for link in _relative_links(README.read_text())}
    guides = set(DOCUMENTS[1:]) | NOT_YET_MERGED
    assert sorted(path.name for path in guides - linked) == []


def test_the_readme_is_a_front_page() -> None:
    readme = README.read_text()
    # The API's section moves to docs/api.md, and its client sections to the
    # clients' guides, on other branches: stop excluding it once they are merged.
    front = re.sub(r"^## The API\n.*?(?=^## |\Z)", "", readme, flags=re.MULTILINE | re.DOTALL)
    assert len(front.splitlines()) < FRONT_PAGE_LINES
