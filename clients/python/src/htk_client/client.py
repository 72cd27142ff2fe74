"""`HtkClient`: htk's REST API as the messages generated from its protos, the
same services and messages as the TypeScript and Go clients (which speak
gRPC), with a watch that resumes by itself."""

from collections.abc import Iterator
from types import TracebackType
from typing import Self, TypeVar

import httpx
from google.protobuf import json_format
from google.protobuf.message import Message

from htk.processes.v1 import process_service_pb2 as processes_pb
from htk.processes.v1 import task_service_pb2 as tasks_pb
from htk_client.rest import JsonObject, Response, RestApi

M = TypeVar("M", bound=Message)


class HtkClient:
    """The htk at `url` (e.g. `http://localhost:8080`), called with `token`.

    Errors are `ApiError`s carrying the server's message, its HTTP status and
    its gRPC code (as each RPC's comment in the protos lists them), or
    `Unreachable` when no answer came. Close it, or use it in a `with`.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout_seconds: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.rest = RestApi(url, token, timeout_seconds, transport)
        self.processes = Processes(self.rest)
        self.tasks = Tasks(self.rest)

    def close(self) -> None:
        self.rest.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class Processes:
    """ProcessService: processes, their updates, events and watch streams."""

    def __init__(self, rest: RestApi) -> None:
        self._rest = rest

    def list(
        self, request: processes_pb.ListProcessesRequest | None = None
    ) -> processes_pb.ListProcessesResponse:
        query = _fields(request or processes_pb.ListProcessesRequest())
        return _parse(self._rest.list_processes(query), processes_pb.ListProcessesResponse)

    def get(self, process_id: str) -> processes_pb.Process:
        return _parse(self._rest.get_process(process_id), processes_pb.Process)

    def create(
        self, request: processes_pb.CreateProcessRequest, *, idempotency_key: str | None = None
    ) -> processes_pb.Process:
        response = self._rest.create_process(_fields(request), idempotency_key)
        return _parse(response, processes_pb.Process)

    def update(
        self, request: processes_pb.UpdateProcessRequest, *, idempotency_key: str | None = None
    ) -> processes_pb.UpdateProcessResponse:
        body = _fields(request, without="process_id")
        response = self._rest.update_process(request.process_id, body, idempotency_key)
        return _parse(response, processes_pb.UpdateProcessResponse)

    def cancel(
        self, request: processes_pb.CancelProcessRequest, *, idempotency_key: str | None = None
    ) -> processes_pb.Process:
        body = _fields(request, without="process_id")
        response = self._rest.cancel_process(request.process_id, body, idempotency_key)
        return _parse(response, processes_pb.Process)

    def events(
        self, request: processes_pb.ListProcessEventsRequest
    ) -> processes_pb.ListProcessEventsResponse:
        query = _fields(request, without="process_id")
        response = self._rest.list_events(request.process_id, query)
        return _parse(response, processes_pb.ListProcessEventsResponse)

    def watch(
        self, process_id: str, *, after_seq: int | None = None
    ) -> Iterator[processes_pb.WatchProcessResponse]:
        """The process's messages until it finishes: its snapshot (unless
        `after_seq` is given), then each event once, in `seq` order, and
        heartbeats. A broken stream is resumed after the last event delivered."""
        for message in self._rest.watch_process(process_id, after_seq):
            yield _message(message, processes_pb.WatchProcessResponse)


class Tasks:
    """TaskService: the tasks of human steps."""

    def __init__(self, rest: RestApi) -> None:
        self._rest = rest

    def list(self, request: tasks_pb.ListTasksRequest | None = None) -> tasks_pb.ListTasksResponse:
        query = _fields(request or tasks_pb.ListTasksRequest())
        return _parse(self._rest.list_tasks(query), tasks_pb.ListTasksResponse)

    def get(self, task_id: str) -> tasks_pb.Task:
        return _parse(self._rest.get_task(task_id), tasks_pb.Task)

    def complete(
        self, request: tasks_pb.CompleteTaskRequest, *, idempotency_key: str | None = None
    ) -> tasks_pb.Task:
        body = _fields(request, without="task_id")
        response = self._rest.complete_task(request.task_id, body, idempotency_key)
        return _parse(response, tasks_pb.Task)


def _fields(request: Message, without: str = "") -> JsonObject:
    """The fields a request sets, as the REST API names and writes them (a
    query or a JSON body); `without` is the one the path carries."""
    fields = json_format.MessageToDict(request, preserving_proto_field_name=True)
    fields.pop(without, None)
    return fields


def _parse(response: Response, kind: type[M]) -> M:
    return _message(response.json, kind)


def _message(document: JsonObject, kind: type[M]) -> M:
    # A newer server may add fields: an older client reads past them.
    return json_format.ParseDict(document, kind(), ignore_unknown_fields=True)
