"""Alembic's entry point: applies the migrations to the database `upgrade`
names, or compares it with the models when `make migration` writes one."""

from alembic import context
from sqlalchemy import create_engine, text

config = context.config
engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
with engine.connect() as connection:
    # The models are given only to autogenerate (write_migration), never to a
    # migration that runs: Alembic would name a migration's unnamed
    # constraints after the models' naming convention of the day, and so a
    # new database could get other names than the ones it already gave.
    context.configure(
        connection=connection, target_metadata=config.attributes.get("target_metadata")
    )
    with context.begin_transaction():
        # Serializes processes that migrate at once (htk run beside htk token ...).
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('htk-migrations'))"))
        context.run_migrations()
engine.dispose()
