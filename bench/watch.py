"""The watch phase: SSE watchers through Envoy while updates flow.

`watchers` watchers follow `processes` processes (the same number each) over
REST (Server-Sent Events through Envoy), from their first event on, while a
writer sends progress updates at `rate` a second, spread evenly over the
processes. Each update carries a unique tag; the writer notes when each was
acknowledged, and every watcher when each event reached it, on the machine's
monotonic clock, which all processes share. After `seconds`, every process is
completed, which ends every stream; then each watcher's events are checked
against the process's log (missed, duplicated, out of order).

Watchers and writer run in processes of their own (`python -m bench.watch
watchers|writer`, a JSON spec on stdin), so that their CPU is not the
servers'; the watchers are spread over several processes.
"""

import asyncio
import itertools
import json
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from typing import IO, Any

import httpx
import psutil
import psycopg

from bench.stack import Sampler
from server.settings import CHECKOUT
from tests.support.sse import amessages, kind
from tests.support.stack import Stack

READY = "ready"
CONNECT_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class WatchConfig:
    watchers: int = 1000
    processes: int = 100
    rate: float = 50.0
    seconds: float = 20.0
    # Processes the watchers are spread over: one Python process cannot
    # follow a thousand streams without becoming the bottleneck itself.
    watcher_processes: int = 2


@dataclass(frozen=True)
class WatchMeasurement:
    name: str
    watchers: int
    processes: int
    updates: int  # acknowledged
    rate: float  # acknowledged per second
    deliveries: int  # acknowledged updates that reached a watcher
    p50_ms: float
    p95_ms: float
    p99_ms: float
    before_ack: int  # deliveries that arrived before the writer had its answer
    write_p50_ms: float  # the writer's own wait for its answers
    write_p95_ms: float
    missed: int
    duplicated: int
    out_of_order: int
    write_errors: int
    server_rss_mb: float  # the largest server process's peak
    server_cores: float  # all the server processes of the instances sampled
    envoy_cores: float
    client_cores: float  # the watcher processes

    def one_line(self) -> str:
        return (
            f"{self.name}: {self.watchers} watchers, {self.rate:.0f} updates/s, "
            f"{self.deliveries:,} deliveries, p50 {self.p50_ms:.1f} p95 {self.p95_ms:.1f} "
            f"p99 {self.p99_ms:.1f} ms; missed {self.missed}, duplicated {self.duplicated}, "
            f"out of order {self.out_of_order}; write errors {self.write_errors}"
        )


def measure(
    name: str,
    config: WatchConfig,
    database_url: str,
    token: str,
    watched: Stack,
    written: Stack,
) -> WatchMeasurement:
    """One watch phase: watchers on `watched`'s Envoy, the writer on `written`'s."""
    process_ids = _start_processes(written, token, config.processes)
    # Watcher n follows process n % processes; the watcher processes take turns.
    watched_ids = [process_ids[n % len(process_ids)] for n in range(config.watchers)]
    shares = [watched_ids[n :: config.watcher_processes] for n in range(config.watcher_processes)]
    watchers = [
        _spawn("watchers", {"url": watched.http_url, "token": token, "process_ids": share})
        for share in shares
    ]
    for watcher in watchers:
        _wait_ready(watcher)
    clients = [psutil.Process(watcher.pid) for watcher in watchers]
    client_cpu = sum(_cpu(client) for client in clients)
    with ExitStack() as sampling:
        instances = [watched] if watched is written else [watched, written]
        samplers = [sampling.enter_context(Sampler(stack)) for stack in instances]
        writes = _run(
            "writer",
            {
                "url": written.http_url,
                "token": token,
                "process_ids": process_ids,
                "rate": config.rate,
                "seconds": config.seconds,
            },
        )
    client_cpu = sum(_cpu(client) for client in clients) - client_cpu
    _finish(written, token, process_ids)
    arrivals = [_result(watcher) for watcher in watchers]
    return _measurement(
        name, config, database_url, writes, arrivals, samplers, client_cpu / config.seconds
    )


