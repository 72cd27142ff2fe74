"""Calls the in-process tests make again and again, on an async stub."""

from typing import TypeAlias

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from tests.support.orgs import Org

Stub: TypeAlias = "pb_grpc.ProcessServiceAsyncStub"  # type stubs only


async def create(stub: Stub, org: Org, *steps: str, namespace: str = "deployments") -> pb.Process:
    return await stub.CreateProcess(
        pb.CreateProcessRequest(
            namespace=namespace,
            name="Deploy",
            step_defs=[pb.StepDef(key=key, label=key.title()) for key in steps],
        ),
        metadata=org.metadata(),
    )


async def update(
    stub: Stub, org: Org, process_id: str, kind: str, **fields: object
) -> pb.UpdateProcessResponse:
    return await stub.UpdateProcess(
        pb.UpdateProcessRequest(process_id=process_id, type=kind, **fields),  # type: ignore[arg-type]
        metadata=org.metadata(),
    )
