"""Writing server streams: errors after the first message in-band, and a
bound on how long a message may wait for a client that does not read.

Once a stream has sent a message, its HTTP response has begun: a REST
client over HTTP/1.1 would see a later error status only as the stream
ending. So the error goes out as the stream's last message as well, and
then ends the call with its status for gRPC clients.

A write completes once HTTP/2 flow control lets the message out: a client
that stops reading (a suspended laptop's tab) stops its stream's writes
once the windows and buffers between are full, and would hold its stream,
its slot and the buffers of every hop for as long as it stays away. So a
write that cannot complete within `stall_seconds` ends the stream with
RESOURCE_EXHAUSTED saying how to resume. Nothing more can pass a full
window: the status follows what the client has not read yet, as the call's
trailers, which it gets when it reads again (gRPC clients; a REST client
sees its stream end, and resumes as after any break).
"""

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing, suppress
from typing import TypeVar

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status

from server.domain.errors import ResourceExhausted
from server.transport.errors import abort_with, to_rpc_status
from server.transport.interceptors import Context, caller_metadata

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Message = TypeVar("Message")

# How long a handler waits on its stream's ending status, which grpc keeps
# queued behind what the client has not read (the stream's slot is already
# free by then): past this the handler returns, and the status goes if the
# client ever reads again.
STATUS_GRACE_SECONDS = 1.0


class _Unread(Exception):
    """A message could not be written within the stream's bound."""


class _CallEnded(Exception):
    """grpc refused to send on the call: it ended meanwhile (its client left
    while a message was on its way, before grpc cancelled the handler)."""


async def write_stream(
    stream: AsyncGenerator[Item, None],
    message: Callable[[Item], Message],
    error_message: Callable[[status_pb2.Status], Message],
    context: Context,
    *,
    stall_seconds: float,
    resume: str,
) -> None:
    """Writes the stream's items as messages. An error after the first one
    ends it with `error_message(status)` and that status; a client that
    reads nothing for `stall_seconds` while a message waits ends it with
    RESOURCE_EXHAUSTED, the message saying how to `resume`. An error before
    the first message ends the call like any call's error (the guards map it)."""
    begun = False
    try:
        # Closed in this task, whatever ends the stream (a client leaving included).
        async with aclosing(stream):
            async for item in stream:
                if not begun:
                    # Headers are not flow-controlled: sent apart, they leave
                    # grpc nothing but the status to send after a first
                    # message the client does not read (it refuses a second
                    # operation of a kind still pending).
                    await _sending(context.send_initial_metadata(caller_metadata()))
                    begun = True
                await _write(context, message(item), stall_seconds)
        return
    except _CallEnded:
        # No fault of anyone's, and nobody left to tell.
        log.debug("a stream's call ended while a message was on its way")
        return
    except _Unread:
        status = to_rpc_status(
            ResourceExhausted(
                f"the client read no message for {stall_seconds:g} s and fell behind;"
                f" the stream ended: {resume}"
            )
        )
    except Exception as error:
        if not begun:
            raise
        status = to_rpc_status(error)
        # A client too far behind for this gets the status alone.
        with suppress(_Unread, _CallEnded):
            await _write(context, error_message(status), stall_seconds)
    try:
        async with asyncio.timeout(STATUS_GRACE_SECONDS):
            await abort_with(context, rpc_status.to_status(status))
    except grpc.aio.AbortError:
        raise  # the status is on its way
    except Exception as error:
        # Still queued when the grace ran out (it goes once the client reads),
        # or the client left meanwhile (grpc's batch error): either way the
        # stream is over, and nothing is left to tell.
        log.debug("a stream's ending status is not sent yet: %r", error)


async def _write(context: Context, message: object, stall_seconds: float) -> None:
    try:
        async with asyncio.timeout(stall_seconds):
            await _sending(context.write(message))
    except TimeoutError:
        raise _Unread from None


async def _sending(operation: Awaitable[None]) -> None:
    """Awaits one of the call's send operations; a batch grpc fails (its
    InternalError) means the call has ended under the stream."""
    try:
        await operation
    except grpc.aio.InternalError as error:
        raise _CallEnded from error
