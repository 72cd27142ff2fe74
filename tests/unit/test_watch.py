"""Watching, as plain logic: which organization-wide changes a filter lets
through, the paging of event listings, and which methods Envoy treats as streams."""

import json
import re
import uuid
from datetime import UTC, datetime

import pytest

from server.domain.errors import InvalidArgument
from server.domain.processes import (
    Event,
    ProcessStatus,
    ProcessSummary,
    UpdateType,
    check_after_seq,
    events_page,
)
from server.domain.watch import ProcessChange, ResumePoint, change_filter, resume_point
from server.edge.envoy import _api_routing
from server.transport.methods import api_services

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _change(namespace: str, event_type: UpdateType | None) -> ProcessChange:
    summary = ProcessSummary(
        process_id=uuid.uuid4(),
        namespace=namespace,
        name="Deploy",
        status=ProcessStatus.RUNNING,
        current_step=None,
        started_at=NOW,
        step_count=1,
        task_ids=[],
        created_by="ci-pipeline",
    )
    event = None if event_type is None else Event(1, event_type, None, {}, NOW, "ci-pipeline")
    return ProcessChange(summary, event)


CREATED = _change("acme.deploy", None)
PROGRESS = _change("acme.deploy", UpdateType.PROGRESS)
COMPLETED = _change("acme.deploy", UpdateType.COMPLETED)
FAILED = _change("acme.deploy", UpdateType.FAILED)
ELSEWHERE = _change("acme.builds", UpdateType.COMPLETED)
EVERY_CHANGE = [CREATED, PROGRESS, COMPLETED, FAILED, ELSEWHERE]


@pytest.mark.parametrize(
    ("filters", "matching"),
    [
        ({}, EVERY_CHANGE),
        # Only running processes change: `running` lets every change through,
        # the one that finishes a process included.
        ({"status": "running"}, EVERY_CHANGE),
        ({"status": "completed"}, [COMPLETED, ELSEWHERE]),
        ({"status": "failed"}, [FAILED]),
        ({"namespace": "deploy"}, [CREATED, PROGRESS, COMPLETED, FAILED]),
        ({"namespace": "acme.builds", "status": "completed"}, [ELSEWHERE]),
        ({"namespace": "acme.builds", "status": "failed"}, []),
    ],
)
def test_a_filter_lets_through_the_changes_it_names(
    filters: dict[str, str], matching: list[ProcessChange]
) -> None:
    wanted = change_filter("acme", **filters)
    assert [change for change in EVERY_CHANGE if wanted.matches(change)] == matching


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"status": "paused"}, "status"),
        ({"namespace": "other.deploy"}, "namespace"),
        ({"namespace": "bad name"}, "namespace"),
    ],
)
def test_a_bad_filter_names_its_field(filters: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        change_filter("acme", **filters)
    assert refused.value.field == field


def test_events_pages_default_to_100_after_the_start() -> None:
    page = events_page(0, None)
    assert (page.after_seq, page.limit) == (0, 100)
    assert events_page(7, 1000).limit == 1000


@pytest.mark.parametrize(
    ("after_seq", "limit", "field"), [(-1, None, "after_seq"), (0, 0, "limit"), (0, 1001, "limit")]
)
def test_bad_event_paging_names_its_field(after_seq: int, limit: int | None, field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        events_page(after_seq, limit)
    assert refused.value.field == field


def test_a_resume_point_must_be_an_event_of_the_log() -> None:
    check_after_seq(0, 0)
    check_after_seq(5, 5)
    with pytest.raises(InvalidArgument, match="6 is past the process's last event"):
        check_after_seq(6, 5)


def test_envoy_treats_exactly_the_streaming_methods_as_streams() -> None:
    pattern = re.compile(json.loads(_api_routing()["stream_methods_regex"]))
    for service in api_services():
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            assert bool(pattern.fullmatch(path)) == method.server_streaming, path


@pytest.mark.parametrize(
    ("after_seq", "last_event_id", "expected"),
    [
        (None, None, None),
        (3, None, ResumePoint(3)),
        (None, "7", ResumePoint(7, "Last-Event-ID")),
        # A browser reconnects to the URL it opened, with the last id it got.
        (3, "7", ResumePoint(7, "Last-Event-ID")),
        (3, "", ResumePoint(3)),  # an EventSource sends none when the id is empty
        (None, "0", ResumePoint(0, "Last-Event-ID")),
    ],
)
def test_a_watch_resumes_after_last_event_id_before_after_seq(
    after_seq: int | None, last_event_id: str | None, expected: ResumePoint | None
) -> None:
    assert resume_point(after_seq, last_event_id) == expected


@pytest.mark.parametrize(
    ("after_seq", "last_event_id", "message"),
    [
        (-1, None, "after_seq: must be 0 or more, got -1"),
        (None, "x", "Last-Event-ID: must be the seq of an event, a whole number, got 'x'"),
        (None, "-1", "Last-Event-ID: must be the seq of an event, a whole number, got '-1'"),
        (None, " 1", "Last-Event-ID: must be the seq of an event, a whole number, got ' 1'"),
        (None, "2147483648", "got '2147483648'"),
        (None, "9" * 30, "got '99999999999999999999…'"),
    ],
)
def test_a_bad_resume_point_names_its_field(
    after_seq: int | None, last_event_id: str | None, message: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        resume_point(after_seq, last_event_id)
    assert message in str(refused.value)


def test_a_resume_point_past_the_last_event_names_its_field() -> None:
    with pytest.raises(InvalidArgument, match=r"^Last-Event-ID: 9 is past the process's last"):
        ResumePoint(9, "Last-Event-ID").check(last_seq=4)
