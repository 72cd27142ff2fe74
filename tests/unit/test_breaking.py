"""The contract check of `make lint` (scripts/breaking.py) against this checkout's
protos: a copy of the buf workspace with changes that break the gRPC or REST
shapes fails, naming each change; one with changes that only add passes."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = Path("protos/htk/processes/v1/process_service.proto")

# Each change: a regex of process_service.proto and its replacement, and for
# the breaking ones what buf or the script says about it.
BREAKING = [
    # A renamed field.
    (r"  string name = 2 \[", "  string title = 2 [", 'changed name from "name" to "title"'),
    # A field's type.
    ("optional int32 limit = 5", "optional int64 limit = 5", 'from "int32" to "int64"'),
    # A removed RPC.
    (
        r"  rpc GetProcess\(.*?\n  }\n",
        "",
        'RPC "GetProcess" on service "ProcessService" was deleted',
    ),
    # A word `status` no longer takes.
    (
        r"\n  // Ended by a `failed` update.*?\n  PROCESS_STATUS_FAILED = 3;",
        "",
        'enum value "3" on enum "ProcessStatus" was deleted',
    ),
    # A REST path.
    (
        r"/api/v1/processes/\{process_id\}/update",
        "/api/v1/processes/{process_id}:update",
        "UpdateProcess: HTTP binding changed from {post: "
        '"/api/v1/processes/{process_id}/update" body: "*"} to {post: '
        '"/api/v1/processes/{process_id}:update" body: "*"}',
    ),
]
ADDITIVE = [
    # A new RPC.
    (
        r"  rpc GetProcess\(",
        """  rpc ArchiveProcess(GetProcessRequest) returns (Process) {
    option (google.api.http) = {post: "/api/v1/processes/{process_id}/archive"};
    option (htk.processes.v1.access) = {any_of_scopes: ["processes:write"]};
  }

  rpc GetProcess(""",
    ),
    # A new response field.
    (
        r"message UpdateProcessResponse \{\n",
        "message UpdateProcessResponse {\n  google.protobuf.Timestamp finished_at = 99;\n",
    ),
    # A new word of `status`.
    (
        r"  PROCESS_STATUS_FAILED = 3;\n",
        "  PROCESS_STATUS_FAILED = 3;\n  PROCESS_STATUS_HELD = 99;\n",
    ),
]


def substitute(text: str, pattern: str, replacement: str) -> str:
    changed, count = re.subn(pattern, lambda _: replacement, text, flags=re.S)
    assert count == 1, pattern
    return changed


def workspace_with(tmp_path: Path, changes: list[tuple[str, str]]) -> Path:
    """A copy of the buf workspace with substitutions in process_service.proto."""
    shutil.copy(ROOT / "buf.yaml", tmp_path)
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copytree(ROOT / "third_party" / "protos", tmp_path / "third_party" / "protos")
    proto = tmp_path / PROTO
    text = proto.read_text()
    for pattern, replacement in changes:
        text = substitute(text, pattern, replacement)
    proto.write_text(text)
    return tmp_path


def check(workspace: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, ROOT / "scripts" / "breaking.py", "--against", ROOT, workspace],
        capture_output=True,
        text=True,
    )


def test_each_breaking_change_is_reported(tmp_path: Path) -> None:
    """All in one workspace, to run buf once: each complaint names its change."""
    result = check(workspace_with(tmp_path, [(old, new) for old, new, _ in BREAKING]))
    assert result.returncode == 1, result.stdout + result.stderr
    for _, _, complaint in BREAKING:
        assert complaint in result.stdout, result.stdout + result.stderr


def test_additive_changes_pass(tmp_path: Path) -> None:
    result = check(workspace_with(tmp_path, ADDITIVE))
    assert result.returncode == 0, result.stdout + result.stderr
