"""The gRPC servicer: request messages in, domain calls, response messages out.

Authentication, authorization and error statuses are the interceptors' work.
"""

import hashlib

from google.protobuf.message import Message

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from server.domain.idempotency import IdempotencyKey, idempotency_key
from server.domain.processes import list_query, new_process, parse_process_id, utc_now
from server.storage.processes import ProcessStore
from server.transport import messages
from server.transport.interceptors import Context, current_caller, metadata_value

# REST's `Idempotency-Key` header arrives as this metadata.
IDEMPOTENCY_KEY_METADATA = "idempotency-key"


class ProcessServicer(pb_grpc.ProcessServiceServicer):
    def __init__(self, store: ProcessStore) -> None:
        self._store = store

    async def ListProcesses(  # noqa: N802 - gRPC's method name
        self, request: pb.ListProcessesRequest, context: Context
    ) -> pb.ListProcessesResponse:
        query = list_query(
            current_caller().org_id,
            status=request.status,
            namespace=request.namespace,
            search=request.search,
            sort=request.sort,
            limit=request.limit if request.HasField("limit") else None,
            offset=request.offset if request.HasField("offset") else None,
            page_token=request.page_token,
        )
        return messages.process_page(await self._store.list(query), query)

    async def GetProcess(  # noqa: N802
        self, request: pb.GetProcessRequest, context: Context
    ) -> pb.Process:
        process_id = parse_process_id(request.process_id)
        return messages.process(await self._store.get(current_caller().org_id, process_id))

    async def CreateProcess(  # noqa: N802
        self, request: pb.CreateProcessRequest, context: Context
    ) -> pb.Process:
        process = new_process(
            org_id=current_caller().org_id,
            namespace=request.namespace,
            name=request.name,
            step_defs=messages.step_defs(request),
            now=utc_now(),
        )
        response = await self._store.create(
            process,
            lambda created: messages.process(created).SerializeToString(),
            _idempotency_key(context, "CreateProcess", request),
        )
        return pb.Process.FromString(response)

    async def UpdateProcess(  # noqa: N802
        self, request: pb.UpdateProcessRequest, context: Context
    ) -> pb.UpdateProcessResponse:
        process_id = parse_process_id(request.process_id)
        response = await self._store.update(
            current_caller().org_id,
            process_id,
            messages.update(request),
            lambda event: messages.acknowledgement(str(process_id), event).SerializeToString(),
            _idempotency_key(context, "UpdateProcess", request),
        )
        return pb.UpdateProcessResponse.FromString(response)


def _idempotency_key(context: Context, method: str, request: Message) -> IdempotencyKey | None:
    key = metadata_value(context, IDEMPOTENCY_KEY_METADATA)
    if key is None:
        return None
    fingerprint = hashlib.sha256(
        method.encode() + b"\0" + request.SerializeToString(deterministic=True)
    ).digest()
    return idempotency_key(current_caller().org_id, key, fingerprint)
