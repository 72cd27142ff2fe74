"""Request payloads that are no valid message: INVALID_ARGUMENT naming the field,
for every RPC of every service.

grpc.aio reports an exception raised by a request deserializer as UNKNOWN,
with the exception's Python class in the message. So the deserializers here
never raise: a payload that does not decode becomes an `Undecodable` holding
the reason, and `DecodingInterceptor` answers it with INVALID_ARGUMENT before
the method runs. The reason names the field where it can: a string that is
not UTF-8 (a REST path or query parameter with percent-encoded bytes that are
no UTF-8 arrives as one), or messages nested past protobuf's depth limit.
"""

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import grpc
from google.protobuf import descriptor, descriptor_pool
from google.protobuf.message import DecodeError

from server.domain.errors import InvalidArgument
from server.domain.processes import DATA_TOO_DEEP
from server.transport.errors import abort

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
if TYPE_CHECKING:
    ServerInterceptor: TypeAlias = grpc.aio.ServerInterceptor[Any, Any]
else:
    ServerInterceptor = grpc.aio.ServerInterceptor

# Protobuf's default recursion limit (Python's upb, C++, Java), counting the
# request message as the first level.
MAX_MESSAGE_DEPTH = 100
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


@dataclass(frozen=True)
class Undecodable:
    """A request payload that is no valid message, and why."""

    error: InvalidArgument


