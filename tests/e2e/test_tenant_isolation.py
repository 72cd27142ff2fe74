"""No tenant can hurt another through the edge: attacks on Envoy run against
a stack of their own while another organization's calls, REST and gRPC, stay
answered. Issue 18's goal is 100 ms at the 95th percentile, measured at 19 ms
on a quiet machine; the test asserts HARM_SECONDS, ten times that goal, so
that a machine busy with other work cannot fail it: what these attacks did
before issue 18 was to hold calls for seconds to minutes (the stream idle
timeout), far past either bound.

Each attack comes from a loopback address of its own (127.0.0.2 and up; the
destination is always 127.0.0.1), as distinct clients would, since Envoy
budgets requests per client address; the other tenant calls from 127.0.0.1.
Every attack is bounded in count, and waits for Envoy's answer, never for
time to pass.
"""

import socket
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import grpc
import httpx
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from server.domain.tokens import generate_token
from tests.e2e.test_rest_contract import PROCESSES
from tests.support.orgs import Org
from tests.support.stack import Stack, running_stack

HARM_SECONDS = 1.0
# Calls measured, after warm-up calls that are not: enough that a few slow
# ones on a loaded machine do not decide the 95th percentile alone.
WARM_UP_CALLS = 10
MEASURED_CALLS = 80
# Per address, so that the other tenant's paced calls stay well inside theirs.
PER_ADDRESS_PER_SECOND = 50
ANONYMOUS_PER_SECOND = 10
HEADERS_TIMEOUT_SECONDS = 2
REQUEST_TIMEOUT_SECONDS = 3
SLOW_READERS = 24
PAYLOAD_EVENTS = 700
# Health checks and the like: a connection that carries less in a second is quiet.
QUIET_BYTES_PER_POLL = 1_000_000
STALL_WAIT_SECONDS = 120
HALF_SENT_REQUESTS = 40
MADE_UP_TOKENS = 400
# The last of half_sent_requests' kinds.
GRPC_CALL = 2


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "HTK_WORKERS": "2",
        # Per token: far above what any test here sends with one token.
        "HTK_RATE_LIMIT_PER_SECOND": "1000",
        "HTK_RATE_LIMIT_BURST": "2000",
        "HTK_RATE_LIMIT_PER_ADDRESS_PER_SECOND": str(PER_ADDRESS_PER_SECOND),
        "HTK_RATE_LIMIT_ANONYMOUS_PER_SECOND": str(ANONYMOUS_PER_SECOND),
        "HTK_REQUEST_HEADERS_TIMEOUT_SECONDS": str(HEADERS_TIMEOUT_SECONDS),
        "HTK_REQUEST_TIMEOUT_SECONDS": str(REQUEST_TIMEOUT_SECONDS),
    }
    data_dir: Path = tmp_path_factory.mktemp("guarded")
    with running_stack(data_dir, env=env) as stack:
        yield stack


def create_process(stack: Stack, org: Org, steps: int = 1) -> str:
    with httpx.Client(base_url=stack.http_url, timeout=30) as client:
        created = client.post(
            PROCESSES,
            headers=org.auth(),
            json={
                "namespace": "iso",
                "name": "Run",
                "step_defs": [{"key": f"s{n}", "label": "S"} for n in range(steps)],
            },
        )
        assert created.status_code == 200, created.text
        return str(created.json()["process_id"])


def other_tenant_p95(stack: Stack, attack: AbstractContextManager[object]) -> float:
    """The 95th percentile latency, in seconds, of another organization's
    unary calls (REST and gRPC GetProcess in turn, each on a connection kept
    open, as a client's would) while `attack` runs; the calls are paced to
    stay inside the caller's per-address budget."""
    org = stack.new_org("victim")
    process_id = create_process(stack, org)
    pace = 2.0 / PER_ADDRESS_PER_SECOND
    with (
        httpx.Client(base_url=stack.http_url, timeout=30) as rest,
        grpc.insecure_channel(stack.envoy_target) as channel,
    ):
        stub = pb_grpc.ProcessServiceStub(channel)

        def call(n: int) -> float:
            started = time.perf_counter()
            if n % 2:
                response = rest.get(f"{PROCESSES}/{process_id}", headers=org.auth(org.reader))
                assert response.status_code == 200, response.text
            else:
                stub.GetProcess(
                    pb.GetProcessRequest(process_id=process_id),
                    metadata=org.metadata(org.reader),
                    timeout=30,
                )
            took = time.perf_counter() - started
            time.sleep(max(0.0, pace - took))
            return took

        for n in range(WARM_UP_CALLS):
            call(n)
        with attack:
            latencies = [call(n) for n in range(MEASURED_CALLS)]
    return statistics.quantiles(latencies, n=20)[-1]


