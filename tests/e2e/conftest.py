"""The one fixture that starts the real stack: `htk run` (embedded PostgreSQL,
the gRPC server, Envoy) in a scratch data folder on free ports."""

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest

from htk.processes.v1 import process_service_pb2_grpc
from server.stack import wait_until_serving
from server.storage.embedded import embedded_database

HTK = str(Path(sys.executable).parent / "htk")
START_TIMEOUT_SECONDS = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.env['HTK_HTTP_PORT']}"

    @property
    def envoy_target(self) -> str:
        """Native gRPC through Envoy, the address internal services use."""
        return f"127.0.0.1:{self.env['HTK_HTTP_PORT']}"

    @property
    def server_target(self) -> str:
        """The gRPC server itself, behind Envoy."""
        return f"127.0.0.1:{self.env['HTK_GRPC_PORT']}"

    @property
    def database_url(self) -> str:
        """The stack's database (DATABASE_URL, else its embedded PostgreSQL),
        for tests that inspect what was stored."""
        embedded = f"postgresql://postgres@/postgres?host={self.data_dir / 'postgres'}"
        return self.env.get("DATABASE_URL") or embedded

    @property
    def log(self) -> str:
        return (self.data_dir / "stack.log").read_text(errors="replace")

    def htk(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Runs the htk CLI against this stack's database."""
        return subprocess.run(
            [HTK, *args], env=self.env, capture_output=True, text=True, timeout=60
        )

    def token(self, org: str, scopes: str = "processes:write") -> str:
        result = self.htk("token", "create", "--org", org, "--scopes", scopes)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


@contextmanager
def running_stack(
    data_dir: Path, database_url: str | None = None, env: Mapping[str, str] | None = None
) -> Iterator[Stack]:
    """Starts `htk run` on `data_dir` and stops it with SIGTERM afterwards.

    Without `database_url` the stack runs its embedded PostgreSQL. `env`
    overrides settings; rate limiting is off unless a test turns it on.
    """
    env = {
        **os.environ,
        "HTK_DATA_DIR": str(data_dir),
        "HTK_HTTP_PORT": str(free_port()),
        "HTK_GRPC_PORT": str(free_port()),
        "HTK_ENVOY_ADMIN_PORT": str(free_port()),
        "HTK_RATE_LIMIT_PER_SECOND": "0",
        **(env or {}),
    }
    env.pop("DATABASE_URL", None)
    if database_url:
        env["DATABASE_URL"] = database_url
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "stack.log").open("ab") as log:
        process = subprocess.Popen([HTK, "run"], env=env, stdout=log, stderr=subprocess.STDOUT)
    stack = Stack(data_dir=data_dir, env=env, process=process)
    try:
        try:
            started = wait_until_serving(
                stack.envoy_target, START_TIMEOUT_SECONDS, lambda: process.poll() is None
            )
        except TimeoutError:
            started = False
        if not started:
            pytest.fail(f"the stack did not start; its log:\n{stack.log}")
        yield stack
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture(scope="session")
def two_instances(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Stack]]:
    """Two stacks (`htk run` each: its own workers, Envoy and ports) sharing
    one PostgreSQL, as several instances behind a load balancer would."""
    root = tmp_path_factory.mktemp("instances")
    with (
        embedded_database(root / "shared") as database_url,
        running_stack(root / "a", database_url) as a,
        running_stack(root / "b", database_url) as b,
    ):
        yield a, b


@pytest.fixture(scope="session")
def rest(stack: Stack) -> Iterator[httpx.Client]:
    """An HTTP client of the REST API through Envoy, without credentials."""
    with httpx.Client(base_url=stack.http_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def grpc_channel(stack: Stack) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(stack.envoy_target) as channel:
        yield channel


@pytest.fixture(scope="session")
def grpc_stub(grpc_channel: grpc.Channel) -> process_service_pb2_grpc.ProcessServiceStub:
    """A generated stub calling ProcessService over native gRPC through Envoy."""
    return process_service_pb2_grpc.ProcessServiceStub(grpc_channel)


@dataclass(frozen=True)
class Org:
    """An organization of its own for one test, with a writer and a reader token."""

    org_id: str
    writer: str
    reader: str

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.writer}"}

    def metadata(self, token: str | None = None) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token or self.writer}"),)


@pytest.fixture
def org(stack: Stack) -> Org:
    org_id = f"org-{uuid.uuid4().hex[:12]}"
    return Org(org_id=org_id, writer=stack.token(org_id), reader=stack.token(org_id, scopes=""))
