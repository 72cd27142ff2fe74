"""What every call of an htk RPC goes through before its servicer method:
error mapping, draining, the caller's deadline, authentication and scopes,
and strict checking of REST bodies.

One interceptor wraps every method of every htk service, whatever its kind
(unary or streaming), in the guards. It fails closed: a method it has no
entry for is refused as unimplemented. Only gRPC health checking and
reflection, which need no token, pass untouched; an htk method whose proto
declares `no_token` goes through every guard but authentication.

Every call pays for the guards, so they run in one frame per call, written
out in order, rather than as a stack of context managers: what they need of
a method is made once, when its handler is first wrapped.
"""

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import quote

import grpc

from server.domain.errors import Unauthenticated, Unavailable
from server.domain.tokens import Caller, is_well_formed
from server.edge.constants import CALLER_NAME_HEADER, trusted_peer
from server.metrics import MethodMetrics
from server.service.call_deadline import caller_deadline
from server.service.tokens import TokenService
from server.transport.decoding import WrappedHandlers
from server.transport.errors import abort
from server.transport.methods import Method

log = logging.getLogger(__name__)

# grpc's classes are generic only in their type stubs, not at run time.
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = Callable[[grpc.HandlerCallDetails], Any]
if TYPE_CHECKING:
    ServerInterceptor: TypeAlias = grpc.aio.ServerInterceptor[Any, Any]
else:
    ServerInterceptor = grpc.aio.ServerInterceptor

# Makes a call's span (server/transport/tracing.py) for as long as it runs.
Spans: TypeAlias = Callable[[Method, Context], AbstractContextManager[None]]
# What a call does inside the guards: its servicer method, and what comes
# with it for the method's kind.
Body: TypeAlias = Callable[[Any, Context], Awaitable[Any]]

# Services every caller may use without a token.
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
# Turns the request a call arrived with into the one its servicer gets.
RequestReader: TypeAlias = Callable[[Method, Any, Context], Any]

_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("caller")


def current_caller() -> Caller:
    """The authenticated caller of the RPC being served."""
    return _caller.get()


def caller_metadata() -> tuple[tuple[str, str], ...]:
    """The metadata naming the caller's token for Envoy's access log, none
    before it is known."""
    caller = _caller.get(None)
    return () if caller is None else _name_metadata(caller.token_name)


@lru_cache(maxsize=1024)  # a handful of token names make most calls
def _name_metadata(token_name: str) -> tuple[tuple[str, str], ...]:
    return ((CALLER_NAME_HEADER, quote(token_name, safe="")),)


