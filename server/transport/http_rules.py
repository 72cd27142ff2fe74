"""The REST shape of each RPC, as its `google.api.http` rule in the protos states it.

The server reads it to judge REST input (server/edge/rest_input.py), `htk run`
to tell Envoy which methods each REST path takes (server/edge/lua.py), and
scripts/openapi.py to describe each operation.
"""

import functools
import re
from dataclasses import dataclass

from google.api import annotations_pb2
from google.protobuf import descriptor

# A variable of a path template, `{name}` or `{name=pattern}`, or a wildcard.
TEMPLATE_PART = re.compile(r"\{(?P<name>[^}=]+)(?:=(?P<pattern>[^}]*))?\}|\*\*|\*")


@dataclass(frozen=True)
class HttpBinding:
    """How one RPC is called over REST."""

    method: str  # GET, POST, ...
    template: str  # e.g. /api/v1/processes/{process_id}
    # Where the request message comes from besides the path: "" for the
    # query string, "*" for a JSON body holding the whole message, else the
    # name of the one field the body holds.
    body: str

    @functools.cached_property
    def path_variables(self) -> tuple[str, ...]:
        """The request fields the path template binds, by their full (dotted)
        names, in the template's order."""
        return tuple(
            match["name"] for match in TEMPLATE_PART.finditer(self.template) if match["name"]
        )

    @functools.cached_property
    def path_fields(self) -> frozenset[str]:
        """The request fields the path template binds (top-level names)."""
        return frozenset(name.split(".")[0] for name in self.path_variables)

    @property
    def plain_template(self) -> str:
        """The template with its variables' patterns left out (`{name=*}` reads
        `{name}`), as OpenAPI writes paths."""
        return TEMPLATE_PART.sub(
            lambda match: f"{{{match['name']}}}" if match["name"] else match[0], self.template
        )


@functools.cache  # read on every REST call; the protos do not change while running
def http_binding(method: descriptor.MethodDescriptor) -> HttpBinding | None:
    """The method's REST binding, or None for a method without one."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return None
    rule = options.Extensions[annotations_pb2.http]
    if rule.additional_bindings:
        # The server could not tell which binding a REST call came through.
        raise ValueError(f"{method.full_name}: additional_bindings are not supported")
    if rule.response_body:
        # Responses are whole messages: the transcoder's output, and the OpenAPI document's.
        raise ValueError(f"{method.full_name}: response_body is not supported")
    kind = rule.WhichOneof("pattern")
    if kind == "custom":
        return HttpBinding(rule.custom.kind.upper(), rule.custom.path, rule.body)
    if kind is None:
        raise ValueError(f"{method.full_name}: its google.api.http rule has no path")
    return HttpBinding(kind.upper(), getattr(rule, kind), rule.body)
