"""The fixtures of the end-to-end tests: clients of the session's stack (see
tests/conftest.py), a second pair of instances, and an organization per test."""

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from htk.processes.v1 import process_service_pb2_grpc
from server.settings import CHECKOUT
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


@pytest.fixture(scope="session")
def python_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty folder outside the checkout where the Python client's guide
    (docs/clients-python.md) installed it as it says: a virtualenv of its own
    and `pip install` of clients/python. Made once: a virtualenv takes a while."""
    folder = tmp_path_factory.mktemp("python-client")
    install = doc_block(CHECKOUT / "docs" / "clients-python.md", "python-client-install", "bash")
    subprocess.run(
        ["bash", "-euo", "pipefail", "-c", install],
        cwd=folder,
        env=outside_env(HTK_CHECKOUT=str(CHECKOUT)),
        check=True,
        capture_output=True,
        timeout=600,
    )
    return folder


def outside_env(**variables: str) -> dict[str, str]:
    """A newcomer's shell: their PATH and HOME, without the tests' virtualenv."""
    ours = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != ours)
    return {"PATH": path, "HOME": os.environ["HOME"], **variables}


def doc_block(document: Path, marker: str, language: str) -> str:
    """The code block of `document` that the comment `<!-- marker -->` precedes."""
    match = re.search(rf"<!-- {marker} -->\n```{language}\n(.*?)```", document.read_text(), re.S)
    assert match, f"{document.name} lost its block marked {marker}"
    return match.group(1)
