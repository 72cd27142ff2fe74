"""Python values as Lua source, for Envoy's Lua filters (server/edge/*.lua).

The filters' source files use constants they do not define; the renderer
puts a preamble of `local` definitions before each (`with_constants`), so
that a Lua file holds code alone and Python says each value once.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

from google.protobuf import descriptor

from server.edge.paths import LUA, lua_literal, template_pattern
from server.transport.http_rules import http_binding


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
        "^" + lua_literal(path) + "$": list(methods) for path, methods in fixed_paths.items()
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
    return "^" + template_pattern(template, LUA) + "$"


def _lua_value(value: str) -> str:
    return str(value) if isinstance(value, LuaSource) else _lua_string(value)


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
