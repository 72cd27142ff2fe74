"""htk's REST API as JSON: the API's JSON in and out, its errors as exceptions
that carry the server's own message, and a process's watch stream that
resumes by itself. The CLI prints this JSON; `HtkClient` parses it into the
messages generated from the protos."""

import json
import queue
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from htk_client.words import FINISHED

JsonObject = dict[str, Any]

# A watch stream carries a heartbeat at least every 15 s; four missed ones
# mean the connection is gone.
STREAM_READ_TIMEOUT_SECONDS = 60.0
# A watch that loses its stream resumes after the last event it delivered,
# waiting longer after each attempt in a row that brings nothing (a restarting
# server, a full one), and gives up after this many.
# About 80 s in all: long enough for a whole server to restart on a busy machine.
RESUME_ATTEMPTS = 20
RESUME_FIRST_PAUSE_SECONDS = 0.2
RESUME_LONGEST_PAUSE_SECONDS = 5.0
# What the API says of a stream that may be resumed with `after_seq` (the
# protos' WatchProcess errors): the server is full or stopping (gRPC codes
# RESOURCE_EXHAUSTED and UNAVAILABLE, HTTP 429 and 503).
RESUMABLE_CODES = frozenset({8, 14})
RESUMABLE_HTTP_STATUSES = frozenset(
    {httpx.codes.TOO_MANY_REQUESTS, httpx.codes.SERVICE_UNAVAILABLE}
)


