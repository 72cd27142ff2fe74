"""Writes the OpenAPI 3 document of the REST API from the Envoy descriptor set.

The document describes what Envoy's gRPC-JSON transcoder really serves, so it is
derived from the same descriptor set Envoy reads (envoy/process_service.binpb,
built with --include_imports --include_source_info), for every service in it
with `google.api.http` rules: paths and bodies from those rules, JSON names and
types as Envoy prints them (`preserve_proto_field_names`,
`always_print_primitive_fields`), descriptions from the proto comments, and
what the options declare:
  * `google.api.field_behavior`: REQUIRED fields are required (and non-empty)
    in requests; OUTPUT_ONLY ones are read-only and left out of requests.
  * `(htk.processes.v1.values)`: the words a string takes, bounds, lengths.
  * `(htk.processes.v1.access)`: who may call each operation (`x-htk-access`).
  * `(htk.processes.v1.service_errors)` and `(htk.processes.v1.errors)`: the
    error responses, each at the HTTP status Envoy maps its code to.
  * `idempotency_level = NO_SIDE_EFFECTS`: reads (`x-htk-read-only`); every
    other operation takes an Idempotency-Key.
The REST binding of each RPC is read as the server reads it
(server/transport/http_rules.py). What the protos cannot say (Envoy's own
replies, the bearer token, the Idempotency-Key header) is stated once below.

    python scripts/openapi.py [DESCRIPTOR_SET [OUTPUT]]
"""

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import takewhile
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

from server.domain.idempotency import MAX_KEY_LENGTH
from server.transport.http_rules import HttpBinding, http_binding

FDP = descriptor_pb2.FieldDescriptorProto
Schema = dict[str, Any]

DEFAULT_DESCRIPTOR = Path("envoy/process_service.binpb")
DEFAULT_OUTPUT = Path("docs/openapi.json")
# The options the document is derived from, by their full names.
FIELD_BEHAVIOR_OPTION = "google.api.field_behavior"
VALUES_OPTION = "htk.processes.v1.values"
ACCESS_OPTION = "htk.processes.v1.access"
SERVICE_ERRORS_OPTION = "htk.processes.v1.service_errors"
ERRORS_OPTION = "htk.processes.v1.errors"
READ_ONLY = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
# Fields of (htk.processes.v1.values) and the JSON Schema keywords they become.
BOUNDS = {"minimum": "minimum", "maximum": "maximum", "max_length": "maxLength"}
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
# (local_reply_config in server/edge/envoy.yaml).
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
# Replies Envoy produces itself (server/edge/envoy.yaml), before any service could
# declare them: to every operation, or to those with a request body.
ENVOY_ERRORS = {
    400: "INVALID_ARGUMENT: Envoy could not read the request (malformed JSON, a value "
    "of the wrong type, an unknown query parameter).",
}
BODY_ERRORS = {413: "INVALID_ARGUMENT: the request body is too large."}
# The HTTP status of each gRPC code, as Envoy's transcoder maps it
# (convert_grpc_status).
HTTP_STATUS = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}
IDEMPOTENCY_ERRORS = {
    409: "ALREADY_EXISTS: the Idempotency-Key was used before for a different request."
}
# Calls that change state take an Idempotency-Key (server/transport): a repeat
# with the same key and body gets the original response, another body a 409.
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes a retry safe: a request repeating the key and body of an earlier "
    "one gets the original response without applying the change again; the same key "
    "with another body is a 409.",
    # What server/domain/idempotency.py accepts: printable ASCII without spaces.
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "pattern": "^[!-~]+$",
    },
}
# A server-streaming RPC, as the transcoder serves it (server/edge/envoy.yaml).
STREAM_DESCRIPTION = (
    "OK: a stream of Server-Sent Events, each `data: <JSON>` and a blank line, sent as it"
    " happens; each event's JSON is one message of this schema."
)


