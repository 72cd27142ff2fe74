"""Probing a test stack's /readyz until it says what a test waits for."""

import time

import httpx

from tests.support.stack import Stack

# A loaded machine: a worker's restart, the database's return.
WAIT_SECONDS = 60.0


def readiness_until(stack: Stack, status: int) -> dict[str, object]:
    """The /readyz body once it answers `status` (bounded: fails after WAIT_SECONDS)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        response = httpx.get(f"{stack.http_url}/readyz", timeout=30)
        if response.status_code == status:
            assert response.headers["content-type"] == "application/json"
            body: dict[str, object] = response.json()
            return body
        assert time.monotonic() < deadline, f"/readyz still {response.status_code}: {response.text}"
        time.sleep(0.2)
