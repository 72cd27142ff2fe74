"""The retention phase: List, Get and Update while a retention pass deletes
about a tenth of the processes, against the same calls without it; the
longest lock wait any call saw; the database's size before and after; the
archive's throughput.

The processes it deletes are an organization of their own (seed.EXPIRED_ORG),
seeded afresh each run two to three years back, so that the cutoff stays
clear of the bench organization's year and the main seed is left as it was.
"""

import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from bench import seed
from bench.report import Measurement

if TYPE_CHECKING:
    from bench.run import Runner
    from tests.support.stack import Stack

DAY_MS = 24 * 3600 * 1000
# Their year ends this long before the bench organization's begins.
EXPIRED_GAP_MS = seed.YEAR_MS
# A salt of their own: other process ids than the bench organization's.
EXPIRED_SALT = 1
FINISHED = ("completed", "failed", "cancelled")
# How often the lock sampler looks at pg_locks: a wait shorter than this may
# go unseen, one longer is seen to within this.
LOCK_SAMPLE_SECONDS = 0.01
PASS_TIMEOUT_SECONDS = 3600.0
# Windows without a pass and during one alternate, so that the machine's
# drift (10-20% between two windows here) falls on both sides alike.
ROUNDS = 5
P95_GOAL = 1.10
LOCK_WAIT_GOAL_MS = 100.0
# (phase, bench.loadgen method, concurrency, list request)
CALLS: tuple[tuple[str, str, int, dict[str, Any] | None], ...] = (
    ("List", "list", 1, {}),
    ("Get", "get", 16, None),
    ("Update", "update", 16, None),
)


@dataclass
class LockWaits:
    """The longest lock waits seen: of the API's calls on the pass (the
    goal), of the calls on anything else (each other, for context), and of
    the pass itself."""

    on_pass_ms: float = 0.0
    on_pass_statement: str = ""
    other_ms: float = 0.0
    other_statement: str = ""
    pass_ms: float = 0.0


# Each waiting lock: how long it has waited, its statement, whether its
# waiter is the pass, and whether the pass blocks it. The pass is the one
# backend holding an advisory lock (server/storage/retention.py; migrations
# take theirs only before the workers serve).
_WAITS = """
WITH pass AS (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)
SELECT extract(epoch FROM clock_timestamp() - l.waitstart) * 1000, a.query,
       l.pid IN (SELECT pid FROM pass), pg_blocking_pids(l.pid) && ARRAY(SELECT pid FROM pass)
FROM pg_locks l JOIN pg_stat_activity a USING (pid)
WHERE NOT l.granted AND l.waitstart IS NOT NULL
"""


class LockSampler:
    """Samples pg_locks' `waitstart` in a thread: the longest waits, while
    the phase runs."""

    def __init__(self, database_url: str) -> None:
        self.waits = LockWaits()
        self._database_url = database_url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "LockSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        waits = self.waits
        with psycopg.connect(self._database_url, autocommit=True) as connection:
            while not self._stop.wait(LOCK_SAMPLE_SECONDS):
                for waited_ms, statement, by_pass, on_pass in connection.execute(_WAITS):
                    waited, shown = float(waited_ms), " ".join((statement or "").split())[:100]
                    if by_pass:
                        waits.pass_ms = max(waits.pass_ms, waited)
                    elif on_pass and waited > waits.on_pass_ms:
                        waits.on_pass_ms, waits.on_pass_statement = waited, shown
                    elif not on_pass and waited > waits.other_ms:
                        waits.other_ms, waits.other_statement = waited, shown


@dataclass
class RetentionResult:
    seeded: int  # processes of the expired organization
    expired: int  # the finished ones among them, which the pass deletes
    cutoff_days: float
    # While the calls ran, with the default settings: how many went, in how long.
    paced_deleted: int = 0
    paced_seconds: float = 0.0
    # The rest, with no pause between batches.
    full_deleted: int = 0
    full_seconds: float = 0.0
    archive_bytes: int = 0
    sizes: dict[str, int] = field(default_factory=dict)  # the database's, in bytes
    waits: LockWaits = field(default_factory=LockWaits)
    # Each phase's measurements, a round each.
    without: dict[str, list[Measurement]] = field(default_factory=dict)
    during: dict[str, list[Measurement]] = field(default_factory=dict)


