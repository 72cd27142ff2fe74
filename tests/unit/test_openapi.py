"""docs/openapi.json against the protos: scripts/openapi.py must describe every
RPC's REST form the way Envoy's transcoder serves it.

The generated Python descriptors are the independent view of the protos here.
"""

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.api import (
    annotations_pb2,
    field_behavior_pb2,
    http_pb2,
)
from google.protobuf import descriptor, descriptor_pb2
from google.rpc import code_pb2

from htk.processes.v1 import access_pb2, errors_pb2, values_pb2
from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import task_service_pb2 as task_pb
from server.transport.methods import api_services

ROOT = Path(__file__).resolve().parents[2]
FD = descriptor.FieldDescriptor
# Every service, found as the server finds them: a new one needs no edit here.
SERVICES = api_services()
METHODS = [method for service in SERVICES for method in service.methods]
METHOD_BY_NAME = {method.name: method for method in METHODS}


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


def behaviors(field: descriptor.FieldDescriptor) -> set[int]:
    return set(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def request_fields(message: descriptor.Descriptor) -> set[str]:
    """What a request may carry: every field but the OUTPUT_ONLY ones."""
    return {f.name for f in message.fields if field_behavior_pb2.OUTPUT_ONLY not in behaviors(f)}


def required_fields(message: descriptor.Descriptor) -> set[str]:
    return {f.name for f in message.fields if field_behavior_pb2.REQUIRED in behaviors(f)}


def read_only(method: descriptor.MethodDescriptor) -> bool:
    return method.GetOptions().idempotency_level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS


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


def assert_field_schema(
    schema: dict[str, Any], field: descriptor.FieldDescriptor
) -> dict[str, Any]:
    """The field's JSON type, a map's (an object of its values) or a list's;
    returns the schema of one value."""
    schema = resolve(schema)
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        assert schema["type"] == "object", field.full_name
        field = field.message_type.fields_by_name["value"]
        schema = resolve(schema["additionalProperties"])
    elif field.is_repeated:
        assert schema["type"] == "array", field.full_name
        schema = resolve(schema["items"])
    assert schema["type"] == expected_type(field), field.full_name
    return schema


def assert_schema_matches(schema: dict[str, Any], message: descriptor.Descriptor) -> None:
    """Every field of the message, with its JSON type, and no others."""
    schema = resolve(schema)
    assert set(schema["properties"]) == set(message.fields_by_name), message.full_name
    for field in message.fields:
        prop = assert_field_schema(schema["properties"][field.name], field)
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
    assert set(where) == request_fields(method.input_type)
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
            assert_field_schema(parameter["schema"], field)
            assert parameter["required"] == (field_behavior_pb2.REQUIRED in behaviors(field))


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_request_bodies_match_the_request_message(method: descriptor.MethodDescriptor) -> None:
    op = operation(method)
    if "requestBody" not in op:
        return
    schema = resolve(op["requestBody"]["content"]["application/json"]["schema"])
    path_fields = {p["name"] for p in op["parameters"] if p["in"] == "path"}
    for name, prop in schema["properties"].items():
        assert name not in path_fields
        assert_field_schema(prop, method.input_type.fields_by_name[name])
    # The server refuses unknown fields; proto3 requires none, the protos' REQUIRED do.
    assert schema["additionalProperties"] is False
    required = required_fields(method.input_type) - path_fields
    assert set(schema.get("required", [])) == required
    assert op["requestBody"]["required"] == bool(required)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_responses_match_the_response_message(method: descriptor.MethodDescriptor) -> None:
    # A stream's messages are Server-Sent Events, each of the message's schema.
    media = "text/event-stream" if method.server_streaming else "application/json"
    (content,) = operation(method)["responses"]["200"]["content"].items()
    assert content[0] == media
    assert_schema_matches(content[1]["schema"], method.output_type)


def test_response_schemas_cover_nested_messages() -> None:
    for message in (pb.Process, pb.ProcessSummary, pb.TimelineEntry, pb.StepDef, task_pb.Task):
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
    task = DOCUMENT["components"]["schemas"]["Task"]
    assert {"task_id", "process_id", "step", "status"} <= set(task["required"])
    assert not set(task["required"]) & {"opened_at", "outcome", "comment", "completed_by"}


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
        return set(operation(METHOD_BY_NAME[name])["responses"])

    common = {"200", "400", "401", "429", "503", "504"}
    assert codes("ListProcesses") == common
    assert codes("GetProcess") == common | {"404"}
    assert codes("CreateProcess") == common | {"403", "409", "413"}
    assert codes("UpdateProcess") == common | {"403", "404", "409", "413"}
    assert codes("ListTasks") == common
    assert codes("GetTask") == common | {"404"}
    assert codes("CompleteTask") == common | {"403", "404", "409", "413"}
    assert codes("ListProcessEvents") == common | {"404"}
    assert codes("WatchProcess") == common | {"404"}
    assert codes("WatchProcesses") == common


def test_writes_take_an_idempotency_key() -> None:
    for method in METHODS:
        headers = [p["name"] for p in operation(method)["parameters"] if p["in"] == "header"]
        assert headers == ([] if read_only(method) else ["Idempotency-Key"]), method.name


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_each_operation_says_who_may_call_it_and_whether_it_writes(
    method: descriptor.MethodDescriptor,
) -> None:
    op = operation(method)
    declared = method.GetOptions().Extensions[access_pb2.access]
    if declared.any_token:
        assert op["x-htk-access"] == {"any_token": True}
    elif declared.no_token:
        assert op["x-htk-access"] == {"no_token": True}
        assert op["security"] == []
    else:
        assert op["x-htk-access"] == {"any_of_scopes": list(declared.any_of_scopes)}
    assert op["x-htk-read-only"] is read_only(method)


def test_every_operation_needs_the_bearer_token() -> None:
    assert DOCUMENT["security"] == [{"bearer": []}]
    scheme = DOCUMENT["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")


def test_created_processes_link_to_the_calls_on_a_process_but_streams() -> None:
    create = operation(METHOD_BY_NAME["CreateProcess"])
    links = create["responses"]["200"]["links"]
    assert links.keys() == {"GetProcess", "UpdateProcess", "CancelProcess", "ListProcessEvents"}
    for link in links.values():
        assert link["parameters"] == {"process_id": "$response.body#/process_id"}


def test_descriptions_come_from_the_proto_comments() -> None:
    get = operation(METHOD_BY_NAME["GetProcess"])
    assert get["summary"] == "Returns one process with its step definitions and timeline."
    assert "NOT_FOUND" in get["responses"]["404"]["description"]
    process = DOCUMENT["components"]["schemas"]["Process"]
    assert process["properties"]["name"]["description"].startswith("A human-readable name")


def test_enumerated_words_and_bounds_are_the_contracts() -> None:
    """The words and limits of the API docs, where int32's range and any string were."""
    schemas = DOCUMENT["components"]["schemas"]
    list_op = operation(
        pb.DESCRIPTOR.services_by_name["ProcessService"].methods_by_name["ListProcesses"]
    )
    query = {p["name"]: p["schema"] for p in list_op["parameters"]}
    # A filter left empty is no filter: proto3 reads a missing string as "".
    assert query["status"]["enum"] == ["", "running", "completed", "failed", "cancelled"]
    assert query["sort"]["enum"] == ["", "newest", "oldest"]
    assert (query["limit"]["minimum"], query["limit"]["maximum"]) == (1, 200)
    assert (query["offset"]["minimum"], query["search"]["maxLength"]) == (0, 200)
    update_types = [
        "step_started",
        "step_completed",
        "step_failed",
        "progress",
        "completed",
        "failed",
    ]
    update_op = operation(
        pb.DESCRIPTOR.services_by_name["ProcessService"].methods_by_name["UpdateProcess"]
    )
    update = update_op["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert update["type"]["enum"] == update_types
    assert (update["percent"]["minimum"], update["percent"]["maximum"]) == (0, 100)
    assert update["summary"]["maxLength"] == 10_000
    assert schemas["UpdateProcessResponse"]["properties"]["update_type"]["enum"] == update_types
    for name in ("Process", "ProcessSummary"):
        assert schemas[name]["properties"]["status"]["enum"] == [
            "running",
            "completed",
            "failed",
            "cancelled",
        ]
    timeline = schemas["TimelineEntry"]["properties"]
    assert timeline["status"]["enum"] == [
        "pending",
        "running",
        "completed",
        "failed",
        "cancelled",
        "skipped",
    ]
    assert schemas["ProcessEvent"]["properties"]["type"]["enum"] == [
        *update_types,
        "task_completed",
        "step_timed_out",
        "cancelled",
    ]
    create = schemas["CreateProcessRequest"]["properties"]
    assert (create["name"]["minLength"], create["name"]["maxLength"]) == (1, 200)
    assert (create["step_defs"]["minItems"], create["step_defs"]["maxItems"]) == (1, 200)
    assert schemas["StepDefInput"]["properties"]["key"]["maxLength"] == 64


def test_output_only_fields_are_read_only_and_never_in_a_request() -> None:
    messages = pb.DESCRIPTOR.message_types_by_name
    for name, schema in DOCUMENT["components"]["schemas"].items():
        message = messages.get(name.removesuffix("Input"))
        if message is None:
            continue
        request = name.endswith(("Input", "Request"))
        for field_name, prop in schema["properties"].items():
            field = message.fields_by_name[field_name]
            output_only = field_behavior_pb2.OUTPUT_ONLY in behaviors(field)
            assert not (request and output_only), field.full_name
            assert resolve(prop).get("readOnly", False) == output_only, field.full_name


def imported_files() -> list[descriptor_pb2.FileDescriptorProto]:
    """The files whose options the synthetic protos use, as --include_imports adds them."""
    files = []
    for module in (
        descriptor_pb2,
        http_pb2,
        annotations_pb2,
        field_behavior_pb2,
        access_pb2,
        values_pb2,
    ):
        file = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(file)
        files.append(file)
    return files


def add_field(
    message: descriptor_pb2.DescriptorProto, name: str, kind: int, **options: Any
) -> descriptor_pb2.FieldDescriptorProto:
    """A singular field (repeated with `label`), its options set from keywords:
    `behavior` (google.api.field_behavior) and those of (htk.processes.v1.values)."""
    fdp = descriptor_pb2.FieldDescriptorProto
    label = options.pop("label", fdp.LABEL_OPTIONAL)
    member = message.field.add(name=name, number=len(message.field) + 1, type=kind, label=label)
    if type_name := options.pop("type_name", None):
        member.type_name = type_name
    if behavior := options.pop("behavior", None):
        member.options.Extensions[field_behavior_pb2.field_behavior].append(behavior)
    for key, value in options.items():
        setattr(member.options.Extensions[values_pb2.values], key, value)
    return member


def synthetic_files() -> list[descriptor_pb2.FileDescriptorProto]:
    """Two services in two packages using what htk's protos do not (yet):
    64-bit integers, enums, maps, a repeated query parameter, a field in
    a request that only the server sets, a bounded filter, to check the rest
    of the mapping."""
    fdp = descriptor_pb2.FieldDescriptorProto
    things = descriptor_pb2.FileDescriptorProto(
        name="t/things/v1/things.proto",
        package="t.things.v1",
        syntax="proto3",
        dependency=[
            "google/api/annotations.proto",
            "google/api/field_behavior.proto",
            "htk/processes/v1/access.proto",
        ],
    )
    request = things.message_type.add(name="GetThingRequest")
    add_field(request, "id", fdp.TYPE_STRING, behavior=field_behavior_pb2.REQUIRED)
    add_field(request, "tags", fdp.TYPE_STRING, label=fdp.LABEL_REPEATED)
    add_field(request, "since", fdp.TYPE_INT64)
    thing = things.message_type.add(name="Thing")
    add_field(thing, "size", fdp.TYPE_UINT64)
    add_field(thing, "kind", fdp.TYPE_ENUM, type_name=".t.things.v1.Kind")
    entry = thing.nested_type.add(name="LabelsEntry")
    entry.options.map_entry = True
    add_field(entry, "key", fdp.TYPE_STRING)
    add_field(entry, "value", fdp.TYPE_INT32)
    add_field(
        thing,
        "labels",
        fdp.TYPE_MESSAGE,
        type_name=".t.things.v1.Thing.LabelsEntry",
        label=fdp.LABEL_REPEATED,
    )
    kind = things.enum_type.add(name="Kind")
    kind.value.add(name="KIND_UNSPECIFIED", number=0)
    kind.value.add(name="KIND_BIG", number=1)
    method = things.service.add(name="Things").method.add(
        name="GetThing", input_type=".t.things.v1.GetThingRequest", output_type=".t.things.v1.Thing"
    )
    method.options.Extensions[annotations_pb2.http].get = "/v1/things/{id}"
    method.options.idempotency_level = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
    method.options.Extensions[access_pb2.access].any_token = True

    parts = descriptor_pb2.FileDescriptorProto(
        name="t/parts/v1/parts.proto",
        package="t.parts.v1",
        syntax="proto3",
        dependency=[
            "google/api/annotations.proto",
            "google/api/field_behavior.proto",
            "htk/processes/v1/access.proto",
            "htk/processes/v1/values.proto",
        ],
    )
    part = parts.message_type.add(name="Part")
    add_field(part, "id", fdp.TYPE_STRING, behavior=field_behavior_pb2.OUTPUT_ONLY)
    add_field(part, "name", fdp.TYPE_STRING, behavior=field_behavior_pb2.REQUIRED, max_length=10)
    add_field(part, "color", fdp.TYPE_STRING, words_of="t.parts.v1.Color")
    add_field(part, "weight", fdp.TYPE_INT32, minimum=0)
    color = parts.enum_type.add(name="Color")
    color.value.add(name="COLOR_UNSPECIFIED", number=0)
    color.value.add(name="COLOR_DEEP_RED", number=1)
    method = parts.service.add(name="Parts").method.add(
        name="CreatePart", input_type=".t.parts.v1.Part", output_type=".t.parts.v1.Part"
    )
    method.options.Extensions[annotations_pb2.http].post = "/v1/parts"
    method.options.Extensions[annotations_pb2.http].body = "*"
    method.options.Extensions[access_pb2.access].any_of_scopes.append("parts:write")
    return [*imported_files(), things, parts]


def render_synthetic(files: list[descriptor_pb2.FileDescriptorProto]) -> dict[str, Any]:
    result: dict[str, Any] = openapi.document(
        descriptor_pb2.FileDescriptorSet(file=files).SerializeToString()
    )
    return result


def test_the_rest_of_the_proto3_json_mapping() -> None:
    document = render_synthetic(synthetic_files())
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


def test_every_service_of_every_package() -> None:
    document = render_synthetic(synthetic_files())
    assert (document["info"]["title"], document["info"]["version"]) == ("t", "v1")
    create = document["paths"]["/v1/parts"]["post"]
    assert create["tags"] == ["Parts"]
    assert create["x-htk-access"] == {"any_of_scopes": ["parts:write"]}
    assert create["x-htk-read-only"] is False
    assert [p["name"] for p in create["parameters"]] == ["Idempotency-Key"]
    # The request variant leaves out what only the server sets; the response marks it.
    body = document["components"]["schemas"]["PartInput"]
    assert set(body["properties"]) == {"name", "color", "weight"}
    assert body["required"] == ["name"] and create["requestBody"]["required"] is True
    assert body["properties"]["name"] | {"description": ""} == {
        "type": "string",
        "minLength": 1,
        "maxLength": 10,
        "description": "",
    }
    assert body["properties"]["color"]["enum"] == ["", "deep_red"]
    assert body["properties"]["weight"]["minimum"] == 0
    response = document["components"]["schemas"]["Part"]
    assert response["properties"]["id"]["readOnly"] is True
    assert response["properties"]["color"]["enum"] == ["deep_red"]


def test_declarations_the_document_cannot_honour_are_errors() -> None:
    fdp = descriptor_pb2.FieldDescriptorProto

    def part(files: list[descriptor_pb2.FileDescriptorProto]) -> descriptor_pb2.DescriptorProto:
        return files[-1].message_type[0]

    no_access = synthetic_files()
    no_access[-1].service[0].method[0].options.ClearExtension(access_pb2.access)
    # A filter that cannot be 0, with 0 meaning "not given": say optional or REQUIRED.
    zero_out_of_bounds = synthetic_files()
    add_field(part(zero_out_of_bounds), "count", fdp.TYPE_INT32, minimum=1)
    length_of_a_number = synthetic_files()
    add_field(part(length_of_a_number), "count", fdp.TYPE_INT32, max_length=3)
    unknown_words = synthetic_files()
    add_field(part(unknown_words), "shade", fdp.TYPE_STRING, words_of="t.parts.v1.Shade")
    same_name = synthetic_files()
    same_name[-2].message_type.add(name="Part")  # t.things.v1.Part beside t.parts.v1.Part
    same_name[-2].service[0].method[0].output_type = ".t.things.v1.Part"
    for files, problem in [
        (no_access, "CreatePart: every RPC declares"),
        (zero_out_of_bounds, "t.parts.v1.Part.count: 0 means unset"),
        (length_of_a_number, "t.parts.v1.Part.count: its values option does not fit"),
        (unknown_words, "t.parts.v1.Part.shade: words_of 't.parts.v1.Shade' is no enum"),
        (same_name, "would both be schema Part"),
    ]:
        with pytest.raises(ValueError, match=re.escape(problem)):
            render_synthetic(files)


def test_errors_come_from_the_declared_options() -> None:
    """Each RPC's error responses are its service's `service_errors` and its own
    `errors` options, at the HTTP status of their code: none is read from prose."""
    for method in METHODS:
        declared = [
            *method.containing_service.GetOptions().Extensions[errors_pb2.service_errors],
            *method.GetOptions().Extensions[errors_pb2.errors],
        ]
        responses = operation(method)["responses"]
        for case in declared:
            code = code_pb2.Code.Name(case.code)
            line = f"* {code}: {' '.join(case.when.split())}"
            status = openapi.HTTP_STATUS[code]
            assert line in responses[str(status)]["description"].split("\n"), (method.name, code)
