"""Envoy retries a read that a worker answered UNAVAILABLE, and never a write.

During a failover a worker whose database connection was lost answers
UNAVAILABLE (gRPC 14, as trailers alone) while another worker, or the same
one a moment later, would answer. Reads are safe to repeat, so Envoy repeats
them; a write is the client's to retry, with its Idempotency-Key.

Envoy runs here with the config htk renders, in front of a stand-in worker
whose answers the test chooses: the first call of each method is refused with
UNAVAILABLE, the next ones succeed. So what is checked is the rendered retry
policy as Envoy applies it, not a race with a real database.
"""

import secrets
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from server.edge.constants import worker_socket
from server.edge.envoy import envoy_command, render_envoy_config
from server.settings import Settings
from tests.chaos.helpers import wait_until
from tests.support.stack import free_port

PROCESS_ID = "00000000-0000-4000-8000-000000000001"
TOKEN = "htk_stand-in"
START_LIMIT_SECONDS = 60.0


class RefusesFirstCall:
    """Answers each method's first call UNAVAILABLE, as a worker that lost its
    database connection does, and the calls after it normally."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _refuse_first(self, method: str, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.calls[method] += 1
            first = self.calls[method] == 1
        if first:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the database cannot be reached; retry")

    def get_process(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._refuse_first("GetProcess", context)
        return pb.Process(process_id=request.process_id, name="stand-in")

    def update_process(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._refuse_first("UpdateProcess", context)
        return pb.UpdateProcessResponse()

    def handler(self) -> "grpc.GenericRpcHandler[Any, Any]":
        """ProcessService with these two methods; any other is UNIMPLEMENTED."""
        methods: dict[str, tuple[Any, Any]] = {
            "GetProcess": (self.get_process, pb.GetProcessRequest),
            "UpdateProcess": (self.update_process, pb.UpdateProcessRequest),
        }
        return grpc.method_handlers_generic_handler(
            "htk.processes.v1.ProcessService",
            {
                name: grpc.unary_unary_rpc_method_handler(
                    behavior,
                    request_deserializer=request.FromString,
                    response_serializer=lambda message: message.SerializeToString(),
                )
                for name, (behavior, request) in methods.items()
            },
        )


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[tuple[str, RefusesFirstCall]]:
    """Envoy, configured as `htk run` configures it for one worker, and the
    stand-in worker on that worker's socket; yields Envoy's address."""
    stack_id = secrets.randbelow(1 << 30)
    settings = Settings.from_env(
        {
            "HTK_DATA_DIR": str(tmp_path),
            "HTK_WORKERS": "1",
            "HTK_HTTP_PORT": str(free_port()),
            "HTK_ENVOY_ADMIN_PORT": str(free_port()),
        }
    )
    servicer = RefusesFirstCall()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((servicer.handler(),))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    server.add_insecure_port("unix-abstract:" + worker_socket(stack_id, 0))
    server.start()
    config = render_envoy_config(settings, stack_id)
    with (tmp_path / "envoy.log").open("wb") as envoy_log:
        envoy = subprocess.Popen(envoy_command(config), stdout=envoy_log, stderr=envoy_log)
    target = f"127.0.0.1:{settings.http_port}"
    try:
        # Ready once Envoy's health check has found the worker serving.
        wait_until(
            lambda: envoy.poll() is None and _worker_healthy(settings.envoy_admin_port),
            START_LIMIT_SECONDS,
            "Envoy to see the worker serving",
        )
        yield target, servicer
    finally:
        envoy.terminate()
        envoy.wait(30)
        server.stop(None)


def _worker_healthy(admin_port: int) -> bool:
    try:
        clusters = httpx.get(f"http://127.0.0.1:{admin_port}/clusters", timeout=5).text
    except httpx.HTTPError:
        return False
    return any(
        line.startswith("grpc_server::") and line.endswith("::health_flags::healthy")
        for line in clusters.splitlines()
    )


def test_a_read_answered_unavailable_is_retried_over_rest_and_grpc(
    edge: tuple[str, RefusesFirstCall],
) -> None:
    target, servicer = edge
    answer = httpx.get(
        f"http://{target}/api/v1/processes/{PROCESS_ID}",
        headers={"authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["name"] == "stand-in"
    assert servicer.calls["GetProcess"] == 2
    with grpc.insecure_channel(target) as channel:
        got = pb_grpc.ProcessServiceStub(channel).GetProcess(
            pb.GetProcessRequest(process_id=PROCESS_ID),
            metadata=(("authorization", f"Bearer {TOKEN}"),),
            timeout=30,
        )
    assert got.name == "stand-in"
    # Refused once in all: the gRPC call succeeded at its first attempt.
    assert servicer.calls["GetProcess"] == 3


def test_a_write_answered_unavailable_is_left_to_the_client(
    edge: tuple[str, RefusesFirstCall],
) -> None:
    target, servicer = edge
    answer = httpx.post(
        f"http://{target}/api/v1/processes/{PROCESS_ID}/update",
        headers={"authorization": f"Bearer {TOKEN}", "idempotency-key": "once"},
        json={"type": "progress", "step": "build"},
        timeout=30,
    )
    assert answer.status_code == 503, answer.text
    assert answer.json()["code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert servicer.calls["UpdateProcess"] == 1
