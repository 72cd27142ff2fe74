"""Exact list totals, read from the counters that triggers keep (tables.Counts)."""

from typing import Any

from sqlalchemy import Select, func, select

from server.storage.tables import Counts


def counted_total(
    counts: type[Counts], org_id: str, *, status: str | None, namespace: str | None
) -> Select[*tuple[Any, ...]]:
    """How many of the organization's rows have the status and namespace
    (None: any)."""
    counted = [counts.org_id == org_id]
    if status is not None:
        counted.append(counts.status == status)
    if namespace is not None:
        counted.append(counts.namespace == namespace)
    return select(func.coalesce(func.sum(counts.count), 0)).where(*counted)
