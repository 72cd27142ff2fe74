"""What Envoy and the workers agree on, said once: the renderer writes these
into Envoy's config and Lua filters (server/edge/envoy.py), and the workers
read requests (server/edge/rest_input.py) and answer (the caller's name) by
the same names."""

# Headers only Envoy and the server set, all named with this prefix: Envoy
# drops any a client sends (its connection manager's early header mutation),
# before its filters set their own.
INTERNAL_HEADER_PREFIX = "x-htk-"
# A REST call's query string, maybe empty: set on REST calls whose path has
# a `?` (without one there is nothing to read).
QUERY_HEADER = "x-htk-query"
# A REST call's body, base64-encoded: set on calls with a body.
JSON_BODY_HEADER = "x-htk-json-body"
# Marks a call of the API without a token: such calls share one rate budget.
ANONYMOUS_HEADER = "x-htk-anonymous"
# The response header in which a call names its token for Envoy's access
# log; Envoy takes it out of the response. Percent-encoded: names are Unicode
# where metadata is ASCII, and an encoded name has no space to break a line.
CALLER_NAME_HEADER = "x-htk-token-name"

# Where Envoy's filters leave what its access log records of a request.
METADATA_NAMESPACE = "htk"

# The largest request body Envoy takes (413 past it).
MAX_REQUEST_BODY_BYTES = 1024 * 1024
# The headers a worker takes from Envoy: the body travels in one, which
# base64 grows by a third, beside the query and the client's own headers.
MAX_METADATA_BYTES = 2 * MAX_REQUEST_BODY_BYTES

# Envoy reaches each worker on an abstract Unix socket of its own (named by
# `worker_socket`), and gRPC names such a caller by this prefix; a caller over
# TCP is a gRPC client, which may not send the internal headers.
ENVOY_PEER_PREFIX = "unix:"


def trusted_peer(peer: str) -> bool:
    """Whether a call came through Envoy, which alone may set internal headers."""
    return peer.startswith(ENVOY_PEER_PREFIX)


def worker_socket(stack_id: int, worker: int) -> str:
    """Where Envoy reaches one worker: an abstract Unix socket, which needs no
    port and no file, named after the stack so that stacks do not collide."""
    return f"htk-{stack_id}-worker-{worker}"


def readiness_socket(stack_id: int) -> str:
    """Where Envoy reaches the supervisor's readiness check (/readyz)."""
    return f"htk-{stack_id}-readiness"
