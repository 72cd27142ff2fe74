"""The bench's seeder names its scratch database on the servers of any DATABASE_URL."""

import psycopg

from bench.seed import other_database


def test_a_multi_host_url_keeps_every_host_and_port() -> None:
    url = other_database(
        "postgresql://htk:secret@db1:5432,db2:5433/htk?target_session_attrs=read-write", "scratch"
    )
    parts = psycopg.conninfo.conninfo_to_dict(url)
    assert parts["host"] == "db1,db2"
    assert parts["port"] == "5432,5433"
    assert parts["dbname"] == "scratch"
    assert parts["user"] == "htk"
    assert parts["password"] == "secret"
    assert parts["target_session_attrs"] == "read-write"


def test_a_unix_socket_url_keeps_its_folder() -> None:
    url = other_database("postgresql://postgres@/postgres?host=/srv/pg", "scratch")
    parts = psycopg.conninfo.conninfo_to_dict(url)
    assert (parts["host"], parts["dbname"], parts["user"]) == ("/srv/pg", "scratch", "postgres")
