"""ProcessService end to end over native gRPC: generated stubs against the real
stack, through Envoy unless a test says otherwise.

The event log, rejected updates and concurrent updates are tested in
test_concurrency.py, which reuses the helpers defined here.
"""

import math
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

import grpc
import pytest
from google.protobuf import descriptor_pb2, message, struct_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from server.domain.tokens import generate_token
from tests.support.orgs import Org
from tests.support.stack import Stack
from tests.support.tokens import created_token, revoke_token

Stub = pb_grpc.ProcessServiceStub
UpdateReq = pb.UpdateProcessRequest
ListReq = pb.ListProcessesRequest
SERVICE = "htk.processes.v1.ProcessService"
STEPS = (
    pb.StepDef(key="build", label="Build"),
    pb.StepDef(key="approve", label="Approve release", human=True),
    pb.StepDef(key="deploy", label="Deploy"),
)
WRITE_DENIED = "this call needs a token with the scope processes:write or tasks:create"
METHOD_TAKING = {
    method.input_type.full_name: method.name
    for method in pb.DESCRIPTOR.services_by_name["ProcessService"].methods
}

# --- helpers -----------------------------------------------------------------


def create_request(**overrides: Any) -> pb.CreateProcessRequest:
    fields = {"namespace": "deployments", "name": "Deploy v2.1.0", "step_defs": STEPS}
    return pb.CreateProcessRequest(**(fields | overrides))


def create(stub: Stub, org: Org, **overrides: Any) -> pb.Process:
    return stub.CreateProcess(create_request(**overrides), metadata=org.metadata())


def update(
    stub: Stub, org: Org, process_id: str, kind: str, **fields: Any
) -> pb.UpdateProcessResponse:
    """Sends an update of type `kind`; a `data` dict is sent as a Struct."""
    if "data" in fields:
        fields["data"] = struct(fields["data"])
    request = UpdateReq(process_id=process_id, type=kind, **fields)
    return stub.UpdateProcess(request, metadata=org.metadata())


def invoke(stub: Stub, request: message.Message, org: Org) -> Any:
    """Calls the ProcessService method that takes `request`."""
    return getattr(stub, METHOD_TAKING[request.DESCRIPTOR.full_name])(
        request, metadata=org.metadata()
    )


def get(stub: Stub, org: Org, process_id: str) -> pb.Process:
    return stub.GetProcess(pb.GetProcessRequest(process_id=process_id), metadata=org.metadata())


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(values)
    return result


def set_fields(msg: message.Message) -> list[str]:
    """The names of the fields present in the message, in field-number order."""
    return [field.name for field, _ in msg.ListFields()]


def rpc_error(code: grpc.StatusCode, call: Callable[[], object]) -> grpc.Call:
    """Makes the call, which must fail with `code`, and returns the failed call."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = cast(grpc.Call, caught.value)
    assert error.code() == code, error.details()
    return error


def assert_invalid_argument(error: grpc.Call, field: str) -> None:
    """INVALID_ARGUMENT naming `field` in its message and in its one BadRequest violation."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    named, _, problem = error.details().partition(": ")
    assert named == field, error.details()
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in the trailers"
    (detail,) = status.details
    bad_request = error_details_pb2.BadRequest()
    assert detail.Unpack(bad_request)
    violations = [(v.field, v.description) for v in bad_request.field_violations]
    assert violations == [(field, problem)]


@pytest.fixture(scope="module")
def shared_org(stack: Stack) -> Org:
    """An org for tests that need no empty org (a token costs a CLI run)."""
    return stack.new_org()


@pytest.fixture(scope="module")
def other_org(stack: Stack) -> Org:
    return stack.new_org("other")


@pytest.fixture(scope="module")
def server_stub(stack: Stack) -> Iterator[Stub]:
    """A stub calling the gRPC server directly, bypassing Envoy."""
    with grpc.insecure_channel(stack.server_target) as channel:
        yield Stub(channel)


