"""The webhooks phase: how soon a message reaches a receiver after the event
that causes it, and what subscribed webhooks cost an Update.

A real receiver on 127.0.0.1 (tests/support/webhooks.py: it verifies each
signature with the `standardwebhooks` package, as a user's would) gets a
`process.created` message for each process an organization of the phase's
own creates, at a steady rate over REST: the latency of one is from the
moment its CreateProcess was sent (its commit is inside that call) to the
first attempt's arrival. Then the bench's Update phase (gRPC direct, c16)
runs in alternating rounds with no webhook and with ten subscribed to `*`
in the bench organization.
"""

import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from bench import seed
from bench.pgbench import UPDATE
from bench.report import Measurement
from tests.support.tokens import create_token
from tests.support.webhooks import Receiver, receiver

if TYPE_CHECKING:
    from bench.run import Runner
    from tests.support.stack import Stack

RATE = 50.0
SECONDS = 20.0
WEBHOOKS = 10
ROUNDS = 5
P95_GOAL_MS = 1000.0
THROUGHPUT_GOAL = 0.9
# The last messages get this long to arrive.
DRAIN_SECONDS = 30.0
SETTINGS = {"HTK_WEBHOOK_ALLOW_PRIVATE": "1"}


@dataclass
class WebhookResult:
    sent: int = 0
    # Seconds from each event's CreateProcess being sent to its first arrival.
    latencies: list[float] = field(default_factory=list)
    unverified: int = 0
    without: list[Measurement] = field(default_factory=list)
    with_webhooks: list[Measurement] = field(default_factory=list)


def run(runner: "Runner", workers: int, log: Any) -> WebhookResult:
    from bench.run import DATA_DIR, bench_stack

    result = WebhookResult()
    with (
        receiver() as inbox,
        bench_stack(runner.database_url, workers, DATA_DIR / "webhooks", SETTINGS) as stack,
    ):
        log(f"webhooks: {RATE:.0f} events/s for {SECONDS:.0f} s to a receiver on 127.0.0.1")
        _latency(stack, inbox, result)
        manager = create_token(stack.env, seed.BENCH_ORG, "webhooks:manage")
        for round_ in range(1, ROUNDS + 1):
            # Which side goes first alternates, so that a trend in the
            # machine's load falls on both sides alike.
            for subscribed in (False, True) if round_ % 2 else (True, False):
                log(f"webhooks: round {round_} of {ROUNDS}, Update with "
                    f"{WEBHOOKS if subscribed else 'no'} webhooks")  # fmt: skip
                if not subscribed:
                    result.without.append(
                        runner.grpc(stack, f"{UPDATE} (no webhook)", "update", 16, workers)
                    )
                    continue
                created = _subscribe(stack, inbox, manager, WEBHOOKS)
                name = f"{UPDATE} ({WEBHOOKS} webhooks on *)"
                result.with_webhooks.append(runner.grpc(stack, name, "update", 16, workers))
                _unsubscribe(stack, manager, created)
    return result


def _latency(stack: "Stack", inbox: Receiver, result: WebhookResult) -> None:
    org = f"bench-hooks-{uuid.uuid4().hex[:8]}"
    writer = create_token(stack.env, org, "processes:write")
    manager = create_token(stack.env, org, "webhooks:manage")
    _subscribe(stack, inbox, manager, 1, events=["process.created"], path="latency")
    sent_at = asyncio.run(_send_events(stack, writer))
    result.sent = len(sent_at)
    arrivals = inbox.wait_for(
        lambda got: len({a.webhook_id for a in got}) >= len(sent_at), "latency", DRAIN_SECONDS
    )
    first: dict[str, float] = {}
    for arrival in arrivals:
        process_id = arrival.message["data"]["process"]["process_id"]
        first.setdefault(process_id, arrival.at)
        result.unverified += not arrival.verified
    result.latencies = [first[process_id] - sent for process_id, sent in sent_at.items()]


