"""What every RPC goes through before its servicer method: error mapping,
the caller's deadline, authentication and authorization, and strict checking
of REST bodies.

Interceptors run in the order `server.app` lists them; each wraps the unary
handler of the next.
"""

import contextvars
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import grpc
from google.protobuf import descriptor

from htk.processes.v1 import process_service_pb2
from server.domain.errors import Unauthenticated, Unavailable
from server.domain.tokens import WRITE_SCOPES, Caller, Scope, is_well_formed
from server.storage.database import deadline_in
from server.storage.tokens import TokenStore
from server.transport.errors import to_status
from server.transport.rest_input import rest_request

# grpc's classes are generic only in their type stubs, not at run time.
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Behavior: TypeAlias = Callable[[Any, Context], Awaitable[Any]]
Continuation: TypeAlias = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]
if TYPE_CHECKING:
    ServerInterceptor: TypeAlias = grpc.aio.ServerInterceptor[Any, Any]
else:
    ServerInterceptor = grpc.aio.ServerInterceptor

SERVICE = process_service_pb2.DESCRIPTOR.services_by_name["ProcessService"]
_METHODS: dict[str, descriptor.MethodDescriptor] = {
    f"/{SERVICE.full_name}/{method.name}": method for method in SERVICE.methods
}
# Reading needs only a valid token of the organization; writing needs a scope.
_REQUIRED_SCOPES: dict[str, frozenset[Scope]] = {
    f"/{SERVICE.full_name}/CreateProcess": WRITE_SCOPES,
    f"/{SERVICE.full_name}/UpdateProcess": WRITE_SCOPES,
}

_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("caller")


def current_caller() -> Caller:
    """The authenticated caller of the RPC being served."""
    return _caller.get()


def metadata_value(context: Context, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else value.decode()
    return None


class _ProcessServiceInterceptor(ServerInterceptor):
    """Wraps the handlers of ProcessService's (unary) methods with `wrap`.

    Health checking and reflection pass through untouched: they need no token.
    """

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method = _METHODS.get(handler_call_details.method)
        if handler is None or method is None:
            return handler
        if handler.unary_unary is None:
            raise TypeError("only unary RPCs can be intercepted")
        return grpc.unary_unary_rpc_method_handler(
            self.wrap(method, cast(Behavior, handler.unary_unary)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def wrap(self, method: descriptor.MethodDescriptor, behavior: Behavior) -> Behavior:
        raise NotImplementedError


class ErrorInterceptor(_ProcessServiceInterceptor):
    """Turns any error raised below it into the caller's status (see errors.py)."""

    def wrap(self, method: descriptor.MethodDescriptor, behavior: Behavior) -> Behavior:
        async def mapped(request: Any, context: Context) -> Any:
            try:
                return await behavior(request, context)
            except Exception as error:
                status = to_status(error)
                # What context.abort_with_status does; the type stubs lack it.
                context.set_trailing_metadata(status.trailing_metadata)
                await context.abort(status.code, status.details)

        return mapped


class DrainingInterceptor(_ProcessServiceInterceptor):
    """Refuses new calls with UNAVAILABLE once the server is shutting down
    (`begin`), before they do anything."""

    def __init__(self) -> None:
        self._draining = False

    def begin(self) -> None:
        self._draining = True

    def wrap(self, method: descriptor.MethodDescriptor, behavior: Behavior) -> Behavior:
        async def refusing(request: Any, context: Context) -> Any:
            if self._draining:
                raise Unavailable("the server is shutting down; retry")
            return await behavior(request, context)

        return refusing


class DeadlineInterceptor(_ProcessServiceInterceptor):
    """Holds the database work of a call to the caller's deadline, if it set one."""

    def wrap(self, method: descriptor.MethodDescriptor, behavior: Behavior) -> Behavior:
        async def bounded(request: Any, context: Context) -> Any:
            with deadline_in(context.time_remaining()):
                return await behavior(request, context)

        return bounded


class AuthInterceptor(_ProcessServiceInterceptor):
    """Authenticates the bearer token and checks the scopes the method needs."""

    def __init__(self, tokens: TokenStore) -> None:
        self._tokens = tokens

    def wrap(self, method: descriptor.MethodDescriptor, behavior: Behavior) -> Behavior:
        needed = _REQUIRED_SCOPES.get(f"/{SERVICE.full_name}/{method.name}", frozenset())

        async def authenticated(request: Any, context: Context) -> Any:
            caller = await self._authenticate(metadata_value(context, "authorization"))
            caller.require_any(needed)
            token = _caller.set(caller)
            try:
                return await behavior(request, context)
            finally:
                _caller.reset(token)

        return authenticated

    async def _authenticate(self, authorization: str | None) -> Caller:
        if not authorization:
            raise Unauthenticated("missing token: send the header 'Authorization: Bearer htk_...'")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("malformed Authorization header: expected 'Bearer htk_...'")
        # The checksum turns away mistyped and made-up tokens without a query.
        if not is_well_formed(token):
            raise Unauthenticated("malformed token: not an htk token")
        caller = await self._tokens.authenticate(token)
        if caller is None:
            raise Unauthenticated("invalid token: unknown or revoked")
        return caller


class JsonBodyInterceptor(_ProcessServiceInterceptor):
    """Reads a REST call's query string and JSON body into its request, strictly."""

    def wrap(self, method: descriptor.MethodDescriptor, behavior: Behavior) -> Behavior:
        async def checked(request: Any, context: Context) -> Any:
            metadata = context.invocation_metadata() or ()
            request = rest_request(method, request, metadata, context.peer())
            return await behavior(request, context)

        return checked
