"""Fixtures of the fuzz tests: an organization of their own (on the session's
stack, tests/conftest.py) with a writer and a reader token, and the OpenAPI
document loaded for schemathesis.

HTK_FUZZ_EXAMPLES sets how many cases each operation or property gets:
`make fuzz` runs 1000, a plain `pytest` (and so `make test`) a quick 50.
"""

import json
import os
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis.database import DirectoryBasedExampleDatabase
from schemathesis import BaseSchema, GenerationMode

from tests.support.orgs import Org
from tests.support.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = ROOT / "docs" / "openapi.json"
EXAMPLES = int(os.environ.get("HTK_FUZZ_EXAMPLES", "50"))


def fuzz_settings(**overrides: Any) -> hypothesis.settings:
    """Hypothesis settings of every fuzz test: EXAMPLES cases, no deadline (each
    case is a network round trip), and failures remembered under build/ (ignored
    by git) so that a rerun tries them first (except on CI)."""
    options: dict[str, Any] = {
        "max_examples": EXAMPLES,
        "deadline": None,
        # Hypothesis's profile for CI (chosen when CI is set) derandomizes,
        # which rules out an example database.
        "database": None
        if hypothesis.settings().derandomize
        else DirectoryBasedExampleDatabase(ROOT / "build" / "hypothesis"),
        "suppress_health_check": list(hypothesis.HealthCheck),
    }
    return hypothesis.settings(**(options | overrides))


@pytest.fixture(scope="session")
def tenant(stack: Stack) -> Org:
    """The organization the fuzzers act as; its processes are the only ones they see."""
    return stack.new_org("fuzz")


def load_schema(base_url: str | None = None) -> BaseSchema:
    """docs/openapi.json for schemathesis, generating valid and invalid input.

    Without the streams (Server-Sent Events): schemathesis reads a response
    to its end, which a watch may never reach. The gRPC properties and the
    end-to-end tests cover them.
    """
    document = json.loads(OPENAPI.read_text())
    streams = [
        operation["operationId"]
        for operations in document["paths"].values()
        for operation in operations.values()
        if "text/event-stream" in operation["responses"]["200"]["content"]
    ]
    schema = schemathesis.openapi.from_path(OPENAPI).exclude(operation_id=streams)
    if base_url is not None:
        schema.config.update(base_url=base_url)
    # Each test sends its own Authorization header, which would override one
    # that schemathesis generated or left out to make a case negative.
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=EXAMPLES,
        with_security_parameters=False,
    )
    return schema


@pytest.fixture(scope="session")
def api_schema(stack: Stack) -> BaseSchema:
    """The document aimed at the stack, for the stateful tests."""
    return load_schema(stack.http_url)