def assert_not_delayed(p95: float, during: str) -> None:
    """The other tenant's p95 measured during an attack shows no harm."""
    assert p95 < HARM_SECONDS, f"p95 {p95 * 1000:.0f} ms {during}"


def connect_from(stack: Stack, source: str, receive_buffer: int | None = None) -> socket.socket:
    """A TCP connection to Envoy from the loopback address `source`."""
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", int(stack.env["HTK_HTTP_PORT"])))
    return sock


def read_until_closed(sock: socket.socket, limit_seconds: float) -> bytes:
    """What Envoy sends before it closes the connection; fails if it keeps it
    open past `limit_seconds`."""
    sock.settimeout(limit_seconds)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        pytest.fail(f"the connection is still open after {limit_seconds} s: {received[:200]!r}")
    return received


def wait_until_streams_stall(stack: Stack) -> None:
    """Returns once the workers' connections carry (nearly) nothing more: the
    stalled streams have filled every window and buffer between the workers
    and their clients, however large those are."""
    deadline = time.monotonic() + STALL_WAIT_SECONDS
    previous = None
    while (received := upstream_bytes_received(stack)) - (previous or 0) > QUIET_BYTES_PER_POLL:
        assert time.monotonic() < deadline, f"the streams still flow: {received} bytes"
        previous = received
        time.sleep(1)


def upstream_bytes_received(stack: Stack) -> int:
    """What Envoy has received from the workers, over every cluster."""
    stats = httpx.get(
        f"{stack.envoy_admin_url}/stats",
        params={"filter": "upstream_cx_rx_bytes_total"},
        timeout=10,
    ).text
    return sum(int(line.rsplit(":", 1)[1]) for line in stats.splitlines() if ":" in line)


