"""Labels and the link end to end, through Envoy: created over REST and native
gRPC, read back from Get, List and the watch stream's snapshot, filtered with
`label=key=value` (repeated), and refused with the field named."""

from typing import Any

import grpc
import httpx
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from tests.e2e.test_grpc import Stub, assert_invalid_argument, rpc_error
from tests.e2e.test_rest_contract import PROCESSES, STEPS, Json, list_processes, ok
from tests.e2e.test_rest_errors import assert_invalid_field
from tests.support.orgs import Org
from tests.support.sse import messages

URL = "https://ci.example.com/acme/app/actions/runs/42?attempt=2"


def create(rest: httpx.Client, org: Org, **fields: Any) -> httpx.Response:
    body = {"namespace": "deployments", "name": "Deploy", "step_defs": STEPS, **fields}
    return rest.post(PROCESSES, headers=org.auth(), json=body)


def test_labels_and_url_over_rest_read_back_everywhere(rest: httpx.Client, org: Org) -> None:
    labels = {"team": "payments", "env": "prod", "app.kubernetes.io/name": "api"}
    created = ok(create(rest, org, labels=labels, url=URL))
    process_id = created["process_id"]
    got = ok(rest.get(f"{PROCESSES}/{process_id}", headers=org.auth(org.reader)))
    (listed,) = list_processes(rest, org)["processes"]
    path = f"{PROCESSES}/{process_id}/watch"
    with rest.stream("GET", path, headers=org.auth(org.reader)) as response:
        snapshot = next(messages(response))["process"]
    for shown in (created, got, listed, snapshot):
        assert (shown["labels"], shown["url"]) == (labels, URL)


def test_a_process_without_labels_shows_an_empty_object_and_no_url(
    rest: httpx.Client, org: Org
) -> None:
    created = ok(create(rest, org))
    assert created["labels"] == {}
    assert "url" not in created


def test_label_filters_over_rest_all_match_with_an_exact_total(
    rest: httpx.Client, org: Org
) -> None:
    wanted = [
        ok(create(rest, org, labels={"env": "prod", "team": "payments", "run": str(run)}))
        for run in range(2)
    ]
    ok(create(rest, org, labels={"env": "prod", "team": "search"}))
    ok(create(rest, org, labels={"env": "staging", "team": "payments"}))
    ok(create(rest, org))
    # The query string as the docs write it: each filter its own `label`.
    response = rest.get(
        f"{PROCESSES}?label=env=prod&label=team=payments", headers=org.auth(org.reader)
    )
    page = ok(response)
    assert page["total"] == 2
    assert {p["process_id"] for p in page["processes"]} == {p["process_id"] for p in wanted}
    assert list_processes(rest, org, label="env=prod")["total"] == 3
    assert list_processes(rest, org, label="env=prod", status="running")["total"] == 3
    assert list_processes(rest, org, label="env=prod", status="completed")["total"] == 0
    assert list_processes(rest, org, label="env=prod", search="deploy", limit=1)["total"] == 3


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"url": "javascript:alert(document.cookie)"}, "url"),
        ({"url": "data:text/html;base64,PHNjcmlwdD4="}, "url"),
        ({"url": "/runs/42"}, "url"),
        ({"url": "https://" + "a" * 2041}, "url"),
        ({"labels": {"Env": "prod"}}, "labels.Env"),
        ({"labels": {"env": "x" * 257}}, "labels.env"),
        ({"labels": {f"k{index}": "v" for index in range(33)}}, "labels"),
    ],
    ids=["javascript", "data", "relative", "too-long", "key", "value", "too-many"],
)
def test_bad_labels_or_url_over_rest_are_400_naming_the_field(
    rest: httpx.Client, org: Org, fields: Json, field: str
) -> None:
    assert_invalid_field(create(rest, org, **fields), field)


@pytest.mark.parametrize("query", ["label=env", "label=Env=prod", "label=env=a&label=env=b"])
def test_a_bad_label_filter_over_rest_is_400_naming_label(
    rest: httpx.Client, org: Org, query: str
) -> None:
    response = rest.get(f"{PROCESSES}?{query}", headers=org.auth(org.reader))
    assert_invalid_field(response, "label")


def test_labels_and_url_over_grpc(grpc_stub: Stub, org: Org) -> None:
    request = pb.CreateProcessRequest(
        namespace="deployments",
        name="Deploy",
        step_defs=[pb.StepDef(key="build", label="Build")],
        labels={"env": "prod"},
        url=URL,
    )
    created = grpc_stub.CreateProcess(request, metadata=org.metadata())
    page = grpc_stub.ListProcesses(
        pb.ListProcessesRequest(label=["env=prod"]), metadata=org.metadata(org.reader)
    )
    assert page.total == 1
    (listed,) = page.processes
    for shown in (created, listed):
        assert (dict(shown.labels), shown.url) == ({"env": "prod"}, URL)

    request.url = "javascript:alert(1)"
    error = rpc_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: grpc_stub.CreateProcess(request, metadata=org.metadata()),
    )
    assert_invalid_argument(error, "url")
