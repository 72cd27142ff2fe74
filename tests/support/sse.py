"""Reading Server-Sent Events as htk's Envoy frames them: each message one
`data: <JSON>` line, then a blank line, an event's preceded by `id: <seq>`."""

import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

DATA = "data: "
ID = re.compile(r"id: [0-9]+")


def messages(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Each event's JSON as it arrives, until the stream ends; fails on any
    line that is not an event's id or data or the blank line after it."""
    for line in response.iter_lines():
        if (message := _message(line)) is not None:
            yield message


async def amessages(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """`messages` for an async client's response."""
    async for line in response.aiter_lines():
        if (message := _message(line)) is not None:
            yield message


def _message(line: str) -> dict[str, Any] | None:
    if line.startswith(DATA):
        message: dict[str, Any] = json.loads(line.removeprefix(DATA))
        return message
    if line and not ID.fullmatch(line):
        raise AssertionError(f"not Server-Sent Events framing: {line!r}")
    return None


def kind(message: dict[str, Any]) -> str:
    """What a watch message carries: `process`, `event`, `heartbeat` or
    `error`, or `change` for an organization stream's process and event."""
    return next(iter(message)) if len(message) == 1 else "change"
