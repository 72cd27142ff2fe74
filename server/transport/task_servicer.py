"""The gRPC servicer of TaskService: request messages in, service calls, response messages out."""

from htk.processes.v1 import task_service_pb2 as pb
from htk.processes.v1 import task_service_pb2_grpc as pb_grpc
from server.domain.tasks import parse_task_id, task_query
from server.service.tasks import TaskService
from server.transport import messages
from server.transport.idempotency import idempotency_key
from server.transport.interceptors import Context, current_caller


class TaskServicer(pb_grpc.TaskServiceServicer):
    def __init__(self, service: TaskService) -> None:
        self._service = service

    async def ListTasks(  # noqa: N802 - gRPC's method name
        self, request: pb.ListTasksRequest, context: Context
    ) -> pb.ListTasksResponse:
        query = task_query(
            current_caller().org_id,
            status=request.status,
            namespace=request.namespace,
            process_id=request.process_id,
            outcome=request.outcome,
            completed_by=request.completed_by,
            limit=request.limit if request.HasField("limit") else None,
            offset=request.offset if request.HasField("offset") else None,
            page_token=request.page_token,
        )
        return messages.task_page(await self._service.list(query), query)

    async def GetTask(self, request: pb.GetTaskRequest, context: Context) -> pb.Task:  # noqa: N802
        task_id = parse_task_id(request.task_id)
        return messages.task(await self._service.get(current_caller().org_id, task_id))

    async def CompleteTask(  # noqa: N802
        self, request: pb.CompleteTaskRequest, context: Context
    ) -> pb.Task:
        response = await self._service.complete(
            current_caller(),
            parse_task_id(request.task_id),
            messages.completion(request),
            key=idempotency_key(context, "CompleteTask", request),
            respond=lambda task: messages.task(task).SerializeToString(),
        )
        return pb.Task.FromString(response)
