"""Pure helpers of the transport and storage layers."""

import pytest

from server.settings import Settings
from server.storage.processes import _STEP_FIELDS
from server.storage.tables import StepRow


def test_every_step_field_has_a_column_of_the_same_name() -> None:
    assert set(_STEP_FIELDS) <= set(StepRow.__table__.columns.keys())


def test_settings_defaults() -> None:
    settings = Settings.from_env({})
    assert (settings.http_port, settings.grpc_port, settings.database_url) == (8080, None, None)
    assert settings.grpc_addresses == []
    assert settings.data_dir.name == ".data"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HTK_HTTP_PORT": "abc"}, "HTK_HTTP_PORT must be a whole number"),
        ({"HTK_GRPC_PORT": "0"}, "HTK_GRPC_PORT must be at least 1"),
        ({"HTK_GRPC_PORT": "70000"}, "HTK_GRPC_PORT must be a port number"),
        ({"HTK_DB_POOL_SIZE": "0"}, "HTK_DB_POOL_SIZE must be at least 1"),
        ({"HTK_LOG_LEVEL": "loud"}, "HTK_LOG_LEVEL must be"),
    ],
)
def test_settings_reject_bad_values_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)
