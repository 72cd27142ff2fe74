"""The List queries use their indexes: EXPLAIN on seeded tables.

The statements are the server's own (`list_page_statement`,
`list_total_statement` for a `list_query(...)`; `task_page_statement`,
`task_total_statement` for a `task_query(...)`), explained in a database of
their own inside the session stack's PostgreSQL, seeded with 40,000
processes of one organization (and 20,000 of two others), each with a human
step and its task, so that the planner has a real choice. A later change to
the queries or the indexes that falls back to a sequential scan, to sorting
every match, or to counting rows for `total`, fails here.
"""

import json
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb
from sqlalchemy import Select
from sqlalchemy.dialects import postgresql

from server.domain.processes import ListQuery, PagePosition, list_query
from server.domain.tasks import TaskPosition, TaskQuery, task_query
from server.storage.migrate import upgrade_to_latest
from server.storage.processes import list_page_statement, list_total_statement
from server.storage.retention import expired_statement
from server.storage.tasks import task_page_statement, task_total_statement
from server.storage.wire import Statement
from tests.support.stack import Stack

ORG = "plans"
OTHER_ORGS = ("plans-other-a", "plans-other-b")
PROCESSES_OF_ORG = 40_000
PROCESSES_OF_OTHERS = 10_000
# 20 namespaces; statuses as a busy organization has them: most processes
# finished long ago, a few running, some failed. Names of five kinds, a fifth
# each, over 997 services, and ten rare ones ("Rollback payments") to search for.
SEED = (
    """
INSERT INTO organizations (org_id, created_at)
SELECT org_id, now() FROM unnest(%(orgs)s::text[]) AS org_id
""",
    """
INSERT INTO processes (process_id, org_id, namespace, name, status, current_step,
                       step_count, task_ids, started_at, finished_at, summary, error,
                       update_count, labels)
SELECT gen_random_uuid(),
       %(org)s,
       %(org)s || '.ns' || (i %% 20),
       CASE WHEN i %% 4000 = 0 THEN 'Rollback payments #' || i
            ELSE (ARRAY['Deploy', 'Build', 'Nightly backup', 'Run tests', 'Release'])[1 + i %% 5]
                 || ' service-' || (i %% 997) || ' v' || (i %% 13) || '.' || (i %% 7) || '.' || i
       END,
       CASE WHEN i %% 20 = 0 THEN 'running' WHEN i %% 20 = 1 THEN 'failed' ELSE 'completed' END,
       'step-' || (i %% 4), 4, '{}'::uuid[],
       timestamptz '2025-01-01 00:00:00+00' + i * interval '37 seconds',
       CASE WHEN i %% 20 = 0 THEN NULL
            ELSE timestamptz '2025-01-01 01:00:00+00' + i * interval '37 seconds' END,
       NULL, NULL, 3,
       jsonb_build_object('env', (ARRAY['prod', 'staging', 'qa', 'dev'])[1 + i %% 4],
                          'team', 'team-' || (i %% 25), 'commit', md5(i::text))
       || CASE WHEN i %% 4000 = 0 THEN '{"incident": "inc-7"}'::jsonb ELSE '{}' END
FROM generate_series(1, %(count)s) AS i
""",
    """
INSERT INTO processes (process_id, org_id, namespace, name, status, current_step,
                       step_count, task_ids, started_at, finished_at, summary, error,
                       update_count)
SELECT gen_random_uuid(), org_id, org_id || '.ns' || (i %% 5), 'Other job ' || i,
       CASE WHEN i %% 3 = 0 THEN 'running' ELSE 'completed' END,
       NULL, 1, '{}'::uuid[],
       timestamptz '2025-01-01 00:00:00+00' + i * interval '53 seconds',
       NULL, NULL, NULL, 0
FROM unnest(%(others)s::text[]) AS org_id, generate_series(1, %(others_count)s) AS i
""",
    # One human step per process, and its task, in the state the process
    # left it: waiting for a person while the process runs (5% of the
    # organization's tasks), cancelled by a failure, else approved.
    """
INSERT INTO steps (process_id, position, key, label, human, task_id, status)
SELECT process_id, 0, 'approve', 'Approval', true, gen_random_uuid(), status
FROM processes
""",
    """
INSERT INTO tasks (task_id, process_id, org_id, namespace, process_name, step, label,
                   status, created_at, opened_at, completed_at, outcome, completed_by)
SELECT steps.task_id, process_id, org_id, namespace, name, steps.key, steps.label,
       CASE processes.status WHEN 'running' THEN 'open' WHEN 'failed' THEN 'cancelled'
                             ELSE 'completed' END,
       processes.started_at, processes.started_at,
       CASE WHEN processes.status = 'completed' THEN processes.started_at + interval '1 hour' END,
       CASE WHEN processes.status = 'completed' THEN 'approved' END,
       CASE WHEN processes.status = 'completed' THEN 'reviewer' END
FROM steps JOIN processes USING (process_id)
""",
)


