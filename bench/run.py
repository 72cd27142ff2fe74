"""`make bench`: seed (or reuse) the bench database, measure, print and write the report.

`python -m bench --only watch` runs the watch phase alone (no seeding; it
prints its section and writes nothing); `--only metrics` the comparison of
metrics on and off alone (seeding if needed; it prints its goal rows), and
`--only tracing` the tracing phases alone (on the seeded data; likewise),
`--only sync` Update with a synchronous standby against without (likewise;
it writes its section of docs/benchmarks.md too), `--only webhooks` the
webhooks phase (likewise), `--only exchange` the token exchange's latency
alone (no seeding), and `--only lighthouse` the dashboard's Lighthouse audit
alone (a stack of its own).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil
import psycopg

from bench import (
    capture,
    dashboard_audit,
    exchange,
    pgbench,
    profile,
    report,
    retention,
    seed,
    sync_commit,
    webhooks,
    wrk,
)
from bench.pgbench import GET, UPDATE
from bench.profile import profiled
from bench.stack import Sampler, postmaster
from bench.watch import WatchConfig, WatchMeasurement, measure
from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from htk.processes.v1 import task_service_pb2 as tasks_pb
from htk.processes.v1 import task_service_pb2_grpc as tasks_pb_grpc
from server.settings import CHECKOUT
from server.storage.embedded import embedded_database
from server.storage.migrate import upgrade_to_latest
from tests.support.otlp import otlp_sink
from tests.support.stack import Stack, running_stack
from tests.support.tokens import create_token

DATA_DIR = CHECKOUT / ".bench-data"
DEFAULT_PROCESSES = 1_000_000
GRPC_CHANNELS = 4
# Get and Update beside pgbench: each comparison this many times, interleaved
# (pgbench, gRPC, REST, again), and the median reported: the machine is noisy.
ROUNDS = 3


@dataclass(frozen=True)
class Config:
    processes: int
    warmup: float
    seconds: float
    database_url: str | None
    workers: tuple[int, ...]  # the main run's worker count first
    watch: WatchConfig
    # Expired processes the retention phase seeds and deletes.
    retention_processes: int

    @property
    def database_dir(self) -> Path:
        """Where the embedded PostgreSQL keeps this size's seed: a quick run
        has a folder of its own, and leaves the full run's seed (half an
        hour to make) as it was."""
        if self.processes == DEFAULT_PROCESSES:
            return DATA_DIR
        return DATA_DIR / f"{self.processes}-processes"

    @classmethod
    def from_env(cls) -> "Config":
        processes = int(os.environ.get("BENCH_PROCESSES", DEFAULT_PROCESSES))
        quick = processes < 100_000
        cores = os.cpu_count() or 1
        return cls(
            processes=processes,
            warmup=float(os.environ.get("BENCH_WARMUP", 0.5 if quick else 1.5)),
            seconds=float(os.environ.get("BENCH_SECONDS", 2.0 if quick else 5.0)),
            database_url=os.environ.get("DATABASE_URL") or None,
            workers=(max(cores, 2), 1),
            watch=WatchConfig(
                watchers=int(os.environ.get("BENCH_WATCHERS", 1000)),
                processes=int(os.environ.get("BENCH_WATCH_PROCESSES", 100)),
                rate=float(os.environ.get("BENCH_WATCH_RATE", 50)),
                seconds=float(os.environ.get("BENCH_WATCH_SECONDS", 20)),
            ),
            retention_processes=int(
                os.environ.get("BENCH_RETENTION_PROCESSES", max(processes // 10, 100))
            ),
        )


# Above any number of watchers the bench opens.
BENCH_STREAM_CAP = 1_000_000


def bench_stack(
    database_url: str,
    workers: int,
    data_dir: Path = DATA_DIR,
    settings: Mapping[str, str] | None = None,
) -> AbstractContextManager[Stack]:
    """`htk run` on the bench database with `workers` workers, logging
    warnings only; `settings` adds or overrides variables."""
    env = {
        "HTK_WORKERS": str(workers),
        "HTK_LOG_LEVEL": "WARNING",
        # The watch phase is one token measuring the workers' fan-out: the
        # caps that keep one tenant from taking every stream must not cut it short.
        "HTK_MAX_WATCHERS_PER_TOKEN": str(BENCH_STREAM_CAP),
        "HTK_MAX_WATCHERS_PER_ORG": str(BENCH_STREAM_CAP),
        # The seed spans a year: the default retention would delete three
        # quarters of it at the stack's start. A phase measuring retention
        # sets its own.
        "HTK_RETENTION_DAYS": "0",
        **(settings or {}),
    }
    return running_stack(data_dir, database_url, env)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextmanager
def bench_database(config: Config) -> Iterator[str]:
    """DATABASE_URL, or the embedded PostgreSQL in .bench-data/ (kept running
    for the whole run, so stack restarts do not restart it)."""
    if config.database_url:
        upgrade_to_latest(config.database_url)
        yield config.database_url
    else:
        with embedded_database(config.database_dir) as url:
            upgrade_to_latest(url)
            yield url


@dataclass
class Fixtures:
    """What the phases read and write: ids picked from the seeded data."""

    token: str
    get_ids: list[str]
    update_targets: list[tuple[str, str]]


def pick_fixtures(database_url: str) -> Fixtures:
    with psycopg.connect(database_url) as connection:
        get_ids = [
            str(row[0])
            for row in connection.execute(
                "SELECT process_id FROM processes WHERE org_id = %s AND step_count = 10"
                " ORDER BY started_at DESC LIMIT 100",
                (seed.BENCH_ORG,),
            )
        ]
        # Progress on a running step is always accepted: these can be updated forever.
        targets = [
            (str(row[0]), str(row[1]))
            for row in connection.execute(
                "SELECT process_id, current_step FROM processes"
                " WHERE org_id = %s AND status = 'running' AND current_step IS NOT NULL"
                " ORDER BY started_at DESC LIMIT 1000",
                (seed.BENCH_ORG,),
            )
        ]
    if not get_ids or not targets:
        raise RuntimeError("the seeded data lacks 10-step or running processes")
    env = os.environ | {"DATABASE_URL": database_url}
    # A name of its own each run: names are unique among active tokens, and a
    # rerun reuses the seeded data with the last run's token.
    token = create_token(env, seed.BENCH_ORG, name=f"bench-{uuid.uuid4().hex[:8]}")
    return Fixtures(token, get_ids, targets)


@dataclass(frozen=True)
class Collection:
    """What a list phase lists: a REST collection (and the table behind it),
    its gRPC method, and bench.loadgen's name for calling it."""

    name: str  # /api/v1/<name>, and the table
    phase: str  # how its phases are named
    loadgen_method: str
    stub: Callable[[grpc.Channel], Any]
    rpc: str
    request: Callable[..., Any]

    def list(self, channel: grpc.Channel, params: dict[str, Any], metadata: Any) -> Any:
        """One page, as a gRPC client gets it."""
        method = getattr(self.stub(channel), self.rpc)
        return method(self.request(**params), metadata=metadata)