def tolerant(
    deserializer: Callable[[bytes], Any], message: descriptor.Descriptor | None
) -> Callable[[bytes], Any]:
    """A deserializer that returns an Undecodable instead of raising."""

    def decode(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError:
            return Undecodable(diagnosis(message, raw))

    return decode


def diagnosis(message: descriptor.Descriptor | None, raw: bytes) -> InvalidArgument:
    """Why `raw`, which protobuf refused, is no valid `message`: the first field
    found at fault, or the whole request when none is."""
    if message is None:
        return InvalidArgument("request", "not a valid message")
    try:
        _walk(message, raw, "", depth=1)
    except InvalidArgument as problem:
        return problem
    return InvalidArgument("request", f"not a valid {message.full_name} message")


def _walk(message: descriptor.Descriptor, raw: bytes, path: str, depth: int) -> None:
    """Reads `raw` as the wire format of `message`, raising at the first fault.

    Fields are named as in JSON (`step_defs[1].label`); inside the
    well-known types (a Struct's map entries and Values) the fault is
    reported on the field that holds them, e.g. `data`.
    """
    occurrences: dict[int, int] = {}
    position = 0
    while position < len(raw):
        key, position = _varint(raw, position, path or "request")
        number, wire_type = key >> 3, key & 7
        field = message.fields_by_number.get(number)
        where = path or "request"
        if field is not None and not message.full_name.startswith("google.protobuf."):
            name = field.name
            if field.is_repeated:
                occurrences[number] = occurrences.get(number, 0) + 1
                name += f"[{occurrences[number] - 1}]"
            where = f"{path}.{name}" if path else name
        if wire_type == _VARINT:
            _, position = _varint(raw, position, where)
        elif wire_type in (_FIXED64, _FIXED32):
            position += 8 if wire_type == _FIXED64 else 4
        elif wire_type == _LENGTH_DELIMITED:
            length, position = _varint(raw, position, where)
            chunk = raw[position : position + length]
            position += length
            if position > len(raw):
                raise InvalidArgument(where, "truncated")
            if field is not None and field.type == field.TYPE_STRING:
                try:
                    chunk.decode()
                except UnicodeDecodeError:
                    raise InvalidArgument(where, "not valid UTF-8") from None
            elif field is not None and field.type == field.TYPE_MESSAGE:
                if depth == MAX_MESSAGE_DEPTH:
                    raise _too_deep(field, where)
                _walk(cast(descriptor.Descriptor, field.message_type), chunk, where, depth + 1)
        else:
            raise InvalidArgument(where, f"malformed: wire type {wire_type} is not used here")
        if position > len(raw):
            raise InvalidArgument(where, "truncated")


def _varint(raw: bytes, position: int, where: str) -> tuple[int, int]:
    value = shift = 0
    while position < len(raw) and shift < 64:
        byte = raw[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
    raise InvalidArgument(where, "truncated")


def _too_deep(field: descriptor.FieldDescriptor, where: str) -> InvalidArgument:
    if cast(descriptor.Descriptor, field.message_type).full_name.startswith("google.protobuf."):
        return InvalidArgument(where, DATA_TOO_DEEP)
    return InvalidArgument(where, f"nests more than {MAX_MESSAGE_DEPTH} messages deep")


Behavior: TypeAlias = Callable[[Any, Context], Any]


class WrappedHandlers:
    """An interceptor's handlers, made once per method: grpc.aio asks every
    interceptor for the handler of every call, and a method's handler below
    stays the same object."""

    def __init__(self, wrap: Callable[[str, Handler], Handler]) -> None:
        self._wrap = wrap
        self._made: dict[str, tuple[Handler, Handler]] = {}

    def __call__(self, path: str, handler: Handler) -> Handler:
        made = self._made.get(path)
        if made is not None and made[0] is handler:
            return made[1]
        wrapped = self._wrap(path, handler)
        self._made[path] = (handler, wrapped)
        return wrapped


class DecodingInterceptor(ServerInterceptor):
    """Answers a request payload that is no valid message with INVALID_ARGUMENT,
    for every method of every service, unary or streaming, before it runs."""

    def __init__(self) -> None:
        self._handlers = WrappedHandlers(self._checking)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        return self._handlers(handler_call_details.method, handler)

    @staticmethod
    def _checking(path: str, handler: Handler) -> Handler:
        assert handler.request_deserializer is not None  # intercept_service passes the others
        deserializer = tolerant(handler.request_deserializer, _input_type(path))
        serializer = handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _checking_request(cast(Behavior, handler.unary_unary)), deserializer, serializer
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _checking_request(cast(Behavior, handler.unary_stream)), deserializer, serializer
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _checking_requests(cast(Behavior, handler.stream_unary)), deserializer, serializer
            )
        return grpc.stream_stream_rpc_method_handler(
            _checking_requests(cast(Behavior, handler.stream_stream)), deserializer, serializer
        )


def _input_type(method: str) -> descriptor.Descriptor | None:
    """The request message of `/package.Service/Method`, if its proto is known here."""
    try:
        found = descriptor_pool.Default().FindMethodByName(method.strip("/").replace("/", "."))
    except KeyError:
        return None
    input_type: descriptor.Descriptor = found.input_type
    return input_type


def _checking_request(behavior: Behavior) -> Behavior:
    """`behavior` of a unary request, which refuses an Undecodable one.

    Streaming responses may be yielded or written with context.write; the
    wrapper keeps the behavior's kind (async generator or coroutine)."""

    if inspect.isasyncgenfunction(behavior):

        async def yielding(request: Any, context: Context) -> AsyncIterator[Any]:
            if isinstance(request, Undecodable):
                await abort(context, request.error)
            async for response in behavior(request, context):
                yield response

        return yielding

    async def returning(request: Any, context: Context) -> Any:
        if isinstance(request, Undecodable):
            await abort(context, request.error)
        return await behavior(request, context)

    return returning


def _checking_requests(behavior: Behavior) -> Behavior:
    """`behavior` of a request stream, which refuses the first Undecodable in it."""

    async def checked(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Undecodable):
                await abort(context, request.error)
            yield request

    if inspect.isasyncgenfunction(behavior):

        async def yielding(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            async for response in behavior(checked(requests, context), context):
                yield response

        return yielding

    async def returning(requests: AsyncIterator[Any], context: Context) -> Any:
        return await behavior(checked(requests, context), context)

    return returning
