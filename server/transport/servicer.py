"""The gRPC servicer of ProcessService: request messages in, service calls, response messages out.

Authentication, authorization and error statuses are the interceptors' work.
"""

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from server.domain.processes import events_page, list_query, parse_process_id
from server.domain.watch import LAST_EVENT_ID, change_filter, resume_point
from server.service.processes import ProcessService
from server.service.watch import WatchService
from server.transport import messages
from server.transport.idempotency import idempotency_key
from server.transport.interceptors import Context, current_caller, metadata_value
from server.transport.streams import write_stream

# How a client resumes a stream that ended before it was done.
RESUME_PROCESS = "watch again with after_seq set to the last seq received"
RESUME_ORGANIZATION = "list again, then watch"


class ProcessServicer(pb_grpc.ProcessServiceServicer):
    def __init__(
        self, service: ProcessService, watches: WatchService, *, stall_seconds: float
    ) -> None:
        self._service = service
        self._watches = watches
        # How long a stream's message may wait for its client to read.
        self._stall_seconds = stall_seconds

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
            label=request.label,
        )
        return messages.process_page(await self._service.list(query), query)

    async def GetProcess(  # noqa: N802
        self, request: pb.GetProcessRequest, context: Context
    ) -> pb.Process:
        process_id = parse_process_id(request.process_id)
        return messages.process(await self._service.get(current_caller().org_id, process_id))

    async def CreateProcess(  # noqa: N802
        self, request: pb.CreateProcessRequest, context: Context
    ) -> pb.Process:
        response = await self._service.create(
            current_caller(),
            namespace=request.namespace,
            name=request.name,
            step_defs=messages.step_defs(request),
            labels=dict(request.labels),
            url=request.url if request.HasField("url") else None,
            key=idempotency_key(context, "CreateProcess", request),
            respond=lambda created: messages.process(created).SerializeToString(),
        )
        return pb.Process.FromString(response)

    async def UpdateProcess(  # noqa: N802
        self, request: pb.UpdateProcessRequest, context: Context
    ) -> pb.UpdateProcessResponse:
        process_id = parse_process_id(request.process_id)
        response = await self._service.update(
            current_caller(),
            process_id,
            messages.update(request),
            key=idempotency_key(context, "UpdateProcess", request),
            respond=lambda event: messages.acknowledgement(
                str(process_id), event
            ).SerializeToString(),
        )
        return pb.UpdateProcessResponse.FromString(response)

    async def CancelProcess(  # noqa: N802
        self, request: pb.CancelProcessRequest, context: Context
    ) -> pb.Process:
        process_id = parse_process_id(request.process_id)
        response = await self._service.cancel(
            current_caller(),
            process_id,
            request.reason if request.HasField("reason") else None,
            key=idempotency_key(context, "CancelProcess", request),
            respond=lambda cancelled: messages.process(cancelled).SerializeToString(),
        )
        return pb.Process.FromString(response)

    async def ListProcessEvents(  # noqa: N802
        self, request: pb.ListProcessEventsRequest, context: Context
    ) -> pb.ListProcessEventsResponse:
        process_id = parse_process_id(request.process_id)
        page = events_page(request.after_seq, request.limit if request.HasField("limit") else None)
        events = await self._service.list_events(current_caller().org_id, process_id, page)
        return pb.ListProcessEventsResponse(events=[messages.event(event) for event in events])

    # A writer (write_stream), which grpc.aio takes; the generated stubs know iterators only.
    async def WatchProcess(  # type: ignore[override]  # noqa: N802
        self, request: pb.WatchProcessRequest, context: Context
    ) -> None:
        process_id = parse_process_id(request.process_id)
        resume = resume_point(
            request.after_seq if request.HasField("after_seq") else None,
            metadata_value(context, LAST_EVENT_ID.lower()),
        )
        await write_stream(
            self._watches.process(current_caller(), process_id, resume),
            messages.process_watch,
            messages.process_watch_error,
            context,
            stall_seconds=self._stall_seconds,
            resume=RESUME_PROCESS,
        )

    async def GetCaller(  # noqa: N802
        self, request: pb.GetCallerRequest, context: Context
    ) -> pb.Caller:
        return messages.caller(current_caller())

    # A writer (write_stream), which grpc.aio takes; the generated stubs know iterators only.
    async def WatchProcesses(  # type: ignore[override]  # noqa: N802
        self, request: pb.WatchProcessesRequest, context: Context
    ) -> None:
        wanted = change_filter(
            current_caller().org_id, namespace=request.namespace, status=request.status
        )
        await write_stream(
            self._watches.organization(current_caller(), wanted),
            messages.organization_watch,
            messages.organization_watch_error,
            context,
            stall_seconds=self._stall_seconds,
            resume=RESUME_ORGANIZATION,
        )
