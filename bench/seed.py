"""The bench database: a million processes, seeded with COPY and reused across runs.

Rows are written exactly as the server would have written them after a
series of accepted updates (see server/domain/processes.py): the steps'
timelines, `current_step`, `update_count` and the event log (seq 1..n) all
agree, so a Get of any seeded process works and an update of a running one
is accepted.
"""

import json
import multiprocessing
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from server.storage.migrate import upgrade_to_latest

# The organization the benchmark reads and writes, and smaller ones beside it
# so that every query's tenancy filter has rows to skip.
BENCH_ORG = "bench"
OTHER_ORGS = ("acme", "globex", "initech")
OTHER_ORG_SHARE = 50  # each other org holds 1/50 of the bench org's count

# Bumped whenever the generated data changes shape: the marker then differs
# and the next run reseeds.
SEED_VERSION = 4
SEED = 20260224

# (template, namespace, weight). `{service}`, `{env}`, `{db}`, `{n}` are filled in.
NAME_TEMPLATES = (
    ("deploy {service} to {env}", "deployments", 30),
    ("rollback {service} in {env}", "deployments", 4),
    ("scale {service} to {k} replicas", "deployments", 6),
    ("nightly build {service} #{n}", "builds", 18),
    ("run integration tests for {service}", "tests", 12),
    ("migrate {db} db", "migrations", 8),
    ("backup {db} database", "ops", 7),
    ("rotate {service} credentials", "ops", 5),
    ("review pull request #{n} on {service}", "reviews", 10),
)
# (service, weight): "quasar-ledger" is rare on purpose, the selective search term.
SERVICES = (
    *((name, 1000) for name in (
        "api-gateway", "web-frontend", "billing", "checkout", "search-indexer",
        "auth-service", "payments", "inventory", "notifications", "recommendations",
        "reporting", "mobile-backend", "user-profile", "shipping", "analytics-pipeline",
    )),
    ("quasar-ledger", 5),
)  # fmt: skip
SELECTIVE_TERM = "quasar"
UNSELECTIVE_TERM = "deploy"
ENVIRONMENTS = ("production", "staging", "qa", "dev", "eu-west", "us-east")
DATABASES = ("billing", "orders", "users", "events", "ledger", "catalog")
# The pool of steps, in pipeline order; a process uses 3-10 of them, in order.
# (key, label, human)
STEP_POOL = (
    ("checkout", "Check out sources", False),
    ("build", "Build", False),
    ("lint", "Lint", False),
    ("unit-tests", "Unit tests", False),
    ("package", "Package image", False),
    ("scan", "Security scan", False),
    ("integration-tests", "Integration tests", False),
    ("approve", "Approval", True),
    ("deploy", "Deploy", False),
    ("smoke-tests", "Smoke tests", False),
    ("sign-off", "Sign-off", True),
    ("notify", "Notify", False),
)
YEAR_MS = 365 * 24 * 3600 * 1000


@dataclass(frozen=True)
class SeedParameters:
    """What the seeded data depends on; a different value means reseeding."""

    processes: int
    seed_version: int
    schema_version: str


def _weighted(pairs: Any) -> tuple[list[Any], list[int]]:
    items = list(pairs)
    return [item[:-1] if len(item) > 2 else item[0] for item in items], [item[-1] for item in items]


_TEMPLATES, _TEMPLATE_WEIGHTS = _weighted(NAME_TEMPLATES)
_SERVICES, _SERVICE_WEIGHTS = _weighted(SERVICES)