@pytest.fixture(params=["envoy", "server"])
def any_stub(request: pytest.FixtureRequest) -> Stub:
    """Runs the test once through Envoy and once against the gRPC server itself."""
    name = "grpc_stub" if request.param == "envoy" else "server_stub"
    return cast(Stub, request.getfixturevalue(name))


# --- round trips ---------------------------------------------------------------


def test_create_get_and_list_round_trip(any_stub: Stub, org: Org) -> None:
    before = time.time()
    created = create(any_stub, org)

    uuid.UUID(created.process_id)
    assert (created.namespace, created.name, created.status) == (
        f"{org.org_id}.deployments",
        "Deploy v2.1.0",
        "running",
    )
    # No current_step, finished_at, summary or error yet.
    assert set_fields(created) == [
        "process_id", "namespace", "name", "status", "step_defs", "timeline", "task_ids",
        "started_at", "created_by",
    ]  # fmt: skip
    assert before - 1 <= created.started_at.ToDatetime().timestamp() <= time.time() + 1
    assert list(created.step_defs) == list(STEPS)
    build, approve, deploy = created.timeline
    assert build == pb.TimelineEntry(step="build", label="Build", status="pending")
    assert deploy == pb.TimelineEntry(step="deploy", label="Deploy", status="pending")
    assert set_fields(approve) == ["step", "label", "status", "human", "task_id"]
    assert (approve.label, approve.status, approve.human) == ("Approve release", "pending", True)
    assert list(created.task_ids) == [str(uuid.UUID(approve.task_id))]

    assert get(any_stub, org, created.process_id) == created
    listed = any_stub.ListProcesses(ListReq(), metadata=org.metadata(org.reader))
    summary = pb.ProcessSummary(
        process_id=created.process_id,
        namespace=created.namespace,
        name=created.name,
        status="running",
        started_at=created.started_at,
        step_count=3,
        task_ids=created.task_ids,
        created_by=created.created_by,
    )
    assert listed == pb.ListProcessesResponse(processes=[summary], total=1, limit=50, offset=0)
    assert not listed.processes[0].HasField("current_step")


