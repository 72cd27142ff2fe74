"""Writes the OpenAPI 3 document of the REST API from the Envoy descriptor set.

The document describes what Envoy's gRPC-JSON transcoder really serves, so it is
derived from the same descriptor set Envoy reads (envoy/process_service.binpb,
built with --include_imports --include_source_info): paths and bodies from the
`google.api.http` rules, JSON names and types as Envoy prints them
(`preserve_proto_field_names`, `always_print_primitive_fields`), descriptions
from the proto comments. What the protos cannot say (Envoy's own replies, the
bearer token, the Idempotency-Key header) is stated once below.

    python scripts/openapi.py [DESCRIPTOR_SET [OUTPUT]]
"""

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# googleapis-common-protos ships no type information.
from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor_pb2

FDP = descriptor_pb2.FieldDescriptorProto
Schema = dict[str, Any]

DEFAULT_DESCRIPTOR = Path("envoy/process_service.binpb")
DEFAULT_OUTPUT = Path("docs/openapi.json")
HTTP_METHODS = ("get", "put", "post", "delete", "patch")
# Calls that change state take an Idempotency-Key (server/transport): a repeat
# with the same key and body gets the original response, another body a 409.
MUTATING_METHODS = {"post", "put", "patch", "delete"}
INT32_RANGE = {"minimum": -(2**31), "maximum": 2**31 - 1}
UINT32_RANGE = {"minimum": 0, "maximum": 2**32 - 1}

# Proto3 JSON as Envoy prints it: 64-bit integers are strings, the rest natural.
SCALARS: dict[int, Schema] = {
    FDP.TYPE_INT32: {"type": "integer", "format": "int32", **INT32_RANGE},
    FDP.TYPE_SINT32: {"type": "integer", "format": "int32", **INT32_RANGE},
    FDP.TYPE_SFIXED32: {"type": "integer", "format": "int32", **INT32_RANGE},
    FDP.TYPE_UINT32: {"type": "integer", "format": "int64", **UINT32_RANGE},
    FDP.TYPE_FIXED32: {"type": "integer", "format": "int64", **UINT32_RANGE},
    FDP.TYPE_INT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FDP.TYPE_SINT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FDP.TYPE_SFIXED64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FDP.TYPE_UINT64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    FDP.TYPE_FIXED64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    FDP.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FDP.TYPE_FLOAT: {"type": "number", "format": "float"},
    FDP.TYPE_BOOL: {"type": "boolean"},
    FDP.TYPE_STRING: {"type": "string"},
    FDP.TYPE_BYTES: {"type": "string", "format": "byte"},
}
# Well-known types have JSON forms of their own rather than objects of fields.
WELL_KNOWN: dict[str, Schema] = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"},
    ".google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    ".google.protobuf.Value": {},
    ".google.protobuf.ListValue": {"type": "array", "items": {}},
    ".google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    ".google.protobuf.FieldMask": {"type": "string"},
    ".google.protobuf.Any": {
        "type": "object",
        "required": ["@type"],
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
    **{
        f".google.protobuf.{name}Value": SCALARS[kind]
        for name, kind in [
            ("Double", FDP.TYPE_DOUBLE),
            ("Float", FDP.TYPE_FLOAT),
            ("Int64", FDP.TYPE_INT64),
            ("UInt64", FDP.TYPE_UINT64),
            ("Int32", FDP.TYPE_INT32),
            ("UInt32", FDP.TYPE_UINT32),
            ("Bool", FDP.TYPE_BOOL),
            ("String", FDP.TYPE_STRING),
            ("Bytes", FDP.TYPE_BYTES),
        ]
    },
}

# Every error body, from the server (convert_grpc_status) or from Envoy itself
# (local_reply_config in envoy/envoy.yaml).
STATUS_SCHEMA: Schema = {
    "type": "object",
    "description": "A google.rpc.Status: the gRPC code, a message naming the field and "
    "the problem, and details such as a google.rpc.BadRequest.",
    "required": ["code", "message", "details"],
    "properties": {
        "code": {"type": "integer", "format": "int32", "description": "A google.rpc.Code."},
        "message": {"type": "string"},
        "details": {"type": "array", "items": WELL_KNOWN[".google.protobuf.Any"]},
    },
    "additionalProperties": False,
}
# Replies Envoy produces itself (envoy/envoy.yaml), which no proto comment
# mentions: to every operation, or to those with a request body.
ENVOY_ERRORS = {
    400: "INVALID_ARGUMENT: Envoy could not read the request (malformed JSON, a value "
    "of the wrong type, an unknown query parameter).",
    429: "RESOURCE_EXHAUSTED: the token made too many requests; retry later.",
    503: "UNAVAILABLE: the server is down or overloaded; retry later.",
    504: "DEADLINE_EXCEEDED: the call took longer than the route timeout.",
}
BODY_ERRORS = {413: "INVALID_ARGUMENT: the request body is too large."}
IDEMPOTENCY_ERRORS = {
    409: "ALREADY_EXISTS: the Idempotency-Key was used before for a different request."
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes a retry safe: a request repeating the key and body of an earlier "
    "one gets the original response without applying the change again; the same key "
    "with another body is a 409.",
    # What server/domain/idempotency.py accepts: printable ASCII without spaces.
    "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[!-~]+$"},
}
# A server-streaming RPC, as the transcoder serves it (envoy/envoy.yaml).
STREAM_DESCRIPTION = (
    "OK: a stream of Server-Sent Events, each `data: <JSON>` and a blank line, sent as it"
    " happens; each event's JSON is one message of this schema."
)


