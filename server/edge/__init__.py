"""The REST edge: what happens to a REST request before the servicer, in order.

1. Envoy takes the connection (HTTP/1.1 or HTTP/2, TLS when configured) with
   the config `htk run` renders from `envoy.yaml` (`envoy.py`), and buffers
   the body up to `MAX_REQUEST_BODY_BYTES` (413 past it; `constants.py`).
2. Before any filter, the connection manager drops internal `x-htk-*`
   headers a client sent, and header names gRPC metadata does not take.
   Then the first Lua filter (`rest_filter.lua`, rendered with its
   constants by `envoy.py` and `lua.py`), which the commonest call skips (a
   GET of a REST path with nothing for it to do, matched by its route in
   `envoy.yaml`): one spelling of `Authorization`,
   a call without a token marked for the shared anonymous budget, the
   query's parameter names recorded for the access log,
   a malformed `x-request-id` refused, a method the path does not take
   answered 405 (the paths come from the protos' google.api.http rules and
   from `dashboard.py`'s routes), and then the query string (if the path
   has one) and the base64-encoded body moved into internal headers
   (`constants.py`).
3. The SSE filter (`sse_event_ids.lua`), which has code on one route alone:
   WatchProcess transcoded from REST, whose events get `id:` lines.
4. The rate limits (per address, anonymous, per token), then the
   transcoder, which binds only the path and turns the call into gRPC; the
   route (`envoy.yaml`) sends it to a worker over that worker's Unix socket
   (`constants.worker_socket`).
5. In the worker, after the guards (server/transport/interceptors.py), the
   strict reader (`rest_input.py`) reads the query string and body from the
   internal headers, if the peer is Envoy (`constants.trusted_peer`), against
   the request message's descriptor, and the servicer gets the request.

Envoy also serves the dashboard's files (`dashboard.py`) and answers
/healthz, /readyz and the OpenAPI document itself.
"""