PROCESSES = Collection(
    "processes", "List", "list", pb_grpc.ProcessServiceStub, "ListProcesses",
    pb.ListProcessesRequest,
)  # fmt: skip
TASKS = Collection(
    "tasks", "ListTasks", "list_tasks", tasks_pb_grpc.TaskServiceStub, "ListTasks",
    tasks_pb.ListTasksRequest,
)  # fmt: skip


@dataclass(frozen=True)
class ListCase:
    label: str
    params: dict[str, Any]
    goal_ms: float
    where: str = "TRUE"
    where_params: tuple[Any, ...] = ()
    collection: Collection = PROCESSES
    # Measured on the page after this many rows, reached by following
    # page tokens with the same filters.
    after_rows: int = 0
    # For a task case: the label of the process case it compares with.
    beside: str = ""

    @property
    def name(self) -> str:
        return f"{self.collection.phase} {self.label}"


def list_cases() -> list[ListCase]:
    ns = f"{seed.BENCH_ORG}.deployments"
    sel, unsel = seed.SELECTIVE_TERM, seed.UNSELECTIVE_TERM
    labels = [f"{key}={value}" for key, value in seed.LABEL_FILTER.items()]
    return [
        ListCase("no filter (limit 50, offset 0)", {}, 25),
        ListCase("status=running", {"status": "running"}, 25, "status = 'running'"),
        ListCase("namespace", {"namespace": ns}, 25, "namespace = %s", (ns,)),
        ListCase(f"search={unsel} (unselective)", {"search": unsel}, 100, "name ILIKE %s",
                 (f"%{unsel}%",)),
        ListCase(f"search={sel} (selective)", {"search": sel}, 100, "name ILIKE %s",
                 (f"%{sel}%",)),
        ListCase("status=failed + namespace", {"status": "failed", "namespace": ns}, 25,
                 "status = 'failed' AND namespace = %s", (ns,)),
        ListCase("label env + label service", {"label": labels}, 25, "labels @> %s::jsonb",
                 (json.dumps(seed.LABEL_FILTER),)),
        ListCase("sort=oldest", {"sort": "oldest"}, 25),
        ListCase("offset=1000", {"offset": 1000}, 25),
        ListCase("offset=10000", {"offset": 10000}, 50),
        ListCase("limit=200", {"limit": 200}, 25),
        ListCase("page after 10,000 rows by cursor", {}, 25, after_rows=10_000),
    ]  # fmt: skip


