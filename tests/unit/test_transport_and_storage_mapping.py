"""Pure helpers of the transport and storage layers."""

from typing import Any

import pytest

from htk.processes.v1 import process_service_pb2 as pb
from server.storage.processes import _STEP_FIELDS
from server.storage.tables import StepRow
from server.transport.interceptors import unknown_json_fields


def test_every_step_field_has_a_column_of_the_same_name() -> None:
    assert set(_STEP_FIELDS) <= set(StepRow.__table__.columns.keys())


@pytest.mark.parametrize(
    ("body", "unknown"),
    [
        ({"type": "progress", "step": "b", "percent": 5}, []),
        ({"type": "completed", "percnt": 5}, ["percnt"]),
        # proto3 JSON accepts lowerCamel names too.
        ({"processId": "x", "type": "failed", "error": "e"}, []),
        # `data` is a Struct: free-form, never "unknown".
        ({"type": "step_completed", "step": "b", "data": {"anything": {"goes": 1}}}, []),
        ({"type": "x", "a": 1, "b": 2}, ["a", "b"]),
    ],
)
def test_unknown_update_fields(body: dict[str, Any], unknown: list[str]) -> None:
    assert unknown_json_fields(pb.UpdateProcessRequest.DESCRIPTOR, body) == unknown


def test_unknown_fields_inside_repeated_messages_are_named_with_their_index() -> None:
    body = {"name": "n", "step_defs": [{"key": "a", "label": "A"}, {"key": "b", "colour": "red"}]}
    assert unknown_json_fields(pb.CreateProcessRequest.DESCRIPTOR, body) == ["step_defs[1].colour"]


def test_a_body_that_is_not_an_object_has_no_fields_to_judge() -> None:
    assert unknown_json_fields(pb.CreateProcessRequest.DESCRIPTOR, ["x"]) == []
