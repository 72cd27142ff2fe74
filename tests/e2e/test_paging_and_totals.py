"""Paging by `next_page_token` and exact `total`s, end to end (REST and gRPC),
checked against a model kept by the test and against PostgreSQL itself.

A page token must visit every matching process exactly once, in sort order,
whatever the page sizes (over REST here, for every filter combination; over
gRPC in process, tests/service/test_paging.py); `total` is read from
`process_counts`, which triggers keep in step with every insert and status
change (migration 0002), so it is compared with `SELECT count(*)` after
creates, status changes and concurrent status changes. A search's total sums
`process_name_counts`, which triggers keep per name too (migration 0005): it
is held to what ILIKE on the processes' names counts.
"""

import asyncio
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import psycopg
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from tests.e2e.test_grpc import Stub, assert_invalid_argument, rpc_error
from tests.e2e.test_rest_contract import PROCESSES, Json, list_processes, listed_ids
from tests.e2e.test_rest_errors import assert_invalid_field
from tests.support.orgs import Org
from tests.support.paging import (
    CATALOG_SIZE,
    FILTER_CASES,
    LIMITS,
    STEPS,
    Catalog,
    Filters,
    Known,
    catalog_ending,
    creating,
    finishing,
    model_of,
    tie_start_times,
)
from tests.support.stack import Stack

if TYPE_CHECKING:
    from htk.processes.v1.process_service_pb2_grpc import (
        ProcessServiceAsyncStub as AsyncStub,
    )


def sql_count(stack: Stack, org_id: str, filters: Filters) -> int:
    """`SELECT count(*)` with the filters, as the database counts it."""
    conditions = ["org_id = %s"]
    values: list[Any] = [org_id]
    if filters.status:
        conditions.append("status = %s")
        values.append(filters.status)
    if filters.namespace:
        conditions.append("namespace = %s")
        values.append(f"{org_id}.{filters.namespace}")
    if filters.search:
        # strpos: a literal substring, no LIKE wildcards to escape.
        conditions.append("strpos(lower(name), lower(%s)) > 0")
        values.append(filters.search)
    with psycopg.connect(stack.database_url) as connection:
        row = connection.execute(
            f"SELECT count(*) FROM processes WHERE {' AND '.join(conditions)}",  # noqa: S608
            values,
        ).fetchone()
    assert row is not None
    return int(row[0])


def create_many(stub: Stub, org: Org, count: int) -> list[str]:
    """Creates `count` processes, cycling through the namespaces and names."""
    return [
        stub.CreateProcess(creating(index), metadata=org.metadata()).process_id
        for index in range(count)
    ]


def finish(stub: Stub, org: Org, process_id: str, status: str) -> None:
    stub.UpdateProcess(finishing(process_id, status), metadata=org.metadata())


# --- walking pages ---------------------------------------------------------------------


def rest_walk(rest: httpx.Client, org: Org, filters: Filters) -> Iterator[Json]:
    """Follows next_page_token from the first page to the last, switching page sizes."""
    token = ""
    for limit in itertools.cycle(LIMITS):
        params: dict[str, Any] = filters.params() | {"limit": limit}
        if token:
            params["page_token"] = token
        page = list_processes(rest, org, **params)
        assert (page["limit"], page["offset"]) == (limit, 0), page
        yield page
        token = page["next_page_token"]
        if not token:
            return


@pytest.fixture(scope="module")
def catalog(stack: Stack, grpc_stub: Stub) -> Catalog:
    """The catalog (tests/support/paging.py) in an organization of its own."""
    org = stack.new_org("paging")
    ids = create_many(grpc_stub, org, CATALOG_SIZE)
    for index, process_id in enumerate(ids):
        if ending := catalog_ending(index):
            finish(grpc_stub, org, process_id, ending)
    tie_start_times(stack.database_url, ids)
    processes = model_of(stack.database_url, org.org_id)
    assert len(processes) == CATALOG_SIZE
    return Catalog(org, processes)