def media_type(method: descriptor_pb2.MethodDescriptorProto) -> str:
    return "text/event-stream" if method.server_streaming else "application/json"


# Bullets like "* NOT_FOUND (HTTP 404): no such process ..." in RPC comments.
ERROR_BULLET = re.compile(r"\*\s+([A-Z_]+) \(HTTP (\d{3})\):?\s*(.*?)(?=\n\s*\*|\n\s*\n|\Z)", re.S)


def comment(text: str) -> str:
    """A proto comment as Markdown: the one leading space of each line removed."""
    lines = [line[1:] if line.startswith(" ") else line for line in text.splitlines()]
    return "\n".join(lines).strip()


@dataclass
class Protos:
    """Messages, enums and comments of a descriptor set, by full name."""

    messages: dict[str, descriptor_pb2.DescriptorProto] = field(default_factory=dict)
    enums: dict[str, descriptor_pb2.EnumDescriptorProto] = field(default_factory=dict)
    # Comments by (file, source path), the way source_code_info locates them.
    comments: dict[tuple[str, tuple[int, ...]], str] = field(default_factory=dict)
    # Where each message and field is declared, to find its comment.
    locations: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)

    @classmethod
    def load(cls, files: list[descriptor_pb2.FileDescriptorProto]) -> "Protos":
        protos = cls()
        for file in files:
            for location in file.source_code_info.location:
                if location.leading_comments:
                    key = (file.name, tuple(location.path))
                    protos.comments[key] = comment(location.leading_comments)
            protos._add(file.name, f".{file.package}", file.message_type, file.enum_type, (4,))
        return protos

    def _add(
        self,
        file: str,
        scope: str,
        messages: Any,
        enums: Any,
        path: tuple[int, ...],
    ) -> None:
        enum_path = (5,) if path == (4,) else (*path[:-1], 4)
        for index, enum in enumerate(enums):
            self.enums[f"{scope}.{enum.name}"] = enum
            self.locations[f"{scope}.{enum.name}"] = (file, (*enum_path, index))
        for index, message in enumerate(messages):
            name = f"{scope}.{message.name}"
            self.messages[name] = message
            self.locations[name] = (file, (*path, index))
            for number, member in enumerate(message.field):
                self.locations[f"{name}.{member.name}"] = (file, (*path, index, 2, number))
            self._add(file, name, message.nested_type, message.enum_type, (*path, index, 3))

    def doc(self, name: str) -> str:
        location = self.locations.get(name)
        return self.comments.get(location, "") if location else ""


@dataclass
class Builder:
    """Builds component schemas on demand, one per message and direction.

    A response schema marks as required what Envoy always prints; a request
    schema requires nothing (proto3 treats a missing field as its default) and
    refuses unknown fields, as the server does. A message used both ways gets a
    request variant named `<Name>Input`.
    """

    protos: Protos
    response_messages: set[str]
    components: dict[str, Schema] = field(default_factory=dict)

    def ref(self, type_name: str, response: bool) -> Schema:
        if type_name in WELL_KNOWN:
            return dict(WELL_KNOWN[type_name])
        name = type_name.rsplit(".", 1)[1]
        if not response and type_name in self.response_messages:
            name += "Input"
        if name not in self.components:
            self.components[name] = {}  # reserves the name against recursion
            self.components[name] = self.message(type_name, response)
        return {"$ref": f"#/components/schemas/{name}"}

    def message(self, type_name: str, response: bool, skip: frozenset[str] = frozenset()) -> Schema:
        message = self.protos.messages[type_name]
        properties = {
            member.name: self.field(type_name, member, response)
            for member in message.field
            if member.name not in skip
        }
        schema: Schema = {"type": "object", "properties": properties}
        required = [
            member.name
            for member in message.field
            if response and member.name not in skip and always_printed(member)
        ]
        if required:
            schema["required"] = required
        schema["additionalProperties"] = False
        if doc := self.protos.doc(type_name):
            schema["description"] = doc
        return schema

    def field(self, scope: str, member: FDP, response: bool) -> Schema:
        entry = self.protos.messages.get(member.type_name)
        if entry is not None and entry.options.map_entry:
            _key, value = entry.field
            schema: Schema = {
                "type": "object",
                "additionalProperties": self.single(value, response),
            }
        elif member.label == FDP.LABEL_REPEATED:
            schema = {"type": "array", "items": self.single(member, response)}
        else:
            schema = self.single(member, response)
        if doc := self.protos.doc(f"{scope}.{member.name}"):
            if "$ref" in schema:
                # OpenAPI 3.0 ignores a $ref's siblings: wrap it to keep the text.
                schema = {"allOf": [schema]}
            schema["description"] = doc
        return schema

    def single(self, member: FDP, response: bool) -> Schema:
        if member.type == FDP.TYPE_MESSAGE:
            return self.ref(member.type_name, response)
        if member.type == FDP.TYPE_ENUM:
            values = [value.name for value in self.protos.enums[member.type_name].value]
            return {"type": "string", "enum": values}
        return dict(SCALARS[member.type])


