"""The errors the service reports to its callers.

Each class stands for one gRPC status; `server.transport.errors` is the one
place that turns them into statuses (and Envoy turns those into HTTP codes).
"""

import re

# How a field path reads in a message as it is: `step_defs[0].key`,
# `Idempotency-Key`, `data.a.""` (an empty key), or a name still
# percent-encoded because it is not UTF-8 (`%FF`).
_PLAIN_FIELD = re.compile(r'[A-Za-z0-9_.\-\[\]%"]+')


class DomainError(Exception):
    """An error whose message is meant for the caller."""


class InvalidArgument(DomainError):
    """A request field is malformed or out of range (HTTP 400)."""

    def __init__(self, field: str, problem: str) -> None:
        # A name the caller made up (an unknown query parameter or JSON key) is
        # quoted, so that one like ":" or "" still reads as the name it is.
        label = field if _PLAIN_FIELD.fullmatch(field) else repr(field)
        super().__init__(f"{label}: {problem}")
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