def media_type(method: descriptor_pb2.MethodDescriptorProto) -> str:
    return "text/event-stream" if method.server_streaming else "application/json"


def comment(text: str) -> str:
    """A proto comment as Markdown: the one leading space of each line removed."""
    lines = [line[1:] if line.startswith(" ") else line for line in text.splitlines()]
    return "\n".join(lines).strip()


def has_presence(member: FDP) -> bool:
    """Whether an unset field differs from one set to its zero value: proto3
    `optional` fields, message fields and oneof members."""
    return member.type == FDP.TYPE_MESSAGE or member.HasField("oneof_index")


def always_printed(member: FDP) -> bool:
    """What `always_print_primitive_fields` prints even when unset: repeated
    fields and those without presence."""
    return member.label == FDP.LABEL_REPEATED or not has_presence(member)


@dataclass(frozen=True)
class FieldFacts:
    """What the options of one field declare beyond its type."""

    required: bool
    output_only: bool
    # The words a string takes, each with its comment.
    words: dict[str, str]
    # minimum, maximum, maxLength: JSON Schema of one value (an item if repeated).
    bounds: Schema
    max_items: int | None


@dataclass
class Protos:
    """Messages, enums, comments and options of a descriptor set, by full name."""

    # The set's own descriptors, which read every option, custom ones included,
    # without generated code.
    pool: descriptor_pool.DescriptorPool = field(default_factory=descriptor_pool.DescriptorPool)
    messages: dict[str, descriptor_pb2.DescriptorProto] = field(default_factory=dict)
    enums: dict[str, descriptor_pb2.EnumDescriptorProto] = field(default_factory=dict)
    # Comments by (file, source path), the way source_code_info locates them.
    comments: dict[tuple[str, tuple[int, ...]], str] = field(default_factory=dict)
    # Where each message, field, enum and enum value is declared, to find its comment.
    locations: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)

    @classmethod
    def load(cls, files: list[descriptor_pb2.FileDescriptorProto]) -> "Protos":
        protos = cls()
        for file in files:
            # protoc lists every file after its imports, as the pool needs.
            protos.pool.Add(file)
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
            name = f"{scope}.{enum.name}"
            self.enums[name] = enum
            self.locations[name] = (file, (*enum_path, index))
            for number, value in enumerate(enum.value):
                self.locations[f"{name}.{value.name}"] = (file, (*enum_path, index, 2, number))
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

    def option(self, options: Message, name: str) -> Any:
        """The value of the extension `name` in `options`, None if unset."""
        try:
            # Any: the type stubs know only extensions of generated code.
            extension: Any = self.pool.FindExtensionByName(name)
        except KeyError:
            return None  # no file of the set declares it, so none sets it
        parsed = message_factory.GetMessageClass(extension.containing_type).FromString(
            options.SerializeToString()
        )
        if extension.is_repeated:
            return list(parsed.Extensions[extension])
        return parsed.Extensions[extension] if parsed.HasExtension(extension) else None

    def facts(self, scope: str, member: FDP) -> FieldFacts:
        """What the field's options declare; an error where they do not fit its type."""
        where = f"{scope.lstrip('.')}.{member.name}"
        behaviors: set[str] = set()
        if numbers := self.option(member.options, FIELD_BEHAVIOR_OPTION):
            names = self.pool.FindEnumTypeByName("google.api.FieldBehavior").values_by_number
            behaviors = {names[number].name for number in numbers}
        values = self.option(member.options, VALUES_OPTION)
        words: dict[str, str] = {}
        bounds: Schema = {}
        max_items = None
        if values is not None:
            if values.words_of:
                words = self.words(where, values.words_of)
            for name, keyword in BOUNDS.items():
                if values.HasField(name):
                    bounds[keyword] = getattr(values, name)
            if values.HasField("max_items"):
                max_items = values.max_items
        json_type = SCALARS.get(member.type, {}).get("type")
        misfits = [
            bool(words) and json_type != "string",
            "maxLength" in bounds and json_type != "string",
            bool({"minimum", "maximum"} & bounds.keys()) and json_type not in {"integer", "number"},
            max_items is not None and member.label != FDP.LABEL_REPEATED,
        ]
        if any(misfits):
            raise ValueError(f"{where}: its values option does not fit its type")
        return FieldFacts(
            required="REQUIRED" in behaviors,
            output_only="OUTPUT_ONLY" in behaviors,
            words=words,
            bounds=bounds,
            max_items=max_items,
        )

    def words(self, where: str, enum_name: str) -> dict[str, str]:
        """The words of a `words_of` enum with their comments: each value but
        the zero one, without the enum's prefix (that of its `..._UNSPECIFIED`
        zero value), in lowercase."""
        enum = self.enums.get(f".{enum_name}")
        if enum is None or not enum.value[0].name.endswith("_UNSPECIFIED"):
            raise ValueError(
                f"{where}: words_of {enum_name!r} is no enum with an _UNSPECIFIED zero"
            )
        prefix = enum.value[0].name.removesuffix("UNSPECIFIED")
        return {
            value.name.removeprefix(prefix).lower(): self.doc(f".{enum_name}.{value.name}")
            for value in enum.value[1:]
        }

    def member(self, type_name: str, path: str) -> tuple[str, FDP]:
        """The field at a dotted path like `book.name`, with the message declaring it."""
        name, _, rest = path.partition(".")
        member = next(m for m in self.messages[type_name].field if m.name == name)
        return self.member(member.type_name, rest) if rest else (type_name, member)


