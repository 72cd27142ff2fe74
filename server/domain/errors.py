"""The errors the service reports to its callers.

Each class stands for one gRPC status; `server.transport.errors` is the one
place that turns them into statuses (and Envoy turns those into HTTP codes).
"""


class DomainError(Exception):
    """An error whose message is meant for the caller."""


class InvalidArgument(DomainError):
    """A request field is malformed or out of range (HTTP 400)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class FailedPrecondition(DomainError):
    """The request is well-formed but not allowed in the current state (HTTP 400)."""


class NotFound(DomainError):
    """The resource does not exist for this caller (HTTP 404)."""


class Unauthenticated(DomainError):
    """The caller's token is missing, malformed, unknown or revoked (HTTP 401)."""


class PermissionDenied(DomainError):
    """The caller's token lacks a scope the call needs (HTTP 403)."""


class AlreadyExists(DomainError):
    """The request conflicts with one made before, e.g. a reused Idempotency-Key (HTTP 409)."""


class DeadlineExceeded(DomainError):
    """The work did not finish within the caller's deadline or the database's timeouts
    (HTTP 504)."""


class ResourceExhausted(DomainError):
    """A limit of the server is reached, e.g. how many streams it serves (HTTP 429)."""


class Unavailable(DomainError):
    """A dependency (the database) cannot be reached right now; retry later (HTTP 503)."""
