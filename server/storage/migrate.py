"""Schema migrations (Alembic): applied whenever the service starts, and
written by `make migration` from the difference between the models and a
migrated database."""

import logging
import sys
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from server.storage.database import sqlalchemy_url
from server.storage.tables import Base

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str, migrations: Path = MIGRATIONS) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations))
    # Alembic's config interpolates '%'; a password may contain one.
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    return config


def upgrade_to_latest(database_url: str, migrations: Path = MIGRATIONS) -> None:
    """Brings the schema up to the newest migration; a no-op when it is current."""
    command.upgrade(alembic_config(database_url, migrations), "head")
    log.debug("database schema is current")


def head_revision(migrations: Path = MIGRATIONS) -> str:
    """The newest migration's revision: the schema this code needs."""
    head = ScriptDirectory(str(migrations)).get_current_head()
    assert head is not None, f"{migrations} has no migrations"
    return head


def current_revision(database_url: str, timeout_seconds: float) -> str | None:
    """The revision the database's schema is at (None: never migrated),
    within `timeout_seconds` to connect and as long again to answer.

    Raises psycopg.Error or OSError when the database cannot answer.
    """
    milliseconds = int(timeout_seconds * 1000)
    with psycopg.connect(
        database_url,
        connect_timeout=max(1, round(timeout_seconds)),
        options=f"-c statement_timeout={milliseconds}",
        autocommit=True,
    ) as connection:
        try:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    return None if row is None else str(row[0])


def next_revision_id(migrations: Path = MIGRATIONS) -> str:
    """Revisions are numbered 0001, 0002, ... in the order they apply."""
    numbers = [int(script.revision) for script in ScriptDirectory(str(migrations)).walk_revisions()]
    return f"{max(numbers, default=0) + 1:04d}"


def write_migration(database_url: str, name: str, migrations: Path = MIGRATIONS) -> Path:
    """Writes `versions/NNNN_<name>.py` with the operations that take the
    database at `database_url`, migrated to the newest revision, to the
    schema the models describe; empty when they already agree (a migration
    to write by hand: triggers, data)."""
    config = alembic_config(database_url, migrations)
    config.attributes["target_metadata"] = Base.metadata
    # Formatted and import-sorted as `make lint` wants it.
    ruff = str(Path(sys.executable).parent / "ruff")
    config.set_section_option("post_write_hooks", "hooks", "ruff_fix, ruff_format")
    for hook, options in (("ruff_fix", "check --fix --quiet"), ("ruff_format", "format --quiet")):
        config.set_section_option("post_write_hooks", f"{hook}.type", "exec")
        config.set_section_option("post_write_hooks", f"{hook}.executable", ruff)
        config.set_section_option(
            "post_write_hooks", f"{hook}.options", f"{options} REVISION_SCRIPT_FILENAME"
        )
    script = command.revision(
        config,
        message=name.replace("_", " "),
        autogenerate=True,
        rev_id=next_revision_id(migrations),
    )
    assert script is not None and not isinstance(script, list)
    return Path(script.path)
