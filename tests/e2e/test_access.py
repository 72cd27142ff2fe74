"""Every REST route of every htk service, through Envoy, is guarded: the routes
are enumerated from the descriptor set's http annotations, so a new RPC is
covered without editing this test."""

import re
import uuid

import httpx
import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

from htk.processes.v1 import access_pb2
from server.settings import CHECKOUT
from tests.support.orgs import Org
from tests.support.stack import Stack
from tests.support.tokens import create_token

DESCRIPTOR_SET = CHECKOUT / "envoy" / "process_service.binpb"
UNAUTHENTICATED = 16
PERMISSION_DENIED = 7


def _routes() -> list[tuple[str, str, str, bool, bool]]:
    """(RPC path, HTTP method, URL with its path fields filled, whether it
    writes, whether it declares it takes no token)."""
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes()).file
    routes = []
    for file in files:
        if not file.package.startswith("htk."):
            continue
        for service in file.service:
            for method in service.method:
                rule: http_pb2.HttpRule = method.options.Extensions[annotations_pb2.http]
                verb = rule.WhichOneof("pattern")
                assert verb is not None, f"{service.name}.{method.name} has no HTTP route"
                url = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), getattr(rule, verb))
                writes = (
                    method.options.idempotency_level != descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
                )
                open_ = method.options.Extensions[access_pb2.access].no_token
                routes.append((f"{service.name}.{method.name}", verb.upper(), url, writes, open_))
    return routes


ROUTES = _routes()
GUARDED = [route for route in ROUTES if not route[4]]
OPEN = [route for route in ROUTES if route[4]]


def _send(rest: httpx.Client, verb: str, url: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = b"{}" if verb == "POST" else None
    with rest.stream(verb, url, headers=headers, content=body) as response:
        response.read()
        return response


@pytest.mark.parametrize(
    ("rpc", "verb", "url", "writes", "open_"), GUARDED, ids=[r[0] for r in GUARDED]
)
def test_every_route_refuses_a_request_without_a_token(
    rest: httpx.Client, rpc: str, verb: str, url: str, writes: bool, open_: bool
) -> None:
    response = _send(rest, verb, url, None)
    assert response.status_code == 401, response.text
    assert response.json()["code"] == UNAUTHENTICATED


@pytest.mark.parametrize(("rpc", "verb", "url", "writes", "open_"), OPEN, ids=[r[0] for r in OPEN])
def test_a_route_declared_open_takes_no_token(
    rest: httpx.Client, rpc: str, verb: str, url: str, writes: bool, open_: bool
) -> None:
    # Its request carries the proof, if any: an empty one may be invalid, but
    # is not refused for want of a token.
    response = _send(rest, verb, url, None)
    assert response.status_code not in (401, 403), response.text


WRITE_ROUTES = [route for route in GUARDED if route[3]]


@pytest.mark.parametrize(
    ("rpc", "verb", "url", "writes", "open_"), WRITE_ROUTES, ids=[r[0] for r in WRITE_ROUTES]
)
def test_every_write_route_refuses_a_read_only_token(
    rest: httpx.Client, org: Org, rpc: str, verb: str, url: str, writes: bool, open_: bool
) -> None:
    response = _send(rest, verb, url, org.reader)
    assert response.status_code == 403, response.text
    assert response.json()["code"] == PERMISSION_DENIED


def test_get_caller_tells_the_tokens_organization_name_and_scopes(
    rest: httpx.Client, stack: Stack
) -> None:
    org_id = f"org-{uuid.uuid4().hex[:12]}"
    token = create_token(stack.env, org_id, "tasks:complete,processes:write", "alice")
    response = rest.get("/api/v1/caller", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "organization": org_id,
        "token_name": "alice",
        "scopes": ["processes:write", "tasks:complete"],
    }
