"""The protos and the domain agree on what each request field accepts.

The protos declare the limits (`google.api.field_behavior` REQUIRED and the
`(htk.processes.v1.values)` options) for clients and the OpenAPI document; the
domain (server/domain/) enforces them. For every request field that declares
one, a value at the limit passes the domain's validation and a value past it
is an InvalidArgument naming the field. The words a string takes are the
values of the domain's enum of the same name.
"""

import uuid
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from google.api import annotations_pb2, field_behavior_pb2
from google.protobuf import descriptor
from google.protobuf.message import Message

import server.domain.processes as domain
from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import values_pb2
from server.domain.errors import InvalidArgument
from server.domain.tokens import Caller
from server.domain.watch import change_filter
from server.transport import messages

ORG = "acme"
NOW = datetime(2026, 2, 24, 12, 0, tzinfo=UTC)


def sent(request: Message) -> dict[str, Any]:
    """The request's fields as the domain takes them: None when not sent."""
    return {
        field.name: getattr(request, field.name)
        if not field.has_presence or request.HasField(field.name)
        else None
        for field in request.DESCRIPTOR.fields
    }


# How the servicer hands each request to the domain's validation.
VALIDATE: dict[str, Callable[[Any], object]] = {
    "ListProcessesRequest": lambda request: domain.list_query(ORG, **sent(request)),
    "CreateProcessRequest": lambda request: domain.new_process(
        org_id=ORG,
        namespace=request.namespace,
        name=request.name,
        step_defs=messages.step_defs(request),
        now=NOW,
        created_by=Caller(ORG, frozenset(), "ci", uuid.uuid4()),
        labels=dict(request.labels),
        url=request.url if request.HasField("url") else None,
    ),
    "UpdateProcessRequest": lambda request: domain.validate_update(messages.update(request)),
    "CancelProcessRequest": lambda request: domain.validate_reason(
        request.reason if request.HasField("reason") else None
    ),
    "ListProcessEventsRequest": lambda request: domain.events_page(
        request.after_seq, request.limit if request.HasField("limit") else None
    ),
    "WatchProcessRequest": lambda request: domain.check_after_seq(request.after_seq),
    "WatchProcessesRequest": lambda request: change_filter(
        ORG, namespace=request.namespace, status=request.status
    ),
}
STEPS = [pb.StepDef(key="build", label="Build")]
# Valid requests to vary one field of; an update's fields depend on its type.
BASES: dict[str, list[Message]] = {
    "ListProcessesRequest": [pb.ListProcessesRequest()],
    "CreateProcessRequest": [
        pb.CreateProcessRequest(namespace="deployments", name="Deploy", step_defs=STEPS)
    ],
    "UpdateProcessRequest": [
        pb.UpdateProcessRequest(type="step_started", step="build"),
        pb.UpdateProcessRequest(type="step_completed", step="build"),
        pb.UpdateProcessRequest(type="step_failed", step="build", error="boom"),
        pb.UpdateProcessRequest(type="progress", step="build", percent=1),
        pb.UpdateProcessRequest(type="completed"),
        pb.UpdateProcessRequest(type="failed", error="boom"),
    ],
    "CancelProcessRequest": [pb.CancelProcessRequest()],
    "ListProcessEventsRequest": [pb.ListProcessEventsRequest()],
    "WatchProcessRequest": [pb.WatchProcessRequest()],
    "WatchProcessesRequest": [pb.WatchProcessesRequest()],
}
# Items of a repeated field (by its message type, or its own name if scalar)
# that may stand side by side (step keys and label keys are unique); a map's
# items are (key, value) pairs.
DISTINCT_ITEMS: dict[str, Callable[[int], Any]] = {
    "htk.processes.v1.StepDef": lambda index: pb.StepDef(key=f"s{index}", label="Step"),
    "htk.processes.v1.CreateProcessRequest.LabelsEntry": lambda index: (f"k{index}", "v"),
    "htk.processes.v1.ListProcessesRequest.label": lambda index: f"k{index}=v",
}
# Texts of a given length that a field with more rules than a length takes.
FILLERS: dict[str, Callable[[int], str]] = {
    "htk.processes.v1.CreateProcessRequest.url": lambda length: (
        "https://ci.example.com/" + "x" * length
    )[:length],
}
REQUESTS = [
    method.input_type for method in pb.DESCRIPTOR.services_by_name["ProcessService"].methods
]


@dataclass(frozen=True)
class Case:
    """A value for the field at `path` (names and list indexes) of a request."""

    request: str
    path: tuple[str | int, ...]
    value: Any
    accepted: bool

    @property
    def field_name(self) -> str:
        """The field as the domain's errors name it, e.g. `step_defs[0].key`."""
        text = ""
        for part in self.path:
            text += f"[{part}]" if isinstance(part, int) else f".{part}"
        return text.lstrip(".")

    def __str__(self) -> str:
        if isinstance(self.value, list):
            shown = f"{len(self.value)} items"
        elif isinstance(self.value, str) and len(self.value) > 20:
            shown = f"{len(self.value)} characters"
        else:
            shown = repr(self.value)
        return f"{self.request}.{self.field_name}={shown}"