@dataclass(frozen=True)
class PlansDatabase:
    url: str
    # A process of ORG with an open task, for the process_id filter.
    process_id: uuid.UUID


@pytest.fixture(scope="module")
def plans_db(stack: Stack) -> Iterator[PlansDatabase]:
    """A fresh database in the stack's PostgreSQL, migrated, seeded and analyzed."""
    name = f"htk_plans_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(stack.database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = stack.database_url.replace("/postgres?", f"/{name}?")
    try:
        upgrade_to_latest(url)
        with psycopg.connect(url) as connection:
            for statement in SEED:
                # One INSERT ... SELECT per table: the counting triggers fire once each.
                connection.execute(
                    statement,
                    {
                        "orgs": [ORG, *OTHER_ORGS],
                        "org": ORG,
                        "count": PROCESSES_OF_ORG,
                        "others": list(OTHER_ORGS),
                        "others_count": PROCESSES_OF_OTHERS,
                    },
                )
        with psycopg.connect(url, autocommit=True) as connection:
            for table in (
                "processes",
                "process_counts",
                "process_name_counts",
                "process_label_counts",
                "steps",
                "tasks",
                "task_counts",
            ):
                connection.execute(f"VACUUM ANALYZE {table}")
            row = connection.execute(
                "SELECT process_id FROM processes WHERE org_id = %s AND status = 'running'"
                " ORDER BY started_at DESC LIMIT 1",
                (ORG,),
            ).fetchone()
        assert row is not None
        yield PlansDatabase(url, row[0])
    finally:
        with psycopg.connect(stack.database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# The server's dialect: psycopg 3, which sends parameters apart from the SQL.
DIALECT = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]


def explain(
    db: PlansDatabase, statement: Select[Any] | Statement, *, generic: bool = False
) -> dict[str, Any]:
    """The planner's chosen plan (not run) as JSON: the top node.

    By default the statement goes as the server sends it, its parameters
    bound apart, so the planner sees their values. With `generic`, it is
    planned as a prepared statement without them, which is what PostgreSQL
    may settle on for a statement Wire has prepared, after five runs of it.
    """
    query, params = as_sql(statement)
    with psycopg.connect(db.url) as connection:
        if not generic:
            row = connection.execute(f"EXPLAIN (FORMAT JSON) {query}", params).fetchone()
        else:
            numbered, values = numbered_parameters(query, params)
            connection.execute(f"PREPARE list_statement AS {numbered}")
            connection.execute("SET plan_cache_mode = force_generic_plan")
            row = connection.execute(
                sql.SQL("EXPLAIN (FORMAT JSON) EXECUTE list_statement ({})").format(
                    sql.SQL(", ").join(sql.Literal(value) for value in values)
                )
            ).fetchone()
    assert row is not None
    document = row[0] if isinstance(row[0], list) else json.loads(row[0])
    plan = document[0]["Plan"]
    assert isinstance(plan, dict)
    return plan


def as_sql(statement: Select[Any] | Statement) -> tuple[str, Mapping[str, Any]]:
    """The SQL and parameters psycopg gets: the storage layer's own
    (hand-written SQL) as it is, a SQLAlchemy statement compiled as the
    server's dialect compiles it."""
    if not isinstance(statement, Select):
        return statement
    compiled = statement.compile(dialect=DIALECT)
    return str(compiled), adapted(compiled.params)


