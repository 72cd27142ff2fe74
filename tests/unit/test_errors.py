"""How a refused field reads in the error's message."""

import pytest

from server.domain.errors import InvalidArgument


@pytest.mark.parametrize(
    "field", ["name", "step_defs[0].key", "Idempotency-Key", "data.a.b", 'data.a.""', "%FF"]
)
def test_a_field_path_reads_as_it_is(field: str) -> None:
    assert str(InvalidArgument(field, "is required")) == f"{field}: is required"


@pytest.mark.parametrize(
    ("field", "message"),
    [
        # Found by the stateful fuzzer: a query parameter named ":" read as a
        # message naming nothing.
        (":", "':': unknown query parameter"),
        ("", "'': unknown query parameter"),
        ("not ready: ", "'not ready: ': unknown query parameter"),
        ("\x01", "'\\x01': unknown query parameter"),
    ],
)
def test_a_name_the_caller_made_up_is_quoted(field: str, message: str) -> None:
    refusal = InvalidArgument(field, "unknown query parameter")
    assert str(refusal) == message
    assert refusal.field == field
