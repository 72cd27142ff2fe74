"""Closed-loop load generators that run in a process of their own.

`python -m bench.loadgen SPEC_JSON` runs `concurrency` callers for warm-up +
duration seconds and prints one JSON result: latencies of the calls that
started after the warm-up and ended inside the measured window, errors, and
this process's own CPU time over that window (so that a client starving the
server shows up in the report).

Two kinds:
  * grpc: ListProcesses / ListTasks / GetProcess / UpdateProcess over grpc.aio, spread
    over several channels (each its own HTTP/2 connection).
  * psycopg: the update baseline, plain psycopg running the statements that
    one UpdateProcess runs (authentication included), same transaction shape.
"""

import asyncio
import hashlib
import hmac
import json
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import psutil
import psycopg

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from htk.processes.v1 import task_service_pb2 as tasks_pb
from htk.processes.v1 import task_service_pb2_grpc as tasks_pb_grpc
from server.storage.notifications import CHANNEL, Notification

Call = Callable[[int], Awaitable[None]]


async def _drive(spec: dict[str, Any], call: Call) -> dict[str, Any]:
    """Runs `call` in `concurrency` loops and measures the window after warm-up."""
    warmup, duration = float(spec["warmup"]), float(spec["duration"])
    latencies: list[float] = []
    errors = 0
    error_sample = ""
    start = time.perf_counter()
    window_start, window_end = start + warmup, start + warmup + duration
    me = psutil.Process()
    cpu_at_window: list[float] = []

    async def loop(worker: int) -> None:
        nonlocal errors, error_sample
        sequence = worker
        while True:
            began = time.perf_counter()
            if began >= window_end:
                return
            try:
                await call(sequence)
                ok = True
            except Exception as error:  # any failure counts; the first is shown
                ok = False
                if window_start <= began:
                    errors += 1
                    error_sample = error_sample or repr(error)[:300]
            ended = time.perf_counter()
            if ok and window_start <= began and ended <= window_end:
                latencies.append(ended - began)
            sequence += int(spec["concurrency"])

    async def clock() -> None:
        await asyncio.sleep(warmup)
        cpu_at_window.append(sum(me.cpu_times()[:2]))
        await asyncio.sleep(duration)
        cpu_at_window.append(sum(me.cpu_times()[:2]))

    await asyncio.gather(clock(), *(loop(i) for i in range(int(spec["concurrency"]))))
    return {
        "latencies": latencies,
        "errors": errors,
        "error_sample": error_sample,
        "seconds": duration,
        "client_cpu_seconds": cpu_at_window[1] - cpu_at_window[0],
    }


