"""What SQL one UpdateProcess sends, captured from PostgreSQL's own log.

The baseline must run exactly the server's statements. Rather than trust a
reading of the code, the harness logs one server update and one baseline
update with log_statement=all and compares the two sequences.
"""

import re
from pathlib import Path

_STATEMENT = re.compile(r"\[(\d+)\] LOG:  (?:statement|execute [^:]*): (.*)")
_CAST = re.compile(r"::(TIMESTAMP WITH(OUT)? TIME ZONE|[A-Z_]+)(\[\])?")
_PLACEHOLDER = re.compile(r"\$\d+")


def read_statements(log_path: Path, offset: int) -> list[str]:
    """The statements logged after `offset` bytes, in order (any backend)."""
    with log_path.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    statements: list[str] = []
    current: list[str] | None = None  # the statement being read, line by line
    for line in text.splitlines():
        match = _STATEMENT.search(line)
        if current is not None and not match and line.startswith(("\t", " ")):
            current.append(line.strip())  # SQLAlchemy's statements span several lines
            continue
        if current is not None:
            statements.append(" ".join(current))
            current = None
        if match:
            current = [match.group(2)]
    if current is not None:
        statements.append(" ".join(current))
    return statements


def normalize(statement: str) -> str:
    """The shape of a statement: casts, parameters, spacing and case removed."""
    text = _CAST.sub("", statement)
    text = _PLACEHOLDER.sub("?", text)
    text = re.sub(r"\s+", " ", text).strip().lower()
    return re.sub(r"\s*([=,()])\s*", r"\1", text)


def log_size(log_path: Path) -> int:
    return log_path.stat().st_size if log_path.exists() else 0