def _scalar(database_url: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    with psycopg.connect(database_url, autocommit=True) as connection:
        row = connection.execute(query, params).fetchone()
    return row[0] if row else None


def _expired_left(database_url: str) -> int:
    return int(
        _scalar(
            database_url,
            "SELECT count(*) FROM processes WHERE org_id = %s AND status = ANY(%s)",
            (seed.EXPIRED_ORG, list(FINISHED)),
        )
    )


def _database_size(database_url: str) -> int:
    return int(_scalar(database_url, "SELECT pg_database_size(current_database())"))


def seed_expired(database_url: str, processes: int, log: Any) -> tuple[int, float]:
    """Seeds the expired organization afresh; returns how many of its
    processes expire, and the retention (days) that expires them and
    nothing of the bench organization."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        # What an earlier run left: the processes that were still running.
        connection.execute("DELETE FROM processes WHERE org_id = %s", (seed.EXPIRED_ORG,))
        oldest = connection.execute(
            "SELECT min(finished_at) FROM processes WHERE org_id <> %s", (seed.EXPIRED_ORG,)
        ).fetchone()
    now_ms = int(time.time() * 1000)
    oldest_ms = int(oldest[0].timestamp() * 1000) if oldest and oldest[0] else now_ms
    seed_until_ms = oldest_ms - EXPIRED_GAP_MS
    started = time.monotonic()
    rows = seed.seed_org(database_url, seed.EXPIRED_ORG, processes, seed_until_ms, EXPIRED_SALT)
    log(f"retention: seeded {processes:,} expired processes ({rows:,} rows) in"
        f" {time.monotonic() - started:.0f} s")  # fmt: skip
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("ANALYZE")
    # Halfway between the expired organization's last finish and the bench
    # organization's first.
    cutoff_days = (now_ms - (seed_until_ms + oldest_ms) / 2) / DAY_MS
    return _expired_left(database_url), cutoff_days


def run(runner: "Runner", workers: int, processes: int, scratch: Path, log: Any) -> RetentionResult:
    """The phase: in alternating rounds, the calls on a stack without a
    pass and on one whose pass (default settings) deletes the expired
    organization; then the rest of it at full speed; the sizes."""
    from bench.run import DATA_DIR, bench_stack

    database_url = runner.database_url
    expired, cutoff_days = seed_expired(database_url, processes, log)
    result = RetentionResult(processes, expired, cutoff_days)
    result.sizes["before"] = _database_size(database_url)
    archive = scratch / "archive"
    settings = {
        "HTK_RETENTION_DAYS": f"{cutoff_days:.3f}",
        "HTK_ARCHIVE_DIR": str(archive),
        "HTK_RETENTION_INTERVAL_SECONDS": "1",
    }
    with LockSampler(database_url) as sampler:
        for round_ in range(1, ROUNDS + 1):
            log(f"retention: round {round_} of {ROUNDS}, the calls without a pass")
            with bench_stack(database_url, workers, DATA_DIR / "retention-off") as stack:
                _calls(runner, stack, workers, f"no pass, round {round_}", result.without)
            log(f"retention: round {round_}, the same calls during a pass"
                f" (HTK_RETENTION_DAYS={cutoff_days:.0f})")  # fmt: skip
            with bench_stack(database_url, workers, DATA_DIR / "retention-on", settings) as stack:
                started, left = time.monotonic(), _expired_left(database_url)
                _calls(runner, stack, workers, f"during the pass, round {round_}", result.during)
                result.paced_seconds += time.monotonic() - started
                result.paced_deleted += left - _expired_left(database_url)
        full = settings | {"HTK_RETENTION_DUTY_CYCLE": "1"}
        log("retention: the rest of the pass at full speed")
        with bench_stack(database_url, workers, DATA_DIR / "retention-on", full):
            started, result.full_deleted = time.monotonic(), _expired_left(database_url)
            deadline = started + PASS_TIMEOUT_SECONDS
            while (left := _expired_left(database_url)) and time.monotonic() < deadline:
                time.sleep(0.2)
            if left:
                raise RuntimeError(f"retention: {left:,} expired processes left after the timeout")
            result.full_seconds = time.monotonic() - started
    result.waits = sampler.waits
    result.archive_bytes = sum(path.stat().st_size for path in archive.glob("*.jsonl.gz"))
    result.sizes["after"] = _database_size(database_url)
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("VACUUM")
    result.sizes["after VACUUM"] = _database_size(database_url)
    log(f"retention: deleted {expired:,}; longest lock wait of a call on the pass"
        f" {result.waits.on_pass_ms:.0f} ms")  # fmt: skip
    return result


def _calls(
    runner: "Runner",
    stack: "Stack",
    workers: int,
    when: str,
    into: dict[str, list[Measurement]],
) -> None:
    for phase, method, concurrency, request in CALLS:
        measured = runner.grpc(
            stack, f"Retention: {phase}, {when}", method, concurrency, workers, request
        )
        into.setdefault(phase, []).append(measured)


def p95_ratio(without: list[Measurement], during: list[Measurement]) -> tuple[float, float, float]:
    """The median round's p95 without a pass and during one, and their
    ratio: one round disturbed by something else moves neither median."""
    before = statistics.median(m.p95_ms for m in without)
    after = statistics.median(m.p95_ms for m in during)
    return before, after, (after / before if before else float("inf"))


def _statement(statement: str) -> str:
    return f" (`{statement}`)" if statement else ""


def _verdict(ok: bool) -> str:
    return "pass" if ok else "**miss**"


def section(result: RetentionResult) -> list[str]:
    """The report's retention section."""
    mb = 1e6
    rows = []
    for phase, _, concurrency, _ in CALLS:
        without, during = result.without[phase], result.during[phase]
        before, after, ratio = p95_ratio(without, during)
        rounds = ", ".join(
            f"{w.p95_ms:.1f}/{d.p95_ms:.1f}" for w, d in zip(without, during, strict=True)
        )
        rows.append(
            f"| {phase} p95 (gRPC direct, c{concurrency}), without a pass / during one "
            f"| <= {P95_GOAL:.2f}x | {before:.1f} / {after:.1f} ms: {ratio:.2f}x "
            f"(rounds, ms: {rounds}) | {_verdict(ratio <= P95_GOAL)} |"
        )
    waits = result.waits
    rows.append(
        f"| Longest lock wait of a call on the pass (pg_locks sampled every "
        f"{LOCK_SAMPLE_SECONDS * 1000:.0f} ms) | <= {LOCK_WAIT_GOAL_MS:.0f} ms | "
        f"{waits.on_pass_ms:.0f} ms{_statement(waits.on_pass_statement)} "
        f"| {_verdict(waits.on_pass_ms <= LOCK_WAIT_GOAL_MS)} |"
    )
    sizes = result.sizes

    def rate(deleted: int, seconds: float) -> str:
        return f"{deleted:,} in {seconds:.0f} s ({deleted / seconds if seconds else 0:,.0f}/s)"

    return [
        "## Retention under load",
        "",
        f"A pass (`HTK_RETENTION_DAYS={result.cutoff_days:.0f}`, `HTK_ARCHIVE_DIR` set, the "
        f"default batch size and duty cycle) deletes the {result.expired:,} finished processes "
        f"of {result.seeded:,} seeded two to three years back beside the bench organization, "
        "with their steps, tasks and events, while the calls below run on the same stack. "
        f"In {ROUNDS} rounds, the calls run on a stack without retention, then on one with "
        "it; each side's figure is its median round. Then a stack with "
        "`HTK_RETENTION_DUTY_CYCLE=1` deletes the rest as fast as it can.",
        "",
        "| goal | target | measured | |",
        "|---|---|---|---|",
        *rows,
        "",
        "| figure | value |",
        "|---|--:|",
        f"| Deleted and archived while the calls ran (default duty cycle) "
        f"| {rate(result.paced_deleted, result.paced_seconds)} |",
        f"| Deleted and archived at full speed, the calls idle "
        f"| {rate(result.full_deleted, result.full_seconds)} |",
        f"| Archive written | {result.archive_bytes / mb:,.1f} MB gzip, "
        f"{result.archive_bytes / max(result.expired, 1):,.0f} B a process |",
        f"| Longest lock wait of a call on something else than the pass (other calls) "
        f"| {waits.other_ms:.0f} ms{_statement(waits.other_statement)} |",
        f"| Longest lock wait of the pass itself | {waits.pass_ms:.0f} ms |",
        f"| Database size before the pass | {sizes['before'] / mb:,.0f} MB |",
        f"| after the pass | {sizes['after'] / mb:,.0f} MB |",
        f"| after VACUUM (space kept for reuse, not returned) | "
        f"{sizes['after VACUUM'] / mb:,.0f} MB |",
        "",
    ]