@pytest.mark.parametrize("filters", FILTER_CASES, ids=lambda f: repr(f.params()))
def test_rest_page_tokens_visit_every_match_once_in_sort_order(
    rest: httpx.Client, catalog: Catalog, filters: Filters
) -> None:
    expected = filters.expected(catalog.org.org_id, catalog.processes)
    assert expected, "each case should match something"

    pages = list(rest_walk(rest, catalog.org, filters))

    visited = [process_id for page in pages for process_id in listed_ids(page)]
    assert visited == expected
    assert [page["total"] for page in pages] == [len(expected)] * len(pages)
    # Every page but the last is full and has a token; the last one has "".
    assert [page["next_page_token"] == "" for page in pages] == [False] * (len(pages) - 1) + [True]
    for page, limit in zip(pages[:-1], itertools.cycle(LIMITS), strict=False):
        assert len(page["processes"]) == limit


def test_tokens_of_rest_and_grpc_are_interchangeable(
    rest: httpx.Client, grpc_stub: Stub, catalog: Catalog
) -> None:
    first = grpc_stub.ListProcesses(
        pb.ListProcessesRequest(status="running", limit=4), metadata=catalog.org.metadata()
    )
    second = list_processes(
        rest, catalog.org, status="running", limit=4, page_token=first.next_page_token
    )
    expected = Filters(status="running").expected(catalog.org.org_id, catalog.processes)
    assert [p.process_id for p in first.processes] + listed_ids(second) == expected[:8]


def test_a_listing_that_fills_its_last_page_exactly_ends_with_an_empty_token(
    rest: httpx.Client, catalog: Catalog
) -> None:
    # The failed processes number exactly 6: a page of 6 is the last one, without a token.
    expected = Filters(status="failed").expected(catalog.org.org_id, catalog.processes)
    assert len(expected) == 6
    page = list_processes(rest, catalog.org, status="failed", limit=6)
    assert (listed_ids(page), page["next_page_token"], page["total"]) == (expected, "", 6)
    three = list_processes(rest, catalog.org, status="failed", limit=3)
    last = list_processes(
        rest, catalog.org, status="failed", limit=3, page_token=three["next_page_token"]
    )
    assert listed_ids(three) + listed_ids(last) == expected
    assert last["next_page_token"] == ""


def test_an_empty_listing_has_no_token(rest: httpx.Client, catalog: Catalog) -> None:
    page = list_processes(rest, catalog.org, search="no such name")
    assert (page["processes"], page["total"], page["next_page_token"]) == ([], 0, "")


def test_offset_paging_and_token_paging_agree(rest: httpx.Client, catalog: Catalog) -> None:
    by_offset = [
        process_id
        for offset in range(0, 30, 7)
        for process_id in listed_ids(list_processes(rest, catalog.org, limit=7, offset=offset))
    ]
    by_token = [
        process_id
        for page in rest_walk(rest, catalog.org, Filters())
        for process_id in listed_ids(page)
    ]
    assert by_offset == by_token == Filters().expected(catalog.org.org_id, catalog.processes)


# --- refused tokens ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changed",
    [{"status": "failed"}, {"namespace": "beta"}, {"search": "web"}, {"sort": "oldest"}, {}],
    ids=repr,
)
def test_rest_a_token_with_changed_filters_is_a_400(
    rest: httpx.Client, catalog: Catalog, changed: dict[str, str]
) -> None:
    original = {"status": "running", "namespace": "alpha", "search": "deploy"}
    token = list_processes(rest, catalog.org, **original, limit=1)["next_page_token"]
    assert token
    params = original | {"page_token": token} | changed
    if not changed:
        params.pop("status")  # a filter dropped is a change too
    response = rest.get(PROCESSES, headers=catalog.org.auth(), params=params)
    assert_invalid_field(response, "page_token")
    assert response.json()["message"] == (
        "page_token: was issued for other filters or sort order; keep them unchanged"
    )


def test_rest_offset_with_a_page_token_is_a_400_naming_offset(
    rest: httpx.Client, catalog: Catalog
) -> None:
    token = list_processes(rest, catalog.org, limit=2)["next_page_token"]
    response = rest.get(
        PROCESSES, headers=catalog.org.auth(), params={"page_token": token, "offset": 2}
    )
    assert_invalid_field(response, "offset")
    assert response.json()["message"] == "offset: cannot be combined with page_token; leave it out"
    # Offset 0 is "absent": accepted.
    page = list_processes(rest, catalog.org, limit=2, offset=0, page_token=token)
    assert listed_ids(page) == Filters().expected(catalog.org.org_id, catalog.processes)[2:4]


