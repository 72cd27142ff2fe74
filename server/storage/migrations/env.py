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
    # Serializes processes that migrate at once (htk run beside htk token
    # ...). Held by the session, not by a transaction: a migration may commit
    # part of its work on its own (a backfill in batches), and the lock must
    # outlast that commit. Closing the connection releases it.
    connection.execute(text("SELECT pg_advisory_lock(hashtext('htk-migrations'))"))
    connection.commit()
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
