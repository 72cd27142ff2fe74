"""`/metrics`: the counts move with the calls, over REST and gRPC; the gauges
follow the stack's state; Envoy's statistics come in the same scrape; and a
real Prometheus server scrapes it and computes a rate."""

import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc
from tests.support.metrics import Scrape
from tests.support.orgs import Org
from tests.support.stack import Stack, free_port

SERVICE = "htk.processes.v1.ProcessService"
# The gauges are sampled each second; a loaded machine may take a few.
SETTLE_SECONDS = 30.0


def _until(condition: str, check: Callable[[], bool], timeout: float = SETTLE_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {condition}")
        time.sleep(0.2)


def test_calls_are_counted_by_method_and_code_over_rest_and_grpc(
    stack: Stack, org: Org, grpc_stub: process_service_pb2_grpc.ProcessServiceStub
) -> None:
    before = Scrape(stack)
    missing = str(uuid.uuid4())
    headers = {"Authorization": f"Bearer {org.reader}"}
    for _ in range(3):
        response = httpx.get(f"{stack.http_url}/api/v1/processes/{missing}", headers=headers)
        assert response.status_code == 404
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as refused:
            grpc_stub.GetProcess(
                pb.GetProcessRequest(process_id=missing),
                metadata=(("authorization", f"Bearer {org.reader}"),),
            )
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    response = httpx.get(f"{stack.http_url}/api/v1/processes", headers=headers)
    assert response.status_code == 200
    after = Scrape(stack)

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    get = {"service": SERVICE, "method": "GetProcess"}
    assert moved("htk_rpc_requests_total", **get, code="NOT_FOUND") == 5
    assert moved("htk_rpc_requests_total", **get, code="OK") == 0
    assert moved("htk_rpc_requests_total", service=SERVICE, method="ListProcesses") == 1
    assert moved("htk_rpc_duration_seconds_count", **get) == 5
    assert moved("htk_rpc_duration_seconds_bucket", **get, le="+Inf") == 5
    assert moved("htk_rpc_duration_seconds_sum", **get) > 0
    # Every call authenticates its token once, from the cache or by a lookup.
    assert moved("htk_token_cache_requests_total") == 6
    assert moved("htk_db_query_duration_seconds_count") >= 6
    assert after.value("htk_rpc_in_flight", **get) == 0


def test_a_call_without_a_token_is_counted_as_unauthenticated(stack: Stack) -> None:
    before = Scrape(stack)
    response = httpx.get(f"{stack.http_url}/api/v1/processes")
    assert response.status_code == 401
    after = Scrape(stack)
    labels = {"service": SERVICE, "method": "ListProcesses", "code": "UNAUTHENTICATED"}
    assert (
        after.value("htk_rpc_requests_total", **labels)
        - before.value("htk_rpc_requests_total", **labels)
        == 1
    )


def test_the_gauges_follow_the_stack(stack: Stack, org: Org) -> None:
    workers = int(stack.env.get("HTK_WORKERS") or len(stack.workers()))
    scrape = Scrape(stack)
    assert scrape.value("htk_notification_listener_up") == 1
    assert scrape.value("htk_db_pool_max_connections") == workers * 10
    assert 0 <= scrape.value("htk_deadline_scan_lag_seconds") < SETTLE_SECONDS
    created = httpx.post(
        f"{stack.http_url}/api/v1/processes",
        headers={"Authorization": f"Bearer {org.writer}"},
        json={"namespace": "metrics", "name": "Watched", "step_defs": [{"key": "a", "label": "A"}]},
    )
    assert created.status_code == 200, created.text
    process_id = created.json()["process_id"]
    watch = {"service": SERVICE, "method": "WatchProcess"}
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "GET",
            f"{stack.http_url}/api/v1/processes/{process_id}/watch",
            headers={"Authorization": f"Bearer {org.reader}"},
        ) as stream,
    ):
        assert stream.status_code == 200
        # Kept: a dropped line iterator would close the stream.
        lines = stream.iter_lines()
        assert next(lines).startswith("data:")
        _until("one watch stream shows", lambda: Scrape(stack).value("htk_watch_streams") == 1)
        assert Scrape(stack).value("htk_rpc_in_flight", **watch) == 1
    _until("no watch stream shows", lambda: Scrape(stack).value("htk_watch_streams") == 0)
    _until("no watch is in flight", lambda: Scrape(stack).value("htk_rpc_in_flight", **watch) == 0)


def test_envoys_statistics_come_in_the_same_scrape(stack: Stack) -> None:
    scrape = Scrape(stack)
    assert scrape.value("envoy_server_live") == 1
    assert scrape.value("envoy_http_downstream_rq_total", envoy_http_conn_manager_prefix="api") > 0


def test_other_paths_are_not_found(stack: Stack) -> None:
    response = httpx.get(stack.metrics_url.removesuffix("/metrics") + "/other")
    assert response.status_code == 404


@pytest.fixture
def prometheus(stack: Stack, tmp_path: Path) -> Iterator[str]:
    """A Prometheus server scraping the stack every second; yields its URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("Prometheus is missing: `make setup` installs Debian's `prometheus`")
    target = stack.metrics_url.removeprefix("http://").removesuffix("/metrics")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: htk\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    url = f"http://127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address={url.removeprefix('http://')}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    try:
        yield url
    finally:
        process.terminate()
        process.wait(30)


def _query(prometheus: str, promql: str) -> float | None:
    """The single value of an instant query, None while it has none."""
    try:
        response = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=10)
    except httpx.TransportError:  # not listening yet
        return None
    results = response.json()["data"]["result"] if response.status_code == 200 else []
    return float(results[0]["value"][1]) if results else None


def test_a_prometheus_server_scrapes_the_stack_and_computes_a_rate(
    stack: Stack, org: Org, prometheus: str
) -> None:
    headers = {"Authorization": f"Bearer {org.reader}"}
    rate = 'sum(rate(htk_rpc_requests_total{method="ListProcesses",code="OK"}[10s]))'
    deadline = time.monotonic() + 120
    # Calls keep coming until Prometheus has two scrapes apart that saw them.
    while not (_query(prometheus, rate) or 0) > 0:
        assert time.monotonic() < deadline, "Prometheus computed no positive rate"
        response = httpx.get(f"{stack.http_url}/api/v1/processes", headers=headers)
        assert response.status_code == 200
        time.sleep(0.2)
    assert _query(prometheus, 'up{job="htk"}') == 1
    # Prometheus stores what /metrics says: once the calls stop, its latest
    # sample catches up with a direct scrape's exact count.
    total = 'sum(htk_rpc_requests_total{method="ListProcesses",code="OK"})'
    direct = Scrape(stack).value(
        "htk_rpc_requests_total", service=SERVICE, method="ListProcesses", code="OK"
    )
    _until("Prometheus has the exact count", lambda: _query(prometheus, total) == direct)
    assert _query(prometheus, "max(envoy_server_live)") == 1