def _timestamp(ms: int) -> str:
    """COPY text for a timestamptz, to the millisecond as the server stores times."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}+00"


def _uuid(rng: random.Random) -> str:
    # PostgreSQL reads 32 hex digits without dashes as a uuid.
    return f"{rng.getrandbits(128):032x}"


NULL = "\\N"


class _Writer:
    """Builds the COPY text of one process's rows: processes, steps, process_events."""

    def __init__(
        self, rng: random.Random, process_columns: list[str], step_columns: list[str]
    ) -> None:
        self.rng = rng
        self.process_columns = process_columns
        self.step_columns = step_columns
        self.processes: list[str] = []
        self.steps: list[str] = []
        self.events: list[str] = []

    def process(self, org_id: str, started_ms: int, now_ms: int) -> None:
        rng = self.rng
        template, namespace = rng.choices(_TEMPLATES, _TEMPLATE_WEIGHTS)[0]
        name = template.format(
            service=rng.choices(_SERVICES, _SERVICE_WEIGHTS)[0],
            env=rng.choice(ENVIRONMENTS),
            db=rng.choice(DATABASES),
            n=rng.randrange(1, 10000),
            k=rng.randrange(2, 40),
        )
        count = rng.randint(3, 10)
        picked = sorted(rng.sample(range(len(STEP_POOL)), count))
        defs = [STEP_POOL[index] for index in picked]
        # Recent processes are often still running; old ones almost never.
        age_ms = now_ms - started_ms
        roll = rng.random()
        running_share = 0.6 if age_ms < 24 * 3600 * 1000 else 0.02
        if roll < running_share:
            status, stop = "running", rng.randrange(count)
        elif roll < running_share + 0.10:
            status, stop = "failed", rng.randrange(count)
        else:
            status, stop = "completed", count

        process_id = _uuid(rng)
        seq = 0
        clock = started_ms
        events: list[tuple[int, str, str | None, str, int]] = []
        steps: list[dict[str, Any]] = []
        for position, (key, label, human) in enumerate(defs):
            step: dict[str, Any] = {
                "process_id": process_id,
                "position": position,
                "key": key,
                "label": label,
                "human": "t" if human else "f",
                "task_id": _uuid(rng) if human else None,
                "status": "pending",
                "started_at": None,
                "completed_at": None,
                "detail": None,
                # SQLAlchemy writes a missing `data` as JSON null, not SQL NULL.
                "data": "null",
                "error": None,
                "progress_message": None,
                "progress_percent": None,
                "started_seq": None,
                "changed_seq": None,
            }
            steps.append(step)
            if position > stop:
                continue
            # step_started, as the domain applies it.
            clock += rng.randrange(200, 5000)
            seq += 1
            detail = f"{label} started by runner-{rng.randrange(1, 64)}"
            step.update(
                status="running",
                started_at=clock,
                started_seq=seq,
                changed_seq=seq,
                detail=detail,
            )
            events.append((seq, "step_started", key, f'{{"detail": "{detail}"}}', clock))
            if rng.random() < 0.3:
                clock += rng.randrange(1000, 120_000)
                seq += 1
                percent = rng.randrange(5, 95)
                message = f"{label}: {percent}% done"
                step.update(progress_message=message, progress_percent=percent, changed_seq=seq)
                payload = f'{{"message": "{message}", "percent": {percent}}}'
                events.append((seq, "progress", key, payload, clock))
            if position < stop:
                clock += rng.randrange(5_000, 600_000)
                seq += 1
                detail = f"{label} succeeded"
                data = f'{{"artifact": "{key}-{rng.randrange(1 << 32):08x}"}}'
                step.update(
                    status="completed",
                    completed_at=clock,
                    detail=detail,
                    data=data,
                    progress_message=None,
                    progress_percent=None,
                    changed_seq=seq,
                )
                payload = f'{{"detail": "{detail}", "data": {data}}}'
                events.append((seq, "step_completed", key, payload, clock))
            elif status == "failed":
                clock += rng.randrange(5_000, 600_000)
                seq += 1
                error = f"{label} failed: exit code {rng.randrange(1, 128)}"
                step.update(status="failed", error=error, changed_seq=seq)
                events.append((seq, "step_failed", key, f'{{"error": "{error}"}}', clock))

        summary: str | None = None
        process_error: str | None = None
        finished: int | None = None
        if status == "completed":
            clock += rng.randrange(100, 2000)
            seq += 1
            summary = f"{name}: done"
            events.append((seq, "completed", None, f'{{"summary": "{summary}"}}', clock))
            finished = clock
        elif status == "failed":
            clock += rng.randrange(100, 2000)
            seq += 1
            process_error = f"{name}: gave up"
            events.append((seq, "failed", None, f'{{"error": "{process_error}"}}', clock))
            finished = clock
        # A timeline that would end in the future is shifted back to end now.
        shift = max(0, clock - now_ms + 1000)

        def at(ms: int | None) -> str | None:
            return None if ms is None else _timestamp(ms - shift)

        # current_step: the latest started running step, else the latest changed one.
        running = [s for s in steps if s["status"] == "running"]
        changed = [s for s in steps if s["changed_seq"] is not None]
        current = (
            max(running, key=lambda s: s["started_seq"])["key"]
            if running
            else max(changed, key=lambda s: s["changed_seq"])["key"]
            if changed
            else None
        )
        task_ids = [s["task_id"] for s in steps if s["task_id"] is not None]
        process_values: dict[str, Any] = {
            "process_id": process_id,
            "org_id": org_id,
            "namespace": f"{org_id}.{namespace}",
            "name": name,
            "status": status,
            "current_step": current,
            "step_count": count,
            "task_ids": "{" + ",".join(task_ids) + "}",
            "started_at": at(started_ms),
            "finished_at": at(finished),
            "summary": summary,
            "error": process_error,
            "update_count": seq,
        }
        self.processes.append(_line(process_values, self.process_columns))
        for step in steps:
            step["started_at"] = at(step["started_at"])
            step["completed_at"] = at(step["completed_at"])
            self.steps.append(_line(step, self.step_columns))
        for event_seq, kind, step_key, payload, recorded in events:
            recorded_at = at(recorded) or NULL
            fields = (process_id, str(event_seq), kind, step_key or NULL, payload, recorded_at)
            self.events.append("\t".join(fields) + "\n")


