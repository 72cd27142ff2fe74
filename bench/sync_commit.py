"""What synchronous replication costs an Update (docs/production.md asks for it).

A standby of the bench database, copied from the embedded PostgreSQL over its
socket and streaming from it; then Update at concurrency 16 over gRPC and
REST (and its statements by pgbench) with the standby synchronous
(`synchronous_standby_names = '*'`, `synchronous_commit = on`: each commit
waits until the standby has flushed it) and asynchronous (`''`: the same
standby, each commit waits for the primary's disk alone), ROUNDS times
interleaved. The standby is on the same machine: the figure is the cost of
the wait itself, without a network's round trip.
"""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tests.chaos.helpers import wait_until
from tests.chaos.replication import Pair, Server, start_standby

SYNC_ON, SYNC_OFF = "synchronous standby", "asynchronous standby"
CONCURRENCY = 16
READY_LIMIT_SECONDS = 600.0


@contextmanager
def standby_of(database_dir: Path, database_url: str) -> Iterator[Pair]:
    """A standby of the embedded PostgreSQL in `database_dir`, asynchronous
    until `synchronous(...)` says otherwise; stopped and deleted at the end
    (the requirement lifted first, or every commit would wait for it)."""
    primary = Server(database_dir / "postgres")
    standby = Server(database_dir / "standby")
    shutil.rmtree(standby.pgdata, ignore_errors=True)
    try:
        start_standby(primary, standby)
        yield Pair(primary, standby)
    finally:
        synchronous(database_url, Pair(primary, standby), on=False)
        standby.stop()
        shutil.rmtree(standby.pgdata, ignore_errors=True)


def synchronous(database_url: str, pair: Pair, *, on: bool) -> None:
    """Makes the standby synchronous or not; returns once the primary says so."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        if on:
            connection.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        else:
            connection.execute("ALTER SYSTEM RESET synchronous_standby_names")
        connection.execute("SELECT pg_reload_conf()")
    wait_until(
        lambda: pair.synchronous() == on or None,
        READY_LIMIT_SECONDS,
        f"the standby to be {'synchronous' if on else 'asynchronous'}",
    )
