"""Renders the API guide's tables (docs/api.md) from what the protos and the
domain declare: each RPC with its REST binding and who may call it, the
errors of each service and RPC, and the limits of request values.

    python scripts/api_tables.py [DOCUMENT [DESCRIPTOR_SET]]

rewrites, in place, each table between its two markers; everything else in
the document stays as it is. `make generate` runs it, and `make
check-generated` fails when a table is stale. It reads the descriptor set
Envoy reads, as scripts/openapi.py does.
"""

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2
from openapi import (
    ACCESS_OPTION,
    DEFAULT_DESCRIPTOR,
    ERRORS_OPTION,
    SERVICE_ERRORS_OPTION,
    VALUES_OPTION,
    Protos,
    Rpc,
    error_cases,
    query_fields,
    rpcs,
)

from server.domain import paging
from server.domain.idempotency import MAX_KEY_LENGTH
from server.domain.processes import limits

DEFAULT_DOCUMENT = Path("docs/api.md")


def rest(protos: Protos, rpc: Rpc) -> str:
    """How REST calls the RPC: method, path, query parameters and body fields."""
    binding = rpc.binding
    call = f"{binding.method} {binding.plain_template}"
    if binding.body != "*":
        skip = {*binding.path_variables, binding.body} - {""}
        if query := list(query_fields(protos, rpc.method.input_type, skip)):
            call += "?" + "&".join(f"{name}=" for name in query)
    text = f"`{call}`"
    if binding.body == "*":
        fields = [
            member.name
            for member in protos.messages[rpc.method.input_type].field
            if member.name not in binding.path_variables
        ]
        text += " with a JSON body of " + ", ".join(f"`{name}`" for name in fields)
    return text + (" (a stream)" if rpc.method.server_streaming else "")


def who(protos: Protos, rpc: Rpc) -> str:
    """Who may call the RPC, as its `(htk.processes.v1.access)` declares."""
    access = protos.option(rpc.method.options, ACCESS_OPTION)
    if access.any_token:
        return "any token of the organization"
    if access.no_token:
        return "no token (the request proves who calls)"
    return " or ".join(f"`{scope}`" for scope in access.any_of_scopes)


def rpc_table(protos: Protos, served: list[Rpc]) -> Iterator[str]:
    yield "| RPC | REST | who may call |"
    yield "| --- | --- | --- |"
    for rpc in served:
        yield f"| `{rpc.method.name}` | {rest(protos, rpc)} | {who(protos, rpc)} |"


def errors_table(protos: Protos, served: list[Rpc]) -> Iterator[str]:
    """What every RPC of a service may end with, then what each RPC adds."""
    yield "| RPC | code (HTTP status) | when |"
    yield "| --- | --- | --- |"
    services = {rpc.service.name: rpc.service for rpc in served}
    rows = [
        (f"every RPC of `{name}`", case)
        for name, service in services.items()
        for case in error_cases(protos, service.options, SERVICE_ERRORS_OPTION)
    ]
    rows += [
        (f"`{rpc.method.name}`", case)
        for rpc in served
        for case in error_cases(protos, rpc.method.options, ERRORS_OPTION)
    ]
    for caller, case in rows:
        when = case.when.replace("|", r"\|")
        yield f"| {caller} | {case.code} ({case.http_status}) | {when} |"


def bounds(values: Any) -> str:
    """A field's `(htk.processes.v1.values)` (a FieldValues of the set's own pool)
    number rules, in words."""
    parts = []
    if values.HasField("minimum") and values.HasField("maximum"):
        parts.append(f"{values.minimum} to {values.maximum:,}")
    elif values.HasField("minimum"):
        parts.append(f"{values.minimum} or more")
    elif values.HasField("maximum"):
        parts.append(f"at most {values.maximum:,}")
    if values.HasField("max_length"):
        parts.append(f"at most {values.max_length:,} characters")
    if values.HasField("max_items"):
        parts.append(f"at most {values.max_items:,} items")
    return "; ".join(parts)


def limits_table(protos: Protos, served: list[Rpc]) -> Iterator[str]:
    """Each request field's declared bounds, then the limits only the server
    states (server/domain/), which keep every accepted process servable."""
    yield "| what | limit |"
    yield "| --- | --- |"
    seen: set[str] = set()
    pending = [rpc.method.input_type for rpc in served]
    while pending:
        message = pending.pop(0)
        if message in seen or message not in protos.messages:
            continue
        seen.add(message)
        for member in protos.messages[message].field:
            pending.append(member.type_name)
            values = protos.option(member.options, VALUES_OPTION)
            if values is not None and (text := bounds(values)):
                yield f"| `{message.rsplit('.', 1)[1]}.{member.name}` | {text} |"
    yield (
        f"| `data` of an update | a JSON object of at most {limits.MAX_DATA_BYTES:,} bytes as"
        f" compact JSON, at most {limits.MAX_DATA_DEPTH} levels of objects and arrays deep,"
        " finite numbers (stored as doubles) |"
    )
    yield (
        f"| one process | at most {limits.MAX_PROCESS_BYTES:,} bytes of text and data (its texts"
        " in UTF-8 plus each step's `data` as compact JSON); an update past that is a 400"
        " (`FAILED_PRECONDITION`), so every accepted process reads back, over REST and by gRPC"
        " clients with the default 4 MiB limit |"
    )
    yield (
        f"| `limit` not given | {paging.DEFAULT_PAGE_SIZE} processes or tasks,"
        f" {limits.DEFAULT_EVENTS_PAGE_SIZE} events |"
    )
    yield f"| `page_token` | at most {paging.MAX_PAGE_TOKEN_LENGTH} characters |"
    yield (
        f"| `Idempotency-Key` | 1 to {MAX_KEY_LENGTH} printable ASCII characters without spaces"
        " (`!` to `~`) |"
    )


TABLES = {"RPC": rpc_table, "errors": errors_table, "limits": limits_table}


def render(document: str, descriptor_set: bytes) -> str:
    files = list(descriptor_pb2.FileDescriptorSet.FromString(descriptor_set).file)
    protos = Protos.load(files)
    served = list(rpcs(protos, files))
    for name, table in TABLES.items():
        begin = f"<!-- {name} table: generated from the protos by `make generate` -->"
        end = f"<!-- end of {name} table -->"
        before, found_begin, rest = document.partition(begin + "\n")
        _, found_end, after = rest.partition(end)
        if not (found_begin and found_end):
            raise SystemExit(f"the {name} table's markers are missing")
        document = f"{before}{begin}\n" + "\n".join(table(protos, served)) + f"\n{end}{after}"
    return document


def main(argv: list[str]) -> None:
    path = Path(argv[1]) if len(argv) > 1 else DEFAULT_DOCUMENT
    source = Path(argv[2]) if len(argv) > 2 else DEFAULT_DESCRIPTOR
    path.write_text(render(path.read_text(), source.read_bytes()))


if __name__ == "__main__":
    main(sys.argv)
