"""docs/openapi.json against the protos: scripts/openapi.py must describe every
RPC's REST form the way Envoy's transcoder serves it.

The generated Python descriptors are the independent view of the protos here.
"""

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.api import annotations_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor, descriptor_pb2

from htk.processes.v1 import process_service_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
FD = descriptor.FieldDescriptor
SERVICE = pb.DESCRIPTOR.services_by_name["ProcessService"]
METHODS = list(SERVICE.methods)


def load_generator() -> ModuleType:
    """scripts/ is not a package: load the generator from its file."""
    spec = importlib.util.spec_from_file_location("openapi", ROOT / "scripts" / "openapi.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


openapi = load_generator()
DOCUMENT: dict[str, Any] = json.loads((ROOT / "docs" / "openapi.json").read_text())


def rule(method: descriptor.MethodDescriptor) -> tuple[str, str, Any]:
    http = method.GetOptions().Extensions[annotations_pb2.http]
    verb = http.WhichOneof("pattern")
    return verb, getattr(http, verb), http


def operation(method: descriptor.MethodDescriptor) -> dict[str, Any]:
    verb, path, _ = rule(method)
    result: dict[str, Any] = DOCUMENT["paths"][path][verb]
    return result


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """Follows a $ref (or a description wrapper around one) to its component."""
    if "allOf" in schema:
        (schema,) = schema["allOf"]
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        resolved: dict[str, Any] = DOCUMENT["components"]["schemas"][name]
        return resolved
    return schema


def expected_type(field: descriptor.FieldDescriptor) -> str:
    """The JSON type Envoy prints for a singular field (proto3 JSON mapping)."""
    if field.message_type is not None:
        return {
            "google.protobuf.Timestamp": "string",
            "google.protobuf.Struct": "object",
        }.get(field.message_type.full_name, "object")
    return {
        FD.TYPE_INT32: "integer",
        FD.TYPE_INT64: "string",
        FD.TYPE_UINT64: "string",
        FD.TYPE_DOUBLE: "number",
        FD.TYPE_BOOL: "boolean",
        FD.TYPE_STRING: "string",
        FD.TYPE_ENUM: "string",
    }[field.type]


def assert_schema_matches(schema: dict[str, Any], message: descriptor.Descriptor) -> None:
    """Every field of the message, with its JSON type, and no others."""
    schema = resolve(schema)
    assert set(schema["properties"]) == set(message.fields_by_name), message.full_name
    for field in message.fields:
        prop = resolve(schema["properties"][field.name])
        if field.is_repeated:
            assert prop["type"] == "array", field.full_name
            prop = resolve(prop["items"])
        assert prop["type"] == expected_type(field), field.full_name
        if field.message_type is not None and field.message_type.full_name == (
            "google.protobuf.Timestamp"
        ):
            assert prop["format"] == "date-time"


def test_the_document_is_current() -> None:
    descriptor_set = (ROOT / "envoy" / "process_service.binpb").read_bytes()
    assert openapi.render(descriptor_set) == (ROOT / "docs" / "openapi.json").read_text()


def test_rendering_is_deterministic() -> None:
    descriptor_set = (ROOT / "envoy" / "process_service.binpb").read_bytes()
    text = openapi.render(descriptor_set)
    assert text == openapi.render(descriptor_set)
    assert text.endswith("}\n")


def test_every_rpc_is_an_operation_at_its_http_rule() -> None:
    operations = {
        op["operationId"]: (verb, path)
        for path, ops in DOCUMENT["paths"].items()
        for verb, op in ops.items()
    }
    assert operations == {method.name: rule(method)[:2] for method in METHODS}


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_every_request_field_is_a_parameter_or_body_property(
    method: descriptor.MethodDescriptor,
) -> None:
    _, path, http = rule(method)
    op = operation(method)
    where: dict[str, str] = {}
    for parameter in op["parameters"]:
        if parameter["in"] in {"path", "query"}:
            where[parameter["name"]] = parameter["in"]
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if body is not None:
        where |= dict.fromkeys(resolve(body)["properties"], "body")
    assert set(where) == set(method.input_type.fields_by_name)
    for name, location in where.items():
        if f"{{{name}}}" in path:
            assert location == "path", name
        elif http.body == "*":
            assert location == "body", name
        else:
            assert location == "query", name
    # A body exactly where the rule takes one; GETs read the query string.
    assert (body is not None) == bool(http.body)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_query_parameters_have_the_json_types(method: descriptor.MethodDescriptor) -> None:
    for parameter in operation(method)["parameters"]:
        if parameter["in"] == "query":
            field = method.input_type.fields_by_name[parameter["name"]]
            assert parameter["schema"]["type"] == expected_type(field), field.full_name
            assert parameter["required"] is False


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_request_bodies_match_the_request_message(method: descriptor.MethodDescriptor) -> None:
    op = operation(method)
    if "requestBody" not in op:
        return
    schema = resolve(op["requestBody"]["content"]["application/json"]["schema"])
    path_fields = {p["name"] for p in op["parameters"] if p["in"] == "path"}
    for name, prop in schema["properties"].items():
        assert name not in path_fields
        field = method.input_type.fields_by_name[name]
        prop = resolve(prop)
        if field.is_repeated:
            prop = resolve(prop["items"])
        assert prop["type"] == expected_type(field), field.full_name
    # The server refuses unknown fields, and proto3 requires none.
    assert schema["additionalProperties"] is False
    assert "required" not in schema


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_responses_match_the_response_message(method: descriptor.MethodDescriptor) -> None:
    # A stream's messages are Server-Sent Events, each of the message's schema.
    media = "text/event-stream" if method.server_streaming else "application/json"
    (content,) = operation(method)["responses"]["200"]["content"].items()
    assert content[0] == media
    assert_schema_matches(content[1]["schema"], method.output_type)


def test_response_schemas_cover_nested_messages() -> None:
    for message in (pb.Process, pb.ProcessSummary, pb.TimelineEntry, pb.StepDef):
        name = message.DESCRIPTOR.name
        assert_schema_matches({"$ref": f"#/components/schemas/{name}"}, message.DESCRIPTOR)


def test_always_printed_fields_are_required_and_optional_ones_are_not() -> None:
    timeline = DOCUMENT["components"]["schemas"]["TimelineEntry"]
    required = set(timeline["required"])
    # Scalars and repeated fields are always printed; proto3 `optional`
    # scalars and message fields only when set.
    assert {"step", "label", "status", "human"} <= required
    assert not required & {"task_id", "duration_ms", "started_at", "data", "progress_percent"}
    process = DOCUMENT["components"]["schemas"]["Process"]
    assert {"step_defs", "timeline", "task_ids"} <= set(process["required"])
    assert "finished_at" not in process["required"]


def test_numbers_print_as_envoy_prints_them() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    assert schemas["ProcessSummary"]["properties"]["step_count"]["type"] == "integer"
    assert schemas["TimelineEntry"]["properties"]["duration_ms"]["type"] == "number"
    assert schemas["TimelineEntry"]["properties"]["data"]["type"] == "object"


def test_every_error_is_a_status() -> None:
    status = DOCUMENT["components"]["schemas"]["Status"]
    assert set(status["required"]) == {"code", "message", "details"}
    for path, ops in DOCUMENT["paths"].items():
        for verb, op in ops.items():
            for code, response in op["responses"].items():
                if code != "200":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Status"}, (verb, path, code)


def test_each_operation_documents_the_statuses_it_can_return() -> None:
    def codes(name: str) -> set[str]:
        return set(operation(SERVICE.methods_by_name[name])["responses"])

    common = {"200", "400", "401", "429", "503", "504"}
    assert codes("ListProcesses") == common
    assert codes("GetProcess") == common | {"404"}
    assert codes("CreateProcess") == common | {"403", "409", "413"}
    assert codes("UpdateProcess") == common | {"403", "404", "409", "413"}
    assert codes("ListProcessEvents") == common | {"404"}
    assert codes("WatchProcess") == common | {"404"}
    assert codes("WatchProcesses") == common


def test_writes_take_an_idempotency_key() -> None:
    for method in METHODS:
        headers = [p["name"] for p in operation(method)["parameters"] if p["in"] == "header"]
        writes = rule(method)[0] == "post"
        assert headers == (["Idempotency-Key"] if writes else []), method.name


def test_every_operation_needs_the_bearer_token() -> None:
    assert DOCUMENT["security"] == [{"bearer": []}]
    scheme = DOCUMENT["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")


def test_created_processes_link_to_the_calls_on_a_process_but_streams() -> None:
    create = operation(SERVICE.methods_by_name["CreateProcess"])
    links = create["responses"]["200"]["links"]
    assert links.keys() == {"GetProcess", "UpdateProcess", "ListProcessEvents"}
    for link in links.values():
        assert link["parameters"] == {"process_id": "$response.body#/process_id"}


def test_descriptions_come_from_the_proto_comments() -> None:
    get = operation(SERVICE.methods_by_name["GetProcess"])
    assert get["summary"] == "Returns one process with its step definitions and timeline."
    assert "NOT_FOUND" in get["responses"]["404"]["description"]
    process = DOCUMENT["components"]["schemas"]["Process"]
    assert process["properties"]["name"]["description"].startswith("A human-readable name")


def synthetic_descriptor_set() -> bytes:
    """A service using what htk's protos do not (yet): 64-bit integers, enums,
    maps and a repeated query parameter, to check the rest of the mapping."""
    fdp = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="t/v1/t.proto", package="t.v1", syntax="proto3")
    request = file.message_type.add(name="GetThingRequest")
    request.field.add(name="id", number=1, type=fdp.TYPE_STRING, label=fdp.LABEL_OPTIONAL)
    request.field.add(name="tags", number=2, type=fdp.TYPE_STRING, label=fdp.LABEL_REPEATED)
    request.field.add(name="since", number=3, type=fdp.TYPE_INT64, label=fdp.LABEL_OPTIONAL)
    thing = file.message_type.add(name="Thing")
    thing.field.add(name="size", number=1, type=fdp.TYPE_UINT64, label=fdp.LABEL_OPTIONAL)
    thing.field.add(
        name="kind", number=2, type=fdp.TYPE_ENUM, type_name=".t.v1.Kind", label=fdp.LABEL_OPTIONAL
    )
    entry = thing.nested_type.add(name="LabelsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=fdp.TYPE_STRING, label=fdp.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=fdp.TYPE_INT32, label=fdp.LABEL_OPTIONAL)
    thing.field.add(
        name="labels",
        number=3,
        type=fdp.TYPE_MESSAGE,
        type_name=".t.v1.Thing.LabelsEntry",
        label=fdp.LABEL_REPEATED,
    )
    kind = file.enum_type.add(name="Kind")
    kind.value.add(name="KIND_UNSPECIFIED", number=0)
    kind.value.add(name="KIND_BIG", number=1)
    method = file.service.add(name="Things").method.add(
        name="GetThing", input_type=".t.v1.GetThingRequest", output_type=".t.v1.Thing"
    )
    method.options.Extensions[annotations_pb2.http].get = "/v1/things/{id}"
    result: bytes = descriptor_pb2.FileDescriptorSet(file=[file]).SerializeToString()
    return result


def test_the_rest_of_the_proto3_json_mapping() -> None:
    document = openapi.document(synthetic_descriptor_set())
    op = document["paths"]["/v1/things/{id}"]["get"]
    parameters = {p["name"]: p for p in op["parameters"]}
    assert parameters["id"]["in"] == "path" and parameters["id"]["required"] is True
    assert parameters["tags"]["schema"] == {"type": "array", "items": {"type": "string"}}
    assert parameters["tags"]["explode"] is True
    assert parameters["since"]["schema"]["type"] == "string"  # int64 prints as a string
    thing = document["components"]["schemas"]["Thing"]
    assert thing["properties"]["size"]["type"] == "string"
    assert thing["properties"]["kind"]["enum"] == ["KIND_UNSPECIFIED", "KIND_BIG"]
    assert thing["properties"]["labels"]["type"] == "object"
    assert thing["properties"]["labels"]["additionalProperties"]["type"] == "integer"
    assert set(thing["required"]) == {"size", "kind", "labels"}
