"""Every filter shape of List, in process: its SQL is written by hand once
per shape (which filters, a page token, the sort order; see
server/storage/processes.py), so each shape is walked here page by page
and held to a model of the catalog: the matches in sort order, each once,
and the exact total on every page."""

import itertools
import uuid
from dataclasses import dataclass

import pytest

from htk.processes.v1 import process_service_pb2 as pb
from tests.service.calls import Stub, update
from tests.support.in_process import InProcessServer
from tests.support.orgs import Org

NAMESPACES = ("alpha", "beta", "gamma")
# "Y_B" must find the names with "y_b" in any case, and not "Dailyxbackup":
# the search's `_` matches itself, not any character.
NAMES = ("Nightly_backup", "Dailyxbackup", "NIGHTLY_BACKUP db", "Deploy")
CATALOG_SIZE = 12
FILTERS = {"status": "running", "namespace": "beta", "search": "Y_B", "label": "env=prod"}


@dataclass(frozen=True)
class Known:
    summary: pb.ProcessSummary

    def matches(self, filters: dict[str, str]) -> bool:
        summary = self.summary
        # Namespaces read back under the organization's own prefix.
        namespace = summary.namespace.rsplit(".", 1)[-1]
        return (
            filters.get("status", summary.status) == summary.status
            and filters.get("namespace", namespace) == namespace
            and filters.get("search", "").lower() in summary.name.lower()
            and ("label" not in filters or summary.labels.get("env") == "prod")
        )

    def position(self) -> tuple[int, uuid.UUID]:
        started_at = self.summary.started_at
        return started_at.seconds * 10**9 + started_at.nanos, uuid.UUID(self.summary.process_id)


async def catalog(processes: Stub, org: Org) -> list[Known]:
    for index in range(CATALOG_SIZE):
        created = await processes.CreateProcess(
            pb.CreateProcessRequest(
                namespace=NAMESPACES[index % len(NAMESPACES)],
                name=NAMES[index % len(NAMES)],
                step_defs=[pb.StepDef(key="build", label="Build")],
                labels={"env": "prod" if index % 2 == 0 else "dev"},
            ),
            metadata=org.metadata(),
        )
        if index % 3 == 0:
            await update(processes, org, created.process_id, "completed")
    everything = await processes.ListProcesses(
        pb.ListProcessesRequest(limit=CATALOG_SIZE), metadata=org.metadata()
    )
    assert everything.total == len(everything.processes) == CATALOG_SIZE
    return [Known(summary) for summary in everything.processes]


@pytest.mark.parametrize("sort", ["newest", "oldest"])
async def test_every_filter_shape_pages_through_its_matches_with_an_exact_total(
    server: InProcessServer, processes: Stub, org: Org, sort: str
) -> None:
    known = await catalog(processes, org)
    for given in itertools.product([False, True], repeat=len(FILTERS)):
        filters = {
            name: value for (name, value), on in zip(FILTERS.items(), given, strict=True) if on
        }
        expected = sorted(
            (process for process in known if process.matches(filters)),
            key=Known.position,
            reverse=sort == "newest",
        )
        seen: list[str] = []
        token = ""
        # A first page, then one per token: at most one page per match, and
        # one more (the first) when nothing matches.
        for _ in range(len(expected) + 1):
            page = await processes.ListProcesses(
                pb.ListProcessesRequest(
                    limit=2,
                    sort=sort,
                    page_token=token,
                    status=filters.get("status", ""),
                    namespace=filters.get("namespace", ""),
                    search=filters.get("search", ""),
                    label=[filters["label"]] if "label" in filters else [],
                ),
                metadata=org.metadata(),
            )
            assert page.total == len(expected), filters
            seen.extend(summary.process_id for summary in page.processes)
            token = page.next_page_token
            if not token:
                break
        assert not token, filters
        assert seen == [process.summary.process_id for process in expected], filters