def test_a_process_runs_to_completion(any_stub: Stub, org: Org) -> None:
    process_id = create(any_stub, org).process_id

    def timeline(position: int) -> pb.TimelineEntry:
        return get(any_stub, org, process_id).timeline[position]

    started = update(any_stub, org, process_id, "step_started", step="build", detail="runner 7")
    assert (started.process_id, started.update_type) == (process_id, "step_started")
    update(any_stub, org, process_id, "progress", step="build", message="Compiling", percent=40)
    update(any_stub, org, process_id, "progress", step="build", percent=60)
    assert get(any_stub, org, process_id).current_step == "build"
    assert timeline(0) == pb.TimelineEntry(
        step="build",
        label="Build",
        status="running",
        started_at=started.timestamp,
        detail="runner 7",
        progress_message="Compiling",
        progress_percent=60,
    )

    data = {"image_tag": "v2.1.0", "replicas": 3}
    done = update(any_stub, org, process_id, "step_completed", step="build", data=data)
    assert timeline(0) == pb.TimelineEntry(
        step="build",
        label="Build",
        status="completed",
        started_at=started.timestamp,
        completed_at=done.timestamp,
        duration_ms=done.timestamp.ToMilliseconds() - started.timestamp.ToMilliseconds(),
        detail="runner 7",
        data=struct(data),
    )

    # A step failed without a start counts as started then; it may run again.
    failed = update(any_stub, org, process_id, "step_failed", step="approve", error="rejected")
    assert get(any_stub, org, process_id).current_step == "approve"
    approve = timeline(1)
    assert set_fields(approve) == [
        "step", "label", "status", "human", "task_id", "started_at", "completed_at",
        "duration_ms", "error",
    ]  # fmt: skip
    assert (approve.status, approve.started_at) == ("failed", failed.timestamp)
    assert (approve.completed_at, approve.duration_ms) == (failed.timestamp, 0)
    assert approve.error == "rejected"
    restarted = update(any_stub, org, process_id, "step_started", step="approve")
    approve = timeline(1)
    assert set_fields(approve) == ["step", "label", "status", "human", "task_id", "started_at"]
    assert (approve.status, approve.started_at) == ("running", restarted.timestamp)

    # A failed step keeps its progress; running it again clears progress and error.
    deploying = update(any_stub, org, process_id, "step_started", step="deploy")
    assert get(any_stub, org, process_id).current_step == "deploy"  # the latest started
    update(any_stub, org, process_id, "progress", step="deploy", message="3/10", percent=30)
    deploy_failed = update(any_stub, org, process_id, "step_failed", step="deploy", error="timeout")
    assert get(any_stub, org, process_id).current_step == "approve"  # the one still running
    assert timeline(2) == pb.TimelineEntry(
        step="deploy",
        label="Deploy",
        status="failed",
        started_at=deploying.timestamp,
        completed_at=deploy_failed.timestamp,
        duration_ms=deploy_failed.timestamp.ToMilliseconds() - deploying.timestamp.ToMilliseconds(),
        progress_message="3/10",
        progress_percent=30,
        error="timeout",
    )
    redeploying = update(any_stub, org, process_id, "step_started", step="deploy")
    assert timeline(2) == pb.TimelineEntry(
        step="deploy", label="Deploy", status="running", started_at=redeploying.timestamp
    )
    update(any_stub, org, process_id, "step_completed", step="deploy")
    assert get(any_stub, org, process_id).current_step == "approve"

    finished = update(any_stub, org, process_id, "completed", summary="v2.1.0 is live")
    assert finished.update_type == "completed"
    process = get(any_stub, org, process_id)
    assert (process.status, process.summary, process.finished_at) == (
        "completed",
        "v2.1.0 is live",
        finished.timestamp,
    )
    assert not process.HasField("error")
    (summary,) = any_stub.ListProcesses(ListReq(), metadata=org.metadata()).processes
    assert (summary.status, summary.current_step) == ("completed", "approve")


def test_a_failed_process_keeps_its_error(grpc_stub: Stub, org: Org) -> None:
    process_id = create(grpc_stub, org).process_id
    finished = update(grpc_stub, org, process_id, "failed", error="cluster unreachable")
    process = get(grpc_stub, org, process_id)
    assert (process.status, process.error, process.finished_at) == (
        "failed",
        "cluster unreachable",
        finished.timestamp,
    )
    assert not process.HasField("summary")
    assert not process.HasField("current_step")


BACKUP = r"Backup C:\data"  # a backslash, which `search` matches literally


@pytest.fixture(scope="module")
def catalog(stack: Stack, grpc_stub: Stub) -> Org:
    """An org with four processes, started in this order a few milliseconds apart."""
    org = stack.new_org()
    for name, namespace in [
        ("Deploy 100%", "deployments"),
        ("deploy 1000", "deployments"),
        ("Deploy 1_0", "deployments"),
        (BACKUP, "backups"),
    ]:
        process = create(grpc_stub, org, name=name, namespace=namespace)
        if name == "deploy 1000":
            update(grpc_stub, org, process.process_id, "completed")
        time.sleep(0.003)
    return org


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, [BACKUP, "Deploy 1_0", "deploy 1000", "Deploy 100%"]),
        ({"sort": "newest"}, [BACKUP, "Deploy 1_0", "deploy 1000", "Deploy 100%"]),
        ({"sort": "oldest"}, ["Deploy 100%", "deploy 1000", "Deploy 1_0", BACKUP]),
        ({"status": "completed"}, ["deploy 1000"]),
        ({"status": "running", "sort": "oldest"}, ["Deploy 100%", "Deploy 1_0", BACKUP]),
        ({"namespace": "backups"}, [BACKUP]),
        ({"namespace": "{org}.deployments"}, ["Deploy 1_0", "deploy 1000", "Deploy 100%"]),
        ({"search": "DEPLOY 10"}, ["deploy 1000", "Deploy 100%"]),
        ({"search": "100%"}, ["Deploy 100%"]),
        ({"search": "1_0"}, ["Deploy 1_0"]),
        ({"search": "\\"}, [BACKUP]),
        ({"search": "deploy", "status": "running"}, ["Deploy 1_0", "Deploy 100%"]),
        ({"search": "nothing like it"}, []),
    ],
    ids=repr,
)
def test_list_filters_and_sorts(
    grpc_stub: Stub, catalog: Org, query: dict[str, Any], expected: list[str]
) -> None:
    request = ListReq(**query)
    request.namespace = request.namespace.format(org=catalog.org_id)
    listed = grpc_stub.ListProcesses(request, metadata=catalog.metadata(catalog.reader))
    assert [summary.name for summary in listed.processes] == expected
    assert (listed.total, listed.limit, listed.offset) == (len(expected), 50, 0)


