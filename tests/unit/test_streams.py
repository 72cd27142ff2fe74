"""How a stream's writer ends when grpc refuses to send: the call ended under it."""

import logging
from collections.abc import AsyncGenerator
from typing import Any

import grpc
import pytest

from server.transport.streams import write_stream


class EndedCall:
    """A call whose client left while a message was on its way: grpc fails
    the batch of the next send (as its ExecuteBatchError, an InternalError)."""

    def __init__(self, sends_before_failing: int) -> None:
        self.sends_left = sends_before_failing
        self.written: list[object] = []

    async def send_initial_metadata(self, metadata: object) -> None:
        await self._send()

    async def write(self, message: object) -> None:
        await self._send()
        self.written.append(message)

    async def _send(self) -> None:
        if self.sends_left == 0:
            raise grpc.aio.InternalError("Failed execute_batch")
        self.sends_left -= 1

    async def abort(self, *args: Any) -> None:
        raise AssertionError("nothing is left to tell a client that left")


async def items() -> AsyncGenerator[int, None]:
    for item in range(5):
        yield item


@pytest.mark.parametrize("sends_before_failing", [0, 1, 3])
async def test_a_call_ended_under_the_stream_ends_it_quietly(
    sends_before_failing: int, caplog: pytest.LogCaptureFixture
) -> None:
    # A stand-in for grpc's ServicerContext, which has no public constructor.
    call: Any = EndedCall(sends_before_failing)
    with caplog.at_level(logging.DEBUG):
        await write_stream(items(), str, str, call, stall_seconds=5, resume="watch again")
    # The headers took the first send; each message written went before the failure.
    assert call.written == [str(item) for item in range(max(0, sends_before_failing - 1))]
    assert [record.levelname for record in caplog.records] == ["DEBUG"]
