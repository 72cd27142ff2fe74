"""Whether an instance is ready for traffic, from what its parts report.

Each part (the database, its schema, each worker) is a `Check`; the instance
is ready when every check passed. The report names each part, and says what
is wrong with those that are not ready, for the operator reading /readyz.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    """One part of the instance: `problem` is None when it is ready."""

    name: str
    problem: str | None = None


def schema_check(current: str | None, head: str) -> Check:
    """The database's schema against the newest migration this htk knows:
    older (not migrated) or newer (migrated by a later htk) are both not
    current."""
    if current == head:
        return Check("schema")
    found = "no schema" if current is None else f"schema revision {current}"
    return Check("schema", f"{found}, this htk needs revision {head}")


@dataclass(frozen=True)
class Readiness:
    checks: Sequence[Check]

    @property
    def ready(self) -> bool:
        return all(check.problem is None for check in self.checks)

    def report(self) -> dict[str, Any]:
        """The JSON /readyz answers: a one-line message naming what is not
        ready, and each check's state."""
        failing = [check for check in self.checks if check.problem is not None]
        message = (
            "ready"
            if not failing
            else "not ready: " + "; ".join(f"{check.name}: {check.problem}" for check in failing)
        )
        return {
            "status": "ready" if self.ready else "not ready",
            "message": message,
            "checks": {check.name: check.problem or "ok" for check in self.checks},
        }
