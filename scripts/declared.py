"""Writes server/domain/declared.py: what the protos declare of request values,
as plain Python for the domain, which sees no protobuf.

The `(htk.processes.v1.values)` options are the one declaration of each
field's limits and words; the domain imports this module's constants and
enums rather than restating them, and `make check-generated` fails when the
module is stale against the protos. Read from the same descriptor set Envoy
reads, as scripts/openapi.py does.

    python scripts/declared.py [DESCRIPTOR_SET [OUTPUT]]
"""

import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

from google.protobuf import descriptor_pb2
from openapi import ACCESS_OPTION, DEFAULT_DESCRIPTOR, VALUES_OPTION, Protos, rpcs

DEFAULT_OUTPUT = Path("server/domain/declared.py")
# ruff's line length, which the generated module keeps.
WIDTH = 100
# The rules of (htk.processes.v1.values) that are numbers, by the suffix of their constant.
NUMBER_RULES = ("minimum", "maximum", "max_length", "max_items")
HEADER = '''"""What the protos declare of request values and callers: words, scopes, limits.

Generated from protos/ by scripts/declared.py (`make generate`); `make
check-generated` fails when it is stale. Change the protos' enums and their
`(htk.processes.v1.values)` options, not this file.
"""

import enum
'''


def constant(message: str, field: str, rule: str) -> str:
    """`StepDef`, `key`, `max_length` -> `STEP_DEF_KEY_MAX_LENGTH`."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", message.rsplit(".", 1)[-1])
    return f"{words}_{field}_{rule}".upper()


def request_messages(protos: Protos, files: list[descriptor_pb2.FileDescriptorProto]) -> list[str]:
    """Every message a request carries (its input type and what that holds), in
    the order the RPCs first reach them."""
    found: dict[str, None] = {}
    pending = [rpc.method.input_type for rpc in rpcs(protos, files)]
    while pending:
        name = pending.pop(0)
        if name in found or name not in protos.messages:
            continue
        found[name] = None
        pending += [member.type_name for member in protos.messages[name].field]
    return list(found)


def limits(protos: Protos, messages: list[str]) -> Iterator[str]:
    """The number rules of each message's fields, under the message's name."""
    for message in messages:
        lines = [
            f"{constant(message, member.name, rule)} = {getattr(values, rule)}"
            for member in protos.messages[message].field
            if (values := protos.option(member.options, VALUES_OPTION)) is not None
            for rule in NUMBER_RULES
            if values.HasField(rule)
        ]
        if lines:
            yield "\n".join([f"# {message[1:]}", *lines])


def enums(protos: Protos) -> Iterator[str]:
    """Each enum a field takes the words of, as a StrEnum of the words."""
    named: dict[str, None] = {}
    for message in protos.messages:
        for member in protos.messages[message].field:
            values = protos.option(member.options, VALUES_OPTION)
            if values is not None and values.words_of:
                named[values.words_of] = None
    for name in named:
        words = protos.words(name, name)
        lines = [f"class {name.rsplit('.', 1)[-1]}(enum.StrEnum):"]
        if doc := protos.doc(f".{name}"):
            text = textwrap.wrap(" ".join(doc.split()), width=WIDTH - 7)
            text[0] = f'"""{text[0]}'
            text[-1] += '"""' if len(text) == 1 else '\n"""'
            lines += [f"    {line}" if line else "" for line in "\n".join(text).split("\n")]
            lines.append("")
        lines += [f'    {word.upper()} = "{word}"' for word in words]
        yield "\n".join(lines)


def scopes(protos: Protos, files: list[descriptor_pb2.FileDescriptorProto]) -> str:
    """The scopes the RPCs' access rules name, as a StrEnum, in the order they come."""
    named: dict[str, None] = {}
    for file in files:
        for service in file.service:
            for method in service.method:
                access = protos.option(method.options, ACCESS_OPTION)
                named.update(dict.fromkeys(access.any_of_scopes if access else []))
    lines = [
        "class Scope(enum.StrEnum):",
        '    """A permission beyond reading, which every token of an organization has: each',
        '    scope an RPC\'s `(htk.processes.v1.access)` names."""',
        "",
    ]
    lines += [f'    {re.sub(r"[^A-Za-z0-9]", "_", scope).upper()} = "{scope}"' for scope in named]
    return "\n".join(lines)


def render(descriptor_set: bytes) -> str:
    files = list(descriptor_pb2.FileDescriptorSet.FromString(descriptor_set).file)
    protos = Protos.load(files)
    messages = request_messages(protos, files)
    sections = [
        HEADER,
        *enums(protos),
        scopes(protos, files),
        "\n\n".join(limits(protos, messages)),
    ]
    return "\n\n\n".join(section.rstrip("\n") for section in sections) + "\n"


def main(argv: list[str]) -> None:
    source = Path(argv[1]) if len(argv) > 1 else DEFAULT_DESCRIPTOR
    output = Path(argv[2]) if len(argv) > 2 else DEFAULT_OUTPUT
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(source.read_bytes()), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv)
