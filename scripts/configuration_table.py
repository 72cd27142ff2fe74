"""Renders the configuration table of docs/operating.md from the settings'
declarations.

    python scripts/configuration_table.py docs/operating.md

rewrites, in place, the table between the two markers below; everything
else in the file stays as it is.
"""

import sys
from pathlib import Path

from server.settings import documented

BEGIN = "<!-- configuration table: generated from server/settings.py by `make generate` -->"
END = "<!-- end of configuration table -->"


def table() -> str:
    rows = ["| variable | default | values | meaning |", "| --- | --- | --- | --- |"]
    rows += [
        f"| `{setting.variable}` | {setting.default} | {setting.values} | {setting.meaning} |"
        for setting in documented()
    ]
    return "\n".join(rows)


def main(path: Path) -> None:
    text = path.read_text()
    before, found_begin, rest = text.partition(BEGIN + "\n")
    _, found_end, after = rest.partition(END)
    if not (found_begin and found_end):
        sys.exit(f"{path}: the configuration table's markers are missing")
    path.write_text(f"{before}{BEGIN}\n{table()}\n{END}{after}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
