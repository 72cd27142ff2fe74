"""Readiness from the checks of an instance's parts (server/domain/readiness.py)."""

from server.domain.readiness import Check, Readiness, schema_check


def test_ready_when_every_check_passes() -> None:
    readiness = Readiness([Check("database"), Check("schema"), Check("worker 0")])
    assert readiness.ready
    assert readiness.report() == {
        "status": "ready",
        "message": "ready",
        "checks": {"database": "ok", "schema": "ok", "worker 0": "ok"},
    }


def test_not_ready_names_each_part_that_is_not_and_why() -> None:
    readiness = Readiness(
        [
            Check("database", "connection refused"),
            Check("worker 0"),
            Check("worker 1", "not answering"),
        ]
    )
    assert not readiness.ready
    assert readiness.report() == {
        "status": "not ready",
        "message": "not ready: database: connection refused; worker 1: not answering",
        "checks": {"database": "connection refused", "worker 0": "ok", "worker 1": "not answering"},
    }


def test_the_schema_is_current_only_at_the_newest_revision() -> None:
    assert schema_check("0007", "0007") == Check("schema")
    assert schema_check("0006", "0007").problem == (
        "schema revision 0006, this htk needs revision 0007"
    )
    assert schema_check("0008", "0007").problem == (
        "schema revision 0008, this htk needs revision 0007"
    )
    assert schema_check(None, "0007").problem == "no schema, this htk needs revision 0007"
