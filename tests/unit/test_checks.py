"""The checks every resource shares."""

import uuid
from collections.abc import Callable

import pytest

from server.domain.checks import parse_id
from server.domain.errors import NotFound
from server.domain.processes import parse_process_id
from server.domain.tasks import parse_task_id
from server.domain.trust import parse_policy_id


@pytest.mark.parametrize(
    ("parse", "kind"),
    [
        (parse_process_id, "process"),
        (parse_task_id, "task"),
        (parse_policy_id, "trust policy"),
        (lambda text: parse_id("webhook", text), "webhook"),
    ],
)
def test_an_id_that_is_no_uuid_is_not_found_and_not_echoed_whole(
    parse: Callable[[str], uuid.UUID], kind: str
) -> None:
    with pytest.raises(NotFound) as short:
        parse("review")
    assert str(short.value) == f"{kind} 'review' not found"
    with pytest.raises(NotFound) as long:
        parse("x" * 5000)
    assert str(long.value) == f"{kind} {'x' * 100!r} not found"
    known = uuid.uuid4()
    assert parse(str(known)) == known