def task_cases() -> list[ListCase]:
    """ListTasks as people use it: the inbox of open tasks, a team's tasks,
    the inbox's next page, a jump into it; each beside the ListProcesses
    case of the same shape, with the same goal."""
    ns = f"{seed.BENCH_ORG}.deployments"
    is_open = "status = 'open'"
    return [
        ListCase("status=open (the inbox)", {"status": "open"}, 25, is_open, collection=TASKS,
                 beside="status=running"),
        ListCase("namespace", {"namespace": ns}, 25, "namespace = %s", (ns,), collection=TASKS,
                 beside="namespace"),
        ListCase("status=open + namespace", {"status": "open", "namespace": ns}, 25,
                 f"{is_open} AND namespace = %s", (ns,), collection=TASKS,
                 beside="status=failed + namespace"),
        ListCase("status=open, page 2 by page_token", {"status": "open"}, 25, is_open,
                 collection=TASKS, after_rows=50, beside="page after 10,000 rows by cursor"),
        ListCase("status=open offset=1000", {"status": "open", "offset": 1000}, 25, is_open,
                 collection=TASKS, beside="offset=1000"),
    ]  # fmt: skip


def short_list_cases() -> list[ListCase]:
    """The list phases of the runs with other worker counts: a first page
    and a cursor page of processes, and the task inbox."""
    processes = list_cases()
    return [processes[0], processes[-1], task_cases()[0]]