def always_printed(member: FDP) -> bool:
    """What `always_print_primitive_fields` prints even when unset: every field
    but proto3 `optional` ones, message fields and oneof members."""
    if member.label == FDP.LABEL_REPEATED:
        return True
    return member.type != FDP.TYPE_MESSAGE and not member.HasField("oneof_index")


def http_rule(method: descriptor_pb2.MethodDescriptorProto) -> tuple[str, str, http_pb2.HttpRule]:
    rule = method.options.Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    if verb is None or verb == "custom":
        raise ValueError(f"{method.name}: no google.api.http get/put/post/delete/patch rule")
    return verb, getattr(rule, verb), rule


def path_fields(template: str) -> list[str]:
    """The fields a template binds, e.g. `process_id` of `/processes/{process_id}`."""
    return [name.split("=")[0] for name in re.findall(r"\{([^}]+)\}", template)]


def query_parameters(
    protos: Protos, builder: Builder, type_name: str, skip: set[str]
) -> Iterator[Schema]:
    """The transcoder reads every field not in the path or body from the query,
    nested message fields by their dotted names."""
    for member in protos.messages[type_name].field:
        if member.name in skip:
            continue
        if member.type == FDP.TYPE_MESSAGE and member.type_name not in WELL_KNOWN:
            nested_skip = {name.split(".", 1)[1] for name in skip if "." in name}
            for nested in query_parameters(protos, builder, member.type_name, nested_skip):
                yield nested | {"name": f"{member.name}.{nested['name']}"}
            continue
        parameter: Schema = {
            "name": member.name,
            "in": "query",
            "required": False,
            "schema": builder.field(type_name, member, response=False),
        }
        if member.label == FDP.LABEL_REPEATED:
            parameter |= {"style": "form", "explode": True}
        description = parameter["schema"].pop("description", None)
        if description:
            parameter["description"] = description
        yield parameter


def errors(service_doc: str, method_doc: str) -> dict[int, list[str]]:
    """Status codes the comments name, with what each means."""
    found: dict[int, list[str]] = {}
    for text in (service_doc, method_doc):
        for code, status, meaning in ERROR_BULLET.findall(text):
            found.setdefault(int(status), []).append(f"{code}: {' '.join(meaning.split())}")
    return found


def operation(
    protos: Protos,
    builder: Builder,
    service: descriptor_pb2.ServiceDescriptorProto,
    method: descriptor_pb2.MethodDescriptorProto,
    docs: tuple[str, str],
) -> tuple[str, str, Schema]:
    verb, template, rule = http_rule(method)
    request = method.input_type
    bound = path_fields(template)
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            **({"description": doc} if (doc := protos.doc(f"{request}.{name}")) else {}),
        }
        for name in bound
    ]
    body: Schema | None = None
    if rule.body == "*":
        body = (
            builder.message(request, response=False, skip=frozenset(bound))
            if bound
            else builder.ref(request, response=False)
        )
    elif rule.body:
        member = next(m for m in protos.messages[request].field if m.name == rule.body)
        body = builder.field(request, member, response=False)
    if not rule.body or rule.body != "*":
        parameters += query_parameters(protos, builder, request, {*bound, rule.body} - {""})
    if verb in MUTATING_METHODS:
        parameters.append(IDEMPOTENCY_KEY)

    response_type = protos.messages[method.output_type]
    if rule.response_body:
        member = next(m for m in response_type.field if m.name == rule.response_body)
        success = builder.field(method.output_type, member, response=True)
    else:
        success = builder.ref(method.output_type, response=True)
    codes = errors(*docs)
    for extra in (
        ENVOY_ERRORS,
        BODY_ERRORS if body is not None else {},
        IDEMPOTENCY_ERRORS if verb in MUTATING_METHODS else {},
    ):
        for status, meaning in extra.items():
            codes.setdefault(status, []).append(meaning)
    responses: Schema = {
        "200": {
            "description": STREAM_DESCRIPTION if method.server_streaming else "OK",
            "content": {media_type(method): {"schema": success}},
        },
    }
    for status, meanings in sorted(codes.items()):
        responses[str(status)] = {
            "description": "\n".join(f"* {meaning}" for meaning in dict.fromkeys(meanings)),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}},
        }
    method_doc = docs[1]
    result: Schema = {
        "operationId": method.name,
        "tags": [service.name],
        "summary": method_doc.split("\n\n")[0].replace("\n", " "),
        "description": method_doc,
        "parameters": parameters,
        "responses": responses,
    }
    if body is not None:
        result["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": body}},
        }
    # A dotted template like {name=projects/*} is a plain parameter to OpenAPI.
    path = re.sub(r"\{([^}=]+)=[^}]*\}", r"{\1}", template)
    return path, verb, result