@dataclass
class Builder:
    """Builds component schemas on demand, one per message and direction.

    A response schema requires what Envoy always prints and marks OUTPUT_ONLY
    fields read-only. A request schema leaves OUTPUT_ONLY fields out, requires
    the REQUIRED ones (proto3 lets the rest default) and refuses unknown
    fields, as the server does. A message used both ways gets a request
    variant named `<Name>Input`.
    """

    protos: Protos
    response_messages: set[str]
    components: dict[str, Schema] = field(default_factory=dict)
    # The message behind each component, to refuse two of the same name.
    sources: dict[str, str] = field(default_factory=dict)

    def ref(self, type_name: str, response: bool) -> Schema:
        if type_name in WELL_KNOWN:
            return dict(WELL_KNOWN[type_name])
        name = type_name.rsplit(".", 1)[1]
        if not response and type_name in self.response_messages:
            name += "Input"
        if self.sources.setdefault(name, type_name) != type_name:
            raise ValueError(f"{self.sources[name]} and {type_name} would both be schema {name}")
        if name not in self.components:
            self.components[name] = {}  # reserves the name against recursion
            self.components[name] = self.message(type_name, response)
        return {"$ref": f"#/components/schemas/{name}"}

    def members(self, type_name: str, response: bool, skip: frozenset[str]) -> list[FDP]:
        """The fields the message's JSON carries in this direction."""
        return [
            member
            for member in self.protos.messages[type_name].field
            if member.name not in skip
            and (response or not self.protos.facts(type_name, member).output_only)
        ]

    def message(self, type_name: str, response: bool, skip: frozenset[str] = frozenset()) -> Schema:
        members = self.members(type_name, response, skip)
        schema: Schema = {
            "type": "object",
            "properties": {
                member.name: self.field(type_name, member, response) for member in members
            },
        }
        required = [
            member.name
            for member in members
            if (
                always_printed(member)
                if response
                else self.protos.facts(type_name, member).required
            )
        ]
        if required:
            schema["required"] = required
        schema["additionalProperties"] = False
        if doc := self.protos.doc(type_name):
            schema["description"] = doc
        return schema

    def field(self, scope: str, member: FDP, response: bool) -> Schema:
        facts = self.protos.facts(scope, member)
        entry = self.protos.messages.get(member.type_name)
        if entry is not None and entry.options.map_entry:
            _key, value = entry.field
            schema: Schema = {
                "type": "object",
                "additionalProperties": self.single(member.type_name, value, response),
            }
            if facts.max_items is not None:
                schema["maxProperties"] = facts.max_items
        elif member.label == FDP.LABEL_REPEATED:
            schema = {"type": "array", "items": self.single(scope, member, response)}
            if facts.required and not response:
                schema["minItems"] = 1
            if facts.max_items is not None:
                schema["maxItems"] = facts.max_items
        else:
            schema = self.single(scope, member, response)
        notes: Schema = {}
        doc = self.protos.doc(f"{scope}.{member.name}")
        words = "\n".join(f"* `{word}`: {meaning}" for word, meaning in facts.words.items())
        if description := "\n\n".join(text for text in (doc, words) if text):
            notes["description"] = description
        if facts.output_only and response:
            notes["readOnly"] = True
        if notes and "$ref" in schema:
            # OpenAPI 3.0 ignores a $ref's siblings: wrap it to keep them.
            schema = {"allOf": [schema]}
        return schema | notes

    def single(self, scope: str, member: FDP, response: bool) -> Schema:
        """One value of the field: an item, if it is repeated."""
        if member.type == FDP.TYPE_MESSAGE:
            return self.ref(member.type_name, response)
        if member.type == FDP.TYPE_ENUM:
            values = [value.name for value in self.protos.enums[member.type_name].value]
            return {"type": "string", "enum": values}
        schema = dict(SCALARS[member.type])
        facts = self.protos.facts(scope, member)
        schema |= facts.bounds
        if facts.words:
            schema["enum"] = list(facts.words)
        if response or has_presence(member) or member.label == FDP.LABEL_REPEATED:
            return schema
        # A singular request field without presence: its zero value reads as unset.
        if facts.required:
            if schema["type"] == "string" and "enum" not in schema:
                schema["minLength"] = 1
        elif "enum" in schema:
            schema["enum"] = ["", *schema["enum"]]
        elif not schema.get("minimum", 0) <= 0 <= schema.get("maximum", 0):
            raise ValueError(
                f"{scope.lstrip('.')}.{member.name}: 0 means unset but is out of bounds; "
                "make the field `optional` or REQUIRED"
            )
        return schema