def test_list_pages_without_repeats_or_gaps(grpc_stub: Stub, org: Org) -> None:
    created = [create(grpc_stub, org, name=f"Run {index}") for index in range(7)]
    # Start times may tie at the millisecond; the process id breaks ties.
    newest_first = sorted(
        created, key=lambda p: (p.started_at.ToMilliseconds(), p.process_id), reverse=True
    )

    pages = [
        grpc_stub.ListProcesses(ListReq(limit=3, offset=offset), metadata=org.metadata())
        for offset in (0, 3, 6)
    ]
    assert [(page.total, page.limit, page.offset, len(page.processes)) for page in pages] == [
        (7, 3, 0, 3), (7, 3, 3, 3), (7, 3, 6, 1)
    ]  # fmt: skip
    listed = [summary.process_id for page in pages for summary in page.processes]
    assert listed == [process.process_id for process in newest_first]


def test_list_shows_only_the_callers_processes(grpc_stub: Stub, org: Org, other_org: Org) -> None:
    mine = create(grpc_stub, org)
    create(grpc_stub, other_org)
    for query in (ListReq(), ListReq(search="Deploy v2.1.0")):
        listed = grpc_stub.ListProcesses(query, metadata=org.metadata())
        assert [summary.process_id for summary in listed.processes] == [mine.process_id]
        assert listed.total == 1


# --- health and reflection -----------------------------------------------------


@pytest.mark.parametrize("target", ["envoy_target", "server_target"])
def test_health_check_reports_serving_without_a_token(stack: Stack, target: str) -> None:
    with grpc.insecure_channel(getattr(stack, target)) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE):
            response = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        unknown = health_pb2.HealthCheckRequest(service="no.such.Service")
        rpc_error(grpc.StatusCode.NOT_FOUND, lambda: health.Check(unknown))


@pytest.mark.parametrize("target", ["envoy_target", "server_target"])
def test_reflection_describes_the_service(stack: Stack, target: str) -> None:
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
    ]
    with grpc.insecure_channel(getattr(stack, target)) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        listed, described = reflection.ServerReflectionInfo(iter(requests))

    assert {service.name for service in listed.list_services_response.service} == {
        SERVICE,
        "htk.processes.v1.TaskService",
        "htk.processes.v1.TrustService",
        "htk.processes.v1.SignInService",
        "htk.processes.v1.WebhookService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    file = descriptor_pb2.FileDescriptorProto.FromString(
        described.file_descriptor_response.file_descriptor_proto[0]
    )
    assert file.name == "htk/processes/v1/process_service.proto"
    assert [method.name for method in file.service[0].method] == [
        "ListProcesses", "GetProcess", "CreateProcess", "UpdateProcess", "CancelProcess",
        "ListProcessEvents", "WatchProcess", "WatchProcesses", "GetCaller",
    ]  # fmt: skip


# --- authentication and authorization --------------------------------------------

# A valid request of each method, for a given process id where it takes one.
REQUESTS: dict[str, Callable[[str], message.Message]] = {
    "ListProcesses": lambda _: ListReq(),
    "GetProcess": lambda process_id: pb.GetProcessRequest(process_id=process_id),
    "CreateProcess": lambda _: create_request(),
    "UpdateProcess": lambda process_id: UpdateReq(process_id=process_id, type="completed"),
}


