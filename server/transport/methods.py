"""The API's methods and who may call them, read from the protos at start-up.

Every RPC of every htk service declares its access rule once, in its proto
(`option (htk.processes.v1.access)`), and whether it only reads
(`idempotency_level = NO_SIDE_EFFECTS`). The server's scope checks come from
here, and `method_table` refuses an RPC without a rule, so the server does
not start with a method it would not know how to guard.
"""

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor, descriptor_pb2

import htk
from htk.processes.v1 import access_pb2
from server.domain.tokens import Scope

_NO_SIDE_EFFECTS = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS


class UndeclaredAccess(Exception):
    """An RPC whose access rule is missing or contradictory: the server must not start."""


@dataclass(frozen=True)
class Method:
    """One RPC of the API, as the interceptors see it."""

    path: str  # gRPC's `/package.Service/Method`
    descriptor: descriptor.MethodDescriptor
    # The token needs one of these; empty: any valid token of the organization.
    scopes: frozenset[Scope]
    read_only: bool
    # Called without an htk token (`no_token`): the request proves who calls.
    open: bool = False


def api_services() -> list[descriptor.ServiceDescriptor]:
    """Every service the protos define: one per service in each generated `*_pb2` module.

    Found rather than listed, so that a new proto file needs no edit here.
    A module is counted once however many folders hold it (the Python
    client's copy of the messages, clients/python, is one more).
    """
    modules = {
        ".".join(("htk", *module_file.relative_to(root).with_suffix("").parts))
        for root in htk.__path__
        for module_file in Path(root).rglob("*_pb2.py")
    }
    return [
        service
        for module in sorted(modules)
        for service in importlib.import_module(module).DESCRIPTOR.services_by_name.values()
    ]


def method_table(services: Iterable[descriptor.ServiceDescriptor]) -> dict[str, Method]:
    """The methods of `services` by gRPC path; raises UndeclaredAccess for any
    RPC without a valid access rule."""
    table = {}
    for service in services:
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            table[path] = _method(path, method)
    return table


def _method(path: str, method: descriptor.MethodDescriptor) -> Method:
    options = method.GetOptions()
    if not options.HasExtension(access_pb2.access):
        raise UndeclaredAccess(f"{path} declares no `option (htk.processes.v1.access)`")
    access = options.Extensions[access_pb2.access]
    read_only = options.idempotency_level == _NO_SIDE_EFFECTS
    if [access.any_token, bool(access.any_of_scopes), access.no_token].count(True) != 1:
        raise UndeclaredAccess(f"{path}: set exactly one of any_token, any_of_scopes and no_token")
    if access.any_token and not read_only:
        raise UndeclaredAccess(
            f"{path}: only a read (idempotency_level = NO_SIDE_EFFECTS) may allow any token"
        )
    try:
        scopes = frozenset(Scope(name) for name in access.any_of_scopes)
    except ValueError as error:
        raise UndeclaredAccess(f"{path}: {error}") from None
    return Method(
        path=path, descriptor=method, scopes=scopes, read_only=read_only, open=access.no_token
    )
