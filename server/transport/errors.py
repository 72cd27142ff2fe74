"""The one mapping from errors to gRPC statuses (Envoy maps those to HTTP codes)."""

import logging
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.domain.errors import (
    AlreadyExists,
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger(__name__)

# Room for any message of ours with a short quoted value. The status travels
# percent-encoded in the grpc-message trailer and again, base64-encoded, in
# its details: 300 characters stay under 8 KiB even if all are non-ASCII.
MAX_MESSAGE_LENGTH = 300

_CODES: dict[type[DomainError], int] = {
    InvalidArgument: code_pb2.INVALID_ARGUMENT,
    FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    NotFound: code_pb2.NOT_FOUND,
    Unauthenticated: code_pb2.UNAUTHENTICATED,
    PermissionDenied: code_pb2.PERMISSION_DENIED,
    AlreadyExists: code_pb2.ALREADY_EXISTS,
    DeadlineExceeded: code_pb2.DEADLINE_EXCEEDED,
    ResourceExhausted: code_pb2.RESOURCE_EXHAUSTED,
    Unavailable: code_pb2.UNAVAILABLE,
}


def to_status(error: Exception) -> grpc.Status:
    """The status a caller sees for an error raised while serving its call."""
    return rpc_status.to_status(to_rpc_status(error))


def to_rpc_status(error: Exception) -> status_pb2.Status:
    """The same status as a message, as a stream sends it in-band."""
    # The nearest mapped class: a subclass of InvalidArgument is still one.
    code = next((_CODES[kind] for kind in type(error).__mro__ if kind in _CODES), None)
    if code is None:
        # Unexpected: the caller learns nothing of the internals, the log does.
        log.exception("unexpected error while serving a call", exc_info=error)
        return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")
    status = status_pb2.Status(code=code, message=_shortened(str(error)))
    if isinstance(error, InvalidArgument):
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=_shortened(error.field), description=_shortened(error.problem)
                    )
                ]
            )
        )
        status.details.append(detail)
    return status


async def abort(context: "grpc.aio.ServicerContext[Any, Any]", error: Exception) -> NoReturn:
    """Ends the call being served with the status for `error`."""
    await abort_with(context, to_status(error))


async def abort_with(
    context: "grpc.aio.ServicerContext[Any, Any]", status: grpc.Status
) -> NoReturn:
    """Ends the call being served with `status`, details included."""
    # What context.abort_with_status does (the type stubs lack it), keeping
    # the trailers the guards set (the caller's token name).
    context.set_trailing_metadata((*context.trailing_metadata(), *status.trailing_metadata))
    await context.abort(status.code, status.details)


def _shortened(text: str) -> str:
    """Keeps echoed input from swelling a status past gRPC's 8 KiB metadata limit,
    which clients would report as RESOURCE_EXHAUSTED instead of the real error."""
    if len(text) <= MAX_MESSAGE_LENGTH:
        return text
    return text[: MAX_MESSAGE_LENGTH - 1] + "…"
