"""A real webhook receiver on 127.0.0.1 for tests and the benchmark: it checks
each message's signature with the `standardwebhooks` package, as a user's
receiver would, and answers as the test tells it to."""

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

Json = dict[str, Any]

# A stack's settings that let its webhooks call receivers on this machine.
LOCAL_RECEIVERS = {"HTK_WEBHOOK_ALLOW_PRIVATE": "1"}


@dataclass(frozen=True)
class Arrival:
    """One attempt as the receiver got it."""

    path: str
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    # Whether the signature verified with the path's secret.
    verified: bool
    # What the receiver answered.
    status: int
    # time.monotonic() at arrival (the benchmark's latency).
    at: float

    @property
    def message(self) -> Json:
        return json.loads(self.body)  # type: ignore[no-any-return]

    @property
    def type(self) -> str:
        return str(self.message["type"])


# A held path answers after this long at the most, so that no test hangs.
HOLD_LIMIT_SECONDS = 60.0

# Given an arrival's path and its number among that path's arrivals (1 for the
# first), the status to answer.
Answer = Callable[[str, int], int]


class Receiver:
    """Receives webhooks at `url(path)`: each path is one webhook, verified
    with the secret `expect` gave it."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self._secrets: dict[str, str] = {}
        self._changed = threading.Condition()
        self.arrivals: list[Arrival] = []
        self.answer: Answer = lambda path, number: 200
        # Paths that answer only once their event is set (a stuck receiver).
        self.held: dict[str, threading.Event] = {}

    def url(self, path: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/{path}"

    def expect(self, path: str, secret: str) -> None:
        """Verifies what arrives at `path` with `secret` (a webhook's)."""
        with self._changed:
            self._secrets[path] = secret

    def received(self, path: str) -> list[Arrival]:
        with self._changed:
            return [arrival for arrival in self.arrivals if arrival.path == path]

    def wait_for(
        self, done: Callable[[list[Arrival]], bool], path: str, timeout: float = 60.0
    ) -> list[Arrival]:
        """The arrivals at `path` once `done` holds of them; fails after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                arrivals = [arrival for arrival in self.arrivals if arrival.path == path]
                if done(arrivals):
                    return arrivals
                left = deadline - time.monotonic()
                assert left > 0, f"gave up waiting at /{path}: {[a.type for a in arrivals]}"
                self._changed.wait(left)

    def _arrived(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._changed:
            secret = self._secrets.get(path)
            number = 1 + sum(1 for arrival in self.arrivals if arrival.path == path)
        verified = False
        if secret is not None:
            try:
                Webhook(secret).verify(body, headers)
                verified = True
            except WebhookVerificationError:
                verified = False
        if (hold := self.held.get(path)) is not None:
            hold.wait(HOLD_LIMIT_SECONDS)
        status = self.answer(path, number)
        arrival = Arrival(
            path=path,
            webhook_id=headers.get("webhook-id", ""),
            headers=headers,
            body=body,
            verified=verified,
            status=status,
            at=time.monotonic(),
        )
        with self._changed:
            self.arrivals.append(arrival)
            self._changed.notify_all()
        return status


@contextmanager
def receiver() -> Iterator[Receiver]:
    """A receiver serving on a free port of 127.0.0.1 until the block ends."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = {name.lower(): value for name, value in self.headers.items()}
            status = owner._arrived(self.path.lstrip("/"), headers, body)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        # http.server's default backlog of 5 drops the connections of a burst
        # (every worker's attempts at once), which then wait seconds for the
        # SYN to be sent again: a real receiver's listen queue is longer.
        request_queue_size = 128

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    owner = Receiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield owner
    finally:
        server.shutdown()
        server.server_close()
