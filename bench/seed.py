"""The bench database: a million processes, seeded with COPY and reused across runs.

Each process is a random run of updates and task decisions that the domain
applies, exactly as the server does (server/domain/processes/), and its
rows are the resulting state and events: the steps' timelines, the tasks of
human steps, `current_step`, `update_count` and the event log (seq 1..n) all
agree, so a Get of any seeded process works and an update of a running one
is accepted.
"""

import dataclasses
import json
import multiprocessing
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from server.domain.checks import qualify_namespace
from server.domain.processes import (
    Event,
    Process,
    ProcessStatus,
    Step,
    Update,
    UpdateType,
    apply_update,
    complete_task,
)
from server.domain.tasks import Completion, Outcome, Task
from server.domain.tokens import Caller
from server.storage.database import sqlalchemy_url
from server.storage.migrate import upgrade_to_latest

# The organization the benchmark reads and writes, and smaller ones beside it
# so that every query's tenancy filter has rows to skip.
BENCH_ORG = "bench"
OTHER_ORGS = ("acme", "globex", "initech")
OTHER_ORG_SHARE = 50  # each other org holds 1/50 of the bench org's count
# The retention phase's organization (bench/retention.py): processes that
# finished long before any of the others, which its pass deletes.
EXPIRED_ORG = "expired"

# Bumped whenever the generated data changes shape: the marker then differs
# and the next run reseeds.
SEED_VERSION = 7
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
# Labels as a CI system sets them: the environment and service the run is
# about (those of its name, or drawn for names without one) and its branch,
# mostly main, else a release branch or one of many feature branches. The
# bench's label filter asks for one service in one environment.
LABEL_FILTER = {"env": "production", "service": "payments"}
FEATURE_BRANCHES = 200
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
# The share of processes with a human step that wait at their first one:
# the pipeline started the gate and no one has decided it yet (deploy
# requests nobody approved, reviews nobody took), so its task is open. With
# about 77% of processes having a human step, about 11% of all processes
# wait: 110,000 open tasks in the inbox of a million processes.
AWAITING_DECISION_SHARE = 0.14
# Who decides the human steps: the names of their tokens.
REVIEWERS = 40


@dataclass(frozen=True)
class SeedParameters:
    """What the seeded data was made with."""

    processes: int
    seed_version: int
    # The schema it was seeded under. Not a reason to reseed: migrations carry
    # the seed forward as they carry any database's data (bump SEED_VERSION
    # when the seed itself should fill what a migration added).
    schema_version: str

    def reusable_for(self, wanted: "SeedParameters") -> bool:
        return (self.processes, self.seed_version) == (wanted.processes, wanted.seed_version)


def _weighted(pairs: Any) -> tuple[list[Any], list[int]]:
    items = list(pairs)
    return [item[:-1] if len(item) > 2 else item[0] for item in items], [item[-1] for item in items]


_TEMPLATES, _TEMPLATE_WEIGHTS = _weighted(NAME_TEMPLATES)
_SERVICES, _SERVICE_WEIGHTS = _weighted(SERVICES)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NULL = "\\N"


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128))