def _line(values: dict[str, Any], columns: list[str]) -> str:
    # The generated text has no tabs, newlines, quotes or backslashes: neither COPY
    # nor the hand-built JSON needs escaping.
    return "\t".join(NULL if values[c] is None else str(values[c]) for c in columns) + "\n"


PROCESS_FIELDS = [
    "process_id",
    "org_id",
    "namespace",
    "name",
    "status",
    "current_step",
    "step_count",
    "task_ids",
    "started_at",
    "finished_at",
    "summary",
    "error",
    "update_count",
]
STEP_FIELDS = [
    "process_id",
    "position",
    "key",
    "label",
    "human",
    "task_id",
    "status",
    "started_at",
    "completed_at",
    "detail",
    "data",
    "error",
    "progress_message",
    "progress_percent",
    "started_seq",
    "changed_seq",
]
EVENT_FIELDS = ["process_id", "seq", "type", "step", "payload", "recorded_at"]


def copy_columns(connection: psycopg.Connection[Any], table: str, known: list[str]) -> list[str]:
    """The columns to COPY: those of `known` that the table has.

    A column the schema gained since this was written must have a default
    (or be nullable or generated), else seeding stops with a clear message.
    """
    rows = connection.execute(
        "SELECT column_name, is_nullable, column_default, is_generated"
        " FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = %s",
        (table,),
    ).fetchall()
    present = {row[0] for row in rows}
    unfilled = [
        row[0]
        for row in rows
        if row[0] not in known and row[1] == "NO" and row[2] is None and row[3] == "NEVER"
    ]
    if unfilled:
        raise RuntimeError(
            f"{table} has required columns the seeder does not know: {', '.join(unfilled)};"
            " teach bench/seed.py to fill them"
        )
    return [column for column in known if column in present]


