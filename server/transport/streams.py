"""Errors of server streams after their first message, sent in-band.

Once a stream has sent a message, its HTTP response has begun: a REST
client over HTTP/1.1 would see a later error status only as the stream
ending. So the error goes out as the stream's last message as well, and
then ends the call with its status for gRPC clients.
"""

from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import TypeVar

from google.rpc import status_pb2
from grpc_status import rpc_status

from server.transport.errors import to_rpc_status
from server.transport.interceptors import Context, abort_with

Item = TypeVar("Item")
Message = TypeVar("Message")


async def errors_in_band(
    stream: AsyncGenerator[Item, None],
    message: Callable[[Item], Message],
    error_message: Callable[[status_pb2.Status], Message],
    context: Context,
) -> AsyncGenerator[Message, None]:
    """The stream's items as messages; an error after the first one ends it
    with `error_message(status)` and that status. An error before the first
    message ends the call like any call's error (the guards map it)."""
    started = False
    try:
        async with aclosing(stream):
            async for item in stream:
                started = True
                yield message(item)
    except Exception as error:
        if not started:
            raise
        status = to_rpc_status(error)
        yield error_message(status)
        await abort_with(context, rpc_status.to_status(status))