def add_links(
    paths: dict[str, dict[str, Schema]], responses: dict[str, set[str]], streams: set[str]
) -> None:
    """Links each operation's 200 response to every other operation whose path
    parameters it carries (e.g. CreateProcess's `process_id` to GetProcess), so
    clients and schemathesis's stateful tests can chain calls. Streams are no
    link's target: a chain cannot go on from one that lasts."""
    for source_ops in paths.values():
        for source in source_ops.values():
            fields = responses[source["operationId"]]
            links: Schema = {}
            for target_path, target_ops in paths.items():
                for target in target_ops.values():
                    names = [p["name"] for p in target["parameters"] if p["in"] == "path"]
                    if target is source or not names or not set(names) <= fields:
                        continue
                    if target["operationId"] in streams:
                        continue
                    links[target["operationId"]] = {
                        "operationId": target["operationId"],
                        "parameters": {name: f"$response.body#/{name}" for name in names},
                        "description": f"The {', '.join(names)} of the response, in {target_path}.",
                    }
            if links:
                source["responses"]["200"]["links"] = links


def document(descriptor_set: bytes) -> Schema:
    files = list(descriptor_pb2.FileDescriptorSet.FromString(descriptor_set).file)
    protos = Protos.load(files)
    services = [
        (file, index, service)
        for file in files
        for index, service in enumerate(file.service)
        if any(method.options.HasExtension(annotations_pb2.http) for method in service.method)
    ]
    response_messages: set[str] = set()
    builder = Builder(protos, response_messages)
    # Which messages a response reaches, to tell request and response variants apart.
    pending = [m.output_type for _, _, service in services for m in service.method]
    while pending:
        name = pending.pop()
        if name in response_messages or name not in protos.messages:
            continue
        response_messages.add(name)
        pending += [f.type_name for f in protos.messages[name].field if f.type_name]

    paths: dict[str, dict[str, Schema]] = {}
    response_fields: dict[str, set[str]] = {}
    descriptions = []
    for file, index, service in services:
        service_doc = protos.comments.get((file.name, (6, index)), "")
        descriptions.append(protos.comments.get((file.name, (12,)), ""))
        descriptions.append(f"## {service.name}\n\n{service_doc}")
        for number, method in enumerate(service.method):
            method_doc = protos.comments.get((file.name, (6, index, 2, number)), "")
            path, verb, op = operation(protos, builder, service, method, (service_doc, method_doc))
            paths.setdefault(path, {})[verb] = op
            response_fields[method.name] = {
                f.name for f in protos.messages[method.output_type].field
            }
    streams = {m.name for _, _, service in services for m in service.method if m.server_streaming}
    add_links(paths, response_fields, streams)

    builder.components["Status"] = STATUS_SCHEMA
    package = files[-1].package if not services else services[0][0].package
    return {
        "openapi": "3.0.3",
        "info": {
            "title": package,
            "version": package.rsplit(".", 1)[-1],
            "description": "\n\n".join(d for d in descriptions if d),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": builder.components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An htk token: `Authorization: Bearer htk_...`, "
                    "from `htk token create`.",
                }
            },
        },
    }


def render(descriptor_set: bytes) -> str:
    """The document as stable text: sorted keys, so a regenerate diffs cleanly."""
    return json.dumps(document(descriptor_set), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> None:
    source = Path(argv[1]) if len(argv) > 1 else DEFAULT_DESCRIPTOR
    output = Path(argv[2]) if len(argv) > 2 else DEFAULT_OUTPUT
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(source.read_bytes()), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv)
