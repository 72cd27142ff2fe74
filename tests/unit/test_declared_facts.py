"""The facts generated from the protos' declarations (scripts/declared.py into
server/domain/declared.py, scripts/api_tables.py into docs/api.md) say what
the protos declare, and what the domain enforces is what they say.
`make check-generated` holds the files current; these check the generators."""

import sys
from pathlib import Path

import pytest

from htk.processes.v1 import access_pb2
from server.domain import declared
from server.domain.processes import limits
from server.domain.tokens import Scope
from server.transport.methods import api_services

ROOT = Path(__file__).resolve().parents[2]
DESCRIPTOR = (ROOT / "envoy" / "process_service.binpb").read_bytes()
# scripts/ is not a package: its generators import each other by file name.
sys.path.insert(0, str(ROOT / "scripts"))
import api_tables  # noqa: E402
import declared as declared_script  # noqa: E402

sys.path.remove(str(ROOT / "scripts"))
# Every service, as the server finds them: a new proto file needs no edit here.
SERVICES = api_services()


def test_the_domain_module_is_what_the_protos_declare() -> None:
    assert declared_script.render(DESCRIPTOR) == (ROOT / "server/domain/declared.py").read_text()


def test_the_constants_are_named_by_message_field_and_rule() -> None:
    assert declared_script.constant(".htk.processes.v1.StepDef", "key", "max_length") == (
        "STEP_DEF_KEY_MAX_LENGTH"
    )
    assert declared.STEP_DEF_KEY_MAX_LENGTH == limits.MAX_STEP_KEY_LENGTH
    assert limits.STEP_KEY.fullmatch("k" * limits.MAX_STEP_KEY_LENGTH)
    assert not limits.STEP_KEY.fullmatch("k" * (limits.MAX_STEP_KEY_LENGTH + 1))


def test_the_scopes_are_those_the_access_rules_name() -> None:
    named = {
        scope
        for service in SERVICES
        for method in service.methods
        for scope in method.GetOptions().Extensions[access_pb2.access].any_of_scopes
    }
    assert {scope.value for scope in Scope} == named


def test_the_api_tables_render_between_their_markers() -> None:
    document = "".join(
        f"<!-- {name} table: generated from the protos by `make generate` -->\n"
        f"stale\n<!-- end of {name} table -->\n"
        for name in api_tables.TABLES
    )
    rendered = api_tables.render("before\n" + document + "after\n", DESCRIPTOR)
    assert rendered.startswith("before\n") and rendered.endswith("after\n")
    assert "stale" not in rendered
    assert "| `CompleteTask` | `POST /api/v1/tasks/{task_id}/complete` with a JSON body of" in (
        rendered
    )
    assert "| `tasks:complete` |" in rendered
    assert "| `GetProcess` | NOT_FOUND (404) | no such process" in rendered
    assert f"| `StepDef.key` | at most {limits.MAX_STEP_KEY_LENGTH} characters |" in rendered


def test_the_api_tables_refuse_a_document_without_markers() -> None:
    with pytest.raises(SystemExit, match="markers are missing"):
        api_tables.render("no tables here\n", DESCRIPTOR)