def parameter(builder: Builder, type_name: str, path: str, where: str) -> Schema:
    """The request field at `path` as a path or query parameter."""
    scope, member = builder.protos.member(type_name, path)
    schema = builder.field(scope, member, response=False)
    result: Schema = {
        "name": path,
        "in": where,
        "required": where == "path" or builder.protos.facts(scope, member).required,
        "schema": schema,
    }
    if member.label == FDP.LABEL_REPEATED:
        result |= {"style": "form", "explode": True}
    if description := schema.pop("description", None):
        result["description"] = description
    return result


def query_fields(protos: Protos, type_name: str, skip: set[str]) -> Iterator[str]:
    """The transcoder reads every field not in the path or body from the query,
    nested message fields by their dotted names."""
    for member in protos.messages[type_name].field:
        if member.name in skip or protos.facts(type_name, member).output_only:
            continue
        if member.type == FDP.TYPE_MESSAGE and member.type_name not in WELL_KNOWN:
            nested_skip = {name.split(".", 1)[1] for name in skip if "." in name}
            for nested in query_fields(protos, member.type_name, nested_skip):
                yield f"{member.name}.{nested}"
        else:
            yield member.name


def request(
    builder: Builder, type_name: str, binding: HttpBinding
) -> tuple[list[Schema], Schema | None]:
    """The request message as the binding takes it: path and query parameters
    and the JSON body (None without one)."""
    protos = builder.protos
    bound = binding.path_variables
    parameters = [parameter(builder, type_name, name, "path") for name in bound]
    if binding.body != "*":
        parameters += [
            parameter(builder, type_name, name, "query")
            for name in query_fields(protos, type_name, {*bound, binding.body} - {""})
        ]
    if not binding.body:
        return parameters, None
    if binding.body == "*":
        skip = frozenset(bound)
        schema = (
            builder.message(type_name, response=False, skip=skip)
            if bound
            else builder.ref(type_name, response=False)
        )
        members = builder.members(type_name, response=False, skip=skip)
        required = any(protos.facts(type_name, member).required for member in members)
    else:
        scope, member = protos.member(type_name, binding.body)
        schema = builder.field(scope, member, response=False)
        required = protos.facts(scope, member).required
    return parameters, {"required": required, "content": {"application/json": {"schema": schema}}}