def _measurement(
    name: str,
    config: WatchConfig,
    database_url: str,
    writes: dict[str, Any],
    arrivals: list[dict[str, Any]],
    samplers: list[Sampler],
    client_cores: float,
) -> WatchMeasurement:
    acked: dict[str, float] = writes["acked"]
    waits = sorted(acked[tag] - sent for tag, sent in writes["sent"].items() if tag in acked)
    with psycopg.connect(database_url) as connection:
        last: dict[str, int] = dict(
            connection.execute(
                "SELECT process_id::text, max(seq) FROM process_events"
                " WHERE process_id = ANY(%s::uuid[]) GROUP BY process_id",
                (list({w["process_id"] for part in arrivals for w in part["watchers"]}),),
            ).fetchall()
        )
    delays: list[float] = []
    missed = duplicated = out_of_order = 0
    for part in arrivals:
        for watcher in part["watchers"]:
            seqs = [seq for seq, _, _ in watcher["events"]]
            expected = set(range(2, last[watcher["process_id"]] + 1))
            missed += len(expected - set(seqs))
            duplicated += len(seqs) - len(set(seqs))
            out_of_order += sum(1 for a, b in itertools.pairwise(seqs) if b < a)
            delays += [at - acked[tag] for _, tag, at in watcher["events"] if tag in acked]
    ordered = sorted(delays)

    def percentile(percent: float, values: list[float] = ordered) -> float:
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(percent / 100 * len(values)))] * 1000

    return WatchMeasurement(
        name=name,
        watchers=config.watchers,
        processes=config.processes,
        updates=len(acked),
        rate=len(acked) / config.seconds,
        deliveries=len(delays),
        p50_ms=percentile(50),
        p95_ms=percentile(95),
        p99_ms=percentile(99),
        before_ack=sum(1 for delay in delays if delay < 0),
        write_p50_ms=percentile(50, waits),
        write_p95_ms=percentile(95, waits),
        missed=missed,
        duplicated=duplicated,
        out_of_order=out_of_order,
        write_errors=int(writes["errors"]),
        server_rss_mb=max(sampler.servers.max_rss_mb for sampler in samplers),
        server_cores=sum(sampler.cores(sampler.servers) for sampler in samplers),
        envoy_cores=sum(sampler.cores(sampler.envoy) for sampler in samplers),
        client_cores=client_cores,
    )


def _start_processes(stack: Stack, token: str, count: int) -> list[str]:
    """`count` processes whose one step runs: event 1 of each is logged."""
    auth = {"Authorization": f"Bearer {token}"}
    process_ids = []
    with httpx.Client(base_url=stack.http_url, timeout=30) as http:
        for number in range(count):
            created = http.post(
                "/api/v1/processes",
                headers=auth,
                json={
                    "namespace": "watch-bench",
                    "name": f"Watched {number}",
                    "step_defs": [{"key": "run", "label": "Run"}],
                },
            )
            created.raise_for_status()
            process_id = created.json()["process_id"]
            http.post(
                f"/api/v1/processes/{process_id}/update",
                headers=auth,
                json={"type": "step_started", "step": "run"},
            ).raise_for_status()
            process_ids.append(process_id)
    return process_ids


def _finish(stack: Stack, token: str, process_ids: list[str]) -> None:
    with httpx.Client(base_url=stack.http_url, timeout=30) as http:
        for process_id in process_ids:
            http.post(
                f"/api/v1/processes/{process_id}/update",
                headers={"Authorization": f"Bearer {token}"},
                json={"type": "completed"},
            ).raise_for_status()


def _spawn(role: str, spec: dict[str, Any]) -> "subprocess.Popen[str]":
    process = subprocess.Popen(  # noqa: S603 - this Python, this module
        [sys.executable, "-m", "bench.watch", role],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=CHECKOUT,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(spec))
    process.stdin.close()
    return process