@pytest.mark.parametrize("token", ["garbage", "x" * 201, "eyJub3QiOiAianNvbiJ9"])
def test_rest_a_malformed_token_is_a_400(rest: httpx.Client, catalog: Catalog, token: str) -> None:
    response = rest.get(PROCESSES, headers=catalog.org.auth(), params={"page_token": token})
    assert_invalid_field(response, "page_token")


def test_grpc_refuses_changed_filters_and_offset_with_a_token(
    grpc_stub: Stub, catalog: Catalog
) -> None:
    metadata = catalog.org.metadata()
    token = grpc_stub.ListProcesses(
        pb.ListProcessesRequest(namespace="beta", limit=1), metadata=metadata
    ).next_page_token
    changed = pb.ListProcessesRequest(namespace="gamma", page_token=token)
    error = rpc_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: grpc_stub.ListProcesses(changed, metadata=metadata),
    )
    assert_invalid_argument(error, "page_token")
    with_offset = pb.ListProcessesRequest(namespace="beta", page_token=token, offset=1)
    error = rpc_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: grpc_stub.ListProcesses(with_offset, metadata=metadata),
    )
    assert_invalid_argument(error, "offset")


# --- exact totals --------------------------------------------------------------------------

TOTAL_CASES = [
    Filters(),
    Filters(status="running"),
    Filters(status="completed"),
    Filters(status="failed"),
    Filters(namespace="alpha"),
    Filters(namespace="gamma"),
    Filters(namespace="nowhere"),
    Filters(namespace="alpha", status="completed"),
    Filters(namespace="beta", status="failed"),
    Filters(search="deploy"),
    Filters(search="50%"),
    Filters(search="deploy", status="running"),
    Filters(search="deploy", status="failed"),
    Filters(search="deploy", namespace="beta"),
    Filters(search="DEPLOY", namespace="alpha", status="completed"),
]


def assert_totals_exact(
    stack: Stack, rest: httpx.Client, stub: Stub, org: Org, processes: list[Known]
) -> None:
    """For every filter combination: the API's total = the model's count = SELECT count(*)."""
    for filters in TOTAL_CASES:
        expected = len(filters.expected(org.org_id, processes))
        rest_total = list_processes(rest, org, **filters.params(), limit=1)["total"]
        grpc_total = stub.ListProcesses(filters.request(limit=1), metadata=org.metadata()).total
        counted = sql_count(stack, org.org_id, filters)
        assert (rest_total, grpc_total, counted) == (expected,) * 3, filters


def assert_counters_match(stack: Stack, org_id: str) -> None:
    """process_counts holds exactly what GROUP BY counts (zeros aside), never negative."""
    with psycopg.connect(stack.database_url) as connection:
        counters = connection.execute(
            "SELECT namespace, status, count FROM process_counts WHERE org_id = %s",
            (org_id,),
        ).fetchall()
        grouped = connection.execute(
            "SELECT namespace, status, count(*) FROM processes WHERE org_id = %s"
            " GROUP BY org_id, namespace, status",
            (org_id,),
        ).fetchall()
    assert all(count >= 0 for _, _, count in counters), counters
    kept = {(namespace, status): count for namespace, status, count in counters if count}
    assert kept == {(namespace, status): count for namespace, status, count in grouped}


def assert_name_counters_match(stack: Stack, org_id: str) -> None:
    """process_name_counts holds exactly what GROUP BY counts per namespace,
    status and lower-cased name, and no row of zero."""
    with psycopg.connect(stack.database_url) as connection:
        counters = connection.execute(
            "SELECT namespace, status, folded_name, count FROM process_name_counts"
            " WHERE org_id = %s ORDER BY 1, 2, 3",
            (org_id,),
        ).fetchall()
        grouped = connection.execute(
            "SELECT namespace, status, lower(name), count(*) FROM processes WHERE org_id = %s"
            " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            (org_id,),
        ).fetchall()
    assert counters == grouped


