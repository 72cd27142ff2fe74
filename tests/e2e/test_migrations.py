"""The migrations against the models: the schema they leave behind, and the
migration `make migration` writes from it."""

import importlib.util
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, inspect

from server.storage.database import sqlalchemy_url
from server.storage.migrate import MIGRATIONS, alembic_config, write_migration
from server.storage.tables import Base
from tests.support.stack import Stack


@dataclass
class BeforeMigration:
    """A database of its own, migrated to just before one migration."""

    revision: str
    down_revision: str
    url: str
    config: Config


@contextmanager
def before_migration(stack: Stack, doc: str) -> Iterator[BeforeMigration]:
    """A new database on the stack's server, at the revision before the
    migration whose description starts with `doc`; dropped afterwards.
    Found by what it does, not by number: revisions are renumbered at merges."""
    scripts = ScriptDirectory(str(MIGRATIONS))
    (migration,) = [
        script for script in scripts.walk_revisions() if (script.doc or "").startswith(doc)
    ]
    assert isinstance(migration.down_revision, str)
    name = f"htk_migration_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(stack.database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = stack.database_url.replace("/postgres?", f"/{name}?")
    config = alembic_config(url)
    try:
        command.upgrade(config, migration.down_revision)
        yield BeforeMigration(migration.revision, migration.down_revision, url, config)
    finally:
        with psycopg.connect(stack.database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def migrated(stack: Stack) -> Iterator[Connection]:
    """The stack's database, which `htk run` migrated to the newest revision."""
    engine = create_engine(sqlalchemy_url(stack.database_url))
    with engine.connect() as connection:
        yield connection
    engine.dispose()


def test_migrations_leave_exactly_the_schema_the_models_describe(migrated: Connection) -> None:
    assert compare_metadata(MigrationContext.configure(migrated), Base.metadata) == []


def test_constraints_and_indexes_have_the_names_the_models_give_them(
    migrated: Connection,
) -> None:
    # Autogenerate compares neither primary nor foreign key names, nor check
    # constraints; a later migration that drops one by its model's name
    # needs the database to use that name.
    schema = inspect(migrated)
    in_database = set()
    for table in schema.get_table_names():
        if table == "alembic_version":
            continue
        in_database.add((table, schema.get_pk_constraint(table)["name"]))
        for named in (
            *schema.get_foreign_keys(table),
            *schema.get_unique_constraints(table),
            *schema.get_check_constraints(table),
            *schema.get_indexes(table),
        ):
            in_database.add((table, named["name"]))
    tables = Base.metadata.tables.values()
    in_models = {(table.name, named.name) for table in tables for named in table.constraints}
    in_models |= {(table.name, index.name) for table in tables for index in table.indexes}
    assert in_database == in_models


def test_a_new_migration_is_numbered_after_the_head_and_empty_when_the_models_agree(
    stack: Stack, tmp_path: Path
) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None

    path = write_migration(stack.database_url, "nothing_to_do", migrations)

    revision = f"{int(head) + 1:04d}"
    assert path == migrations / "versions" / f"{revision}_nothing_to_do.py"
    spec = importlib.util.spec_from_file_location("written", path)
    assert spec is not None and spec.loader is not None
    written = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(written)
    assert (written.revision, written.down_revision) == (revision, head)
    assert (written.__doc__ or "").startswith("nothing to do\n")
    assert "op." not in path.read_text()


def test_the_name_counts_migration_counts_the_processes_it_finds_and_drops_cleanly(
    stack: Stack,
) -> None:
    with before_migration(stack, "process_name_counts:") as before:
        url, config = before.url, before.config
        with psycopg.connect(url) as connection:
            connection.execute(
                "INSERT INTO organizations (org_id, created_at) VALUES ('a', now()), ('b', now())"
            )
            connection.execute(
                "INSERT INTO processes (process_id, org_id, namespace, name, status,"
                " step_count, task_ids, started_at, update_count)"
                " SELECT gen_random_uuid(), org_id, org_id || '.ns', name, status,"
                " 1, '{}', now(), 0"
                " FROM (VALUES ('a', 'Deploy API', 'running'), ('a', 'deploy api', 'running'),"
                "              ('a', 'ÄRGER', 'failed'), ('b', 'Deploy web', 'completed'))"
                " AS given (org_id, name, status)"
            )

        command.upgrade(config, before.revision)

        with psycopg.connect(url) as connection:
            counted = connection.execute(
                "SELECT org_id, namespace, status, folded_name, count FROM process_name_counts"
                " ORDER BY org_id, folded_name"
            ).fetchall()
            assert counted == [
                ("a", "a.ns", "running", "deploy api", 2),
                ("a", "a.ns", "failed", "ärger", 1),
                ("b", "b.ns", "completed", "deploy web", 1),
            ]
        command.downgrade(config, before.down_revision)
        with psycopg.connect(url) as connection:
            row = connection.execute("SELECT to_regclass('process_name_counts')").fetchone()
            assert row == (None,)
            # The triggers left with the table: processes take inserts again.
            connection.execute(
                "INSERT INTO processes (process_id, org_id, namespace, name, status,"
                " step_count, task_ids, started_at, update_count)"
                " VALUES (gen_random_uuid(), 'a', 'a.ns', 'x', 'running', 1, '{}', now(), 0)"
            )


def test_the_list_columns_migration_fills_each_process_current_step_label_and_open_tasks(
    stack: Stack,
) -> None:
    # (process, its current step, its steps as (key, label, task status or None)).
    processes: list[tuple[str, str | None, list[tuple[str, str, str | None]]]] = [
        (
            "00000000-0000-4000-8000-00000000000a",
            "review",
            [("build", "Build", None), ("review", "Review", "open"), ("sign", "Sign", "open")],
        ),
        (
            "00000000-0000-4000-8000-00000000000b",
            "build",
            [("build", "Build", None), ("review", "Review", "completed")],
        ),
        ("00000000-0000-4000-8000-00000000000c", None, [("review", "Review", "pending")]),
    ]
    with before_migration(stack, "list columns:") as before:
        url, config = before.url, before.config
        with psycopg.connect(url) as connection:
            connection.execute("INSERT INTO organizations (org_id, created_at) VALUES ('a', now())")
            for process_id, current, steps in processes:
                connection.execute(
                    "INSERT INTO processes (process_id, org_id, namespace, name, status,"
                    " current_step, step_count, task_ids, started_at, update_count)"
                    " VALUES (%s, 'a', 'a.ns', 'p', 'running', %s, %s, '{}', now(), 0)",
                    (process_id, current, len(steps)),
                )
                for position, (key, label, task_status) in enumerate(steps):
                    task_id = uuid.uuid4() if task_status else None
                    connection.execute(
                        "INSERT INTO steps (process_id, position, key, label, human, task_id,"
                        " status) VALUES (%s, %s, %s, %s, %s, %s, 'running')",
                        (process_id, position, key, label, task_id is not None, task_id),
                    )
                    if task_id is not None:
                        connection.execute(
                            "INSERT INTO tasks (task_id, process_id, org_id, namespace,"
                            " process_name, step, label, status, created_at)"
                            " VALUES (%s, %s, 'a', 'a.ns', 'p', %s, %s, %s, now())",
                            (task_id, process_id, key, label, task_status),
                        )

        command.upgrade(config, before.revision)

        with psycopg.connect(url) as connection:
            rows = connection.execute(
                "SELECT process_id::text, current_step_label, open_task_count FROM processes"
                " ORDER BY process_id"
            ).fetchall()
            assert rows == [
                (processes[0][0], "Review", 2),
                (processes[1][0], "Build", 0),
                (processes[2][0], None, 0),
            ]
        command.downgrade(config, before.down_revision)
        with psycopg.connect(url) as connection:
            columns = connection.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'processes'"
                " AND column_name IN ('current_step_label', 'open_task_count')"
            ).fetchall()
            assert columns == []