def values_of(field: descriptor.FieldDescriptor) -> values_pb2.FieldValues:
    declared: values_pb2.FieldValues = field.GetOptions().Extensions[values_pb2.values]
    return declared


def words(enum_name: str) -> list[str]:
    """The words a `words_of` enum names (see values.proto)."""
    enum = pb.DESCRIPTOR.pool.FindEnumTypeByName(enum_name)
    prefix = enum.values[0].name.removesuffix("UNSPECIFIED")
    return [value.name.removeprefix(prefix).lower() for value in enum.values[1:]]


def path_fields(request: descriptor.Descriptor) -> set[str]:
    """Fields bound in the URL: the servicer reads those itself, not the domain."""
    for method in pb.DESCRIPTOR.services_by_name["ProcessService"].methods:
        if method.input_type is request:
            rule = method.GetOptions().Extensions[annotations_pb2.http]
            template = getattr(rule, rule.WhichOneof("pattern"))
            return {name for name in request.fields_by_name if f"{{{name}}}" in template}
    return set()


def cases_for(
    request: str, message: descriptor.Descriptor, prefix: tuple[str | int, ...] = ()
) -> Iterator[Case]:
    for field in message.fields:
        path = (*prefix, field.name)
        if field.message_type is not None and field.is_repeated:
            yield from cases_for(request, field.message_type, (*path, 0))
        rules = values_of(field)
        required = field_behavior_pb2.REQUIRED in field.GetOptions().Extensions[
            field_behavior_pb2.field_behavior
        ] and field.name not in path_fields(message)
        if required:
            yield Case(request, path, [] if field.is_repeated else "", accepted=False)
        if rules.words_of:
            for word in words(rules.words_of):
                yield Case(request, path, word, accepted=True)
            yield Case(request, path, "no-such-word", accepted=False)
        if rules.HasField("minimum"):
            yield Case(request, path, rules.minimum, accepted=True)
            yield Case(request, path, rules.minimum - 1, accepted=False)
        if rules.HasField("maximum"):
            yield Case(request, path, rules.maximum, accepted=True)
            yield Case(request, path, rules.maximum + 1, accepted=False)
        if rules.HasField("max_length"):
            filler = FILLERS.get(field.full_name, "x".__mul__)
            yield Case(request, path, filler(rules.max_length), accepted=True)
            yield Case(request, path, filler(rules.max_length + 1), accepted=False)
        if rules.HasField("max_items"):
            items = field.message_type.full_name if field.message_type else field.full_name
            assert items in DISTINCT_ITEMS, f"{field.full_name}: no items to make"
            item = DISTINCT_ITEMS[items]
            yield Case(request, path, [item(i) for i in range(rules.max_items)], accepted=True)
            yield Case(request, path, [item(i) for i in range(rules.max_items + 1)], accepted=False)


CASES = [case for request in REQUESTS for case in cases_for(request.name, request)]


def with_value(base: Message, case: Case) -> Message:
    request = type(base)()
    request.CopyFrom(base)
    *parents, last = case.path
    target: Any = request
    for part in parents:
        target = target[part] if isinstance(part, int) else getattr(target, part)
    container = getattr(target, str(last))
    if isinstance(case.value, list) and isinstance(container, MutableMapping):  # a map
        container.clear()
        container.update(dict(case.value))
    elif isinstance(case.value, list):
        del container[:]
        container.extend(case.value)
    else:
        setattr(target, str(last), case.value)
    return request


def outcome(request: Message) -> str | None:
    """The field the domain rejects the request for, or None if it passes."""
    try:
        VALIDATE[request.DESCRIPTOR.name](request)
    except InvalidArgument as error:
        return error.field
    return None


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_domain_enforces_the_declared_limit(case: Case) -> None:
    outcomes = [outcome(with_value(base, case)) for base in BASES[case.request]]
    if case.accepted:
        # An update field applies to some types only: one base taking it is enough.
        assert None in outcomes, outcomes
    else:
        assert set(outcomes) == {case.field_name}, outcomes


def words_enums() -> Iterator[descriptor.EnumDescriptor]:
    names = {
        values_of(field).words_of
        for message in pb.DESCRIPTOR.message_types_by_name.values()
        for field in message.fields
        if values_of(field).words_of
    }
    return (pb.DESCRIPTOR.pool.FindEnumTypeByName(name) for name in sorted(names))


@pytest.mark.parametrize("enum", list(words_enums()), ids=lambda enum: enum.name)
def test_the_words_are_the_domains(enum: descriptor.EnumDescriptor) -> None:
    domain_enum = getattr(domain, enum.name)
    assert words(enum.full_name) == [member.value for member in domain_enum]