def test_total_is_exact_for_every_filter_and_follows_status_changes(
    stack: Stack, rest: httpx.Client, grpc_stub: Stub, org: Org
) -> None:
    ids = create_many(grpc_stub, org, 16)
    processes = model_of(stack.database_url, org.org_id)
    assert_totals_exact(stack, rest, grpc_stub, org, processes)
    assert_counters_match(stack, org.org_id)
    assert_name_counters_match(stack, org.org_id)
    assert list_processes(rest, org)["total"] == 16

    # Status changes move a process from one counter to another.
    for index, process_id in enumerate(ids):
        if index % 3 == 0:
            finish(grpc_stub, org, process_id, "completed")
        elif index % 4 == 1:
            finish(grpc_stub, org, process_id, "failed")
    processes = model_of(stack.database_url, org.org_id)
    statuses = sorted(process.status for process in processes)
    assert (statuses.count("completed"), statuses.count("failed")) == (6, 3)
    assert_totals_exact(stack, rest, grpc_stub, org, processes)
    assert_counters_match(stack, org.org_id)
    assert_name_counters_match(stack, org.org_id)

    # Updates that change no status (steps, progress) and refused updates move nothing.
    running = [p.process_id for p in processes if p.status == "running"]
    for process_id in running[:3]:
        grpc_stub.UpdateProcess(
            pb.UpdateProcessRequest(process_id=process_id, type="step_started", step="build"),
            metadata=org.metadata(),
        )
    finished = next(p.process_id for p in processes if p.status == "completed")
    rpc_error(
        grpc.StatusCode.FAILED_PRECONDITION, lambda: finish(grpc_stub, org, finished, "failed")
    )
    assert_totals_exact(stack, rest, grpc_stub, org, model_of(stack.database_url, org.org_id))
    assert_counters_match(stack, org.org_id)
    assert_name_counters_match(stack, org.org_id)


def test_totals_of_one_organization_ignore_the_others(
    stack: Stack, rest: httpx.Client, grpc_stub: Stub, org: Org
) -> None:
    other = stack.new_org("other")
    create_many(grpc_stub, other, 4)
    create_many(grpc_stub, org, 2)
    assert list_processes(rest, org)["total"] == 2
    assert list_processes(rest, other)["total"] == 4
    assert list_processes(rest, org, namespace="alpha")["total"] == 1
    # Both organizations have a "Deploy web" and a "deploy API".
    page = list_processes(rest, org, search="deploy")
    assert page["total"] == 2
    assert {process["process_id"] for process in page["processes"]} <= {
        known.process_id for known in model_of(stack.database_url, org.org_id)
    }
    assert list_processes(rest, org, search="deploy", status="running")["total"] == 2
    assert list_processes(rest, other, search="deploy", namespace="alpha")["total"] == 1


def test_a_search_finds_a_process_from_the_moment_it_is_created_or_renamed(
    stack: Stack, rest: httpx.Client, grpc_stub: Stub, org: Org
) -> None:
    (created,) = create_many(grpc_stub, org, 1)  # "Deploy web #0"
    page = list_processes(rest, org, search="web #0")
    assert (listed_ids(page), page["total"]) == ([created], 1)

    finish(grpc_stub, org, created, "failed")
    page = list_processes(rest, org, search="web #0", status="failed")
    assert (listed_ids(page), page["total"]) == ([created], 1)
    assert list_processes(rest, org, search="web #0", status="running")["total"] == 0

    # The API never renames nor deletes a process; an operator's SQL may,
    # and search follows. A rename of the letters' case alone changes no count.
    for name in ("Rollback API", "ROLLBACK api"):
        with psycopg.connect(stack.database_url) as connection:
            connection.execute(
                "UPDATE processes SET name = %s WHERE process_id = %s", (name, created)
            )
        assert list_processes(rest, org, search="web #0")["total"] == 0
        page = list_processes(rest, org, search="rollback A")
        assert (listed_ids(page), page["total"]) == ([created], 1)
        assert_name_counters_match(stack, org.org_id)

    with psycopg.connect(stack.database_url) as connection:
        connection.execute("DELETE FROM processes WHERE process_id = %s", (created,))
    assert list_processes(rest, org, search="rollback")["total"] == 0
    assert_name_counters_match(stack, org.org_id)


