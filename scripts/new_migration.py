"""Writes the next migration from what the models changed (`make migration NAME=...`).

    python scripts/new_migration.py add_watchers

The models (server/storage/tables.py) are compared with a database migrated
to the newest revision: DATABASE_URL when set, else a scratch embedded
PostgreSQL that is thrown away afterwards. Read the result before committing
it: autogenerate sees tables, columns, keys, unique constraints and
indexes, not check constraints, triggers, functions or data.
"""

import re
import sys
import tempfile
from pathlib import Path

from server.settings import Settings
from server.storage.embedded import embedded_database
from server.storage.migrate import upgrade_to_latest, write_migration


def main(name: str) -> int:
    if not re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", name):
        print(
            f"NAME must be lower-case words joined by '_', e.g. add_watchers; got {name!r}",
            file=sys.stderr,
        )
        return 2
    database_url = Settings.from_env().database_url
    if database_url:
        path = _write(database_url, name)
    else:
        with tempfile.TemporaryDirectory() as scratch, embedded_database(Path(scratch)) as url:
            path = _write(url, name)
    print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    return 0


def _write(database_url: str, name: str) -> Path:
    upgrade_to_latest(database_url)
    return write_migration(database_url, name)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: new_migration.py NAME")
    sys.exit(main(sys.argv[1]))