@contextmanager
def running(attack: Callable[[threading.Event], None]) -> Iterator[None]:
    """Runs `attack` in a thread for the duration of the block; it is given an
    event that is set when the block ends, and must return soon after."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            attack(stop)
        except BaseException as error:  # reported by the test, not lost in the thread
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=120)
    assert not thread.is_alive(), "the attack did not stop"
    assert not errors, errors


def test_watchers_that_never_read_do_not_delay_other_tenants_calls(guarded: Stack) -> None:
    # A process whose history is large (28 MB): each watch replays it all to
    # clients that read none of it. Together the streams on one upstream
    # connection would hold more than Envoy's default HTTP/2 windows
    # (256 MiB), which stalled every call sharing it for minutes.
    attacker = guarded.new_org("slow")
    process_id = create_process(guarded, attacker)
    # Written to the workers directly, past the per-address budget.
    with grpc.insecure_channel(guarded.server_target) as channel:
        stub = pb_grpc.ProcessServiceStub(channel)
        updates = [pb.UpdateProcessRequest(process_id=process_id, type="step_started", step="s0")]
        updates += [
            pb.UpdateProcessRequest(
                process_id=process_id,
                type="progress",
                step="s0",
                # The longest message, in characters of 4 bytes each.
                message="\U0001f600" * 10_000,
                percent=percent % 100,
            )
            for percent in range(PAYLOAD_EVENTS)
        ]
        for update in updates:
            stub.UpdateProcess(update, metadata=attacker.metadata(), timeout=30)
    request = (
        f"GET {PROCESSES}/{process_id}/watch?after_seq=0 HTTP/1.1\r\nHost: htk\r\n"
        f"Authorization: Bearer {attacker.reader}\r\n\r\n"
    ).encode()
    readers = []
    for _ in range(SLOW_READERS):
        # A small receive buffer, never read: the stream backs up into Envoy.
        sock = connect_from(guarded, "127.0.0.2", receive_buffer=4096)
        sock.sendall(request)
        readers.append(sock)

    try:
        wait_until_streams_stall(guarded)
        # The streams stall while the calls are measured.
        p95 = other_tenant_p95(guarded, nullcontext())
    finally:
        for sock in readers:
            sock.close()
    assert_not_delayed(p95, f"while {SLOW_READERS} streams stalled")

    # A stream of another tenant still flows: it gets its first message.
    other = guarded.new_org("watcher")
    watched = create_process(guarded, other)
    with (
        httpx.Client(base_url=guarded.http_url, timeout=30) as client,
        client.stream(
            "GET", f"{PROCESSES}/{watched}/watch", headers=other.auth(other.reader)
        ) as stream,
    ):
        assert stream.status_code == 200
        assert next(stream.iter_lines()).startswith('data: {"process"')


def made_up_token_flood(stack: Stack) -> Callable[[threading.Event], None]:
    """A well-formed token never issued (its checksum is public) per request,
    from one address, as fast as Envoy answers; collects the statuses."""

    def flood(stop: threading.Event) -> None:
        transport = httpx.HTTPTransport(local_address="127.0.0.3")
        started = time.monotonic()
        with httpx.Client(base_url=stack.http_url, transport=transport, timeout=30) as client:
            for _ in range(MADE_UP_TOKENS):
                if stop.is_set():
                    break
                token = generate_token()
                response = client.get(PROCESSES, headers={"Authorization": f"Bearer {token}"})
                statuses.append(response.status_code)
        seconds.append(time.monotonic() - started)

    statuses: list[int] = []
    seconds: list[float] = []
    flood.statuses = statuses  # type: ignore[attr-defined]
    flood.seconds = seconds  # type: ignore[attr-defined]
    return flood


def test_a_made_up_token_per_request_is_limited_per_address(guarded: Stack) -> None:
    flood = made_up_token_flood(guarded)

    p95 = other_tenant_p95(guarded, running(flood))

    statuses: list[int] = flood.statuses  # type: ignore[attr-defined]
    (seconds,) = flood.seconds  # type: ignore[attr-defined]
    assert set(statuses) <= {401, 429}, statuses
    # Only the address's budget reaches a token lookup (a 401): its burst (twice
    # its rate) and its rate over the flood, with a second's slack for refills;
    # the rest is refused before. How many that is depends on how fast this
    # machine sends, which the budget must not.
    budget = PER_ADDRESS_PER_SECOND * (2 + seconds + 1)
    assert statuses.count(401) <= budget, (len(statuses), statuses.count(401), seconds)
    assert_not_delayed(p95, "during a flood of made-up tokens")


def test_calls_without_a_token_share_one_budget(guarded: Stack) -> None:
    # From many addresses at once, so that no address's own budget decides.
    burst = 8 * ANONYMOUS_PER_SECOND
    statuses = []
    for n in range(burst):
        transport = httpx.HTTPTransport(local_address=f"127.0.1.{n % 200 + 1}")
        with httpx.Client(base_url=guarded.http_url, transport=transport, timeout=30) as client:
            statuses.append(client.get(PROCESSES).status_code)
    assert set(statuses) <= {401, 429}, statuses
    assert 429 in statuses, statuses
    refused = httpx.get(f"{guarded.http_url}{PROCESSES}", timeout=30)
    if refused.status_code == 429:
        assert refused.json()["code"] == 8
        assert refused.headers["retry-after"] == "1"
    # Calls with a token are not charged to it.
    org = guarded.new_org("token")
    listed = httpx.get(f"{guarded.http_url}{PROCESSES}", headers=org.auth(org.reader), timeout=30)
    assert listed.status_code == 200, listed.text


def test_the_client_address_is_the_peers_not_a_forwarded_for_header(guarded: Stack) -> None:
    """X-Forwarded-For cannot buy a fresh per-address budget."""
    transport = httpx.HTTPTransport(local_address="127.0.0.4")
    statuses = []
    with httpx.Client(base_url=guarded.http_url, transport=transport, timeout=30) as client:
        for n in range(6 * PER_ADDRESS_PER_SECOND):
            headers = {
                "Authorization": f"Bearer {generate_token()}",
                "X-Forwarded-For": f"10.0.{n // 250}.{n % 250}",
            }
            statuses.append(client.get(PROCESSES, headers=headers).status_code)
    assert 429 in statuses, statuses


def half_sent_requests(stack: Stack) -> Callable[[threading.Event], None]:
    """Connections that send part of a request and then nothing: headers cut
    short, a REST body cut short, a gRPC call whose body never ends. Each must
    be answered 408 (or closed) by Envoy within a few times its timeout."""
    starts = [
        b"GET /api/v1/processes HTTP/1.1\r\nHost: htk\r\n",
        b"POST /api/v1/processes HTTP/1.1\r\nHost: htk\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + generate_token().encode() + b"\r\n"
        b"Content-Length: 100\r\n\r\n{",
        # With a token, so that it counts against its own address's budget, not
        # the anonymous one that the test before may just have spent.
        b"POST /htk.processes.v1.ProcessService/GetProcess HTTP/1.1\r\nHost: htk\r\n"
        b"Authorization: Bearer " + generate_token().encode() + b"\r\n"
        b"Content-Type: application/grpc\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\n\x00\x00\x00\r\n",
    ]
    limit = 5 * (REQUEST_TIMEOUT_SECONDS + HEADERS_TIMEOUT_SECONDS)

    def hold(stop: threading.Event) -> None:
        sockets = []
        try:
            for n in range(HALF_SENT_REQUESTS):
                sock = connect_from(stack, f"127.0.2.{n % 200 + 1}")
                sock.sendall(starts[n % len(starts)])
                sockets.append((n % len(starts), sock))
            for kind, sock in sockets:
                answer = read_until_closed(sock, limit)
                answered.append((kind, answer.split(b"\r\n\r\n", 1)[0].lower()))
        finally:
            for _, sock in sockets:
                sock.close()

    answered: list[tuple[int, bytes]] = []
    hold.answered = answered  # type: ignore[attr-defined]
    return hold


def test_half_sent_requests_are_cut_off_and_hold_up_no_one(guarded: Stack) -> None:
    hold = half_sent_requests(guarded)

    p95 = other_tenant_p95(guarded, running(hold))

    answered: list[tuple[int, bytes]] = hold.answered  # type: ignore[attr-defined]
    assert len(answered) == HALF_SENT_REQUESTS
    # Envoy answers each and closes the connection: 408, and the gRPC call
    # the gRPC way (HTTP 200), as Envoy maps a 408 for gRPC: UNKNOWN.
    for kind, head in answered:
        if kind == GRPC_CALL:
            assert head.startswith(b"http/1.1 200 ok"), head
            assert b"\r\ngrpc-status: 2\r\n" in head, head
            assert b"\r\ngrpc-message: request timeout\r\n" in head, head
        else:
            assert head.startswith(b"http/1.1 408 request timeout"), head
    assert_not_delayed(p95, "while requests hung half-sent")


def test_a_watch_outlives_the_request_timeout(guarded: Stack) -> None:
    """The request timeout is on receiving a request: a watch's, received in
    full at once, lives on past it."""
    org = guarded.new_org("long")
    process_id = create_process(guarded, org)
    with (
        httpx.Client(base_url=guarded.http_url, timeout=30) as client,
        client.stream(
            "GET", f"{PROCESSES}/{process_id}/watch", headers=org.auth(org.reader)
        ) as stream,
    ):
        # Each message's data (an event's is preceded by its `id:` line).
        lines = (line for line in stream.iter_lines() if line.startswith("data: "))
        assert next(lines).startswith('data: {"process"')
        deadline = time.monotonic() + 2 * REQUEST_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            time.sleep(0.2)
        started = client.post(
            f"{PROCESSES}/{process_id}/update",
            headers=org.auth(),
            json={"type": "step_started", "step": "s0"},
        )
        assert started.status_code == 200, started.text
        assert '"step_started"' in next(lines)


def test_api_answers_are_not_cached_or_sniffed(guarded: Stack) -> None:
    org = guarded.new_org("headers")
    process_id = create_process(guarded, org)
    base = guarded.http_url
    answers = [
        httpx.get(f"{base}{PROCESSES}/{process_id}", headers=org.auth(), timeout=30),
        httpx.get(f"{base}{PROCESSES}/{uuid.uuid4()}", headers=org.auth(), timeout=30),
        httpx.get(f"{base}{PROCESSES}", timeout=30),
        httpx.delete(f"{base}{PROCESSES}", headers=org.auth(), timeout=30),
        httpx.get(f"{base}/api/v1/nothing", headers=org.auth(), timeout=30),
    ]
    with (
        httpx.Client(base_url=base, timeout=30) as client,
        client.stream("GET", f"{PROCESSES}/{process_id}/watch", headers=org.auth()) as stream,
    ):
        answers.append(stream)
    assert [answer.status_code for answer in answers] == [200, 404, 401, 405, 404, 200]
    for answer in answers:
        assert answer.headers["cache-control"] == "no-store", answer.request.url
        assert answer.headers["x-content-type-options"] == "nosniff", answer.request.url
    # The dashboard's files keep their own caching.
    page = httpx.get(f"{base}/", timeout=30)
    assert page.headers["cache-control"] == "no-cache"
