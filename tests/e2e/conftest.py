"""The fixtures of the end-to-end tests: clients of the session's stack (see
tests/conftest.py), a second pair of instances, and an organization per test."""

from collections.abc import Iterator

import grpc
import httpx
import pytest

from htk.processes.v1 import process_service_pb2_grpc
from server.storage.embedded import embedded_database
from tests.support.orgs import Org
from tests.support.stack import Stack, running_stack


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


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> Org:
    """The caller's organization, shared by one module's tests (each makes its own processes)."""
    return stack.new_org()


@pytest.fixture
def org(stack: Stack) -> Org:
    return stack.new_org()
