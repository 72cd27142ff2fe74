"""The server's layers import only downwards: transport -> service -> storage
and domain; storage and domain never reach up, and nothing below transport
sees protobuf. Read from the source with ast, so an import added anywhere in
server/ (a function-local one included) is checked without running it."""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVER = Path(__file__).parents[2] / "server"
# What each layer may import of server/, besides itself. metrics and tracing
# are instruments every layer may hold; settings is read once, at the top
# (server/app.py, server/stack.py, server/cli.py), and handed down as values.
# The REST edge (Envoy's config and the strict reader of what Envoy hands on)
# stands above transport; the names both sides of it share are one module of
# constants without imports, which transport may read too.
ALLOWED: dict[str, set[str]] = {
    "domain": set(),
    "storage": {"domain", "metrics", "tracing"},
    "service": {"domain", "storage", "metrics"},
    "transport": {"domain", "service", "metrics", "tracing", "edge.constants"},
    "edge": {"transport", "domain", "settings"},
}
# Generated protobuf code and the libraries around it, which transport (and the
# edge above it) alone turns into calls of the layers below.
PROTOBUF = ("google.protobuf", "google.api", "google.rpc", "grpc", "htk")


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every module the file imports, with the line importing it."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "server":
                yield from ((node.lineno, f"server.{alias.name}") for alias in node.names)
            else:
                yield node.lineno, node.module


def crossings(server: Path, layer: str) -> Iterator[str]:
    """The imports of `layer` (a folder of `server`) that run against the layers."""
    for path in sorted((server / layer).rglob("*.py")):
        for line, module in imports(path):
            parts = module.split(".")
            if parts[0] == "server" and len(parts) > 1:
                allowed = ALLOWED[layer] | {layer}
                crossing = parts[1] not in allowed and ".".join(parts[1:3]) not in allowed
            else:
                crossing = layer not in ("transport", "edge") and any(
                    module == name or module.startswith(f"{name}.") for name in PROTOBUF
                )
            if crossing:
                yield f"{path.relative_to(server.parent)}:{line} imports {module}"


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_the_layer_imports_only_downwards(layer: str) -> None:
    assert list(crossings(SERVER, layer)) == []


def test_the_check_finds_imports_against_the_layers(tmp_path: Path) -> None:
    (tmp_path / "server" / "storage").mkdir(parents=True)
    (tmp_path / "server" / "storage" / "upwards.py").write_text(
        "import grpc\nimport grpcio_extra\nfrom server import settings\n"
        "from server.domain import errors\nfrom server.storage import tables\n"
        "def later():\n    from server.service.tokens import TokenService\n"
    )
    assert list(crossings(tmp_path / "server", "storage")) == [
        "server/storage/upwards.py:1 imports grpc",
        "server/storage/upwards.py:3 imports server.settings",
        "server/storage/upwards.py:7 imports server.service.tokens",
    ]