@dataclass
class Runner:
    config: Config
    database_url: str
    fixtures: Fixtures
    wrk_path: str
    scratch: Path
    # The embedded PostgreSQL's postmaster, whose processes' CPU each phase
    # counts (None with an external DATABASE_URL).
    postgres: psutil.Process | None = None
    results: list[report.Measurement] = field(default_factory=list)

    def _record(
        self,
        name: str,
        transport: str,
        workers: int,
        concurrency: int,
        result: dict[str, Any],
        sampler: Sampler | None,
        goal: str = "",
    ) -> report.Measurement:
        measurement = report.Measurement.from_result(
            name, transport, workers, concurrency, result, sampler, goal
        )
        self.results.append(measurement)
        log(measurement.one_line())
        return measurement

    def grpc(
        self,
        stack: Stack,
        name: str,
        method: str,
        concurrency: int,
        workers: int,
        list_request: dict[str, Any] | None = None,
        goal: str = "",
    ) -> report.Measurement:
        spec = {
            "target": stack.server_target,
            "token": self.fixtures.token,
            "method": method,
            "concurrency": concurrency,
            "channels": min(GRPC_CHANNELS, concurrency),
            "warmup": self.config.warmup,
            "duration": self.config.seconds,
            "process_ids": self.fixtures.get_ids,
            "update_targets": self.fixtures.update_targets,
            "list_request": list_request or {},
        }
        with Sampler(stack, self.postgres) as sampler:
            result = _loadgen(spec)
        return self._record(name, "gRPC direct", workers, concurrency, result, sampler, goal)

    def rest(
        self,
        stack: Stack,
        name: str,
        path: str,
        concurrency: int,
        workers: int,
        lua: str,
        goal: str = "",
    ) -> report.Measurement:
        script = self._script(lua)
        url = stack.http_url + path
        wrk.run(self.wrk_path, script, url, concurrency, self.config.warmup)  # warm-up
        with Sampler(stack, self.postgres) as sampler:
            raw = wrk.run(self.wrk_path, script, url, concurrency, self.config.seconds)
        result = {
            "count": raw["requests"],
            "seconds": raw["duration_us"] / 1e6,
            "p50_ms": raw["p50_us"] / 1000,
            "p95_ms": raw["p95_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000,
            "errors": raw["errors"],
            "client_cpu_seconds": raw["client_cpu_seconds"],
        }
        return self._record(name, "REST via Envoy", workers, concurrency, result, sampler, goal)

    def _script(self, lua: str) -> Path:
        script = self.scratch / f"{abs(hash(lua))}.lua"
        script.write_text(lua)
        return script

    def pgbench(
        self,
        name: str,
        concurrency: int,
        workers: int,
        *,
        notify: bool = True,
        recorded_as: str = "",
    ) -> report.Measurement:
        """The reference for the Get or the Update phase (`name`): its script
        run by pgbench at the phase's concurrency, for as long; recorded under
        `recorded_as` if given."""
        result = pgbench.run(
            self.database_url,
            pgbench.REFERENCES[name],
            pgbench.variables(
                self.fixtures.token,
                len(self.fixtures.get_ids),
                len(self.fixtures.update_targets),
                notify=notify,
            ),
            concurrency,
            self.config.warmup,
            self.config.seconds,
            self.scratch,
        )
        return self._record(
            recorded_as or name, pgbench.TRANSPORT, workers, concurrency, result, None
        )

    def notify_cost(self, workers: int) -> None:
        """Update's statements at concurrency 64 with their notification and
        without, ROUNDS times interleaved: what PostgreSQL's commit-time lock
        for NOTIFY costs at its own rate, a higher one than htk's workers
        reach, so an upper bound of what it costs an htk Update."""
        for _ in range(ROUNDS):
            for notify, state in ((True, report.NOTIFY_ON), (False, report.NOTIFY_OFF)):
                self.pgbench(
                    UPDATE,
                    report.NOTIFY_CONCURRENCY,
                    workers,
                    notify=notify,
                    recorded_as=f"{UPDATE}, {state}",
                )

    def sync_commit_cost(self, workers: int) -> None:
        """Update (c16) with a synchronous standby and with the same standby
        asynchronous, ROUNDS times interleaved (bench/sync_commit.py)."""
        with (
            sync_commit.standby_of(self.config.database_dir, self.database_url) as pair,
            bench_stack(self.database_url, workers) as stack,
        ):
            for _ in range(ROUNDS):
                for on, state in ((True, sync_commit.SYNC_ON), (False, sync_commit.SYNC_OFF)):
                    sync_commit.synchronous(self.database_url, pair, on=on)
                    name = f"{UPDATE}, {state}"
                    self.pgbench(UPDATE, sync_commit.CONCURRENCY, workers, recorded_as=name)
                    self.calls(
                        stack, UPDATE, workers, sync_commit.CONCURRENCY, beside_pgbench=False,
                        recorded_as=name,
                    )  # fmt: skip

    # The phases.

    def lists(self, stack: Stack, workers: int, cases: list[ListCase]) -> None:
        lua = wrk.script(self.fixtures.token)
        for case in cases:
            params = case.params
            if case.after_rows:
                params = params | {"page_token": self._cursor_after(stack, case)}
            exact = self._total_is_exact(stack, case, params)
            goal = f"p95 <= {case.goal_ms:g} ms" + ("" if exact else "; total NOT exact")
            method = case.collection.loadgen_method
            self.grpc(stack, case.name, method, 1, workers, params, goal)
            query = urllib.parse.urlencode(params, doseq=True)
            path = f"/api/v1/{case.collection.name}" + (f"?{query}" if query else "")
            self.rest(stack, case.name, path, 1, workers, lua, goal)

    def metrics_cost(self, workers: int) -> None:
        """Get and Update (c16) on a stack with metrics on and one with them
        off, both up at once and measured in turns, ROUNDS times."""
        with (
            bench_stack(self.database_url, workers, DATA_DIR / "metrics-on") as on,
            bench_stack(
                self.database_url,
                workers,
                DATA_DIR / "metrics-off",
                {"HTK_METRICS_PORT": "0"},
            ) as off,
        ):
            for _ in range(ROUNDS):
                for name in (GET, UPDATE):
                    for stack, state in ((on, report.METRICS_ON), (off, report.METRICS_OFF)):
                        self.calls(stack, f"{name}, {state}", workers, 16, beside_pgbench=False)

    def _total_is_exact(self, stack: Stack, case: ListCase, params: dict[str, Any]) -> bool:
        """Whether the response's `total` is the true count of matches."""
        with grpc.insecure_channel(stack.server_target) as channel:
            response = case.collection.list(channel, params, self._metadata())
        table = case.collection.name
        with psycopg.connect(self.database_url) as connection:
            row = connection.execute(
                f"SELECT count(*) FROM {table} WHERE org_id = %s AND {case.where}",  # noqa: S608
                (seed.BENCH_ORG, *case.where_params),
            ).fetchone()
        return row is not None and int(row[0]) == response.total

    def _cursor_after(self, stack: Stack, case: ListCase) -> str:
        """The page_token of the case's page after `case.after_rows` rows,
        reached by following cursors (200 rows a page at most)."""
        limit = min(200, case.after_rows)
        token = ""
        with grpc.insecure_channel(stack.server_target) as channel:
            for _ in range(case.after_rows // limit):
                params = case.params | {"limit": limit, "page_token": token}
                token = case.collection.list(channel, params, self._metadata()).next_page_token
                if not token:
                    raise RuntimeError(f"{case.name}: the list ended before the cursor got there")
        return str(token)

    def _metadata(self) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.fixtures.token}"),)

    def calls(
        self,
        stack: Stack,
        name: str,
        workers: int,
        concurrency: int,
        *,
        beside_pgbench: bool,
        recorded_as: str = "",
    ) -> None:
        """The Get or the Update phase (`name`) at `concurrency`, over gRPC and
        REST, recorded under `recorded_as` if given; beside pgbench, ROUNDS
        times interleaved with it."""
        if name.startswith(GET):
            method, lua = "get", wrk.script(self.fixtures.token, get_ids=self.fixtures.get_ids)
        else:
            updates = self.fixtures.update_targets
            method, lua = "update", wrk.script(self.fixtures.token, updates=updates)
        for _ in range(ROUNDS if beside_pgbench else 1):
            if beside_pgbench:
                self.pgbench(name, concurrency, workers)
            self.grpc(stack, recorded_as or name, method, concurrency, workers)
            self.rest(stack, recorded_as or name, "/", concurrency, workers, lua)
        if beside_pgbench and profile.enabled():
            script = self._script(lua)
            with profiled(stack, method):
                wrk.run(
                    self.wrk_path, script, stack.http_url + "/", concurrency, self.config.seconds
                )

    def tracing(self, workers: int) -> None:
        """Get and Update at concurrency 16 on two instances, tracing off and
        on (every request traced, exported to a sink in this process that
        takes the spans without reading them), ROUNDS times interleaved, each
        instance idle while the other is measured."""
        traced = {"OTEL_TRACES_SAMPLER": "parentbased_always_on"}
        with ExitStack() as stacks:
            sink = stacks.enter_context(otlp_sink())
            traced["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.endpoint
            instances = {
                label: stacks.enter_context(
                    bench_stack(self.database_url, workers, DATA_DIR / label.replace(" ", "-"), env)
                )
                for label, env in ((TRACING_OFF, {}), (TRACING_ON, traced))
            }
            for name in (GET, UPDATE):
                for _ in range(ROUNDS):
                    for label, stack in instances.items():
                        self.calls(
                            stack,
                            name,
                            workers,
                            16,
                            beside_pgbench=False,
                            recorded_as=f"{name}, {label}",
                        )
            log(f"tracing: the sink took {sink.exports:,} exports, {sink.bytes / 1e6:.1f} MB")


TRACING_OFF, TRACING_ON = "tracing off", "tracing on"


def _loadgen(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs bench.loadgen in its own process, so its CPU is its own."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.loadgen"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        check=False,
        cwd=CHECKOUT,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"bench.loadgen failed: {completed.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


CAPTURE_ATTEMPTS = 5


def capture_statements(runner: Runner, database_url: str) -> report.Capture | None:
    """Logs the statements of one GetProcess and one UpdateProcess of the server."""
    log_path = runner.config.database_dir / "postgres" / "log"
    if runner.config.database_url or not log_path.exists():
        return None  # an external server's log is out of reach
    with psycopg.connect(database_url, autocommit=True) as connection:
        name = connection.execute("SELECT current_database()").fetchone()
        database = name[0] if name else "postgres"
        # Per database: applies to the server's connections, opened after this.
        connection.execute(f"ALTER DATABASE \"{database}\" SET log_statement = 'all'")
    try:
        with (
            bench_stack(database_url, 1) as stack,
            grpc.insecure_channel(stack.server_target) as channel,
        ):
            stub = pb_grpc.ProcessServiceStub(channel)
            target, step = runner.fixtures.update_targets[0]
            get = pb.GetProcessRequest(process_id=runner.fixtures.get_ids[0])
            update = pb.UpdateProcessRequest(
                process_id=target, type="progress", step=step, percent=1
            )
            metadata = runner._metadata()
            stub.GetProcess(get, metadata=metadata)  # opens the connection

            def logged(call: Callable[[], object]) -> list[str]:
                """The call's statements. The log holds every backend's, and each
                worker scans for step deadlines every second: of a few calls,
                the one with the fewest statements had none of the scan's."""
                captured = []
                for _ in range(CAPTURE_ATTEMPTS):
                    offset = capture.log_size(log_path)
                    call()
                    time.sleep(0.1)  # the backends write their log lines themselves
                    captured.append(capture.read_statements(log_path, offset))
                return min(captured, key=len)

            return report.Capture(
                get=logged(lambda: stub.GetProcess(get, metadata=metadata)),
                update=logged(lambda: stub.UpdateProcess(update, metadata=metadata)),
            )
    finally:
        with psycopg.connect(database_url, autocommit=True) as connection:
            connection.execute(f'ALTER DATABASE "{database}" RESET log_statement')


WATCH_WORKERS = 2


def watch_phases(config: Config, database_url: str) -> list[WatchMeasurement]:
    """Watchers and writers on one two-worker instance, then watchers on one
    instance and writers on another, both over the same database."""
    results = []
    log(f"watch: {config.watch.watchers} watchers, {config.watch.rate:g} updates/s")
    with bench_stack(database_url, WATCH_WORKERS) as stack:
        # One database: the token serves both instances below too.
        token = create_token(stack.env, f"bench-watch-{uuid.uuid4().hex[:8]}")
        results.append(measure("one instance", config.watch, database_url, token, stack, stack))
        log(results[-1].one_line())
    with (
        bench_stack(database_url, WATCH_WORKERS, DATA_DIR / "instance-a") as watched,
        bench_stack(database_url, WATCH_WORKERS, DATA_DIR / "instance-b") as written,
    ):
        results.append(
            measure(
                "watchers on A, writers on B", config.watch, database_url, token, watched, written
            )
        )
        log(results[-1].one_line())
    return results


def exchange_phase(config: Config, database_url: str) -> list[str]:
    """The token exchange's latency, on the main number of workers."""
    workers = config.workers[0]
    log(f"token exchange: HTK_WORKERS={workers}")
    with bench_stack(database_url, workers) as stack:
        result = exchange.run(stack, workers, log)
    log(f"exchange: p50 {result.p50_ms:.1f} ms, p95 {result.p95_ms:.1f} ms")
    return exchange.section(result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only",
        choices=[
            "calls",
            "notify",
            "watch",
            "metrics",
            "tracing",
            "retention",
            "sync",
            "webhooks",
            "exchange",
            "lighthouse",
        ],
        help="run this phase alone (`calls`: Get, Update and a List with their CPU per call"
        " by layer, beside pgbench; `notify`: Update's statements at c64 with their"
        " notification and without; `sync`: Update with a synchronous standby against without)",
    )
    only = parser.parse_args(argv).only
    config = Config.from_env()
    if only == "lighthouse":
        print("\n".join(dashboard_audit.section(dashboard_audit.run(log))))
        return 0
    if only == "watch":
        DATA_DIR.mkdir(exist_ok=True)
        with bench_database(config) as database_url:
            watched = watch_phases(config, database_url)
        print("\n".join(report.watch_section(watched, config.watch)))
        return 0
    if only == "exchange":
        DATA_DIR.mkdir(exist_ok=True)
        with bench_database(config) as database_url:
            print("\n".join(exchange_phase(config, database_url)))
        return 0
    began = time.monotonic()
    DATA_DIR.mkdir(exist_ok=True)
    wrk_path = wrk.ensure_wrk(log)
    with bench_database(config) as database_url, tempfile.TemporaryDirectory() as scratch:
        seeded = seed.ensure_seeded(database_url, config.processes, log)
        fixtures = pick_fixtures(database_url)
        pgbench.fill_fixtures(database_url, fixtures.get_ids, fixtures.update_targets)
        postgres = None if config.database_url else postmaster(config.database_dir)
        runner = Runner(config, database_url, fixtures, wrk_path, Path(scratch), postgres)
        main_workers, *other_workers = config.workers
        if only == "calls":
            with bench_stack(database_url, main_workers) as stack:
                runner.lists(stack, main_workers, short_list_cases())
                runner.calls(stack, GET, main_workers, 16, beside_pgbench=True)
                runner.calls(stack, UPDATE, main_workers, 16, beside_pgbench=True)
            runner.notify_cost(main_workers)
            print("\n".join(report.cpu_per_layer(runner.results, main_workers)))
            print("\n".join(report.worker_profile(runner.results, main_workers)))
            print("\n".join(report.notify_cost(runner.results)))
            print("\n".join(report.beside_pgbench(runner.results)))
            return 0
        if only == "notify":
            runner.notify_cost(main_workers)
            print("\n".join(report.notify_cost(runner.results)))
            return 0
        if only == "metrics":
            runner.metrics_cost(main_workers)
            print("\n".join(report.metrics_cost(runner.results)))
            return 0
        if only == "tracing":
            runner.tracing(main_workers)
            print("\n".join(report.tracing_section(runner.results)))
            return 0
        if only == "sync":
            runner.sync_commit_cost(main_workers)
            section = report.sync_commit_cost(runner.results, config.processes)
            print("\n".join(section))
            report.replace_section(
                CHECKOUT / "docs" / "benchmarks.md", report.SYNC_COMMIT_SECTION, section
            )
            return 0
        if only == "retention":
            expired = retention.run(
                runner, main_workers, config.retention_processes, Path(scratch), log
            )
            print("\n".join(retention.section(expired)))
            return 0
        if only == "webhooks":
            print("\n".join(webhooks.section(webhooks.run(runner, main_workers, log))))
            return 0
        log("capturing the statements of one Get and one Update")
        captured = capture_statements(runner, database_url)
        log(f"main run: HTK_WORKERS={main_workers}")
        with bench_stack(database_url, main_workers) as stack:
            runner.lists(stack, main_workers, list_cases() + task_cases())
            runner.calls(stack, GET, main_workers, 16, beside_pgbench=True)
            runner.calls(stack, UPDATE, main_workers, 16, beside_pgbench=True)
            for concurrency in (1, 64):
                runner.calls(stack, UPDATE, main_workers, concurrency, beside_pgbench=False)
        log("notifications on against off (pgbench, Update at c64)")
        runner.notify_cost(main_workers)
        log("metrics on against off")
        runner.metrics_cost(main_workers)
        log("a synchronous standby against an asynchronous one (Update at c16)")
        runner.sync_commit_cost(main_workers)
        for workers in other_workers:
            log(f"HTK_WORKERS={workers}")
            with bench_stack(database_url, workers) as stack:
                runner.lists(stack, workers, short_list_cases())
                runner.calls(stack, GET, workers, 16, beside_pgbench=False)
                runner.calls(stack, UPDATE, workers, 16, beside_pgbench=False)
        log(f"tracing off and on: HTK_WORKERS={main_workers}")
        runner.tracing(main_workers)
        watched = watch_phases(config, database_url)
        log(f"retention: HTK_WORKERS={main_workers}")
        expired = retention.run(
            runner, main_workers, config.retention_processes, Path(scratch), log
        )
        log(f"webhooks: HTK_WORKERS={main_workers}")
        delivered = webhooks.run(runner, main_workers, log)
        exchanged = exchange_phase(config, database_url)
        audited = dashboard_audit.run(log)
        versions = report.versions(database_url, wrk_path)
    run_seconds = time.monotonic() - began
    document = report.render(
        config_processes=config.processes,
        warmup=config.warmup,
        seconds=config.seconds,
        results=runner.results,
        seeded=seeded,
        run_seconds=run_seconds,
        versions=versions,
        captured=captured,
        main_workers=main_workers,
        beside=[(case.name, f"{PROCESSES.phase} {case.beside}") for case in task_cases()],
        watch=report.watch_section(watched, config.watch),
        tracing=report.tracing_section(runner.results),
        retention=retention.section(expired),
        webhooks=webhooks.section(delivered),
        exchange=exchanged,
        lighthouse=dashboard_audit.section(audited),
    )
    print(document)
    output = CHECKOUT / "docs" / "benchmarks.md"
    output.parent.mkdir(exist_ok=True)
    output.write_text(document)
    log(f"wrote {output.relative_to(CHECKOUT)} ({run_seconds:.0f} s in all)")
    return 0
