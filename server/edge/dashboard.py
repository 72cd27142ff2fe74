"""Envoy's routes for the web dashboard: its built files (dashboard/dist),
served by Envoy itself with their type, caching and security headers."""

from pathlib import Path
from typing import Any

from server.settings import CHECKOUT

DASHBOARD = CHECKOUT / "dashboard" / "dist"
# The dashboard's files by extension; a file of any other kind fails the
# start rather than go out with a guessed type.
DASHBOARD_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# What the dashboard's files answer; any other method gets 405.
DASHBOARD_METHODS = ("GET", "HEAD")
# The page runs only its own script and style, and talks only to its origin.
# It builds its DOM with no HTML sink (innerHTML and the like), so Trusted
# Types refuse every one, with no policy to make them.
DASHBOARD_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def dashboard_routes(dist: Path = DASHBOARD) -> list[dict[str, Any]]:
    """Envoy routes serving the built dashboard: `index.html` at `/`, never
    cached without asking again, and every other file at its own path, cached
    for good (its name changes with its content)."""
    routes = []
    for file in sorted(path for path in dist.rglob("*") if path.is_file()):
        relative = file.relative_to(dist).as_posix()
        entry_page = relative == "index.html"
        content_type = DASHBOARD_CONTENT_TYPES.get(file.suffix)
        if content_type is None:
            raise ValueError(f"{file}: no content type is known for the dashboard's {file.suffix}")
        headers = {
            "content-type": content_type,
            "cache-control": "no-cache" if entry_page else "public, max-age=31536000, immutable",
            **DASHBOARD_SECURITY_HEADERS,
        }
        routes.append(
            {
                "match": {
                    "path": "/" if entry_page else f"/{relative}",
                    "headers": [
                        {
                            "name": ":method",
                            "string_match": {"safe_regex": {"regex": "|".join(DASHBOARD_METHODS)}},
                        }
                    ],
                },
                "direct_response": {"status": 200, "body": {"filename": str(file)}},
                "response_headers_to_add": [
                    {
                        "header": {"key": key, "value": value},
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    }
                    for key, value in headers.items()
                ],
                # Not an API path: the transcoder would refuse it as an unknown method.
                "typed_per_filter_config": {
                    "envoy.filters.http.grpc_json_transcoder": {
                        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                        "disabled": True,
                    }
                },
            }
        )
    return routes
