"""Pure helpers of the transport and storage layers."""

from server.storage.processes import _STEP_FIELDS
from server.storage.tables import StepRow


def test_every_step_field_has_a_column_of_the_same_name() -> None:
    assert set(_STEP_FIELDS) <= set(StepRow.__table__.columns.keys())
