"""Pure helpers of the transport and storage layers."""

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from htk.processes.v1 import process_service_pb2 as pb
from server.domain.errors import InvalidArgument
from server.domain.processes import EVENT_FIELDS, Event, EventType, UpdateType
from server.storage.processes import _STEP_FIELDS
from server.storage.tables import StepRow
from server.transport import messages


def test_every_step_field_has_a_column_of_the_same_name() -> None:
    assert set(_STEP_FIELDS) <= set(StepRow.__table__.columns.keys())


def test_every_event_type_lists_its_payload_keys() -> None:
    assert set(EVENT_FIELDS) == set(UpdateType) | set(EventType)


# A value of each payload key's kind; a key missing here fails the test below.
_SAMPLES: dict[str, Any] = {"data": {"image": "v2"}, "percent": 30, "timeout_seconds": 60}


@pytest.mark.parametrize("kind", list(EVENT_FIELDS), ids=str)
def test_every_payload_key_of_every_event_type_shows_in_the_message(
    kind: UpdateType | EventType,
) -> None:
    payload = {key: _SAMPLES.get(key, f"{key} text") for key in EVENT_FIELDS[kind]}
    event = Event(1, kind, "build", payload, datetime(2026, 2, 24, tzinfo=UTC), "ci-pipeline")
    message = messages.event(event)
    assert {field.name for field, _ in message.ListFields()} == {
        "seq", "type", "timestamp", "step", "actor", *payload,
    }  # fmt: skip
    assert message.actor == "ci-pipeline"
    for key, value in payload.items():
        shown = getattr(message, key)
        assert (dict(shown) if key == "data" else shown) == value


def test_a_stored_key_the_message_lacks_is_left_out_not_a_failure() -> None:
    """Events logged by an older server must read back whatever they hold."""
    event = Event(
        3, EventType.STEP_TIMED_OUT, "build", {"error": "late", "gone": 1}, datetime.now(UTC), None
    )
    assert messages.event(event).error == "late"


def test_an_event_logged_before_actors_were_recorded_has_none() -> None:
    event = Event(1, UpdateType.PROGRESS, "build", {"percent": 5}, datetime.now(UTC), None)
    assert not messages.event(event).HasField("actor")


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 2, 24, 12, 1, 0, 123_456, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        # Before the epoch: negative seconds, nanos still counted forward.
        datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        # Another offset: the same instant as in UTC.
        datetime(2026, 3, 29, 2, 30, 0, 1, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
    ],
    ids=str,
)
def test_timestamps_are_the_ones_protobuf_makes_of_a_datetime(moment: datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(moment)
    assert messages._timestamp(moment) == expected


def _read_by_json_format(data: struct_pb2.Struct) -> Any:
    """How `data` was read before: json_format, then whole numbers as ints."""
    return messages._whole_numbers_as_ints(json_format.MessageToDict(data))


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.text()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=8), _JSON_VALUES, max_size=6))
def test_data_reads_as_json_format_read_it(value: dict[str, Any]) -> None:
    data = struct_pb2.Struct()
    data.update(value)
    request = pb.UpdateProcessRequest(type="progress", data=data)
    assert messages.update(request).data == _read_by_json_format(data)


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_data_holding_a_number_json_cannot_write_is_refused_naming_the_field(
    number: float,
) -> None:
    data = struct_pb2.Struct()
    data.update({"deep": [{"n": number}]})
    with pytest.raises(InvalidArgument) as refused:
        messages.update(pb.UpdateProcessRequest(type="progress", data=data))
    assert refused.value.field == "data"


def test_a_value_with_nothing_set_reads_as_null() -> None:
    data = struct_pb2.Struct()
    data.fields["unset"].SetInParent()
    request = pb.UpdateProcessRequest(type="progress", data=data)
    assert messages.update(request).data == {"unset": None} == _read_by_json_format(data)
