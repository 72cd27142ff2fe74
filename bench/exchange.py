"""The token exchange's phase: CI tokens traded for htk tokens over REST
through Envoy, one at a time, with every worker's JWKS cache warm.

A real issuer on 127.0.0.1 (tests/support/oidc_issuer.py) signs the tokens,
each for a run of its own (a fresh `jti`), as a CI would. The first calls
fetch the issuer's keys on each worker and are not measured; the measured
ones then cost the policy lookup, the signature check (RS256) and the
token's insert. The goal: p95 at most 50 ms.
"""

import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from tests.support.oidc_issuer import running_issuer
from tests.support.stack import Stack
from tests.support.tokens import create_token

GOAL_P95_MS = 50.0
# Enough calls for each worker to fetch the keys once (Envoy takes turns).
WARMUP_CALLS = 50
MEASURED_CALLS = 500


@dataclass(frozen=True)
class ExchangeResult:
    workers: int
    calls: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    jwks_fetches: int  # during the measured calls: 0 when the cache held


def run(stack: Stack, workers: int, log: Callable[[str], None]) -> ExchangeResult:
    org_id = f"bench-trust-{uuid.uuid4().hex[:8]}"
    admin = create_token(stack.env, org_id, "tokens:manage")
    with running_issuer() as issuer, httpx.Client(base_url=stack.http_url, timeout=30) as rest:
        created = rest.post(
            "/api/v1/trust-policies",
            headers={"Authorization": f"Bearer {admin}"},
            json={
                "name": "bench",
                "issuer": issuer.url,
                "audience": org_id,
                "subject": "repo:acme/app:*",
                "scopes": ["processes:write"],
            },
        )
        created.raise_for_status()

        def exchange() -> float:
            subject_token = issuer.token(aud=org_id, jti=uuid.uuid4().hex)
            began = time.perf_counter()
            response = rest.post("/api/v1/tokens:exchange", json={"subject_token": subject_token})
            took = time.perf_counter() - began
            response.raise_for_status()
            return took * 1000

        for _ in range(WARMUP_CALLS):
            exchange()
        fetched = issuer.jwks_fetches
        log(f"exchange: {MEASURED_CALLS} calls, one at a time, JWKS warm")
        times = sorted(exchange() for _ in range(MEASURED_CALLS))
    quantiles = statistics.quantiles(times, n=100)
    return ExchangeResult(
        workers=workers,
        calls=len(times),
        p50_ms=statistics.median(times),
        p95_ms=quantiles[94],
        p99_ms=quantiles[98],
        jwks_fetches=issuer.jwks_fetches - fetched,
    )


def section(result: ExchangeResult) -> list[str]:
    verdict = "met" if result.p95_ms <= GOAL_P95_MS else "**missed**"
    return [
        "## Token exchange",
        "",
        f"`POST /api/v1/tokens:exchange` through Envoy, {result.calls} calls one at a time"
        f" (HTK_WORKERS={result.workers}), each a fresh RS256 CI token from a local issuer,"
        f" with every worker's JWKS cache warm ({result.jwks_fetches} fetches while measured).",
        "",
        "| p50 | p95 | p99 | goal p95 |",
        "| --- | --- | --- | --- |",
        f"| {result.p50_ms:.1f} ms | {result.p95_ms:.1f} ms | {result.p99_ms:.1f} ms"
        f" | ≤ {GOAL_P95_MS:.0f} ms: {verdict} |",
        "",
    ]