class ApiError(Exception):
    """The API refused the call; the message is the server's."""

    def __init__(self, message: str, http_status: int, code: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        # The gRPC status code, when the API's error body gave one.
        self.code = code

    @property
    def resumable(self) -> bool:
        """Whether a watch stream may try again after this error."""
        if self.code is not None:
            return self.code in RESUMABLE_CODES
        return self.http_status in RESUMABLE_HTTP_STATUSES


class Unreachable(Exception):
    """No answer from the URL tried."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach htk at {url}: {reason}")


@dataclass(frozen=True)
class Response:
    """A successful answer: its JSON, and its body exactly as sent (for --json)."""

    json: JsonObject
    text: str


class RestApi:
    """One htk, called over REST with one token."""

    def __init__(
        self,
        url: str,
        token: str,
        timeout_seconds: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_seconds,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def list_processes(self, query: Mapping[str, str | int | list[str]]) -> Response:
        return self._call("GET", "/api/v1/processes", query=query)

    def get_process(self, process_id: str) -> Response:
        return self._call("GET", f"/api/v1/processes/{_segment(process_id)}")

    def create_process(self, body: JsonObject, idempotency_key: str | None) -> Response:
        return self._call("POST", "/api/v1/processes", body=body, idempotency_key=idempotency_key)

    def update_process(
        self, process_id: str, body: JsonObject, idempotency_key: str | None
    ) -> Response:
        path = f"/api/v1/processes/{_segment(process_id)}/update"
        return self._call("POST", path, body=body, idempotency_key=idempotency_key)

    def cancel_process(
        self, process_id: str, body: JsonObject, idempotency_key: str | None
    ) -> Response:
        path = f"/api/v1/processes/{_segment(process_id)}/cancel"
        return self._call("POST", path, body=body, idempotency_key=idempotency_key)

    def list_events(self, process_id: str, query: Mapping[str, str | int]) -> Response:
        return self._call("GET", f"/api/v1/processes/{_segment(process_id)}/events", query=query)

    def list_tasks(self, query: Mapping[str, str | int]) -> Response:
        return self._call("GET", "/api/v1/tasks", query=query)

    def get_task(self, task_id: str) -> Response:
        return self._call("GET", f"/api/v1/tasks/{_segment(task_id)}")

    def complete_task(
        self, task_id: str, body: JsonObject, idempotency_key: str | None
    ) -> Response:
        path = f"/api/v1/tasks/{_segment(task_id)}/complete"
        return self._call("POST", path, body=body, idempotency_key=idempotency_key)

    def create_webhook(self, body: JsonObject) -> Response:
        return self._call("POST", "/api/v1/webhooks", body=body)

    def list_webhooks(self) -> Response:
        return self._call("GET", "/api/v1/webhooks")

    def get_webhook(self, webhook_id: str) -> Response:
        return self._call("GET", f"/api/v1/webhooks/{_segment(webhook_id)}")

    def delete_webhook(self, webhook_id: str) -> Response:
        return self._call("DELETE", f"/api/v1/webhooks/{_segment(webhook_id)}")

    def enable_webhook(self, webhook_id: str) -> Response:
        return self._call("POST", f"/api/v1/webhooks/{_segment(webhook_id)}/enable", body={})

    def list_webhook_deliveries(self, webhook_id: str, query: Mapping[str, str | int]) -> Response:
        path = f"/api/v1/webhooks/{_segment(webhook_id)}/deliveries"
        return self._call("GET", path, query=query)

    def redeliver_webhook_delivery(self, webhook_id: str, delivery_id: str) -> Response:
        path = (
            f"/api/v1/webhooks/{_segment(webhook_id)}/deliveries/{_segment(delivery_id)}/redeliver"
        )
        return self._call("POST", path, body={})

    def create_trust_policy(self, body: JsonObject) -> Response:
        return self._call("POST", "/api/v1/trust-policies", body=body)

    def list_trust_policies(self) -> Response:
        return self._call("GET", "/api/v1/trust-policies")

    def delete_trust_policy(self, policy_id: str) -> Response:
        return self._call("DELETE", f"/api/v1/trust-policies/{_segment(policy_id)}")

    def watch_process(self, process_id: str, after_seq: int | None = None) -> Iterator[JsonObject]:
        """The process's watch stream (after event `after_seq`, if given) until
        the process finishes. A stream that drops, ends early or is refused
        for now (a server restarting or full) is resumed after the last event
        delivered, with a growing pause, so no event is missed or repeated.
        A first connection that fails is not retried: the URL is wrong."""
        path = f"/api/v1/processes/{_segment(process_id)}/watch"
        connected, failures = False, 0
        while True:
            query = {} if after_seq is None else {"after_seq": str(after_seq)}
            try:
                for received, message in enumerate(self._stream(path, query), 1):
                    connected = True
                    yield message
                    if finishes(message):
                        return
                    event = message.get("event")
                    if (seq := last_seq(message)) is not None:
                        after_seq = seq
                    # A stream that brings an event, or anything past its opening
                    # message (a snapshot or heartbeat), works: the next break is a
                    # first failure again. One that only opens and ends does not.
                    if event is not None or received > 1:
                        failures = 0
            except Unreachable:
                if not connected:
                    raise
            except ApiError as error:
                if not error.resumable:
                    raise
            failures += 1
            if failures > RESUME_ATTEMPTS:
                raise Unreachable(
                    self.url, "the watch stream keeps ending before the process finishes"
                )
            time.sleep(resume_pause(failures))

    def _stream(self, path: str, query: Mapping[str, str]) -> Iterator[JsonObject]:
        timeout = httpx.Timeout(self._http.timeout.connect, read=STREAM_READ_TIMEOUT_SECONDS)
        try:
            with self._http.stream("GET", path, params=query, timeout=timeout) as response:
                if response.status_code != httpx.codes.OK:
                    response.read()
                    raise _api_error(response)
                for message in server_sent_events(response.iter_lines()):
                    failure = message.get("error")
                    if isinstance(failure, dict):
                        # An error after the stream started comes in-band.
                        raise ApiError(
                            str(failure.get("message", failure)),
                            response.status_code,
                            _code(failure),
                        )
                    yield message
        except httpx.TransportError as error:
            raise Unreachable(self.url, _reason(error)) from None

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | list[str]] | None = None,
        body: JsonObject | None = None,
        idempotency_key: str | None = None,
    ) -> Response:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        try:
            response = self._http.request(method, path, params=query, json=body, headers=headers)
        except httpx.TransportError as error:
            raise Unreachable(self.url, _reason(error)) from None
        if response.status_code != httpx.codes.OK:
            raise _api_error(response)
        try:
            document = response.json()
        except ValueError:
            raise ApiError(
                f"the server sent something that is not JSON (HTTP {response.status_code})",
                response.status_code,
            ) from None
        return Response(json=document, text=response.text)


def resume_pause(failures: int) -> float:
    """The pause before the next attempt after `failures` in a row: doubling."""
    return min(RESUME_FIRST_PAUSE_SECONDS * 2.0 ** (failures - 1), RESUME_LONGEST_PAUSE_SECONDS)


def last_seq(message: JsonObject) -> int | None:
    """The seq a watch message brings the client up to: an event's, or the
    snapshot's (so that a break right after it resumes with the events logged
    since, not with a second snapshot that would skip them)."""
    for kind in ("event", "process"):
        item = message.get(kind)
        if isinstance(item, dict) and "seq" in item:
            return int(item["seq"])
    return None


def finishes(message: JsonObject) -> bool:
    """Whether a watch message shows the process finished: the snapshot of a
    finished process, or the event that finishes it."""
    process, event = message.get("process") or {}, message.get("event") or {}
    return process.get("status") in FINISHED or event.get("type") in FINISHED


def server_sent_events(lines: Iterator[str]) -> Iterator[JsonObject]:
    """The JSON messages of a `text/event-stream`: each event's `data:` lines,
    joined, end at a blank line; other fields and comments are ignored."""
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield json.loads("\n".join(data))
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield json.loads("\n".join(data))


def in_background(
    messages: Iterator[JsonObject],
) -> "queue.Queue[JsonObject | BaseException | None]":
    """Reads `messages` on a daemon thread into a queue, ended by None, or by
    the exception that stopped it: a live view redraws while it waits."""
    inbox: queue.Queue[JsonObject | BaseException | None] = queue.Queue()

    def read() -> None:
        try:
            for message in messages:
                inbox.put(message)
            inbox.put(None)
        except BaseException as error:  # handed to the reader
            inbox.put(error)

    threading.Thread(target=read, daemon=True).start()
    return inbox


def _api_error(response: httpx.Response) -> ApiError:
    """The server's message from an error body `{"code", "message", "details"}`."""
    try:
        body = response.json()
        message, code = body["message"], _code(body)
    except (ValueError, KeyError, TypeError):
        message, code = response.text.strip() or response.reason_phrase, None
    return ApiError(str(message), response.status_code, code)


def _code(status: JsonObject) -> int | None:
    code = status.get("code")
    return code if isinstance(code, int) else None


def _reason(error: httpx.TransportError) -> str:
    return str(error) or type(error).__name__


def _segment(identifier: str) -> str:
    """An identifier as one path segment: `../tokens` cannot change the path."""
    return urllib.parse.quote(identifier, safe="")
