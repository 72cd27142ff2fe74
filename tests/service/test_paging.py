"""Page tokens over every filter combination, in process: the walk that
tests/e2e/test_paging_and_totals.py makes over REST through Envoy, here over
gRPC without it (the paging rule is the service's; the transport adds nothing)."""

import itertools
from collections.abc import AsyncIterator

import grpc
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from tests.support.in_process import InProcessServer
from tests.support.orgs import Org
from tests.support.paging import (
    CATALOG_SIZE,
    FILTER_CASES,
    LIMITS,
    Catalog,
    Filters,
    catalog_ending,
    creating,
    finishing,
    model_of,
    tie_start_times,
)


@pytest.fixture(scope="module")
async def catalog(server: InProcessServer, channel: grpc.aio.Channel, database_url: str) -> Catalog:
    """The catalog (tests/support/paging.py) in an organization of its own."""
    stub: pb_grpc.ProcessServiceAsyncStub = pb_grpc.ProcessServiceStub(channel)  # an aio channel
    org = await server.new_org("paging")
    ids = []
    for index in range(CATALOG_SIZE):
        ids.append((await stub.CreateProcess(creating(index), metadata=org.metadata())).process_id)
        if ending := catalog_ending(index):
            await stub.UpdateProcess(finishing(ids[-1], ending), metadata=org.metadata())
    tie_start_times(database_url, ids)
    processes = model_of(database_url, org.org_id)
    assert len(processes) == CATALOG_SIZE
    return Catalog(org, processes)


async def grpc_walk(
    stub: "pb_grpc.ProcessServiceAsyncStub", org: Org, filters: Filters
) -> AsyncIterator[pb.ListProcessesResponse]:
    """Follows next_page_token from the first page to the last, switching page sizes."""
    token = ""
    for limit in itertools.cycle(LIMITS):
        request = filters.request(limit, token)
        page = await stub.ListProcesses(request, metadata=org.metadata(org.reader))
        assert (page.limit, page.offset) == (limit, 0), page
        yield page
        token = page.next_page_token
        if not token:
            return


@pytest.mark.parametrize("filters", FILTER_CASES, ids=lambda f: repr(f.params()))
async def test_grpc_page_tokens_visit_every_match_once_in_sort_order(
    processes: "pb_grpc.ProcessServiceAsyncStub", catalog: Catalog, filters: Filters
) -> None:
    expected = filters.expected(catalog.org.org_id, catalog.processes)

    pages = [page async for page in grpc_walk(processes, catalog.org, filters)]

    visited = [process.process_id for page in pages for process in page.processes]
    assert visited == expected
    assert {page.total for page in pages} == {len(expected)}
    assert [page.next_page_token == "" for page in pages][-1]
    assert all(page.next_page_token for page in pages[:-1])
