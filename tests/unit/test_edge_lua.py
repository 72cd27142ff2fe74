"""Envoy's Lua filters and the constants the renderer gives them
(server/edge/lua.py, server/edge/envoy.py): Lua reads a name nobody defined
as nil, without an error, so each name a filter uses must come from its
preamble, and the preamble must say what server/edge/constants.py says."""

import json
import re
from pathlib import Path

from server.edge import constants
from server.edge.dashboard import dashboard_routes
from server.edge.envoy import (
    REST_FILTER_LUA,
    SSE_EVENT_IDS_LUA,
    WATCH_PROCESS,
    render_envoy_config,
    rest_filter_lua,
    sse_event_ids_lua,
)
from server.edge.lua import LuaSource, with_constants
from server.settings import Settings

_COMMENT = re.compile(r"--.*$", re.MULTILINE)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_CONSTANT = re.compile(r"\b[A-Z][A-Z0-9_]+\b")
_DEFINED = re.compile(r"^local ([A-Z][A-Z0-9_]+) = ", re.MULTILINE)


def _used_constants(source: str) -> set[str]:
    return set(_CONSTANT.findall(_STRING.sub("", _COMMENT.sub("", source))))


def test_the_rest_filter_uses_only_constants_its_preamble_defines() -> None:
    rendered = rest_filter_lua(dashboard_routes())
    defined = set(_DEFINED.findall(rendered))
    assert _used_constants(REST_FILTER_LUA.read_text()) == defined


def test_the_sse_filter_needs_no_constants_and_has_code_on_one_route_alone(
    tmp_path: Path,
) -> None:
    # Its route says which responses it rewrites: WatchProcess's, from REST.
    assert _used_constants(SSE_EVENT_IDS_LUA.read_text()) == set()
    settings = Settings.from_env({"HTK_DATA_DIR": str(tmp_path)})
    config = render_envoy_config(settings, stack_id=0).read_text()
    code = f"inline_string: {json.dumps(sse_event_ids_lua())}\n"
    assert config.count(code) == 1
    route = config[config.rindex("- match:", 0, config.index(code)) : config.index(code)]
    assert f"path: {WATCH_PROCESS}\n" in route
    assert "name: x-envoy-original-path\n" in route


def test_the_preamble_says_what_the_constants_module_says() -> None:
    rendered = rest_filter_lua(dashboard_routes())
    for name in ("QUERY_HEADER", "JSON_BODY_HEADER", "ANONYMOUS_HEADER"):
        assert f'local {name} = "{getattr(constants, name)}"\n' in rendered
    assert f'local METADATA_NAMESPACE = "{constants.METADATA_NAMESPACE}"\n' in rendered


def test_constants_are_written_as_lua_strings_and_tables_as_they_are(tmp_path: Path) -> None:
    source = tmp_path / "filter.lua"
    source.write_text("return NAME, TABLE\n")
    rendered = with_constants(source, {"NAME": 'a "quoted" \\ name', "TABLE": LuaSource("{1}")})
    assert 'local NAME = "a \\"quoted\\" \\\\ name"\nlocal TABLE = {1}\n' in rendered
    assert rendered.endswith("\nreturn NAME, TABLE\n")


def test_the_rendered_config_takes_the_names_and_the_body_limit_from_the_constants(
    tmp_path: Path,
) -> None:
    settings = Settings.from_env({"HTK_DATA_DIR": str(tmp_path)})

    config = render_envoy_config(settings, stack_id=0).read_text()
    assert f"request_body_buffer_limit: {constants.MAX_REQUEST_BODY_BYTES}\n" in config
    assert f"header_name: {constants.ANONYMOUS_HEADER}," in config
    assert f'key_matcher: {{ prefix: "{constants.INTERNAL_HEADER_PREFIX}" }}' in config
    assert f"- header: {constants.CALLER_NAME_HEADER}\n" in config


def test_every_internal_header_has_the_prefix_envoy_drops_from_clients() -> None:
    headers = [value for name, value in vars(constants).items() if name.endswith("_HEADER")]
    assert len(headers) == 4
    assert all(header.startswith(constants.INTERNAL_HEADER_PREFIX) for header in headers)


def test_only_plain_gets_with_a_canonical_token_skip_the_rest_filter(tmp_path: Path) -> None:
    settings = Settings.from_env({"HTK_DATA_DIR": str(tmp_path)})
    config = render_envoy_config(settings, stack_id=0).read_text()
    skip = "envoy.filters.http.lua:\n"
    assert config.count(skip) == 1
    route = config[config.rindex("- match:", 0, config.index(skip)) : config.index(skip)]
    assert "string_match: { exact: GET }" in route
    assert 'regex: "Bearer [^ \\\\t\\\\n\\\\v\\\\f\\\\r]+"' in route
    for header in ("content-length", "transfer-encoding"):
        assert f"{{ name: {header}, present_match: false }}" in route