@pytest.mark.parametrize("method", REQUESTS)
@pytest.mark.parametrize(
    ("authorization", "problem"),
    [
        (None, "missing token: send the header 'Authorization: Bearer htk_...'"),
        ("Basic abc", "malformed Authorization header: expected 'Bearer htk_...'"),
        ("Bearer htk_123", "malformed token: not an htk token"),
        (f"Bearer {generate_token()}", "invalid token: unknown or revoked"),
    ],
    ids=["missing", "not bearer", "malformed", "unknown"],
)
def test_every_method_needs_a_valid_token(
    grpc_stub: Stub, method: str, authorization: str | None, problem: str
) -> None:
    metadata = [("authorization", authorization)] if authorization else []
    request = REQUESTS[method](str(uuid.uuid4()))
    call = getattr(grpc_stub, method)
    error = rpc_error(grpc.StatusCode.UNAUTHENTICATED, lambda: call(request, metadata=metadata))
    assert error.details() == problem


def test_a_revoked_token_is_refused(grpc_stub: Stub, stack: Stack) -> None:
    org_id = f"org-{uuid.uuid4().hex[:12]}"
    token_id, token = created_token(stack.env, org_id)
    org = Org(org_id=org_id, writer=token, reader="")
    assert create(grpc_stub, org).status == "running"
    revoke_token(stack.env, token_id)

    error = rpc_error(grpc.StatusCode.UNAUTHENTICATED, lambda: create(grpc_stub, org))
    assert error.details() == "invalid token: unknown or revoked"


def test_a_read_only_token_reads_but_cannot_write(grpc_stub: Stub, org: Org) -> None:
    process = create(grpc_stub, org)
    reader = Org(org_id=org.org_id, writer=org.reader, reader=org.reader)  # reader by default
    assert get(grpc_stub, reader, process.process_id) == process

    for write in (
        lambda: create(grpc_stub, reader),
        lambda: update(grpc_stub, reader, process.process_id, "completed"),
    ):
        assert rpc_error(grpc.StatusCode.PERMISSION_DENIED, write).details() == WRITE_DENIED
    assert get(grpc_stub, org, process.process_id) == process
    assert grpc_stub.ListProcesses(ListReq(), metadata=org.metadata()).total == 1


def test_the_tasks_create_scope_may_write(grpc_stub: Stub, stack: Stack, org: Org) -> None:
    tasks = Org(org_id=org.org_id, writer=stack.token(org.org_id, "tasks:create"), reader="")
    process_id = create(grpc_stub, tasks).process_id
    assert update(grpc_stub, tasks, process_id, "completed").update_type == "completed"
    assert get(grpc_stub, org, process_id).status == "completed"


# --- not found and invalid arguments ---------------------------------------------


@pytest.mark.parametrize("method", ["GetProcess", "UpdateProcess"])
def test_a_process_outside_the_org_is_not_found(
    grpc_stub: Stub, shared_org: Org, other_org: Org, method: str
) -> None:
    theirs = create(grpc_stub, other_org)

    def details(process_id: str) -> str:
        request = REQUESTS[method](process_id)
        error = rpc_error(grpc.StatusCode.NOT_FOUND, lambda: invoke(grpc_stub, request, shared_org))
        return error.details()

    missing = str(uuid.uuid4())
    assert details(missing) == f"process {missing} not found"
    assert details(theirs.process_id) == f"process {theirs.process_id} not found"
    assert details("not-a-uuid") == "process 'not-a-uuid' not found"
    assert get(grpc_stub, other_org, theirs.process_id) == theirs