def _stdout(process: "subprocess.Popen[str]") -> IO[str]:
    assert process.stdout is not None
    return process.stdout


def _wait_ready(process: "subprocess.Popen[str]") -> None:
    line = _stdout(process).readline().strip()
    if line != READY:
        raise RuntimeError(f"bench.watch watchers failed to connect: {line!r}")


def _result(process: "subprocess.Popen[str]") -> dict[str, Any]:
    output = _stdout(process).read()
    if process.wait() != 0:
        raise RuntimeError("bench.watch failed")
    result: dict[str, Any] = json.loads(output)
    return result


def _run(role: str, spec: dict[str, Any]) -> dict[str, Any]:
    return _result(_spawn(role, spec))


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


# --- the client processes -------------------------------------------------------------


async def _watch(
    client: httpx.AsyncClient, token: str, process_id: str, following: asyncio.Event
) -> dict[str, Any]:
    """Follows one process from event 2 to its end: (seq, tag, arrival) of each event."""
    events: list[tuple[int, str | None, float]] = []
    async with client.stream(
        "GET",
        f"/api/v1/processes/{process_id}/watch",
        params={"after_seq": 1},
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        response.raise_for_status()
        async for message in amessages(response):
            arrived = time.monotonic()
            following.set()
            if kind(message) == "event":
                event = message["event"]
                events.append((event["seq"], event.get("message"), arrived))
                if event["type"] == "completed":
                    break
            elif kind(message) == "error":
                raise RuntimeError(f"a stream failed: {message}")
    return {"process_id": process_id, "events": events}


async def _watchers(spec: dict[str, Any]) -> dict[str, Any]:
    count = len(spec["process_ids"])
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    timeout = httpx.Timeout(60.0, connect=CONNECT_TIMEOUT_SECONDS, pool=CONNECT_TIMEOUT_SECONDS)
    async with httpx.AsyncClient(base_url=spec["url"], limits=limits, timeout=timeout) as client:
        following = [asyncio.Event() for _ in range(count)]
        tasks = [
            asyncio.create_task(_watch(client, spec["token"], process_id, ready))
            for process_id, ready in zip(spec["process_ids"], following, strict=True)
        ]
        await asyncio.wait_for(
            asyncio.gather(*(ready.wait() for ready in following)), CONNECT_TIMEOUT_SECONDS
        )
        print(READY, flush=True)
        return {"watchers": await asyncio.gather(*tasks)}


async def _writer(spec: dict[str, Any]) -> dict[str, Any]:
    """Open loop: update i is sent at i / rate seconds, whatever became of the others."""
    process_ids, rate = spec["process_ids"], float(spec["rate"])
    auth = {"Authorization": f"Bearer {spec['token']}"}
    sent: dict[str, float] = {}
    acked: dict[str, float] = {}
    errors = 0
    run = uuid.uuid4().hex[:6]

    async with httpx.AsyncClient(base_url=spec["url"], timeout=30) as client:

        async def update(number: int) -> None:
            nonlocal errors
            tag = f"{run}-{number}"
            sent[tag] = time.monotonic()
            response = await client.post(
                f"/api/v1/processes/{process_ids[number % len(process_ids)]}/update",
                headers=auth,
                json={"type": "progress", "step": "run", "message": tag},
            )
            if response.status_code == 200:
                acked[tag] = time.monotonic()
            else:
                errors += 1

        began = time.monotonic()
        updates = []
        for number in range(int(rate * float(spec["seconds"]))):
            await asyncio.sleep(max(0.0, began + number / rate - time.monotonic()))
            updates.append(asyncio.create_task(update(number)))
        await asyncio.gather(*updates)
    return {"sent": sent, "acked": acked, "errors": errors}


def main() -> None:
    role = sys.argv[1]
    spec = json.loads(sys.stdin.read())
    result = asyncio.run(_watchers(spec) if role == "watchers" else _writer(spec))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