@dataclass(frozen=True)
class Rpc:
    """One method of a service, with the comments of both."""

    file: descriptor_pb2.FileDescriptorProto
    service: descriptor_pb2.ServiceDescriptorProto
    method: descriptor_pb2.MethodDescriptorProto
    service_doc: str
    method_doc: str
    binding: HttpBinding

    @property
    def read_only(self) -> bool:
        return self.method.options.idempotency_level == READ_ONLY


@dataclass(frozen=True)
class ErrorCase:
    """One error an RPC declares: its gRPC code, HTTP status and when it happens."""

    code: str
    http_status: int
    when: str


def error_cases(protos: Protos, options: Message, option: str) -> list[ErrorCase]:
    """The error cases the repeated `option` declares in `options`."""
    cases = []
    for case in protos.option(options, option) or []:
        # Found only here: a set that declares no errors need not hold the enum.
        code = protos.pool.FindEnumTypeByName("google.rpc.Code").values_by_number[case.code].name
        if code not in HTTP_STATUS:
            raise ValueError(f"{option}: {code} is no error")
        cases.append(ErrorCase(code, HTTP_STATUS[code], " ".join(case.when.split())))
    return cases


def errors(protos: Protos, rpc: Rpc) -> list[ErrorCase]:
    """The errors the RPC's service declares for every RPC, then its own."""
    return [
        *error_cases(protos, rpc.service.options, SERVICE_ERRORS_OPTION),
        *error_cases(protos, rpc.method.options, ERRORS_OPTION),
    ]


def responses(builder: Builder, rpc: Rpc, has_body: bool) -> Schema:
    """The 200 response and every error status the protos declare or Envoy gives."""
    success = builder.ref(rpc.method.output_type, response=True)
    codes: dict[int, list[str]] = {}
    for case in errors(builder.protos, rpc):
        codes.setdefault(case.http_status, []).append(f"{case.code}: {case.when}")
    for extra in (
        ENVOY_ERRORS,
        BODY_ERRORS if has_body else {},
        {} if rpc.read_only else IDEMPOTENCY_ERRORS,
    ):
        for status, meaning in extra.items():
            codes.setdefault(status, []).append(meaning)
    result: Schema = {
        "200": {
            "description": STREAM_DESCRIPTION if rpc.method.server_streaming else "OK",
            "content": {media_type(rpc.method): {"schema": success}},
        },
    }
    for status, meanings in sorted(codes.items()):
        result[str(status)] = {
            "description": "\n".join(f"* {meaning}" for meaning in dict.fromkeys(meanings)),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}},
        }
    return result


def access(protos: Protos, method: descriptor_pb2.MethodDescriptorProto) -> Schema:
    """Who may call the method: its `(htk.processes.v1.access)` as JSON."""
    rule = protos.option(method.options, ACCESS_OPTION)
    if rule is None:
        raise ValueError(f"{method.name}: every RPC declares ({ACCESS_OPTION})")
    declared: Schema = json_format.MessageToDict(rule, preserving_proto_field_name=True)
    return declared


