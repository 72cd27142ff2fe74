"""Closed-loop load generators that run in a process of their own.

`python -m bench.loadgen SPEC_JSON` runs `concurrency` callers for warm-up +
duration seconds and prints one JSON result: latencies of the calls that
started after the warm-up and ended inside the measured window, errors, and
this process's own CPU time over that window (so that a client starving the
server shows up in the report).

It calls ListProcesses / ListTasks / GetProcess / UpdateProcess over
grpc.aio, spread over several channels (each its own HTTP/2 connection).
"""

import asyncio
import json
import random
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import psutil

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from htk.processes.v1 import task_service_pb2 as tasks_pb
from htk.processes.v1 import task_service_pb2_grpc as tasks_pb_grpc

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


def main() -> None:
    spec = json.loads(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read())
    result = asyncio.run(run_grpc(spec))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
