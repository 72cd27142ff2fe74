"""Envoy's routes for the dashboard, derived from its built files."""

import json
import re
from pathlib import Path

import pytest

from server.edge.dashboard import DASHBOARD, dashboard_routes
from server.edge.envoy import render_envoy_config, rest_filter_lua
from server.edge.lua import route_table
from server.settings import Settings


def _headers(route: dict[str, object]) -> dict[str, str]:
    added = route["response_headers_to_add"]
    assert isinstance(added, list)
    return {entry["header"]["key"]: entry["header"]["value"] for entry in added}


def _built(tmp_path: Path, *names: str) -> Path:
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    return tmp_path


def test_index_is_served_at_the_root_and_revalidated(tmp_path: Path) -> None:
    dist = _built(tmp_path, "index.html", "assets/main-AB12.js", "assets/main-CD34.css")
    routes = {route["match"]["path"]: route for route in dashboard_routes(dist)}

    assert set(routes) == {"/", "/assets/main-AB12.js", "/assets/main-CD34.css"}
    index = _headers(routes["/"])
    assert (index["content-type"], index["cache-control"]) == (
        "text/html; charset=utf-8",
        "no-cache",
    )
    assert routes["/"]["direct_response"] == {
        "status": 200,
        "body": {"filename": str(dist / "index.html")},
    }


def test_hashed_assets_are_cached_for_good_with_their_own_type(tmp_path: Path) -> None:
    dist = _built(tmp_path, "index.html", "assets/main-AB12.js", "assets/main-CD34.css")
    routes = {route["match"]["path"]: _headers(route) for route in dashboard_routes(dist)}

    assert routes["/assets/main-AB12.js"]["content-type"] == "text/javascript; charset=utf-8"
    assert routes["/assets/main-CD34.css"]["content-type"] == "text/css; charset=utf-8"
    for path in ("/assets/main-AB12.js", "/assets/main-CD34.css"):
        assert routes[path]["cache-control"] == "public, max-age=31536000, immutable"


def test_every_file_carries_the_security_headers() -> None:
    routes = dashboard_routes(DASHBOARD)
    assert routes, "dashboard/dist is empty: `make generate` builds it"
    for route in routes:
        headers = _headers(route)
        assert headers["x-content-type-options"] == "nosniff"
        policy = headers["content-security-policy"]
        assert "default-src 'self'" in policy and "'unsafe-inline'" not in policy
        # No HTML sink may run: the page builds its DOM from nodes and text.
        assert "require-trusted-types-for 'script'; trusted-types 'none'" in policy


def test_a_file_of_unknown_type_fails_the_start(tmp_path: Path) -> None:
    dist = _built(tmp_path, "index.html", "assets/logo.webp")
    with pytest.raises(ValueError, match=r"\.webp"):
        dashboard_routes(dist)


def test_other_methods_on_the_dashboards_files_are_answered_405_like_the_apis() -> None:
    table = route_table([], {"/": ("GET", "HEAD"), "/assets/main-AB12.js": ("GET", "HEAD")})
    assert table == '{{"^/$", "GET, HEAD"}, {"^/assets/main%-AB12%.js$", "GET, HEAD"}}'


def test_the_rendered_config_lists_every_built_file_among_the_routes(tmp_path: Path) -> None:
    settings = Settings.from_env({"HTK_DATA_DIR": str(tmp_path)})
    config = render_envoy_config(settings, stack_id=0).read_text()

    # Items of the route list, as indented as the catch-all 404 after them.
    catch_all = re.search(r'^( *)- match: \{ prefix: "/" \}$', config, re.MULTILINE)
    assert catch_all
    items = "".join(f"{catch_all[1]}- {json.dumps(route)}\n" for route in dashboard_routes())
    assert items + catch_all[0] in config
    assert '{"^/$", "GET, HEAD"}' in rest_filter_lua(dashboard_routes())
    assert json.dumps(rest_filter_lua(dashboard_routes())) in config
