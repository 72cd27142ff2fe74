"""The in-process tier: the real server and PostgreSQL, in seconds, without Envoy."""

import os
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from tests.support.in_process import InProcessServer, in_process_server, migrated_database
from tests.support.orgs import Org


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with migrated_database(
        tmp_path_factory.mktemp("service-db"), os.environ.get("DATABASE_URL")
    ) as url:
        yield url


# Watch streams send heartbeats every second here, so tests see them soon.
# Retention is off: tests set the clock months back, and the server's own
# pass would delete their finished processes while they read them
# (tests/service/test_retention.py runs passes of its own).
HEARTBEAT_ENV = {"HTK_HEARTBEAT_SECONDS": "1", "HTK_RETENTION_DAYS": "0"}


@pytest.fixture(scope="session")
async def server(database_url: str) -> AsyncIterator[InProcessServer]:
    async with in_process_server(database_url, env=HEARTBEAT_ENV) as running:
        yield running


@pytest.fixture(autouse=True)
def real_time(server: InProcessServer) -> None:
    """Every test starts with the clock reading the real time."""
    server.clock.now = None


@pytest.fixture(scope="session")
async def channel(server: InProcessServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.target) as opened:
        yield opened


@pytest.fixture
def processes(channel: grpc.aio.Channel) -> "pb_grpc.ProcessServiceAsyncStub":
    return pb_grpc.ProcessServiceStub(channel)  # typed as the async stub for an aio channel


@pytest.fixture
async def org(server: InProcessServer) -> Org:
    return await server.new_org()