@pytest.mark.parametrize("method", ["CreateProcess", "ListProcesses"])
def test_another_orgs_namespace_is_rejected(
    grpc_stub: Stub, shared_org: Org, other_org: Org, method: str
) -> None:
    namespace = f"{other_org.org_id}.ns-{uuid.uuid4().hex[:8]}"
    request = (
        create_request(namespace=namespace)
        if method == "CreateProcess"
        else ListReq(namespace=namespace)
    )
    error = rpc_error(
        grpc.StatusCode.INVALID_ARGUMENT, lambda: invoke(grpc_stub, request, shared_org)
    )
    assert_invalid_argument(error, "namespace")
    assert error.details() == (
        f"namespace: {namespace!r} is outside your organization; "
        f"use {shared_org.org_id}.<name> or a bare <name>"
    )
    theirs = ListReq(namespace=namespace)
    assert grpc_stub.ListProcesses(theirs, metadata=other_org.metadata()).total == 0


def progress(**fields: Any) -> pb.UpdateProcessRequest:
    return UpdateReq(type="progress", step="build", **fields)


KEY_ONLY = pb.StepDef(key="a")


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        pytest.param(UpdateReq(type="paused"), "type", id="unknown type"),
        pytest.param(UpdateReq(), "type", id="no type"),
        pytest.param(progress(percent=101), "percent", id="percent 101"),
        pytest.param(progress(percent=-1), "percent", id="percent -1"),
        pytest.param(UpdateReq(type="progress", step="nope", percent=1), "step", id="unknown step"),
        pytest.param(UpdateReq(type="progress", percent=1), "step", id="no step"),
        pytest.param(progress(), "message", id="empty progress"),
        pytest.param(UpdateReq(type="step_failed", step="build"), "error", id="no error"),
        pytest.param(UpdateReq(type="completed", error="x"), "error", id="inapplicable field"),
        pytest.param(ListReq(limit=0), "limit", id="limit 0"),
        pytest.param(ListReq(limit=201), "limit", id="limit 201"),
        pytest.param(ListReq(offset=-1), "offset", id="offset -1"),
        pytest.param(ListReq(sort="random"), "sort", id="bad sort"),
        pytest.param(ListReq(status="paused"), "status", id="bad status"),
        pytest.param(create_request(name=" "), "name", id="blank name"),
        pytest.param(create_request(namespace=""), "namespace", id="no namespace"),
        pytest.param(create_request(step_defs=[]), "step_defs", id="no steps"),
        pytest.param(create_request(step_defs=STEPS[:1] * 2), "step_defs[1].key", id="same key"),
        pytest.param(create_request(step_defs=[KEY_ONLY]), "step_defs[0].label", id="no label"),
    ],
)  # fmt: skip
def test_invalid_arguments_name_the_field(
    grpc_stub: Stub, shared_org: Org, request_: message.Message, field: str
) -> None:
    sent = type(request_)()
    sent.CopyFrom(request_)
    if isinstance(sent, UpdateReq):
        sent.process_id = create(grpc_stub, shared_org).process_id
    error = rpc_error(grpc.StatusCode.INVALID_ARGUMENT, lambda: invoke(grpc_stub, sent, shared_org))
    assert_invalid_argument(error, field)


# --- inputs the fuzzers found (tests/fuzz) ------------------------------------


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
def test_a_non_finite_number_in_data_is_invalid_not_internal(
    any_stub: Stub, org: Org, value: float
) -> None:
    process_id = create(any_stub, org).process_id
    update(any_stub, org, process_id, "step_started", step="build")

    error = rpc_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: update(
            any_stub, org, process_id, "step_completed", step="build", data={"a": [value]}
        ),
    )

    assert_invalid_argument(error, "data")
    assert get(any_stub, org, process_id).timeline[0].status == "running"


def test_long_input_echoed_in_an_error_keeps_the_status_readable(any_stub: Stub, org: Org) -> None:
    # Echoed whole, 4,800 characters (or 14 KiB percent-encoded) went past
    # gRPC's metadata limit and the caller saw RESOURCE_EXHAUSTED instead.
    error = rpc_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: any_stub.ListProcesses(
            pb.ListProcessesRequest(status="é" * 4800), metadata=org.metadata()
        ),
    )

    assert error.details().startswith("status: ")
    assert len(error.details()) <= 300
