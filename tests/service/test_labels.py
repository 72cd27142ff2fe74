"""Labels and the link through ProcessService in process: create, read back
with Get and List, filter a list by labels with an exact total."""

import grpc
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from tests.service.calls import Stub, update
from tests.support.in_process import InProcessServer
from tests.support.orgs import Org

URL = "https://ci.example.com/acme/app/actions/runs/42"


async def labelled(
    stub: Stub, org: Org, labels: dict[str, str], *, name: str = "Deploy", url: str | None = None
) -> pb.Process:
    return await stub.CreateProcess(
        pb.CreateProcessRequest(
            namespace="deployments",
            name=name,
            step_defs=[pb.StepDef(key="build", label="Build")],
            labels=labels,
            url=url,
        ),
        metadata=org.metadata(),
    )


async def listed(stub: Stub, org: Org, *labels: str, **filters: object) -> pb.ListProcessesResponse:
    return await stub.ListProcesses(
        pb.ListProcessesRequest(label=labels, **filters),  # type: ignore[arg-type]
        metadata=org.metadata(),
    )


async def test_labels_and_url_read_back_from_get_and_list(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    created = await labelled(processes, org, {"team": "payments", "env": "prod"}, url=URL)
    got = await processes.GetProcess(
        pb.GetProcessRequest(process_id=created.process_id), metadata=org.metadata()
    )
    (summary,) = (await listed(processes, org)).processes
    for shown in (created, got, summary):
        assert dict(shown.labels) == {"env": "prod", "team": "payments"}
        assert shown.url == URL


async def test_a_process_without_labels_or_url_has_none(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    created = await labelled(processes, org, {})
    assert (dict(created.labels), created.HasField("url")) == ({}, False)


async def test_every_label_filter_must_match_and_the_total_is_exact(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    prod_payments = [
        (await labelled(processes, org, {"env": "prod", "team": "payments", "run": str(run)}))
        for run in range(3)
    ]
    await labelled(processes, org, {"env": "staging", "team": "payments"})
    await labelled(processes, org, {"env": "prod", "team": "search"})
    await labelled(processes, org, {})

    both = await listed(processes, org, "env=prod", "team=payments")
    assert both.total == 3
    assert {p.process_id for p in both.processes} == {p.process_id for p in prod_payments}
    assert (await listed(processes, org, "env=prod")).total == 4
    assert (await listed(processes, org, "team=payments", "env=staging")).total == 1
    assert (await listed(processes, org, "env=qa")).total == 0
    # A label value is matched whole, not as a prefix or pattern.
    assert (await listed(processes, org, "env=pro")).total == 0
    assert (await listed(processes, org)).total == 6


async def test_label_filters_combine_with_status_namespace_search_and_pages(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    first = await labelled(processes, org, {"env": "prod"}, name="Deploy api")
    await labelled(processes, org, {"env": "prod"}, name="Backup db")
    await labelled(processes, org, {"env": "prod"}, name="Deploy web")
    await update(processes, org, first.process_id, "completed")

    assert (await listed(processes, org, "env=prod", status="completed")).total == 1
    assert (await listed(processes, org, "env=prod", status="running")).total == 2
    assert (await listed(processes, org, "env=prod", namespace="deployments")).total == 3
    assert (await listed(processes, org, "env=prod", namespace="other")).total == 0
    searched = await listed(processes, org, "env=prod", search="deploy")
    assert (searched.total, len(searched.processes)) == (2, 2)
    both = await listed(processes, org, "env=prod", search="deploy", status="running")
    assert both.total == 1

    page = await listed(processes, org, "env=prod", limit=2)
    rest = await listed(processes, org, "env=prod", limit=2, page_token=page.next_page_token)
    assert (page.total, rest.total, len(page.processes), len(rest.processes)) == (3, 3, 2, 1)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await listed(processes, org, "env=staging", limit=2, page_token=page.next_page_token)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_another_organizations_labels_are_not_counted(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    other_org = await server.new_org()
    await labelled(processes, org, {"env": "prod"})
    await labelled(processes, other_org, {"env": "prod"})
    assert (await listed(processes, org, "env=prod")).total == 1


@pytest.mark.parametrize(
    ("labels", "url", "field"),
    [
        ({"Env": "prod"}, None, "labels.Env"),
        ({"env": "x" * 257}, None, "labels.env"),
        ({f"k{index}": "v" for index in range(33)}, None, "labels"),
        ({}, "javascript:alert(1)", "url"),
        ({}, "data:text/html,hi", "url"),
        ({}, "/runs/42", "url"),
    ],
)
async def test_bad_labels_or_url_are_refused_naming_the_field(
    server: InProcessServer,
    processes: Stub,
    org: Org,
    labels: dict[str, str],
    url: str | None,
    field: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await labelled(processes, org, labels, url=url)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (raised.value.details() or "").startswith(f"{field}: ")


@pytest.mark.parametrize("label", ["env", "Env=prod", "=prod"])
async def test_a_bad_label_filter_is_refused_naming_label(
    server: InProcessServer, processes: Stub, org: Org, label: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await listed(processes, org, label)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (raised.value.details() or "").startswith("label: ")