# Names whose case folding goes beyond ASCII, and the searches for them.
FOLDED_NAMES = ("Ärger über Deploy", "STRASSE", "straße", "İstanbul sync", "ǅemal", "ΣΊΣΥΦΟΣ")
FOLDED_SEARCHES = ("ärger", "ÜBER d", "Straße", "strasse", "i̇stanbul", "istanbul", "ǆ", "σίσυφος")


def test_a_search_total_counts_what_ilike_matches_beyond_ascii(
    stack: Stack, rest: httpx.Client, grpc_stub: Stub, org: Org
) -> None:
    for name in FOLDED_NAMES:
        grpc_stub.CreateProcess(
            pb.CreateProcessRequest(namespace="alpha", name=name, step_defs=STEPS),
            metadata=org.metadata(),
        )
    with psycopg.connect(stack.database_url) as connection:
        for search in FOLDED_SEARCHES:
            row = connection.execute(
                "SELECT count(*) FROM processes WHERE org_id = %s AND name ILIKE %s",
                (org.org_id, f"%{search}%"),
            ).fetchone()
            assert row is not None
            page = list_processes(rest, org, search=search)
            assert page["total"] == len(page["processes"]) == row[0], search


async def finish_async(stub: "AsyncStub", org: Org, index: int, process_id: str) -> None:
    """Completes (odd index) or fails (even index) a process."""
    status = "completed" if index % 2 else "failed"
    await stub.UpdateProcess(finishing(process_id, status), metadata=org.metadata())


async def create_async(stub: "AsyncStub", org: Org, name: str) -> None:
    await stub.CreateProcess(
        pb.CreateProcessRequest(namespace="busy", name=name, step_defs=STEPS),
        metadata=org.metadata(),
    )


async def test_counters_stay_exact_under_concurrent_status_changes_and_creates(
    stack: Stack, rest: httpx.Client, grpc_stub: Stub, org: Org
) -> None:
    """20 processes of one namespace finish at once (completed and failed
    interleaved) while more are created in it: the trigger-kept counters must
    neither deadlock nor drift. The processes share two names, so that the
    counters per name are contended too."""
    ids = [
        grpc_stub.CreateProcess(
            pb.CreateProcessRequest(namespace="busy", name=f"Job {index % 2}", step_defs=STEPS),
            metadata=org.metadata(),
        ).process_id
        for index in range(20)
    ]
    async with grpc.aio.insecure_channel(stack.envoy_target) as channel:
        stub = pb_grpc.ProcessServiceStub(channel)
        # Any failure (a deadlock is an error) fails the gather, and the test.
        await asyncio.gather(
            *(finish_async(stub, org, i, process_id) for i, process_id in enumerate(ids)),
            *(create_async(stub, org, f"JOB {index % 2}") for index in range(10)),
        )

    namespace = f"{org.org_id}.busy"
    assert_counters_match(stack, org.org_id)
    assert_name_counters_match(stack, org.org_id)
    with psycopg.connect(stack.database_url) as connection:
        counters: dict[str, int] = dict(
            connection.execute(
                "SELECT status, count FROM process_counts WHERE org_id = %s AND namespace = %s",
                (org.org_id, namespace),
            ).fetchall()
        )
    assert counters == {"running": 10, "completed": 10, "failed": 10}
    for status, count in (("running", 10), ("completed", 10), ("failed", 10), ("", 30)):
        params = {"namespace": "busy"} | ({"status": status} if status else {})
        assert list_processes(rest, org, **params)["total"] == count

    # And a second wave over the newcomers, in both directions of the counters' key order.
    processes = model_of(stack.database_url, org.org_id)
    running = [p.process_id for p in processes if p.status == "running"]
    async with grpc.aio.insecure_channel(stack.envoy_target) as channel:
        stub = pb_grpc.ProcessServiceStub(channel)
        await asyncio.gather(*(finish_async(stub, org, i, pid) for i, pid in enumerate(running)))
    assert_counters_match(stack, org.org_id)
    assert_name_counters_match(stack, org.org_id)
    assert list_processes(rest, org, namespace="busy", status="running")["total"] == 0
    assert_totals_exact(stack, rest, grpc_stub, org, model_of(stack.database_url, org.org_id))
