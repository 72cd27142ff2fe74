"""Traces end to end: a stack with OTEL_EXPORTER_OTLP_ENDPOINT set exports
to a receiver this module starts, and each request is one trace: Envoy's
span, the worker's RPC span its child, and a span per SQL statement the
RPC's children, in the caller's trace when it sent a `traceparent`."""

import secrets
from collections.abc import Callable, Iterator

import grpc
import httpx
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from tests.support.orgs import Org
from tests.support.otlp import ReceivedSpan, Receiver, otlp_receiver
from tests.support.stack import Stack, free_port, running_stack

SERVICE = "htk.processes.v1.ProcessService"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with otlp_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Stack]:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_SERVICE_NAME": "htk-under-test",
        # The SDK's own variable: the workers send their spans every 200 ms
        # rather than every 5 s, so the module waits less.
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    with running_stack(tmp_path_factory.mktemp("traced"), env=env) as stack:
        yield stack


@pytest.fixture(scope="module")
def org(traced: Stack) -> Org:
    return traced.new_org()


@pytest.fixture(scope="module")
def process_id(traced: Stack, org: Org) -> str:
    response = httpx.post(
        f"{traced.http_url}/api/v1/processes",
        headers=org.auth(),
        json={
            "namespace": "traces",
            "name": "Traced",
            "step_defs": [{"key": "build", "label": "Build"}],
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["process_id"])


def caller_traceparent(*, sampled: bool = True) -> tuple[str, str, str]:
    """A W3C `traceparent` of a caller's own span: (header, trace id, span id)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}", trace_id, span_id


def is_envoys(span: ReceivedSpan) -> bool:
    return span.attributes.get("component") == "proxy"


def one_request(
    receiver: Receiver,
    envoys_span: Callable[[ReceivedSpan], bool],
    method: str,
    code: grpc.StatusCode = grpc.StatusCode.OK,
) -> tuple[ReceivedSpan, ReceivedSpan, list[ReceivedSpan]]:
    """Envoy's span of the one request `envoys_span` picks, the worker's RPC
    span under it (ending with `code`), and the SQL spans under that, once
    all have arrived; fails unless every span of the trace is one of them,
    rightly parented."""

    def layers(spans: list[ReceivedSpan]) -> tuple[ReceivedSpan, ReceivedSpan] | None:
        envoy = [span for span in spans if is_envoys(span) and envoys_span(span)]
        if not envoy:
            return None
        assert len(envoy) == 1, envoy
        rpc = [span for span in spans if span.parent_span_id == envoy[0].span_id]
        return (envoy[0], rpc[0]) if rpc else None

    # The RPC span ends after its statements': once it is in, they are.
    spans = receiver.wait_for(lambda spans: layers(spans) is not None)
    found = layers(spans)
    assert found is not None
    envoy, rpc = found
    assert rpc.span.name == f"{SERVICE}/{method}"
    assert rpc.attributes["rpc.method"] == method
    assert rpc.attributes["rpc.grpc.status_code"] == code.value[0]
    assert {envoy.service, rpc.service} == {"htk-under-test"}
    statements = [span for span in spans if span.parent_span_id == rpc.span_id]
    assert statements, f"no SQL span under {rpc}"
    assert all(span.attributes["db.system.name"] == "postgresql" for span in statements)
    trace = {span.span_id for span in spans if span.trace_id == envoy.trace_id}
    assert trace == {envoy.span_id, rpc.span_id, *(span.span_id for span in statements)}
    assert {rpc.trace_id, *(span.trace_id for span in statements)} == {envoy.trace_id}
    return envoy, rpc, statements


def test_a_rest_request_is_one_trace_from_envoy_through_the_rpc_to_its_statements(
    traced: Stack, receiver: Receiver, org: Org, process_id: str
) -> None:
    response = httpx.get(f"{traced.http_url}/api/v1/processes/{process_id}", headers=org.auth())
    assert response.status_code == 200

    envoy, _, statements = one_request(
        receiver,
        lambda span: str(span.attributes.get("http.url", "")).endswith(process_id),
        "GetProcess",
    )
    # Envoy started the trace: it has no parent.
    assert envoy.parent_span_id == ""
    # GetProcess reads the process by a prepared statement on the raw psycopg connection.
    assert any("FROM processes" in str(span.attributes["db.query.text"]) for span in statements)


def test_a_rest_request_with_a_traceparent_stays_in_the_callers_trace(
    traced: Stack, receiver: Receiver, org: Org, process_id: str
) -> None:
    traceparent, trace_id, parent = caller_traceparent()
    response = httpx.post(
        f"{traced.http_url}/api/v1/processes/{process_id}/update",
        headers=org.auth() | {"traceparent": traceparent},
        json={"type": "step_started", "step": "build"},
    )
    assert response.status_code == 200, response.text

    envoy, _, statements = one_request(
        receiver, lambda span: span.trace_id == trace_id, "UpdateProcess"
    )
    assert envoy.parent_span_id == parent
    # An update's statements go to PostgreSQL in one pipelined round trip.
    assert len(statements) > 1


def test_a_grpc_call_with_a_traceparent_stays_in_the_callers_trace(
    traced: Stack, receiver: Receiver, org: Org, process_id: str
) -> None:
    traceparent, trace_id, parent = caller_traceparent()
    with grpc.insecure_channel(traced.envoy_target) as channel:
        pb_grpc.ProcessServiceStub(channel).GetProcess(
            pb.GetProcessRequest(process_id=process_id),
            metadata=(*org.metadata(), ("traceparent", traceparent)),
        )

    envoy, _, _ = one_request(receiver, lambda span: span.trace_id == trace_id, "GetProcess")
    assert envoy.parent_span_id == parent


def test_a_grpc_call_without_a_traceparent_is_a_trace_of_its_own(
    traced: Stack, receiver: Receiver, org: Org, process_id: str
) -> None:
    # The only ListProcessEvents of this module: its span is told apart by its path.
    with grpc.insecure_channel(traced.envoy_target) as channel:
        pb_grpc.ProcessServiceStub(channel).ListProcessEvents(
            pb.ListProcessEventsRequest(process_id=process_id), metadata=org.metadata()
        )

    envoy, _, _ = one_request(
        receiver,
        lambda span: span.attributes.get("grpc.path") == f"/{SERVICE}/ListProcessEvents",
        "ListProcessEvents",
    )
    assert envoy.parent_span_id == ""


def test_a_request_its_caller_did_not_sample_is_not_traced(
    traced: Stack, receiver: Receiver, org: Org, process_id: str
) -> None:
    unsampled, unsampled_trace, _ = caller_traceparent(sampled=False)
    sampled, sampled_trace, _ = caller_traceparent()
    url = f"{traced.http_url}/api/v1/processes/{process_id}"
    for traceparent in (unsampled, sampled):
        response = httpx.get(url, headers=org.auth() | {"traceparent": traceparent})
        assert response.status_code == 200
    # The request after it is traced; by then none of its own spans has come.
    one_request(receiver, lambda span: span.trace_id == sampled_trace, "GetProcess")
    assert [span for span in receiver.spans if span.trace_id == unsampled_trace] == []


def test_a_callers_mistake_is_in_the_rpc_span_and_no_error_of_the_server(
    traced: Stack, receiver: Receiver, org: Org
) -> None:
    traceparent, trace_id, _ = caller_traceparent()
    with grpc.insecure_channel(traced.envoy_target) as channel, pytest.raises(grpc.RpcError):
        pb_grpc.ProcessServiceStub(channel).GetProcess(
            pb.GetProcessRequest(process_id="00000000-0000-4000-8000-000000000000"),
            metadata=(*org.metadata(), ("traceparent", traceparent)),
        )

    _, rpc, _ = one_request(
        receiver, lambda span: span.trace_id == trace_id, "GetProcess", grpc.StatusCode.NOT_FOUND
    )
    # OpenTelemetry's status stays unset: only the server's faults are errors.
    assert rpc.span.status.code == rpc.span.status.STATUS_CODE_UNSET


def test_a_watch_stream_is_one_span_however_many_messages_it_sends(
    traced: Stack, receiver: Receiver, org: Org
) -> None:
    with grpc.insecure_channel(traced.envoy_target) as channel:
        stub = pb_grpc.ProcessServiceStub(channel)
        process = stub.CreateProcess(
            pb.CreateProcessRequest(
                namespace="traces",
                name="Watched",
                step_defs=[pb.StepDef(key="build", label="Build")],
            ),
            metadata=org.metadata(),
        )
        for update in (
            pb.UpdateProcessRequest(type="step_started", step="build"),
            pb.UpdateProcessRequest(type="step_completed", step="build"),
            pb.UpdateProcessRequest(type="completed"),
        ):
            update.process_id = process.process_id
            stub.UpdateProcess(update, metadata=org.metadata())
        traceparent, trace_id, _ = caller_traceparent()
        # A finished process's stream: its events, then the end.
        messages = list(
            stub.WatchProcess(
                pb.WatchProcessRequest(process_id=process.process_id, after_seq=0),
                metadata=(*org.metadata(), ("traceparent", traceparent)),
            )
        )
    assert len(messages) >= 3

    one_request(receiver, lambda span: span.trace_id == trace_id, "WatchProcess")


def test_health_probes_make_no_traces(traced: Stack, receiver: Receiver, org: Org) -> None:
    """`htk run` and the tests probe the stack's health through Envoy, every
    worker's before the stack is up: a request after them is traced, and
    they never were."""
    traceparent, trace_id, _ = caller_traceparent()
    response = httpx.get(
        f"{traced.http_url}/api/v1/caller", headers=org.auth() | {"traceparent": traceparent}
    )
    assert response.status_code == 200
    receiver.wait_for(lambda spans: any(span.trace_id == trace_id for span in spans))
    probes = [span for span in receiver.spans if "grpc.health" in str(span.attributes)]
    assert probes == []


def test_requests_are_served_while_the_collector_is_down(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Spans are sent in the background: a collector that is down (nothing
    listens at the endpoint) loses them, never a request."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    with running_stack(tmp_path_factory.mktemp("collector-down"), env=env) as stack:
        org = stack.new_org()
        traceparent, _, _ = caller_traceparent()
        with httpx.Client(base_url=stack.http_url, headers=org.auth(), timeout=30) as rest:
            for headers in ({}, {"traceparent": traceparent}):
                response = rest.post(
                    "/api/v1/processes",
                    headers=headers,
                    json={
                        "namespace": "traces",
                        "name": "Untraced",
                        "step_defs": [{"key": "build", "label": "Build"}],
                    },
                )
                assert response.status_code == 200, response.text
                process_id = response.json()["process_id"]
                assert rest.get(f"/api/v1/processes/{process_id}").status_code == 200