async def _send_events(stack: "Stack", token: str) -> dict[str, float]:
    """Creates processes at RATE for SECONDS, each on time whatever the
    others take; returns when each was sent, by process id."""
    body = {"namespace": "hooks", "name": "bench", "step_defs": [{"key": "build", "label": "b"}]}
    sent_at: dict[str, float] = {}
    async with httpx.AsyncClient(
        base_url=stack.http_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:

        async def create(due: float) -> None:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            sent = time.monotonic()
            response = await http.post("/api/v1/processes", json=body)
            response.raise_for_status()
            sent_at[response.json()["process_id"]] = sent

        start = time.monotonic() + 0.5
        count = int(RATE * SECONDS)
        await asyncio.gather(*(create(start + index / RATE) for index in range(count)))
    return sent_at


def _subscribe(
    stack: "Stack",
    inbox: Receiver,
    manager: str,
    count: int,
    events: list[str] | None = None,
    path: str = "update",
) -> list[str]:
    created = []
    with httpx.Client(base_url=stack.http_url, timeout=30) as http:
        for _ in range(count):
            response = http.post(
                "/api/v1/webhooks",
                headers={"Authorization": f"Bearer {manager}"},
                json={"url": inbox.url(path), "events": events or ["*"]},
            )
            response.raise_for_status()
            inbox.expect(path, response.json()["secret"])
            created.append(response.json()["webhook_id"])
    return created


def _unsubscribe(stack: "Stack", manager: str, webhook_ids: list[str]) -> None:
    with httpx.Client(base_url=stack.http_url, timeout=30) as http:
        for webhook_id in webhook_ids:
            http.delete(
                f"/api/v1/webhooks/{webhook_id}", headers={"Authorization": f"Bearer {manager}"}
            ).raise_for_status()


def _percentile(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))]


def _throughput(measurement: Measurement) -> float:
    return measurement.rate


def _worker_us(rounds: list[Measurement]) -> float:
    """The workers' CPU per call (median round): robust to the machine's
    load, where throughput on a shared machine is not."""
    return statistics.median((m.server_cores or 0.0) / m.rate * 1e6 for m in rounds if m.rate)


def section(result: WebhookResult) -> list[str]:
    """The report's webhooks section."""
    p50, p95, p99 = (_percentile(result.latencies, p) * 1000 for p in (50, 95, 99))
    without = statistics.median(_throughput(m) for m in result.without)
    with_hooks = statistics.median(_throughput(m) for m in result.with_webhooks)
    ratio = with_hooks / without
    rounds = ", ".join(
        f"{_throughput(w):,.0f}/{_throughput(h):,.0f}"
        for w, h in zip(result.without, result.with_webhooks, strict=True)
    )
    return [
        "## Webhooks",
        "",
        f"{result.sent:,} `process.created` events at {RATE:.0f}/s for {SECONDS:.0f} s, each "
        "sent to a receiver on 127.0.0.1 that verified every signature "
        f"({result.unverified} did not verify); latency from the CreateProcess call's start "
        "(its commit is within it) to the first attempt's arrival. Then the bench's Update "
        f"(gRPC direct, c16) in {ROUNDS} rounds with no webhook and with "
        f"{WEBHOOKS} subscribed to `*` in its organization, which side goes first alternating; "
        "each side's figure is its median round. (Progress updates send no message: the "
        "figure is what the outbox and the delivery workers cost an Update that causes none.)",
        "",
        "| goal | target | measured | |",
        "|---|---|---|---|",
        f"| First attempt after the event's commit, p95 | <= {P95_GOAL_MS:.0f} ms "
        f"| p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms "
        f"| {'met' if p95 <= P95_GOAL_MS else 'missed'} |",
        f"| Update with {WEBHOOKS} webhooks on `*` / with none | >= {THROUGHPUT_GOAL:.1f}x "
        f"| {with_hooks:,.0f} / {without:,.0f} calls/s: {ratio:.2f}x (rounds: {rounds}) "
        f"| {'met' if ratio >= THROUGHPUT_GOAL else 'missed'} |",
        "",
        "| figure | no webhook | 10 webhooks on `*` |",
        "|---|--:|--:|",
        f"| Workers' CPU per Update, µs (median round) | {_worker_us(result.without):,.0f} "
        f"| {_worker_us(result.with_webhooks):,.0f} |",
        "",
    ]
