"""What SQL one GetProcess and one UpdateProcess send, captured from
PostgreSQL's own log (log_statement=all) rather than read from the code: the
report shows them beside the reference's (bench/get.sql, bench/update.sql).
"""

import re
from pathlib import Path

_STATEMENT = re.compile(r"\[(\d+)\] LOG:  (?:statement|execute [^:]*): (.*)")


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


def log_size(log_path: Path) -> int:
    return log_path.stat().st_size if log_path.exists() else 0
