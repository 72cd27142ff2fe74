"""Renders the README's configuration table from the settings' declarations.

    python scripts/configuration_table.py README.md

rewrites, in place, the table between the two markers below; everything
else in the file stays as it is.
"""

import sys
from pathlib import Path

from pydantic.fields import FieldInfo

from server.settings import CHECKOUT, Settings, allowed_values, variable

BEGIN = "<!-- configuration table: generated from server/settings.py by `make generate` -->"
END = "<!-- end of configuration table -->"


def shown_default(field: FieldInfo) -> str:
    if isinstance(field.json_schema_extra, dict) and "shown_default" in field.json_schema_extra:
        return str(field.json_schema_extra["shown_default"])
    if field.default is None:
        return "(unset)"
    if isinstance(field.default, Path):
        return f"`{field.default.relative_to(CHECKOUT)}/`"
    return f"`{field.default}`"


def table() -> str:
    rows = ["| variable | default | values | meaning |", "| --- | --- | --- | --- |"]
    rows += [
        f"| `{variable(field)}` | {shown_default(field)} | {allowed_values(field) or 'text'}"
        f" | {field.description} |"
        for field in Settings.model_fields.values()
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
