"""What the paging tests of both tiers share: a model of the processes an
organization has, the filters List takes and what each should return, and
the catalog of processes they page through (tests/e2e/test_paging_and_totals.py
through Envoy, tests/service/test_paging.py in process)."""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from htk.processes.v1 import process_service_pb2 as pb
from tests.support.orgs import Org

NAMESPACES = ("alpha", "beta", "gamma")
# Names for the searches: "deploy" in two spellings, and LIKE's wildcards taken literally.
NAMES = ("Deploy web", "deploy API", "Build 50% done", "Nightly_backup")
STEPS = (pb.StepDef(key="build", label="Build"),)
# Page sizes a client might switch between while following tokens.
LIMITS = (3, 1, 5, 2)


@dataclass(frozen=True)
class Known:
    """What the test knows of one process: enough to filter and sort it."""

    process_id: str
    namespace: str  # qualified, "<org>.<name>"
    name: str
    status: str
    started_at: datetime


@dataclass(frozen=True)
class Filters:
    status: str = ""
    namespace: str = ""  # bare, as a client sends it
    search: str = ""
    sort: str = ""

    def params(self) -> dict[str, str]:
        return {name: value for name, value in vars(self).items() if value}

    def request(self, limit: int, page_token: str = "") -> pb.ListProcessesRequest:
        return pb.ListProcessesRequest(
            status=self.status,
            namespace=self.namespace,
            search=self.search,
            sort=self.sort,
            limit=limit,
            page_token=page_token,
        )

    def matches(self, org_id: str, process: Known) -> bool:
        return (
            (not self.status or process.status == self.status)
            and (not self.namespace or process.namespace == f"{org_id}.{self.namespace}")
            and (not self.search or self.search.lower() in process.name.lower())
        )

    def expected(self, org_id: str, processes: list[Known]) -> list[str]:
        """The matching process ids in sort order: start time, ties broken by id."""
        matching = [process for process in processes if self.matches(org_id, process)]
        matching.sort(key=lambda p: (p.started_at, uuid.UUID(p.process_id)))
        if self.sort != "oldest":
            matching.reverse()
        return [process.process_id for process in matching]


# Every filter combination List has, both sort orders for some.
FILTER_CASES = [
    Filters(),
    Filters(sort="oldest"),
    Filters(status="running"),
    Filters(status="completed", sort="oldest"),
    Filters(status="failed"),
    Filters(namespace="alpha"),
    Filters(namespace="beta", sort="oldest"),
    Filters(namespace="alpha", status="running"),
    Filters(namespace="gamma", status="completed", sort="oldest"),
    Filters(search="deploy"),
    Filters(search="DEPLOY", sort="oldest"),
    Filters(search="50%"),
    Filters(search="deploy", status="running"),
    Filters(search="y_b", status="completed", sort="oldest"),
    Filters(search="deploy", namespace="beta", status="running"),
]


def model_of(database_url: str, org_id: str) -> list[Known]:
    """The organization's processes as stored (started_at to the microsecond)."""
    with psycopg.connect(database_url) as connection:
        rows = connection.execute(
            "SELECT process_id, namespace, name, status, started_at FROM processes"
            " WHERE org_id = %s",
            (org_id,),
        ).fetchall()
    return [Known(str(row[0]), row[1], row[2], row[3], row[4]) for row in rows]


def creating(index: int) -> pb.CreateProcessRequest:
    """The `index`th of a run of processes, cycling through the namespaces and names."""
    return pb.CreateProcessRequest(
        namespace=NAMESPACES[index % len(NAMESPACES)],
        name=f"{NAMES[index % len(NAMES)]} #{index}",
        step_defs=STEPS,
    )


def finishing(process_id: str, status: str) -> pb.UpdateProcessRequest:
    """The update that ends a process as `completed` or `failed`."""
    if status == "failed":
        return pb.UpdateProcessRequest(process_id=process_id, type="failed", error="boom")
    return pb.UpdateProcessRequest(process_id=process_id, type="completed")


# The catalog: CATALOG_SIZE processes over 3 namespaces and 3 statuses, with ties in started_at.
CATALOG_SIZE = 30


def catalog_ending(index: int) -> str | None:
    """How the catalog's `index`th process ends (`completed`, `failed`), or None: running."""
    return {1: "completed", 3: "failed"}.get(index % 5)


def tie_start_times(database_url: str, ids: list[str]) -> None:
    """Nine processes share one start time and three more start one microsecond
    later: only process_id orders the first nine, and a page token that kept
    less than microseconds would skip or repeat the three."""
    tie = datetime(2026, 2, 24, 12, 0, 0, 123456, tzinfo=UTC)
    with psycopg.connect(database_url) as connection:
        connection.execute(
            "UPDATE processes SET started_at = %s WHERE process_id = ANY(%s::uuid[])",
            (tie, ids[2:11]),
        )
        connection.execute(
            "UPDATE processes SET started_at = %s WHERE process_id = ANY(%s::uuid[])",
            (tie + timedelta(microseconds=1), ids[20:23]),
        )


@dataclass(frozen=True)
class Catalog:
    """An organization with processes to page through, and what the test knows of them."""

    org: Org
    processes: list[Known]