def test_the_token_names_migration_keeps_active_duplicates_working_under_unique_names(
    stack: Stack,
) -> None:
    with before_migration(stack, "who did what:") as before:
        url, config = before.url, before.config
        with psycopg.connect(url) as connection:
            connection.execute("INSERT INTO organizations (org_id, created_at) VALUES ('a', now())")
            connection.execute(
                "INSERT INTO api_tokens (token_id, org_id, name, digest, scopes, created_at,"
                " revoked_at)"
                " SELECT id::uuid, 'a', name, decode(md5(id), 'hex'), '{}',"
                "   now() + make_interval(secs => position), revoked"
                " FROM (VALUES"
                "   ('00000000-0000-0000-0000-000000000001', 'alice', 1, NULL::timestamptz),"
                "   ('00000000-0000-0000-0000-000000000002', 'Alice', 2, NULL),"
                "   ('00000000-0000-0000-0000-000000000003', 'ALICE', 3, now()),"
                "   ('00000000-0000-0000-0000-000000000004', 'bob', 4, NULL))"
                " AS given (id, name, position, revoked)"
            )

        command.upgrade(config, before.revision)

        with psycopg.connect(url) as connection:
            names = connection.execute(
                "SELECT name, name_key FROM api_tokens ORDER BY created_at"
            ).fetchall()
            assert names == [
                ("alice", "alice"),
                ("Alice (00000000)", "alice (00000000)"),
                ("ALICE", "alice"),  # revoked: its name stays
                ("bob", "bob"),
            ]
            with pytest.raises(psycopg.errors.UniqueViolation):
                connection.execute(
                    "INSERT INTO api_tokens (token_id, org_id, name, name_key, digest, scopes,"
                    " created_at) VALUES (gen_random_uuid(), 'a', 'BOB', 'bob', 'x', '{}', now())"
                )
        command.downgrade(config, before.down_revision)
