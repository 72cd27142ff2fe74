"""Alembic's entry point: applies the migrations to the database `upgrade` names."""

from alembic import context
from sqlalchemy import create_engine

from server.storage.tables import Base

config = context.config
engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
