"""Schema migrations (Alembic), applied whenever the service starts."""

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config

from server.storage.database import sqlalchemy_url

log = logging.getLogger(__name__)


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    # Alembic's config interpolates '%'; a password may contain one.
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    return config


def upgrade_to_latest(database_url: str) -> None:
    """Brings the schema up to the newest migration; a no-op when it is current."""
    command.upgrade(alembic_config(database_url), "head")
    log.info("database schema is current")
