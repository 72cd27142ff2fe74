"""Rows passed to and from PostgreSQL as JSON, so that one statement reads
(or writes) a process together with all its steps: one round trip instead of
one per table.

PostgreSQL writes a timestamp in JSON as ISO 8601 with its offset and reads
one back the same way; a uuid is its text form either way.
"""

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import FromClause
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.types import DateTime, Uuid

_DIALECT = PGDialect()  # type: ignore[no-untyped-call] # SQLAlchemy leaves it untyped


def json_array(alias: str, columns: Iterable[str]) -> str:
    """SQL for a row's `columns` (of the table named `alias`) as one JSON array."""
    return f"json_build_array({', '.join(f'{alias}.{column}' for column in columns)})"


def recordset(table: FromClause, columns: Iterable[str]) -> str:
    """The column definitions of `jsonb_to_recordset` for `columns` of `table`,
    typed as the table types them."""
    return ", ".join(
        f"{column} {table.c[column].type.compile(dialect=_DIALECT)}" for column in columns
    )


def to_json(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as a JSON array for `jsonb_to_recordset`."""
    return json.dumps(rows, default=_json_value, separators=(",", ":"))


def _json_value(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} has no JSON form here")


class Reader:
    """Turns a JSON array of `columns` of `table` back into their Python values:
    text into datetimes and UUIDs where the table has those types, and into
    the members of `enums` (by column) where the domain has them."""

    def __init__(
        self,
        table: FromClause,
        columns: Sequence[str],
        enums: Mapping[str, type[Enum]] | None = None,
    ) -> None:
        self.columns = tuple(columns)
        self._times = [
            index
            for index, column in enumerate(columns)
            if isinstance(table.c[column].type, DateTime)
        ]
        self._uuids = [
            index for index, column in enumerate(columns) if isinstance(table.c[column].type, Uuid)
        ]
        # By dict lookup: calling the enum costs as much again.
        self._members = [
            (columns.index(column), {member.value: member for member in enum})
            for column, enum in (enums or {}).items()
        ]

    def values(self, array: list[Any]) -> dict[str, Any]:
        for index in self._times:
            if array[index] is not None:
                array[index] = datetime.fromisoformat(array[index])
        for index in self._uuids:
            if array[index] is not None:
                array[index] = uuid.UUID(array[index])
        for index, members in self._members:
            if array[index] is not None:
                array[index] = members[array[index]]
        return dict(zip(self.columns, array, strict=True))
