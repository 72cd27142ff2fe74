"""Alembic's entry point: applies the migrations to the database `upgrade` names."""

from alembic import context
from sqlalchemy import create_engine, text

from server.storage.tables import Base

config = context.config
engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        # Serializes processes that migrate at once (htk run beside htk token ...).
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('htk-migrations'))"))
        context.run_migrations()
engine.dispose()
