"""Health as a load balancer or orchestrator probes it: /healthz and /readyz
through Envoy, without a token and outside every rate limit, and the gRPC
health service beside them."""

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.probes import readiness_until
from tests.support.stack import Stack, running_stack

# Every budget that counts anonymous requests from one address, at its floor.
TIGHT_BUDGETS = {
    "HTK_WORKERS": "2",
    "HTK_RATE_LIMIT_PER_SECOND": "1",
    "HTK_RATE_LIMIT_BURST": "1",
    "HTK_RATE_LIMIT_PER_ADDRESS_PER_SECOND": "1",
    "HTK_RATE_LIMIT_ANONYMOUS_PER_SECOND": "1",
}


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir: Path = tmp_path_factory.mktemp("health")
    with running_stack(data_dir, env=TIGHT_BUDGETS) as stack:
        yield stack


def test_healthz_and_readyz_answer_json_without_a_token(probed: Stack) -> None:
    alive = httpx.get(f"{probed.http_url}/healthz")
    assert alive.status_code == 200
    assert alive.headers["content-type"] == "application/json"
    assert alive.json() == {"status": "alive"}

    ready = httpx.get(f"{probed.http_url}/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.headers["content-type"] == "application/json"
    assert ready.json() == {
        "status": "ready",
        "message": "ready",
        "checks": {"database": "ok", "schema": "ok", "worker 0": "ok", "worker 1": "ok"},
    }
    assert httpx.head(f"{probed.http_url}/readyz").status_code == 200


def test_other_methods_are_refused_with_allow(probed: Stack) -> None:
    for path in ("/healthz", "/readyz"):
        refused = httpx.post(f"{probed.http_url}{path}")
        assert refused.status_code == 405
        assert refused.headers["allow"] == "GET, HEAD"


def test_probes_are_not_rate_limited(probed: Stack) -> None:
    """Once this address's budget is spent (the API answers 429), probes
    from it still pass, many a second: no budget counts them."""
    with httpx.Client(base_url=probed.http_url, timeout=30) as client:
        for _ in range(100):
            if client.get("/api/v1/processes").status_code == 429:
                break
        else:
            pytest.fail("the API never answered 429: the budgets are not as this test set them")
        for _ in range(10):
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 200, client.get("/readyz").text


def test_the_grpc_health_service_still_answers(probed: Stack) -> None:
    with grpc.insecure_channel(probed.envoy_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(), timeout=30)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_a_worker_that_does_not_answer_is_named_until_it_does(probed: Stack) -> None:
    worker = probed.workers()[1]
    worker.send_signal(signal.SIGSTOP)
    try:
        body = readiness_until(probed, 503)
    finally:
        worker.send_signal(signal.SIGCONT)
    checks = body["checks"]
    assert isinstance(checks, dict)
    assert str(checks["worker 1"]).startswith("not answering"), body
    assert checks["worker 0"] == checks["database"] == "ok", body
    assert body["status"] == "not ready"
    assert f"worker 1: {checks['worker 1']}" in str(body["message"])
    assert json.dumps(readiness_until(probed, 200)["checks"]).count('"ok"') == 4