def metadata_value(context: Context, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else value.decode()
    return None


class GuardInterceptor(ServerInterceptor):
    """Runs each call of a method in `methods` behind the guards, all in one
    frame (`_MethodGuard.run`): its metrics, its span (`spans`, if given),
    the one error mapping, `draining`, the caller's deadline, and
    `authentication` with the method's scopes. Inside them, `read_request`
    turns a single request into the servicer's."""

    def __init__(
        self,
        methods: dict[str, Method],
        authentication: "Authentication",
        *,
        draining: "Draining | None" = None,
        spans: Spans | None = None,
        read_request: RequestReader = lambda method, request, context: request,
    ) -> None:
        self._methods = methods
        self._authentication = authentication
        self._draining = draining or Draining()
        self._spans = spans
        self._read_request = read_request
        self._handlers = WrappedHandlers(self._guarded_handler)

    async def intercept_service(  # type: ignore[override] # grpc takes None for "no such method"
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> "Handler | None":
        path = handler_call_details.method
        if path.split("/")[1] in OPEN_SERVICES:
            return await continuation(handler_call_details)  # type: ignore[no-any-return]
        handler = await continuation(handler_call_details)
        if path not in self._methods or handler is None:
            return None  # gRPC answers UNIMPLEMENTED
        return self._handlers(path, handler)

    def _guarded_handler(self, path: str, handler: Handler) -> Handler:
        method = self._methods[path]
        guard = _MethodGuard(method, self._authentication, self._draining, self._spans or _no_span)
        read_request = self._read_request
        return _guarded(
            path,
            handler,
            guard.run,
            lambda request, context: read_request(method, request, context),
        )


def _no_span(method: Method, context: Context) -> AbstractContextManager[None]:
    return _NO_SPAN


_NO_SPAN = nullcontext()


class _MethodGuard:
    """The guards of one method's calls, with what they need made once (its
    metrics' series, its scopes), so that a call allocates nothing for them."""

    def __init__(
        self, method: Method, authentication: "Authentication", draining: "Draining", spans: Spans
    ) -> None:
        self._method = method
        self._scopes = method.scopes
        self._metrics = MethodMetrics(method.path)
        self._authentication = authentication
        self._draining = draining
        self._spans = spans

    async def run(self, body: Body, request: Any, context: Context) -> Any:
        """`body(request, context)` behind every guard, outermost first."""
        # Measured around every guard, so that refused calls count too.
        self._metrics.started()
        started = time.perf_counter()
        code = "UNKNOWN"
        try:
            # The span covers the other guards' work (the token's lookup) and
            # sees the status they end a call with.
            with self._spans(self._method, context):
                try:
                    self._draining.check()
                    with caller_deadline(context.time_remaining()):
                        if self._method.open:
                            # Declared so in its proto (`no_token`): it has
                            # no caller, and `current_caller` fails in it.
                            response = await body(request, context)
                        else:
                            caller = await self._authentication.caller(context)
                            token = _caller.set(caller)
                            _name_in_trailers(context, caller)
                            try:
                                caller.require_any(self._scopes)
                                response = await body(request, context)
                            finally:
                                _caller.reset(token)
                except grpc.aio.AbortError:
                    raise  # already a status
                except Exception as error:
                    # The one error mapping (errors.py): any error is the caller's status.
                    await abort(context, error)
            code = "OK"
            return response
        except grpc.aio.AbortError:
            code = _status_name(context)
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            self._metrics.ended(code, time.perf_counter() - started)


def _guarded(
    path: str,
    handler: Handler,
    run: Callable[[Body, Any, Context], Awaitable[Any]],
    read: Callable[[Any, Context], Any],
) -> Handler:
    """The same handler, with each call's behavior run as the `body` of `run`
    (a single request passed through `read` first), for every kind of RPC.
    The bodies are made here, once per method; a call allocates none.
    Streaming handlers write their responses (see `_streaming`)."""
    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        unary_unary: Any = handler.unary_unary

        async def respond(request: Any, context: Context) -> Any:
            return await unary_unary(read(request, context), context)

        return grpc.unary_unary_rpc_method_handler(partial(run, respond), **serializers)
    if handler.unary_stream is not None:
        unary_stream: Any = handler.unary_stream

        async def stream(request: Any, context: Context) -> None:
            await _streaming(path, unary_stream(read(request, context), context))

        return grpc.unary_stream_rpc_method_handler(partial(run, stream), **serializers)
    if handler.stream_unary is not None:
        stream_unary: Any = handler.stream_unary

        return grpc.stream_unary_rpc_method_handler(partial(run, stream_unary), **serializers)
    if handler.stream_stream is None:
        raise TypeError("a method handler without a behavior")
    stream_stream: Any = handler.stream_stream

    async def converse(requests: Any, context: Context) -> None:
        await _streaming(path, stream_stream(requests, context))

    return grpc.stream_stream_rpc_method_handler(partial(run, converse), **serializers)


def _name_in_trailers(context: Context, caller: Caller) -> None:
    """Names the caller's token in the call's trailers, for Envoy's access
    log: it reads the name from them, or from the headers they become when
    the status goes alone (an error before any response).

    Trailers go with the status in grpc's last batch. Headers would have to
    go ahead of the response in a batch of their own, which cost about a
    tenth of a worker's CPU per call. A call from elsewhere (HTK_GRPC_PORT)
    gets no name: it is for Envoy's log alone."""
    if trusted_peer(context.peer()):
        context.set_trailing_metadata(_name_metadata(caller.token_name))


def _status_name(context: Context) -> str:
    """The status a call was aborted with, as gRPC names it (NOT_FOUND)."""
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


async def _streaming(path: str, writing: Awaitable[None]) -> None:
    """Runs a streaming method, which writes its responses itself
    (`context.write`, see streams.py), in the call's own task.

    Streaming methods are writers, not generators for grpc to iterate: were
    they, a client leaving while a response is being sent would cancel
    grpc's loop but not the generator, which the garbage collector would
    close later in a task of its own, where the guards could not reset their
    context variables and the call's end would be logged as an error. Here
    the cancellation reaches the writer, which closes its generators in this
    task, and the guards leave in the task and context that entered them.
    """
    try:
        await writing
    except asyncio.CancelledError:
        # A client that goes away (a closed tab, a resume) is no fault.
        log.debug("%s cancelled: its client left or its deadline passed", path)
        raise


class Draining:
    """Refuses new calls with UNAVAILABLE once the server is shutting down."""

    def __init__(self) -> None:
        self._draining = False

    def begin(self) -> None:
        self._draining = True

    def check(self) -> None:
        if self._draining:
            raise Unavailable("the server is shutting down; retry")


class Authentication:
    """Authenticates the bearer token of a call."""

    def __init__(self, tokens: TokenService) -> None:
        self._tokens = tokens

    async def caller(self, context: Context) -> Caller:
        """The caller the call's token stands for; raises Unauthenticated."""
        authorization = metadata_value(context, "authorization")
        if not authorization:
            raise Unauthenticated("missing token: send the header 'Authorization: Bearer htk_...'")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("malformed Authorization header: expected 'Bearer htk_...'")
        if (caller := self._tokens.remembered(token)) is not None:
            return caller
        # The checksum turns away mistyped and made-up tokens without a query.
        if not is_well_formed(token):
            raise Unauthenticated("malformed token: not an htk token")
        caller = await self._tokens.authenticate(token)
        if caller is None:
            raise Unauthenticated("invalid token: unknown or revoked")
        return caller