@dataclass(frozen=True)
class _Shard:
    database_url: str
    shard: int
    shards: int
    jobs: list[tuple[str, int]]  # (org_id, processes of that org)
    now_ms: int


CHUNK = 5000


def _seed_shard(shard: _Shard) -> int:
    """Writes every `shards`-th process of each org, in one transaction; returns rows."""
    rows = 0
    with psycopg.connect(shard.database_url) as connection:
        connection.execute("SET synchronous_commit = off")
        process_columns = copy_columns(connection, "processes", PROCESS_FIELDS)
        step_columns = copy_columns(connection, "steps", STEP_FIELDS)
        event_columns = copy_columns(connection, "process_events", EVENT_FIELDS)
        if event_columns != EVENT_FIELDS:
            raise RuntimeError("process_events lost a column the seeder writes")
        rng = random.Random(SEED * 100 + shard.shard)  # noqa: S311 - repeatable
        with connection.cursor() as cursor:
            for org_id, count in shard.jobs:
                # Spread over the past year, oldest first, as the server would
                # have appended them.
                indexes = range(shard.shard, count, shard.shards)
                for start in range(0, len(indexes), CHUNK):
                    writer = _Writer(rng, process_columns, step_columns)
                    for index in indexes[start : start + CHUNK]:
                        started = shard.now_ms - YEAR_MS + YEAR_MS * index // count
                        writer.process(org_id, started + rng.randrange(1000), shard.now_ms)
                    for table, columns, lines in (
                        ("processes", process_columns, writer.processes),
                        ("steps", step_columns, writer.steps),
                        ("process_events", event_columns, writer.events),
                    ):
                        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
                        with cursor.copy(statement) as copy:
                            copy.write("".join(lines))
                        rows += len(lines)
        connection.commit()
    return rows


@dataclass(frozen=True)
class SeedReport:
    reused: bool
    seconds: float
    rows: int
    counts: dict[str, int]


META_TABLE = "bench_meta"


def stored_parameters(connection: psycopg.Connection[Any]) -> SeedParameters | None:
    exists = connection.execute("SELECT to_regclass(%s) IS NOT NULL", (META_TABLE,)).fetchone()
    if not exists or not exists[0]:
        return None
    row = connection.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'seed'").fetchone()  # noqa: S608
    if row is None:
        return None
    try:
        return SeedParameters(**row[0])
    except TypeError:
        return None


# The indexes of `processes` that no constraint owns.
_SECONDARY_INDEXES = (
    "SELECT i.indexname FROM pg_indexes i"
    " WHERE i.schemaname = current_schema() AND i.tablename = 'processes'"
    " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
)


