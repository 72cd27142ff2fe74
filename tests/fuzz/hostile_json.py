"""Strategies for hostile REST bodies: JSON that is not quite JSON, repeated
keys, values of the wrong type for their field, nesting around every limit.

Bodies are rendered by hand from a valid request, so that exactly one fault is
planted at a chosen spot and the field the server must name is known.
"""

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hypothesis.strategies as st
from google.protobuf import descriptor

from htk.processes.v1 import process_service_pb2 as pb

STEPS = [f"s{index}" for index in range(8)]
JsonValue = Any

# Free-form JSON for `data`: finite numbers, any text but lone surrogates.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)
data_objects = st.dictionaries(st.text(max_size=6), json_values, min_size=1, max_size=4)
texts = st.text(min_size=1, max_size=30).filter(str.strip)


@st.composite
def update_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Well-formed UpdateProcess bodies (their step may or may not be in a state to take them)."""
    kind = draw(st.sampled_from(["step_started", "step_completed", "step_failed", "progress"]))
    body: dict[str, Any] = {"type": kind, "step": draw(st.sampled_from(STEPS))}
    if kind in ("step_started", "step_completed"):
        body["detail"] = draw(texts)
    if kind == "step_completed":
        body["data"] = draw(data_objects)
    if kind == "step_failed":
        body["error"] = draw(texts)
    if kind == "progress":
        body["message"] = draw(texts)
        body["percent"] = draw(st.integers(0, 100))
    return body


@st.composite
def create_bodies(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(STEPS), min_size=1, max_size=4, unique=True))
    return {
        "namespace": "fuzz",
        "name": draw(texts),
        "step_defs": [
            {"key": key, "label": draw(texts), "human": draw(st.booleans())} for key in keys
        ],
    }


# --- rendering with one planted fault ---------------------------------------------------

# A marker rendered inside a string and replaced by a byte that is no UTF-8.
_NOT_UTF8 = "\ue000"


@dataclass(frozen=True)
class Fault:
    """A way to break one JSON node: what it does to the node's text, and
    whether the server must name the node's field ("field") or the body
    ("body", for text that is no JSON at all)."""

    name: str
    kind: str  # the node kind it applies to
    render: Callable[[Any, list[tuple[str, str]]], str]
    blames: str = "body"


def _object(items: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{key}:{value}" for key, value in items) + "}"


def _array(items: list[tuple[str, str]]) -> str:
    return "[" + ",".join(value for _, value in items) + "]"


def _inner(text: str) -> str:
    return json.dumps(text)[1:-1]


FAULTS = [
    Fault("trailing-comma", "object", lambda _, items: _object(items)[:-1] + ",}"),
    Fault("leading-comma", "object", lambda _, items: "{," + _object(items)[1:]),
    Fault(
        "unquoted-keys", "object", lambda v, items: _object([(k[1:-1] or "k", x) for k, x in items])
    ),
    Fault(
        "single-quoted-keys",
        "object",
        lambda _, items: _object([(f"'{k[1:-1]}'", x) for k, x in items]),
    ),
    Fault("comment", "object", lambda _, items: "{/* note */" + _object(items)[1:]),
    Fault("trailing-comma", "array", lambda _, items: _array(items)[:-1] + ",]"),
    Fault("leading-comma", "array", lambda _, items: "[," + _array(items)[1:]),
    Fault("raw-control-character", "string", lambda v, _: '"' + _inner(v) + '\x01"'),
    Fault("raw-newline", "string", lambda v, _: '"' + _inner(v) + '\n"'),
    Fault("single-quotes", "string", lambda v, _: "'" + _inner(v) + "'"),
    Fault("bad-escape", "string", lambda v, _: '"' + _inner(v) + '\\x41"'),
    Fault("unterminated", "string", lambda v, _: '"' + _inner(v)),
    Fault("not-utf8", "string", lambda v, _: '"' + _inner(v) + _NOT_UTF8 + '"'),
    Fault("lone-surrogate", "string", lambda v, _: '"' + _inner(v) + '\\ud800"', "field"),
    Fault("NaN", "number", lambda v, _: "NaN", "field"),
    Fault("Infinity", "number", lambda v, _: "-Infinity" if v < 0 else "Infinity", "field"),
    Fault("past-double", "number", lambda v, _: "1e999", "field"),
    Fault("leading-zero", "number", lambda v, _: "0" + str(abs(int(v))) if v == int(v) else "00.5"),
    Fault("hex", "number", lambda v, _: hex(abs(int(v)))),
    Fault("plus-sign", "number", lambda v, _: "+" + json.dumps(abs(v))),
    Fault("bare-fraction", "number", lambda v, _: ".5"),
    Fault("capitalized", "literal", lambda v, _: {True: "True", False: "False", None: "None"}[v]),
]
# Faults of the whole document.
DOCUMENT_FAULTS: dict[str, Callable[[bytes], bytes]] = {
    "byte-order-mark": lambda text: b"\xef\xbb\xbf" + text,
    "utf-16": lambda text: text.decode().encode("utf-16"),
    "trailing-garbage": lambda text: text + b" x",
    "second-document": lambda text: text + text,
    "trailing-comment": lambda text: text + b" // done",
    "truncated": lambda text: text[: len(text) // 2],
}


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool) or value is None:
        return "literal"
    return "number"


def joined(path: str, key: str) -> str:
    """A field path as the server names it (an empty key shows as `""`)."""
    key = key or '""'
    return f"{path}.{key}" if path else key


def nodes(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every node of a JSON value with the field path the server names it by."""
    found = [(path, value)]
    if isinstance(value, dict):
        for key, item in value.items():
            found += nodes(item, joined(path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += nodes(item, f"{path}[{index}]")
    return found


def render(value: Any, target: int = -1, fault: Fault | None = None) -> bytes:
    """`value` as JSON, with `fault` planted at node number `target` (preorder)."""
    counter = [-1]

    def node(item: Any) -> str:
        counter[0] += 1
        mine = counter[0] == target and fault is not None
        if isinstance(item, dict):
            items = [(json.dumps(key), node(child)) for key, child in item.items()]
            return fault.render(item, items) if mine and fault else _object(items)
        if isinstance(item, list):
            items = [("", node(child)) for child in item]
            return fault.render(item, items) if mine and fault else _array(items)
        return fault.render(item, []) if mine and fault else json.dumps(item)

    text = node(value).encode()
    return text.replace(_NOT_UTF8.encode(), b"\xff")


@st.composite
def lenient_json(draw: st.DrawFn, body: dict[str, Any]) -> tuple[bytes, str, str]:
    """`body` as JSON that is not quite JSON; returns the bytes, the field the
    server must name, and the fault's name."""
    if draw(st.integers(0, 4)) == 0:
        name = draw(st.sampled_from(sorted(DOCUMENT_FAULTS)))
        return DOCUMENT_FAULTS[name](render(body)), "body", name
    spots = nodes(body)
    applicable = [
        (index, path, fault)
        for index, (path, value) in enumerate(spots)
        for fault in FAULTS
        if fault.kind == _kind(value) and (value or fault.name not in _KEY_FAULTS)
    ]
    index, path, fault = draw(st.sampled_from(applicable))
    return render(body, index, fault), path if fault.blames == "field" else "body", fault.name


# Faults that change keys, and so leave an empty object as it was.
_KEY_FAULTS = {"unquoted-keys", "single-quoted-keys"}
REPEAT = Fault("repeated-key", "object", lambda _, items: _object([*items, items[0]]))


@st.composite
def repeated_keys(draw: st.DrawFn, body: dict[str, Any]) -> tuple[bytes, str]:
    """`body` with one key of one of its objects given twice; returns the
    bytes and the repeated key's path."""
    spots = [
        (index, path, value)
        for index, (path, value) in enumerate(nodes(body))
        if isinstance(value, dict) and value
    ]
    # As likely inside `data` (free-form JSON) as in the message itself.
    inside = [spot for spot in spots if spot[1].startswith("data")]
    outside = [spot for spot in spots if not spot[1].startswith("data")]
    in_data = bool(inside) and draw(st.booleans())
    index, path, value = draw(st.sampled_from(inside if in_data else outside))
    return render(body, index, REPEAT), joined(path, next(iter(value)))


# --- values of the wrong JSON type -------------------------------------------------------

WRONG_VALUES: dict[str, list[Any]] = {
    "string": [5, 0.5, True, None, [], ["a"], {}, {"a": "b"}],
    "bool": ["true", "yes", "false", "", 0, 1, None, [True], {}],
    "int": ["50", "", True, None, 50.5, 2**31, -(2**31) - 1, [50], {}],
    "struct": [[], [{"a": 1}], "x", 5, True, None],
    "messages": [{"key": "a"}, "a", 5, None, True],
    # A map (labels) is a JSON object of strings.
    "map": [[], [{"key": "a"}], "x", 5, True, None],
}
# Arrays whose items are wrong: the server names the item.
WRONG_ITEMS: list[Any] = [None, "a", 5, [], [{"key": "a"}]]


def field_kind(field: descriptor.FieldDescriptor) -> str:
    if field.message_type is not None:
        if field.message_type.full_name == "google.protobuf.Struct":
            return "struct"
        if field.message_type.GetOptions().map_entry:
            return "map"
        return "messages"
    if field.type == field.TYPE_BOOL:
        return "bool"
    return "string" if field.type == field.TYPE_STRING else "int"


def body_fields(
    message: descriptor.Descriptor, path: str = ""
) -> list[tuple[str, descriptor.FieldDescriptor]]:
    """The fields a JSON body may set, nested ones with `[]` for an array item;
    the path-bound `process_id` is tested on its own."""
    found = []
    for field in message.fields:
        if field.name == "process_id":
            continue
        found.append((joined(path, field.name), field))
        if field_kind(field) == "messages":
            nested_message: descriptor.Descriptor = field.message_type  # type: ignore[assignment]
            found += body_fields(nested_message, f"{joined(path, field.name)}[]")
    return found


@st.composite
def wrong_types(draw: st.DrawFn, method: str, body: dict[str, Any]) -> tuple[bytes, str]:
    """`body` with one field set to a value of the wrong JSON type; returns
    the bytes and the path the server must name."""
    body = copy.deepcopy(body)
    message = pb.DESCRIPTOR.services_by_name["ProcessService"].methods_by_name[method].input_type
    template, field = draw(st.sampled_from(body_fields(message)))
    kind = field_kind(field)
    path, holder, name = _spot(body, template, draw)
    if kind == "messages" and draw(st.booleans()):
        items = [{"key": "a", "label": "A"} for _ in range(draw(st.integers(0, 2)))]
        at = draw(st.integers(0, len(items)))
        items.insert(at, draw(st.sampled_from(WRONG_ITEMS)))
        holder[name] = items
        return render(body), f"{path}[{at}]"
    holder[name] = draw(st.sampled_from(WRONG_VALUES[kind]))
    return render(body), path


def _spot(body: dict[str, Any], template: str, draw: st.DrawFn) -> tuple[str, dict[str, Any], str]:
    """Where `template` (e.g. `step_defs[].human`) lands in `body`: its path,
    the object holding it and its key."""
    outer, _, inner = template.partition("[].")
    if not inner:
        return template, body, template
    items = body.setdefault(outer, [])
    if not items:
        items.append({"key": "a", "label": "A"})
    index = draw(st.integers(0, len(items) - 1))
    return f"{outer}[{index}].{inner}", items[index], inner


# --- nesting ----------------------------------------------------------------------------


DEEP = "\ue001"  # a placeholder for `nested` text in a body


def nested(levels: int, shape: list[str]) -> bytes:
    """An object of `levels` levels of objects and arrays, itself included
    (cycling through `shape` inside it), around a string: written out flat,
    as it may be far deeper than Python can recurse."""
    opening = ['{"a":'] + [
        '{"a":' if shape[level % len(shape)] == "{" else "[" for level in range(levels - 1)
    ]
    closing = ["}" if part.startswith("{") else "]" for part in reversed(opening)]
    return ("".join(opening) + '"deep"' + "".join(closing)).encode()


def with_nested(body: Any, levels: int, shape: list[str]) -> bytes:
    """`body` rendered with its DEEP placeholder replaced by `nested` JSON."""
    return render(body).replace(json.dumps(DEEP).encode(), nested(levels, shape))