def operation(builder: Builder, rpc: Rpc) -> tuple[str, str, Schema]:
    verb = rpc.binding.method.lower()
    if verb not in {"get", "put", "post", "delete", "patch"}:
        raise ValueError(f"{rpc.method.name}: no google.api.http get/put/post/delete/patch rule")
    parameters, body = request(builder, rpc.method.input_type, rpc.binding)
    if not rpc.read_only:
        parameters.append(IDEMPOTENCY_KEY)
    result: Schema = {
        "operationId": rpc.method.name,
        "tags": [rpc.service.name],
        "summary": rpc.method_doc.split("\n\n")[0].replace("\n", " "),
        "description": rpc.method_doc,
        "parameters": parameters,
        "responses": responses(builder, rpc, has_body=body is not None),
        "x-htk-access": access(builder.protos, rpc.method),
        "x-htk-read-only": rpc.read_only,
    }
    if result["x-htk-access"].get("no_token"):
        # Declared to take no htk token (it is how a CI job gets one).
        result["security"] = []
    if body is not None:
        result["requestBody"] = body
    return rpc.binding.plain_template, verb, result


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


def rpcs(protos: Protos, files: list[descriptor_pb2.FileDescriptorProto]) -> Iterator[Rpc]:
    """Every method of every service that REST serves, in declaration order."""
    for file in files:
        for index, service in enumerate(file.service):
            found = protos.pool.FindServiceByName(f"{file.package}.{service.name}")
            bindings = [http_binding(method) for method in found.methods]
            if all(binding is None for binding in bindings):
                continue
            service_doc = protos.comments.get((file.name, (6, index)), "")
            for number, (method, binding) in enumerate(zip(service.method, bindings, strict=True)):
                if binding is None:
                    raise ValueError(f"{method.name}: no google.api.http rule")
                method_doc = protos.comments.get((file.name, (6, index, 2, number)), "")
                yield Rpc(file, service, method, service_doc, method_doc, binding)


def title_and_version(packages: list[str]) -> tuple[str, str]:
    """What the packages share (`htk.processes.v1` alone, `htk` with
    `htk.tasks.v1`), and their common version."""
    parts = [package.split(".") for package in packages]
    # Packages differ in length, so zip stops at the shortest.
    columns = zip(*parts, strict=False)
    shared = [names[0] for names in takewhile(lambda names: len(set(names)) == 1, columns)]
    versions = {package[-1] for package in parts}
    return ".".join(shared), versions.pop() if len(versions) == 1 else ""


def document(descriptor_set: bytes) -> Schema:
    files = list(descriptor_pb2.FileDescriptorSet.FromString(descriptor_set).file)
    protos = Protos.load(files)
    served = list(rpcs(protos, files))
    response_messages: set[str] = set()
    # Status is every error's schema, added below: no message may take its name.
    builder = Builder(protos, response_messages, sources={"Status": ".google.rpc.Status"})
    # Which messages a response reaches, to tell request and response variants apart.
    pending = [rpc.method.output_type for rpc in served]
    while pending:
        name = pending.pop()
        if name in response_messages or name not in protos.messages:
            continue
        response_messages.add(name)
        pending += [f.type_name for f in protos.messages[name].field if f.type_name]

    paths: dict[str, dict[str, Schema]] = {}
    response_fields: dict[str, set[str]] = {}
    for rpc in served:
        if rpc.method.name in response_fields:
            raise ValueError(f"two RPCs are named {rpc.method.name}: operationIds must differ")
        path, verb, op = operation(builder, rpc)
        paths.setdefault(path, {})[verb] = op
        response_fields[rpc.method.name] = {
            f.name for f in protos.messages[rpc.method.output_type].field
        }
    streams = {rpc.method.name for rpc in served if rpc.method.server_streaming}
    add_links(paths, response_fields, streams)

    # Each file's header once, then each service's comment.
    descriptions: dict[str, None] = {}
    for rpc in served:
        descriptions[protos.comments.get((rpc.file.name, (12,)), "")] = None
        descriptions[f"## {rpc.service.name}\n\n{rpc.service_doc}"] = None
    title, version = title_and_version(sorted({rpc.file.package for rpc in served}))
    builder.components["Status"] = STATUS_SCHEMA
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": version,
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