def migrated_indexes(database_url: str) -> dict[str, str]:
    """The secondary indexes of `processes` as the migrations create them, by name.

    Read from a scratch database migrated for the purpose, so that the
    migrations stay the source of truth even if the bench database lost
    its indexes to an interrupted seed.
    """
    scratch = "htk_bench_schema"
    scratch_url = make_url(database_url).set(database=scratch).render_as_string(False)
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {scratch}")
        connection.execute(f"CREATE DATABASE {scratch}")
    try:
        upgrade_to_latest(scratch_url)
        with psycopg.connect(scratch_url) as connection:
            rows = connection.execute(
                _SECONDARY_INDEXES.replace("i.indexname FROM", "i.indexname, i.indexdef FROM")
            ).fetchall()
        return {name: definition for name, definition in rows}
    finally:
        with psycopg.connect(database_url, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {scratch}")


def schema_version(connection: psycopg.Connection[Any]) -> str:
    row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(row[0]) if row else ""


def ensure_seeded(
    database_url: str, processes: int, log: Callable[[str], None], workers: int = 2
) -> SeedReport:
    """Seeds the bench database unless it already holds data of the same parameters."""
    started = time.monotonic()
    expected_indexes = migrated_indexes(database_url)
    with psycopg.connect(database_url, autocommit=True) as connection:
        wanted = SeedParameters(processes, SEED_VERSION, schema_version(connection))
        present = {name for (name,) in connection.execute(_SECONDARY_INDEXES).fetchall()}
        # A seed cut short after dropping the indexes must not be reused.
        if stored_parameters(connection) == wanted and present >= expected_indexes.keys():
            log(f"reusing the seeded data ({processes:,} processes)")
            return SeedReport(True, 0.0, 0, _counts(connection))
        # Reseeding empties `processes`: never do that to a database with real data.
        foreign = connection.execute(
            "SELECT count(*) FROM processes WHERE org_id <> ALL(%s)",
            ([BENCH_ORG, *OTHER_ORGS],),
        ).fetchone()
        if foreign and foreign[0]:
            raise RuntimeError(
                f"the database holds {foreign[0]} processes of other organizations;"
                " the benchmark needs a database of its own (unset DATABASE_URL for the"
                " embedded one in .bench-data/)"
            )
        log(f"seeding {processes:,} processes (and {len(OTHER_ORGS)} smaller organizations)")
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key text PRIMARY KEY, value jsonb NOT NULL)"
        )
        connection.execute(f"DELETE FROM {META_TABLE}")  # noqa: S608
        # CASCADE reaches steps, process_events and whatever else hangs off processes.
        connection.execute("TRUNCATE processes CASCADE")
        for org_id in (BENCH_ORG, *OTHER_ORGS):
            connection.execute(
                "INSERT INTO organizations (org_id, created_at) VALUES (%s, now())"
                " ON CONFLICT DO NOTHING",
                (org_id,),
            )
        # Secondary indexes are rebuilt once at the end rather than maintained
        # row by row: far faster for a million rows.
        for (index_name,) in connection.execute(_SECONDARY_INDEXES).fetchall():
            connection.execute(f'DROP INDEX "{index_name}"')
        jobs = [(BENCH_ORG, processes)] + [
            (org_id, max(1, processes // OTHER_ORG_SHARE)) for org_id in OTHER_ORGS
        ]
        now_ms = int(time.time() * 1000) - 60_000
        shards = [_Shard(database_url, shard, workers, jobs, now_ms) for shard in range(workers)]
        # One generator process per core: Python formats rows while PostgreSQL
        # ingests the other shard's.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            rows = sum(pool.map(_seed_shard, shards))
        log(f"copied {rows:,} rows in {time.monotonic() - started:.0f} s; building indexes")
        connection.execute("SET maintenance_work_mem = '1GB'")
        for definition in expected_indexes.values():
            connection.execute(definition)
        connection.execute("ANALYZE")
        connection.execute(
            f"INSERT INTO {META_TABLE} (key, value) VALUES ('seed', %s)",  # noqa: S608
            (json.dumps(asdict(wanted)),),
        )
        seconds = time.monotonic() - started
        log(f"seeded in {seconds:.0f} s")
        return SeedReport(False, seconds, rows, _counts(connection))


def _counts(connection: psycopg.Connection[Any]) -> dict[str, int]:
    """How many rows the bench org has, and how many its search terms match."""
    counts: dict[str, int] = {}
    for label, where, parameters in (
        ("processes", "TRUE", ()),
        ("running", "status = 'running'", ()),
        ("failed", "status = 'failed'", ()),
        ("deployments", "namespace = %s", (f"{BENCH_ORG}.deployments",)),
        ("selective search", "name ILIKE %s", (f"%{SELECTIVE_TERM}%",)),
        ("unselective search", "name ILIKE %s", (f"%{UNSELECTIVE_TERM}%",)),
    ):
        row = connection.execute(
            f"SELECT count(*) FROM processes WHERE org_id = %s AND {where}",  # noqa: S608
            (BENCH_ORG, *parameters),
        ).fetchone()
        counts[label] = int(row[0]) if row else 0
    return counts
