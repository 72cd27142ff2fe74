"""Patterns matching the paths of a google.api.http path template, in the two
dialects Envoy's config takes: Lua patterns, for the first Lua filter's table
of paths (server/edge/lua.py), and RE2 regexes, for route matchers
(server/edge/envoy.py)."""

import re
from collections.abc import Callable
from dataclasses import dataclass

from server.transport.http_rules import TEMPLATE_PART

_LUA_MAGIC = re.compile(r"([\^$()%.\[\]*+\-?])")


@dataclass(frozen=True)
class Dialect:
    """How a pattern language writes a literal, one segment (`*`, a variable)
    and any number of them (`**`)."""

    literal: Callable[[str], str]
    segment: str
    segments: str


def lua_literal(text: str) -> str:
    return _LUA_MAGIC.sub(r"%\1", text)


# Matched against a path without its query string (the filter cuts it off).
LUA = Dialect(lua_literal, "[^/]+", ".+")
# Matched against `:path` as sent, so that no wildcard takes a query string:
# a path that has one does not match.
RE2 = Dialect(re.escape, "[^/?]+", "[^?]+")


def template_pattern(template: str, dialect: Dialect) -> str:
    """A pattern, unanchored, matching the paths of `template`."""
    pattern, position = "", 0
    for match in TEMPLATE_PART.finditer(template):
        pattern += dialect.literal(template[position : match.start()])
        wildcard = match["pattern"] if match["name"] else match[0]
        if wildcard in (None, "*"):
            pattern += dialect.segment
        elif wildcard == "**":
            pattern += dialect.segments
        else:
            pattern += template_pattern(wildcard, dialect)
        position = match.end()
    return pattern + dialect.literal(template[position:])