def numbered_parameters(query: str, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """`query` with psycopg's named placeholders as PREPARE's numbered ones,
    and the values in their order."""
    names: list[str] = []

    def number(placeholder: re.Match[str]) -> str:
        if placeholder[1] not in names:
            names.append(placeholder[1])
        return f"${names.index(placeholder[1]) + 1}"

    numbered = re.sub(r"%\((\w+)\)s", number, query).replace("%%", "%")
    return numbered, [params[name] for name in names]


def adapted(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as SQLAlchemy's JSONB type sends them: a label filter's
    object as JSON."""
    return {
        name: Jsonb(value) if isinstance(value, dict) else value for name, value in params.items()
    }


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def describe(plan: dict[str, Any], depth: int = 0) -> str:
    """A compact rendering of the plan for failure messages and -s output."""
    parts = [plan["Node Type"]]
    for key in ("Scan Direction", "Index Name", "Relation Name", "Index Cond", "Filter"):
        if key in plan:
            parts.append(f"{key}={plan[key]}")
    lines = ["  " * depth + " ".join(parts)]
    for child in plan.get("Plans", []):
        lines.append(describe(child, depth + 1))
    return "\n".join(lines)


def assert_no_seq_scan(plan: dict[str, Any]) -> None:
    scans = [node for node in nodes(plan) if node["Node Type"] == "Seq Scan"]
    assert not scans, f"sequential scan:\n{describe(plan)}"


def index_names(plan: dict[str, Any]) -> set[str]:
    return {node["Index Name"] for node in nodes(plan) if "Index Name" in node}


def relations(plan: dict[str, Any]) -> set[str]:
    return {node["Relation Name"] for node in nodes(plan) if "Relation Name" in node}


AFTER = PagePosition(datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC), uuid.uuid4())
ORDERED_INDEXES = {
    "processes_by_org",
    "processes_by_status",
    "processes_by_namespace",
    "processes_by_namespace_status",
}

# (id, list_query parameters, the index the page must walk). Each filter
# here is selective (running and failed are 5% each, a namespace 5%, both
# 0.25%), so its own index is the planner's best choice.
SHAPES: list[tuple[str, dict[str, Any], str]] = [
    ("no-filter", {}, "processes_by_org"),
    ("status", {"status": "running"}, "processes_by_status"),
    ("namespace", {"namespace": "ns7"}, "processes_by_namespace"),
    ("status+namespace", {"status": "failed", "namespace": "ns3"}, "processes_by_namespace_status"),
    ("oldest", {"sort": "oldest"}, "processes_by_org"),
    ("oldest-status", {"sort": "oldest", "status": "running"}, "processes_by_status"),
    (
        "oldest-status+namespace",
        {"sort": "oldest", "status": "running", "namespace": "ns0"},
        "processes_by_namespace_status",
    ),
    ("offset-1000", {"offset": 1000}, "processes_by_org"),
    ("offset-1000-status", {"offset": 1000, "status": "running"}, "processes_by_status"),
    ("limit-200", {"limit": 200}, "processes_by_org"),
]
SHAPE_IDS = [shape_id for shape_id, _, _ in SHAPES]


def page_query(params: dict[str, Any], paged: bool) -> ListQuery:
    query = list_query(ORG, **params)
    # A page token turns into `after`; it comes without an offset.
    return replace(query, after=AFTER, offset=0) if paged else query


def assert_ordered_index_walk(plan: dict[str, Any], indexes: set[str] = ORDERED_INDEXES) -> None:
    """The page reads one of `indexes` in sort order and stops at the limit:
    no sequential scan, no sort of every match."""
    assert_no_seq_scan(plan)
    assert index_names(plan) & indexes, describe(plan)
    sorts = [node for node in nodes(plan) if node["Node Type"] in ("Sort", "Incremental Sort")]
    assert not sorts, describe(plan)


# What a listed row reads besides its process: its current step's label and
# how many of its tasks are open.
SUMMARY_PROBES = {"steps_process_id_key_key", "tasks_by_process"}


@pytest.mark.parametrize(("params", "index"), [(p, i) for _, p, i in SHAPES], ids=SHAPE_IDS)
@pytest.mark.parametrize("paged", [False, True], ids=["first-page", "page-token"])
def test_a_list_page_walks_its_own_index_in_sort_order(
    plans_db: PlansDatabase, params: dict[str, Any], index: str, paged: bool
) -> None:
    plan = explain(plans_db, list_page_statement(page_query(params, paged)))
    print(f"\n{params} paged={paged}:\n{describe(plan)}")
    assert_ordered_index_walk(plan)
    assert index_names(plan) - SUMMARY_PROBES == {index}, describe(plan)
    # Each row's step label and open tasks: probes of the row's own few rows.
    probes = [node for node in nodes(plan) if node.get("Index Name") in SUMMARY_PROBES]
    assert all("processes.process_id" in node["Index Cond"] for node in probes), describe(plan)
    if paged:
        # The token bounds the walk inside the index, so depth costs nothing.
        (scan,) = [node for node in nodes(plan) if node.get("Index Name") == index]
        assert "ROW(started_at, process_id)" in scan.get("Index Cond", ""), describe(plan)


@pytest.mark.parametrize("paged", [False, True], ids=["first-page", "page-token"])
@pytest.mark.parametrize(
    "params", [{"status": "completed"}, {"status": "completed", "sort": "oldest"}]
)
def test_a_broad_filter_walks_an_index_in_sort_order_too(
    plans_db: PlansDatabase, params: dict[str, Any], paged: bool
) -> None:
    # 90% of the processes are completed: walking processes_by_org and
    # skipping the others is as good as processes_by_status; either is fine,
    # a scan and sort of all 36,000 is not.
    plan = explain(plans_db, list_page_statement(page_query(params, paged)))
    print(f"\n{params} paged={paged}:\n{describe(plan)}")
    assert_ordered_index_walk(plan)


@pytest.mark.parametrize("params", [p for _, p, _ in SHAPES], ids=SHAPE_IDS)
@pytest.mark.parametrize("paged", [False, True], ids=["first-page", "page-token"])
def test_a_prepared_list_page_walks_an_index_without_knowing_its_parameters(
    plans_db: PlansDatabase, params: dict[str, Any], paged: bool
) -> None:
    plan = explain(plans_db, list_page_statement(page_query(params, paged)), generic=True)
    print(f"\n{params} paged={paged} (generic plan):\n{describe(plan)}")
    assert_ordered_index_walk(plan)


@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
@pytest.mark.parametrize("params", [p for _, p, _ in SHAPES], ids=SHAPE_IDS)
def test_a_total_without_search_reads_the_counters_not_the_processes(
    plans_db: PlansDatabase, params: dict[str, Any], generic: bool
) -> None:
    plan = explain(plans_db, list_total_statement(list_query(ORG, **params)), generic=generic)
    print(f"\n{params}:\n{describe(plan)}")
    assert relations(plan) == {"process_counts"}, describe(plan)


# A selective search, as a person looks for one rare kind of process (10
# matches). Its page may use the trigram index or walk an ordered index,
# whichever the planner's sample suggests; a sequential scan is never right.
# A broad search (a fifth of all processes) is tested below. Either total
# sums the counters of matching names, found by their trigram index (or, with
# a namespace, by their key), and never reads a process row: rechecking a
# fifth of all process rows is what made a broad search slow
# (docs/benchmarks.md). Every name here is unique, the counters' worst case.
SELECTIVE_SEARCHES = ["rollback", "Rollback payments"]
BROAD_SEARCH = "Nightly"
SEARCH_FILTERS = [
    {},
    {"status": "running"},
    {"namespace": "ns3"},
    {"status": "failed", "namespace": "ns3"},
]
SEARCH_FILTER_IDS = ["search", "search+status", "search+namespace", "search+status+namespace"]


def assert_sums_the_name_counters(plan: dict[str, Any], filters: dict[str, Any]) -> None:
    assert_no_seq_scan(plan)
    assert relations(plan) == {"process_name_counts"}, describe(plan)
    indexes = index_names(plan)
    assert indexes <= {"process_name_counts_trigram", "process_name_counts_pkey"}, describe(plan)
    # The key narrows the names down only as far as a namespace.
    if "namespace" not in filters:
        assert "process_name_counts_trigram" in indexes, describe(plan)
    assert indexes, describe(plan)


@pytest.mark.parametrize("status", ["", "running"])
@pytest.mark.parametrize("search", SELECTIVE_SEARCHES)
def test_a_selective_search_uses_the_trigram_index(
    plans_db: PlansDatabase, search: str, status: str
) -> None:
    query = list_query(ORG, search=search, status=status)
    page = explain(plans_db, list_page_statement(query))
    print(f"\npage {search!r} status={status!r}:\n{describe(page)}")
    assert_no_seq_scan(page)
    assert index_names(page) & (ORDERED_INDEXES | {"processes_name_trigram"}), describe(page)


@pytest.mark.parametrize("status", ["", "running"])
def test_a_broad_search_scans_no_table(plans_db: PlansDatabase, status: str) -> None:
    query = list_query(ORG, search=BROAD_SEARCH, status=status)
    page = explain(plans_db, list_page_statement(query))
    print(f"\npage {BROAD_SEARCH!r} status={status!r}:\n{describe(page)}")
    assert_no_seq_scan(page)
    assert index_names(page) & (ORDERED_INDEXES | {"processes_name_trigram"}), describe(page)


@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
@pytest.mark.parametrize("filters", SEARCH_FILTERS, ids=SEARCH_FILTER_IDS)
@pytest.mark.parametrize("search", [*SELECTIVE_SEARCHES, BROAD_SEARCH])
def test_a_search_total_sums_the_counters_of_matching_names(
    plans_db: PlansDatabase, search: str, filters: dict[str, Any], generic: bool
) -> None:
    query = list_query(ORG, search=search, **filters)
    plan = explain(plans_db, list_total_statement(query), generic=generic)
    print(f"\ntotal {search!r} {filters}:\n{describe(plan)}")
    assert_sums_the_name_counters(plan, filters)


# Labels: every process of ORG carries `env` (a quarter each), `team` (one
# of 25) and a `commit` of its own, and ten of them an `incident`. Two
# filters as a team lists its production runs match 1% (400); a rare label
# 10. The page finds them by the labels' GIN index or walks an ordered index
# and skips the others, whichever the planner judges cheaper; never a
# sequential scan or a sort of every process. Each process's own `commit`
# makes as many label sets as processes, the label counters' worst case: the
# total still reads no process row.
LABEL_FILTERS = {
    "two-labels": ["env=prod", "team=team-5"],
    "rare-label": ["incident=inc-7"],
    "one-commit": ["commit=c4ca4238a0b923820dcc509a6f75849b"],
}


@pytest.mark.parametrize("status", ["", "running"])
@pytest.mark.parametrize("labels", LABEL_FILTERS.values(), ids=LABEL_FILTERS.keys())
def test_a_label_filter_uses_an_index(
    plans_db: PlansDatabase, labels: list[str], status: str
) -> None:
    page = explain(plans_db, list_page_statement(list_query(ORG, label=labels, status=status)))
    print(f"\npage {labels} status={status!r}:\n{describe(page)}")
    assert_no_seq_scan(page)
    assert index_names(page) & (ORDERED_INDEXES | {"processes_labels"}), describe(page)


@pytest.mark.parametrize("labels", ["rare-label", "one-commit"])
def test_a_selective_label_filter_finds_its_processes_by_the_label_index(
    plans_db: PlansDatabase, labels: str
) -> None:
    query = list_query(ORG, label=LABEL_FILTERS[labels])
    page = explain(plans_db, list_page_statement(query))
    print(f"\npage {labels}:\n{describe(page)}")
    assert "processes_labels" in index_names(page), describe(page)


@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
@pytest.mark.parametrize("status", ["", "running"])
@pytest.mark.parametrize("labels", LABEL_FILTERS.values(), ids=LABEL_FILTERS.keys())
def test_a_label_total_sums_the_counters_of_matching_label_sets(
    plans_db: PlansDatabase, labels: list[str], status: str, generic: bool
) -> None:
    query = list_query(ORG, label=labels, status=status)
    plan = explain(plans_db, list_total_statement(query), generic=generic)
    print(f"\ntotal {labels} status={status!r}:\n{describe(plan)}")
    assert_no_seq_scan(plan)
    assert relations(plan) == {"process_label_counts"}, describe(plan)
    assert "process_label_counts_labels" in index_names(plan), describe(plan)


# Tasks: the same rules for ListTasks. Its statuses and namespaces are
# selective like the processes' (open 5%, a namespace 5%, both 0.25%); a
# process has a handful of tasks at most, which tasks_by_process finds.
TASK_INDEXES = {
    "tasks_by_org",
    "tasks_by_status",
    "tasks_by_namespace",
    "tasks_by_namespace_status",
    "tasks_by_process",
    "tasks_by_outcome",
    "tasks_by_decider",
}
TASK_AFTER = TaskPosition(AFTER.started_at, uuid.uuid4())
# (id, task_query parameters, the index the page must walk); "process" stands
# for the seeded process's id.
TASK_SHAPES: list[tuple[str, dict[str, Any], str]] = [
    ("no-filter", {}, "tasks_by_org"),
    ("status", {"status": "open"}, "tasks_by_status"),
    ("namespace", {"namespace": "ns7"}, "tasks_by_namespace"),
    ("status+namespace", {"status": "open", "namespace": "ns3"}, "tasks_by_namespace_status"),
    ("process_id", {"process_id": "process"}, "tasks_by_process"),
    ("process_id+status", {"process_id": "process", "status": "open"}, "tasks_by_process"),
    ("offset-1000", {"offset": 1000}, "tasks_by_org"),
    ("offset-1000-status", {"offset": 1000, "status": "open"}, "tasks_by_status"),
    ("limit-200", {"limit": 200}, "tasks_by_org"),
    # The history of decisions: every seeded decision is an approval by
    # `reviewer`, so these ask for the rare ones.
    ("outcome", {"outcome": "rejected"}, "tasks_by_outcome"),
    ("status+outcome", {"status": "completed", "outcome": "rejected"}, "tasks_by_outcome"),
    ("completed_by", {"completed_by": "alice"}, "tasks_by_decider"),
]
# The shapes whose totals the counters know (they know nothing of a process,
# an outcome or a decider).
COUNTED = ("process_id", "outcome", "completed_by")
COUNTER_SHAPES = [(i, p) for i, p, _ in TASK_SHAPES if not any(f in p for f in COUNTED)]
HISTORY_SHAPES = [(i, p, x) for i, p, x in TASK_SHAPES if "outcome" in p or "completed_by" in p]
TASK_SHAPE_IDS = [shape_id for shape_id, _, _ in TASK_SHAPES]


def tasks_query(db: PlansDatabase, params: dict[str, Any], paged: bool = False) -> TaskQuery:
    if params.get("process_id") == "process":
        params = params | {"process_id": str(db.process_id)}
    query = task_query(ORG, **params)
    return replace(query, after=TASK_AFTER, offset=0) if paged else query


@pytest.mark.parametrize(
    ("params", "index"), [(p, i) for _, p, i in TASK_SHAPES], ids=TASK_SHAPE_IDS
)
@pytest.mark.parametrize("paged", [False, True], ids=["first-page", "page-token"])
def test_a_task_page_walks_its_own_index_in_sort_order(
    plans_db: PlansDatabase, params: dict[str, Any], index: str, paged: bool
) -> None:
    plan = explain(plans_db, task_page_statement(tasks_query(plans_db, params, paged)))
    print(f"\n{params} paged={paged}:\n{describe(plan)}")
    assert_ordered_index_walk(plan, TASK_INDEXES)
    assert index_names(plan) == {index}, describe(plan)
    if paged:
        (scan,) = [node for node in nodes(plan) if node.get("Index Name") == index]
        assert "ROW(created_at, task_id)" in scan.get("Index Cond", ""), describe(plan)


@pytest.mark.parametrize("params", [p for _, p, _ in TASK_SHAPES], ids=TASK_SHAPE_IDS)
@pytest.mark.parametrize("paged", [False, True], ids=["first-page", "page-token"])
def test_a_prepared_task_page_walks_an_index_without_knowing_its_parameters(
    plans_db: PlansDatabase, params: dict[str, Any], paged: bool
) -> None:
    query = tasks_query(plans_db, params, paged)
    plan = explain(plans_db, task_page_statement(query), generic=True)
    print(f"\n{params} paged={paged} (generic plan):\n{describe(plan)}")
    assert_ordered_index_walk(plan, TASK_INDEXES)


@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
@pytest.mark.parametrize(
    "params", [p for _, p in COUNTER_SHAPES], ids=[i for i, _ in COUNTER_SHAPES]
)
def test_a_task_total_reads_the_counters_not_the_tasks(
    plans_db: PlansDatabase, params: dict[str, Any], generic: bool
) -> None:
    statement = task_total_statement(tasks_query(plans_db, params))
    plan = explain(plans_db, statement, generic=generic)
    print(f"\n{params}:\n{describe(plan)}")
    assert relations(plan) == {"task_counts"}, describe(plan)


@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
@pytest.mark.parametrize(
    ("params", "index"),
    [(p, x) for _, p, x in HISTORY_SHAPES],
    ids=[i for i, _, _ in HISTORY_SHAPES],
)
def test_a_task_history_total_counts_its_own_index(
    plans_db: PlansDatabase, params: dict[str, Any], index: str, generic: bool
) -> None:
    # Exact, and no walk through every task of the organization.
    plan = explain(plans_db, task_total_statement(tasks_query(plans_db, params)), generic=generic)
    print(f"\n{params}:\n{describe(plan)}")
    assert_no_seq_scan(plan)
    assert index_names(plan) == {index}, describe(plan)


@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
@pytest.mark.parametrize("status", ["", "open"])
def test_a_task_total_of_one_process_counts_its_tasks_by_index(
    plans_db: PlansDatabase, status: str, generic: bool
) -> None:
    # The counters know no process; its few tasks are counted from the index.
    query = tasks_query(plans_db, {"process_id": "process", "status": status})
    plan = explain(plans_db, task_total_statement(query), generic=generic)
    print(f"\nprocess_id status={status!r}:\n{describe(plan)}")
    assert_no_seq_scan(plan)
    assert index_names(plan) == {"tasks_by_process"}, describe(plan)


@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
@pytest.mark.parametrize(
    "cutoff",
    # Nothing expired yet, a tenth of the finished processes, all of them.
    [datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 3, tzinfo=UTC), datetime.now(UTC)],
    ids=["none", "a-tenth", "all"],
)
def test_retention_walks_the_oldest_finishes_by_index_up_to_its_batch(
    plans_db: PlansDatabase, cutoff: datetime, generic: bool
) -> None:
    # However many are expired, a batch reads its 100 rows from the index
    # in finish order: never a scan of every process, nor a sort of them.
    plan = explain(plans_db, expired_statement(cutoff, 100), generic=generic)
    print(f"\nexpired before {cutoff:%Y-%m-%d}:\n{describe(plan)}")
    assert_ordered_index_walk(plan, {"processes_by_finish"})
    assert index_names(plan) == {"processes_by_finish"}, describe(plan)


def test_the_seed_is_what_the_plans_were_judged_on(plans_db: PlansDatabase) -> None:
    with psycopg.connect(plans_db.url) as connection:
        counts: dict[str, dict[str, int]] = {
            table: dict(
                connection.execute(
                    sql.SQL(
                        "SELECT status, sum(count)::int FROM {} WHERE org_id = %s GROUP BY status"
                    ).format(sql.Identifier(table)),
                    (ORG,),
                ).fetchall()
            )
            for table in ("process_counts", "task_counts")
        }
    assert counts == {
        "process_counts": {"running": 2000, "failed": 2000, "completed": 36000},
        "task_counts": {"open": 2000, "cancelled": 2000, "completed": 36000},
    }