async def run_grpc(spec: dict[str, Any]) -> dict[str, Any]:
    metadata = (("authorization", f"Bearer {spec['token']}"),)
    # A local subchannel pool per channel: otherwise channels to one target share
    # one connection, and the workers behind a shared port would see one client.
    channels = [
        grpc.aio.insecure_channel(spec["target"], options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(int(spec["channels"]))
    ]
    stubs = [pb_grpc.ProcessServiceStub(channel) for channel in channels]
    rng = random.Random(7)  # noqa: S311 - repeatable, not secret

    async def get(sequence: int) -> None:
        ids = spec["process_ids"]
        stub = stubs[sequence % len(stubs)]
        await stub.GetProcess(
            pb.GetProcessRequest(process_id=ids[sequence % len(ids)]), metadata=metadata
        )

    async def update(sequence: int) -> None:
        targets = spec["update_targets"]
        process_id, step = targets[rng.randrange(len(targets))]
        stub = stubs[sequence % len(stubs)]
        await stub.UpdateProcess(
            pb.UpdateProcessRequest(
                process_id=process_id,
                type="progress",
                step=step,
                percent=rng.randrange(101),
                message=f"bench {sequence}",
            ),
            metadata=metadata,
        )

    def lister(rpcs: list[Any], request: Callable[..., Any], items: str) -> Call:
        """Calls one of `rpcs` (a List method per channel) with the spec's request."""

        async def list_page(sequence: int) -> None:
            rpc = rpcs[sequence % len(rpcs)]
            response = await rpc(request(**spec["list_request"]), metadata=metadata)
            if not getattr(response, items):
                raise RuntimeError("an empty page")

        return list_page

    task_stubs = [tasks_pb_grpc.TaskServiceStub(channel) for channel in channels]
    calls: dict[str, Call] = {
        "get": get,
        "update": update,
        "list": lister(
            [stub.ListProcesses for stub in stubs], pb.ListProcessesRequest, "processes"
        ),
        "list_tasks": lister(
            [stub.ListTasks for stub in task_stubs], tasks_pb.ListTasksRequest, "tasks"
        ),
    }
    try:
        return await _drive(spec, calls[spec["method"]])
    finally:
        for channel in channels:
            await channel.close(None)


# The statements one UpdateProcess sends, as captured with log_statement=all
# (bench/capture.py prints the server's side by side with these in the report).
AUTHENTICATE = (
    "SELECT api_tokens.org_id, api_tokens.scopes, api_tokens.digest FROM api_tokens"
    " WHERE api_tokens.digest = %s AND api_tokens.revoked_at IS NULL"
)
LOCK_PROCESS = (
    "SELECT processes.process_id, processes.org_id, processes.namespace, processes.name,"
    " processes.status, processes.current_step, processes.step_count, processes.task_ids,"
    " processes.started_at, processes.finished_at, processes.summary, processes.error,"
    " processes.update_count FROM processes"
    " WHERE processes.process_id = %s AND processes.org_id = %s FOR UPDATE"
)
LOAD_STEPS = (
    "SELECT steps.process_id, steps.position, steps.key, steps.label, steps.human,"
    " steps.task_id, steps.status, steps.started_at, steps.completed_at, steps.detail,"
    " steps.data, steps.error, steps.progress_message, steps.progress_percent,"
    " steps.started_seq, steps.changed_seq FROM steps"
    " WHERE steps.process_id = %s ORDER BY steps.position"
)
UPDATE_PROCESS = (
    "UPDATE processes SET status=%s, current_step=%s, finished_at=%s, summary=%s, error=%s,"
    " update_count=%s WHERE processes.process_id = %s"
)
UPDATE_STEP = (
    "UPDATE steps SET status=%s, started_at=%s, completed_at=%s, detail=%s, data=%s, error=%s,"
    " progress_message=%s, progress_percent=%s, started_seq=%s, changed_seq=%s"
    " WHERE steps.process_id = %s AND steps.position = %s"
)
# The event and the notification that wakes watchers, in one statement.
INSERT_EVENT = (
    "WITH inserted AS (INSERT INTO process_events"
    " (process_id, seq, type, step, payload, recorded_at)"
    " VALUES (%s, %s, %s, %s, %s, %s) RETURNING process_events.process_id)"
    " SELECT pg_notify(%s, %s) AS pg_notify_1 FROM inserted"
)


async def run_psycopg(spec: dict[str, Any]) -> dict[str, Any]:
    """The baseline: one update's statements over a pool of plain psycopg connections."""
    digest = hashlib.sha256(spec["token"].encode()).digest()
    pool: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
    # log_statement=all is for bench/capture.py's comparison with the server.
    options = "-c log_statement=all" if spec.get("log_statements") else ""
    for _ in range(int(spec["pool_size"])):
        pool.put_nowait(
            await psycopg.AsyncConnection.connect(spec["database_url"], options=options)
        )
    rng = random.Random(7)  # noqa: S311 - repeatable, not secret

    async def transaction(work: Callable[[psycopg.AsyncCursor[Any]], Awaitable[Any]]) -> Any:
        """One READ COMMITTED transaction (the server names the level in its BEGIN)."""
        connection = await pool.get()
        try:
            await connection.set_isolation_level(psycopg.IsolationLevel.READ_COMMITTED)
            async with connection.cursor() as cursor:
                result = await work(cursor)
            await connection.commit()
            return result
        except BaseException:
            await connection.rollback()
            raise
        finally:
            pool.put_nowait(connection)

    async def authenticate() -> Any:
        """The token lookup: one autocommit statement, no BEGIN/COMMIT, as the server's."""
        connection = await pool.get()
        try:
            await connection.set_autocommit(True)
            async with connection.cursor() as cursor:
                await cursor.execute(AUTHENTICATE, (digest,))
                row = await cursor.fetchone()
            await connection.set_autocommit(False)
        finally:
            pool.put_nowait(connection)
        if row is None or not hmac.compare_digest(row[2], digest):
            raise RuntimeError("the token is unknown")
        return row

    async def update(sequence: int) -> None:
        caller = await authenticate()
        process_id, step_key = spec["update_targets"][rng.randrange(len(spec["update_targets"]))]

        async def apply(cursor: psycopg.AsyncCursor[Any]) -> None:
            await cursor.execute(LOCK_PROCESS, (process_id, caller[0]))
            process = await cursor.fetchone()
            await cursor.execute(LOAD_STEPS, (process_id,))
            steps = await cursor.fetchall()
            if process is None:
                raise RuntimeError("no such process")
            position = next(row[1] for row in steps if row[2] == step_key)
            step = steps[position]
            seq = process[12] + 1
            percent = rng.randrange(101)
            message = f"bench {sequence}"
            await cursor.execute(
                UPDATE_PROCESS, (process[4], step_key, None, None, None, seq, process_id)
            )
            await cursor.execute(
                UPDATE_STEP,
                (
                    step[6],
                    step[7],
                    step[8],
                    step[9],
                    json.dumps(step[10]),  # None as JSON null, as SQLAlchemy writes it
                    step[11],
                    message,
                    percent,
                    step[14],
                    seq,
                    process_id,
                    position,
                ),
            )
            await cursor.execute(
                INSERT_EVENT,
                (
                    process_id,
                    seq,
                    "progress",
                    step_key,
                    json.dumps({"message": message, "percent": percent}),
                    datetime.now(UTC),
                    CHANNEL,
                    Notification(caller[0], uuid.UUID(process_id), seq).encode(),
                ),
            )

        await transaction(apply)

    try:
        if spec.get("once"):
            await update(0)
            return {}
        return await _drive(spec, update)
    finally:
        while not pool.empty():
            await pool.get_nowait().close()


def main() -> None:
    spec = json.loads(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read())
    runner = run_grpc if spec["kind"] == "grpc" else run_psycopg
    result = asyncio.run(runner(spec))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