def _at(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _random_name(rng: random.Random) -> tuple[str, str, dict[str, str]]:
    """A process's name, its namespace without the organization, and its labels."""
    template, namespace = rng.choices(_TEMPLATES, _TEMPLATE_WEIGHTS)[0]
    service, env = rng.choices(_SERVICES, _SERVICE_WEIGHTS)[0], rng.choice(ENVIRONMENTS)
    name = template.format(
        service=service,
        env=env,
        db=rng.choice(DATABASES),
        n=rng.randrange(1, 10000),
        k=rng.randrange(2, 40),
    )
    roll = rng.random()
    branch = (
        "main"
        if roll < 0.6
        else f"release/{rng.randrange(1, 30)}"
        if roll < 0.7
        else f"feature/{rng.randrange(FEATURE_BRANCHES)}"
    )
    return name, namespace, {"env": env, "service": service, "branch": branch}


def _random_outcome(
    rng: random.Random, step_defs: list[tuple[str, str, bool]], age_ms: int
) -> tuple[ProcessStatus, int]:
    """Where a process got to: its status, and the position of the step it
    stopped at (`len(step_defs)` once every step completed)."""
    step_count = len(step_defs)
    gates = [position for position, (_, _, human) in enumerate(step_defs) if human]
    if gates and rng.random() < AWAITING_DECISION_SHARE:
        return ProcessStatus.RUNNING, gates[0]
    # Recent processes are often still running; old ones almost never.
    running_share = 0.6 if age_ms < 24 * 3600 * 1000 else 0.02
    roll = rng.random()
    if roll < running_share:
        return ProcessStatus.RUNNING, rng.randrange(step_count)
    if roll < running_share + 0.10:
        return ProcessStatus.FAILED, rng.randrange(step_count)
    return ProcessStatus.COMPLETED, step_count


@dataclass(frozen=True)
class _Decision:
    """A person's CompleteTask on a human step's task."""

    step: str
    completion: Completion
    completed_by: str


class _History:
    """The updates a process's runner sent and the decisions people made,
    each at its time in ms after the process started."""

    def __init__(self) -> None:
        self.actions: list[tuple[int, Update | _Decision]] = []
        self._clock = 0

    def send(self, after_ms: int, update_type: UpdateType, **fields: Any) -> None:
        self._clock += after_ms
        self.actions.append((self._clock, Update(update_type, **fields)))

    def decide(self, after_ms: int, decision: _Decision) -> None:
        self._clock += after_ms
        self.actions.append((self._clock, decision))


def _random_decision(rng: random.Random, step: str, outcome: Outcome) -> _Decision:
    """A reviewer's decision; most say nothing more, some leave a comment."""
    comment = None
    if rng.random() < 0.3:
        comment = "LGTM" if outcome is Outcome.APPROVED else "not now: see the incident channel"
    completed_by = f"reviewer-{rng.randrange(REVIEWERS)}"
    return _Decision(step, Completion(outcome.value, comment), completed_by)


def _random_run(
    rng: random.Random,
    name: str,
    step_defs: list[tuple[str, str, bool]],
    status: ProcessStatus,
    stop: int,
) -> tuple[list[Step], _History]:
    """The process's steps, and the updates and decisions that brought it to `status`.

    The steps before `stop` completed (some reported progress on the way,
    people approved the human ones); the one at `stop` is still running (a
    human one waits for a decision), or failed with the process (a human one
    rejected); those after it are pending.
    """
    steps = []
    history = _History()
    for position, (key, label, human) in enumerate(step_defs):
        steps.append(Step(key=key, label=label, human=human, task=None))
        if position > stop:
            continue
        after_ms, runner = rng.randrange(200, 5000), rng.randrange(1, 64)
        detail = f"{label} started by runner-{runner}"
        history.send(after_ms, UpdateType.STEP_STARTED, step=key, detail=detail)
        if human:
            # A person takes minutes to hours to decide; a running process's
            # gate at `stop` still waits.
            if position < stop or status is ProcessStatus.FAILED:
                outcome = Outcome.APPROVED if position < stop else Outcome.REJECTED
                decision = _random_decision(rng, key, outcome)
                history.decide(rng.randrange(60_000, 4 * 3600 * 1000), decision)
            continue
        if rng.random() < 0.3:
            after_ms, percent = rng.randrange(1000, 120_000), rng.randrange(5, 95)
            message = f"{label}: {percent}% done"
            history.send(after_ms, UpdateType.PROGRESS, step=key, message=message, percent=percent)
        if position < stop:
            after_ms, artifact = rng.randrange(5_000, 600_000), rng.randrange(1 << 32)
            data = {"artifact": f"{key}-{artifact:08x}"}
            detail = f"{label} succeeded"
            history.send(after_ms, UpdateType.STEP_COMPLETED, step=key, detail=detail, data=data)
        elif status is ProcessStatus.FAILED:
            after_ms, exit_code = rng.randrange(5_000, 600_000), rng.randrange(1, 128)
            error = f"{label} failed: exit code {exit_code}"
            history.send(after_ms, UpdateType.STEP_FAILED, step=key, error=error)
    if status is ProcessStatus.COMPLETED:
        history.send(rng.randrange(100, 2000), UpdateType.COMPLETED, summary=f"{name}: done")
    elif status is ProcessStatus.FAILED:
        history.send(rng.randrange(100, 2000), UpdateType.FAILED, error=f"{name}: gave up")
    return steps, history


def _random_process(
    rng: random.Random, org_id: str, started_ms: int, now_ms: int
) -> tuple[Process, list[Event]]:
    """A process as the server leaves it after the updates of a random run,
    and the events it logged: the domain applies every update."""
    name, namespace, labels = _random_name(rng)
    count = rng.randint(3, 10)
    step_defs = [STEP_POOL[index] for index in sorted(rng.sample(range(len(STEP_POOL)), count))]
    status, stop = _random_outcome(rng, step_defs, now_ms - started_ms)
    process_id = _uuid(rng)
    steps, history = _random_run(rng, name, step_defs, status, stop)
    # A timeline that would end in the future is shifted back to end now.
    last_ms = started_ms + history.actions[-1][0]
    started_ms -= max(0, last_ms - now_ms + 1000)
    qualified = qualify_namespace(org_id, namespace)
    for step in steps:
        if step.human:
            step.task = Task(
                task_id=_uuid(rng),
                process_id=process_id,
                org_id=org_id,
                namespace=qualified,
                process_name=name,
                step=step.key,
                label=step.label,
                created_at=_at(started_ms),
            )
    process = Process(
        process_id=process_id,
        org_id=org_id,
        namespace=qualified,
        name=name,
        started_at=_at(started_ms),
        steps=steps,
        labels=labels,
        url=f"https://ci.example.com/{namespace}/runs/{rng.randrange(1 << 32)}",
    )
    events = []
    pipeline = Caller(org_id, frozenset(), "pipeline", _token_id("pipeline"))
    for offset_ms, action in history.actions:
        now = _at(started_ms + offset_ms)
        if isinstance(action, Update):
            change = apply_update(process, action, now, by=pipeline)
        else:
            task_id = process.step(action.step).task_id
            assert task_id is not None  # only human steps are decided
            person = Caller(
                org_id, frozenset(), action.completed_by, _token_id(action.completed_by)
            )
            change = complete_task(process, task_id, action.completion, person, now)
        events.append(change.event)
    return process, events


# Seeded histories name their people, not tokens: ids made up from the names.
def _token_id(name: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"htk-bench:{name}")


def _copy_text(value: Any) -> str:
    """A value in COPY's text format."""
    if value is None:
        return NULL
    text = _COPY_TEXT.get(type(value))
    return text(value) if text else str(value)


_COPY_TEXT: dict[type, Callable[[Any], str]] = {
    bool: lambda value: "t" if value else "f",
    # To the millisecond, as the server stores times.
    datetime: lambda value: value.isoformat(" ", "milliseconds"),
    # PostgreSQL reads 32 hex digits without dashes as a uuid.
    uuid.UUID: lambda value: value.hex,
    list: lambda values: "{" + ",".join(map(_copy_text, values)) + "}",
}


def _attributes(source: type) -> set[str]:
    """The names a row's values are read from: a dataclass's fields and properties."""
    properties = {name for name, member in vars(source).items() if isinstance(member, property)}
    return {field.name for field in dataclasses.fields(source)} | properties


@dataclass(frozen=True)
class CopyTable:
    """A table's columns that the seeder fills, and its rows in COPY's text format.

    Each column is filled from the attribute of the same name of a domain
    object (a `Process`, `Step` or `Event`) or from a value given beside it.
    """

    name: str
    columns: tuple[str, ...]
    json_columns: frozenset[str]

    @classmethod
    def read(
        cls, connection: psycopg.Connection[Any], name: str, source: type, *given: str
    ) -> "CopyTable":
        """The columns of table `name` that `source` or the `given` values fill.

        A column the schema gained since this was written must have a default
        (or be nullable or generated), else seeding stops with a clear message.
        """
        rows = connection.execute(
            "SELECT column_name, is_nullable, column_default, is_generated, data_type"
            " FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = %s ORDER BY ordinal_position",
            (name,),
        ).fetchall()
        known = _attributes(source) | set(given)
        unfilled = [
            row[0]
            for row in rows
            if row[0] not in known and row[1] == "NO" and row[2] is None and row[3] == "NEVER"
        ]
        if unfilled:
            raise RuntimeError(
                f"{name} has required columns the seeder does not know: {', '.join(unfilled)};"
                " teach bench/seed.py to fill them"
            )
        columns = tuple(row[0] for row in rows if row[0] in known)
        json_columns = frozenset(row[0] for row in rows if row[4] in ("json", "jsonb"))
        return cls(name, columns, json_columns)

    @property
    def copy_statement(self) -> str:
        return f"COPY {self.name} ({', '.join(self.columns)}) FROM STDIN"

    def line(self, source: object, **given: Any) -> str:
        """One row: the columns from `source`'s attributes, or from `given`."""
        texts = []
        for column in self.columns:
            value = given[column] if column in given else getattr(source, column)
            # A JSON column's None is JSON null, as SQLAlchemy writes it.
            texts.append(json.dumps(value) if column in self.json_columns else _copy_text(value))
        # The generated text has no tabs, newlines or backslashes: COPY needs no escaping.
        return "\t".join(texts) + "\n"


@dataclass(frozen=True)
class Tables:
    processes: CopyTable
    steps: CopyTable
    events: CopyTable
    tasks: CopyTable

    @classmethod
    def read(cls, connection: psycopg.Connection[Any]) -> "Tables":
        return cls(
            CopyTable.read(connection, "processes", Process, "step_count"),
            CopyTable.read(connection, "steps", Step, "process_id", "position"),
            CopyTable.read(connection, "process_events", Event, "process_id"),
            # After steps: a task's id is its step's.
            CopyTable.read(connection, "tasks", Task),
        )


class _Writer:
    """The COPY text of random processes' rows: processes, steps, process_events, tasks."""

    def __init__(self, rng: random.Random, tables: Tables) -> None:
        self.rng = rng
        self.tables = tables
        self.lines: dict[CopyTable, list[str]] = {
            tables.processes: [],
            tables.steps: [],
            tables.events: [],
            tables.tasks: [],
        }

    def process(self, org_id: str, started_ms: int, now_ms: int) -> None:
        process, events = _random_process(self.rng, org_id, started_ms, now_ms)
        process_id = process.process_id
        tables = self.tables
        self.lines[tables.processes].append(
            tables.processes.line(process, step_count=len(process.steps))
        )
        self.lines[tables.steps] += [
            tables.steps.line(step, process_id=process_id, position=position)
            for position, step in enumerate(process.steps)
        ]
        self.lines[tables.events] += [
            tables.events.line(event, process_id=process_id) for event in events
        ]
        self.lines[tables.tasks] += [tables.tasks.line(task) for task in process.tasks]


@dataclass(frozen=True)
class _Shard:
    database_url: str
    shard: int
    shards: int
    jobs: list[tuple[str, int]]  # (org_id, processes of that org)
    now_ms: int
    # Another salt draws other processes (other ids) from the same generator.
    salt: int = 0


CHUNK = 5000


def _seed_shard(shard: _Shard) -> int:
    """Writes every `shards`-th process of each org, in one transaction; returns rows."""
    rows = 0
    with psycopg.connect(shard.database_url) as connection:
        connection.execute("SET synchronous_commit = off")
        tables = Tables.read(connection)
        rng = random.Random(SEED * 100 + shard.shard + 10 * shard.salt)  # noqa: S311 - repeatable
        with connection.cursor() as cursor:
            for org_id, count in shard.jobs:
                # Spread over the past year, oldest first, as the server would
                # have appended them.
                indexes = range(shard.shard, count, shard.shards)
                for start in range(0, len(indexes), CHUNK):
                    writer = _Writer(rng, tables)
                    for index in indexes[start : start + CHUNK]:
                        started = shard.now_ms - YEAR_MS + YEAR_MS * index // count
                        writer.process(org_id, started + rng.randrange(1000), shard.now_ms)
                    for table, lines in writer.lines.items():
                        with cursor.copy(table.copy_statement) as copy:
                            copy.write("".join(lines))
                        rows += len(lines)
        connection.commit()
    return rows


def copy_shards(shards: list[_Shard]) -> int:
    """Seeds the shards, one generator process each: Python formats rows
    while PostgreSQL ingests the other shard's. Returns the rows copied."""
    with multiprocessing.get_context("spawn").Pool(len(shards)) as pool:
        return sum(pool.map(_seed_shard, shards))


def seed_org(
    database_url: str, org_id: str, processes: int, now_ms: int, salt: int, workers: int = 2
) -> int:
    """Adds `processes` processes of `org_id`, spread over the year before
    `now_ms`, to the seeded data (indexes and counters kept up as they go);
    returns the rows copied."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO organizations (org_id, created_at) VALUES (%s, now())"
            " ON CONFLICT DO NOTHING",
            (org_id,),
        )
    jobs = [(org_id, processes)]
    return copy_shards(
        [_Shard(database_url, shard, workers, jobs, now_ms, salt) for shard in range(workers)]
    )


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


# The indexes of the listed tables that no constraint owns: a million rows
# each, whose indexes are cheaper built once than kept up row by row.
_SECONDARY_INDEXES = (
    "SELECT i.indexname FROM pg_indexes i"
    " WHERE i.schemaname = current_schema()"
    " AND i.tablename IN ('processes', 'process_name_counts', 'process_label_counts', 'tasks')"
    " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
)


def other_database(database_url: str, database: str) -> str:
    """DATABASE_URL naming `database` on the same servers, as a libpq URI:
    a multi-host URL's hosts move into its query (`?host=h1,h2&port=...`),
    which libpq reads too."""
    url = make_url(sqlalchemy_url(database_url))
    return url.set(drivername="postgresql", database=database).render_as_string(False)


def migrated_indexes(database_url: str) -> dict[str, str]:
    """The secondary indexes of the listed tables as the migrations
    create them, by name.

    Read from a scratch database migrated for the purpose, so that the
    migrations stay the source of truth even if the bench database lost
    its indexes to an interrupted seed.
    """
    scratch = "htk_bench_schema"
    scratch_url = other_database(database_url, scratch)
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
        stored = stored_parameters(connection)
        if stored and stored.reusable_for(wanted) and present >= expected_indexes.keys():
            log(f"reusing the seeded data ({processes:,} processes)")
            return SeedReport(True, 0.0, 0, _counts(connection))
        # Reseeding empties `processes`: never do that to a database with real data.
        foreign = connection.execute(
            "SELECT count(*) FROM processes WHERE org_id <> ALL(%s)",
            ([BENCH_ORG, *OTHER_ORGS, EXPIRED_ORG],),
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
        # CASCADE reaches steps, tasks, process_events and whatever else hangs off processes.
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
        rows = copy_shards(shards)
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
    """How many processes and tasks the bench org has, and how many its
    search terms and filters match."""
    deployments = f"{BENCH_ORG}.deployments"
    counts: dict[str, int] = {}
    for label, table, where, parameters in (
        ("processes", "processes", "TRUE", ()),
        ("running", "processes", "status = 'running'", ()),
        ("failed", "processes", "status = 'failed'", ()),
        ("deployments", "processes", "namespace = %s", (deployments,)),
        ("selective search", "processes", "name ILIKE %s", (f"%{SELECTIVE_TERM}%",)),
        ("unselective search", "processes", "name ILIKE %s", (f"%{UNSELECTIVE_TERM}%",)),
        ("label filter", "processes", "labels @> %s::jsonb", (json.dumps(LABEL_FILTER),)),
        ("tasks", "tasks", "TRUE", ()),
        ("open tasks", "tasks", "status = 'open'", ()),
        ("open deployment tasks", "tasks", "status = 'open' AND namespace = %s", (deployments,)),
    ):
        row = connection.execute(
            f"SELECT count(*) FROM {table} WHERE org_id = %s AND {where}",  # noqa: S608
            (BENCH_ORG, *parameters),
        ).fetchone()
        counts[label] = int(row[0]) if row else 0
    return counts
