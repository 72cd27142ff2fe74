"""Python values as Lua source, for Envoy's Lua filters (server/edge/*.lua).

The filters' source files use constants they do not define; the renderer
puts a preamble of `local` definitions before each (`with_constants`), so
that a Lua file holds code alone and Python says each value once.
"""

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from google.protobuf import descriptor

from server.transport.http_rules import TEMPLATE_PART, http_binding

_LUA_MAGIC = re.compile(r"([\^$()%.\[\]*+\-?])")


def with_constants(source: Path, constants: Mapping[str, str]) -> str:
    """The Lua file's source, after a `local` definition of each constant: a
    string, or a `LuaSource` as it is."""
    preamble = "".join(f"local {name} = {_lua_value(value)}\n" for name, value in constants.items())
    return f"-- Rendered by server/edge/envoy.py.\n{preamble}\n{source.read_text()}"


class LuaSource(str):
    """A value already written in Lua (a table), put into a preamble as it is."""


def route_table(
    services: list[descriptor.ServiceDescriptor],
    fixed_paths: Mapping[str, Sequence[str]],
) -> LuaSource:
    """A Lua table of `{path pattern, allowed methods}` pairs, one per REST
    path, and one per path of `fixed_paths` (those Envoy answers itself).

    Envoy's Lua filter answers a known path called with another method with
    405 and these methods in `Allow` (server/edge/rest_filter.lua).
    """
    allowed: dict[str, list[str]] = {
        "^" + _LUA_MAGIC.sub(r"%\1", path) + "$": list(methods)
        for path, methods in fixed_paths.items()
    }
    for service in services:
        for method in service.methods:
            binding = http_binding(method)
            if binding is not None:
                allowed.setdefault(path_pattern(binding.template), []).append(binding.method)
    rows = ", ".join(
        f"{{{_lua_string(pattern)}, {_lua_string(', '.join(methods))}}}"
        for pattern, methods in allowed.items()
    )
    return LuaSource("{" + rows + "}")


def path_pattern(template: str) -> str:
    """A Lua pattern matching the paths of a google.api.http path template."""
    return "^" + _template_pattern(template) + "$"


def _template_pattern(template: str) -> str:
    pattern, position = "", 0
    for match in TEMPLATE_PART.finditer(template):
        pattern += _LUA_MAGIC.sub(r"%\1", template[position : match.start()])
        wildcard = match["pattern"] if match["name"] else match[0]
        if wildcard in (None, "*"):
            pattern += "[^/]+"
        elif wildcard == "**":
            pattern += ".+"
        else:
            pattern += _template_pattern(wildcard)
        position = match.end()
    return pattern + _LUA_MAGIC.sub(r"%\1", template[position:])


def _lua_value(value: str) -> str:
    return str(value) if isinstance(value, LuaSource) else _lua_string(value)


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
