"""Settings parsed from the environment: defaults, bounds, and errors that name the variable."""

import os
from pathlib import Path

import pytest

from htk_client import cli
from server.app import watch_limits
from server.service.hub import WatchLimits
from server.settings import CHECKOUT, Settings, SettingsError, documented, variable
from tests.support.tls import make_certificate

# A burst below the rate is refused; turning the rate off lets each bound be
# tried alone.
NO_RATE_LIMIT = {"HTK_RATE_LIMIT_PER_SECOND": "0"}


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.database_url is None
    assert settings.data_dir == CHECKOUT / ".data"
    assert (settings.http_port, settings.grpc_port, settings.envoy_admin_port) == (
        8080,
        None,
        9901,
    )
    # The direct port bypasses Envoy's rate limit: off unless asked for.
    assert settings.grpc_addresses == []
    assert settings.workers == (os.cpu_count() or 1)
    assert settings.db_pool_size == 10
    assert (settings.rate_limit_per_second, settings.rate_limit_burst) == (100, 200)
    assert settings.request_timeout_seconds == 15
    assert settings.idempotency_key_hours == 24
    assert settings.log_level == "INFO"


def test_values_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://htk:secret@db.internal/htk",
            "HTK_DATA_DIR": "relative/data",
            "HTK_GRPC_PORT": "6000",
            "HTK_WORKERS": "3",
            "HTK_RATE_LIMIT_PER_SECOND": "5",
            "HTK_RATE_LIMIT_BURST": "5",
            "HTK_LOG_LEVEL": "debug",
        }
    )
    assert settings.database_url == "postgresql://htk:secret@db.internal/htk"
    assert settings.data_dir == Path("relative/data").resolve()
    assert settings.grpc_addresses == ["127.0.0.1:6000"]
    assert settings.workers == 3
    assert (settings.rate_limit_per_second, settings.rate_limit_burst) == (5, 5)
    assert settings.log_level == "DEBUG"


def test_the_stream_caps_of_an_instance_are_shared_out_among_its_workers() -> None:
    """Each worker allows its share, rounded up, so that an instance's
    workers together allow the instance's cap (a little more when it does not
    divide), never a share of 0."""
    settings = Settings.from_env(
        {"HTK_WORKERS": "3", "HTK_MAX_WATCHERS_PER_TOKEN": "100", "HTK_MAX_WATCHERS_PER_ORG": "2"}
    )
    assert watch_limits(settings) == WatchLimits(total=1000, per_token=34, per_org=1)


def test_an_empty_variable_means_the_default() -> None:
    settings = Settings.from_env({"DATABASE_URL": "", "HTK_HTTP_PORT": ""})
    assert (settings.database_url, settings.http_port) == (None, 8080)


def test_variables_that_are_not_settings_are_left_alone() -> None:
    assert Settings.from_env({"HTK_FUZZ_EXAMPLES": "9", "PATH": "/bin"}) == Settings.from_env({})


def test_settings_cannot_change_once_read() -> None:
    settings = Settings.from_env({})
    with pytest.raises(ValueError, match="frozen"):
        settings.workers = 9  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "lowest", "highest"),
    [
        ("HTK_HTTP_PORT", 1, 65535),
        ("HTK_GRPC_PORT", 1, 65535),
        ("HTK_ENVOY_ADMIN_PORT", 1, 65535),
        ("HTK_METRICS_PORT", 0, 65535),
        ("HTK_WORKERS", 1, None),
        ("HTK_DB_POOL_SIZE", 1, None),
        ("HTK_RATE_LIMIT_PER_SECOND", 0, None),
        ("HTK_RATE_LIMIT_BURST", 1, None),
        ("HTK_REQUEST_TIMEOUT_SECONDS", 1, None),
        ("HTK_IDEMPOTENCY_KEY_HOURS", 24, None),
        ("HTK_MAX_WATCHERS_PER_TOKEN", 1, None),
        ("HTK_MAX_WATCHERS_PER_ORG", 1, None),
        ("HTK_MAX_STREAMS_PER_CONNECTION", 1, None),
        ("HTK_WATCH_STALL_SECONDS", 1, None),
    ],
)
def test_each_bound_is_inclusive_and_enforced(name: str, lowest: int, highest: int | None) -> None:
    def read(value: int) -> Settings:
        return Settings.from_env(NO_RATE_LIMIT | {name: str(value)})

    read(lowest)
    with pytest.raises(SettingsError, match=rf"^{name} must be .*{lowest}.*, got '{lowest - 1}'$"):
        read(lowest - 1)
    if highest is not None:
        read(highest)
        with pytest.raises(
            SettingsError, match=rf"^{name} must be .*{highest}, got '{highest + 1}'$"
        ):
            read(highest + 1)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"HTK_HTTP_PORT": "abc"},
            "HTK_HTTP_PORT must be a whole number, at least 1 and at most 65535, got 'abc'",
        ),
        ({"HTK_WORKERS": "1.5"}, "HTK_WORKERS must be a whole number, at least 1, got '1.5'"),
        (
            {"HTK_DB_POOL_SIZE": "ten"},
            "HTK_DB_POOL_SIZE must be a whole number, at least 1, got 'ten'",
        ),
        (
            {"HTK_LOG_LEVEL": "loud"},
            "HTK_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'loud'",
        ),
        (
            {"HTK_RATE_LIMIT_PER_SECOND": "50", "HTK_RATE_LIMIT_BURST": "49"},
            "HTK_RATE_LIMIT_BURST must be at least HTK_RATE_LIMIT_PER_SECOND (50), got 49",
        ),
    ],
)
def test_a_bad_value_is_named_with_what_was_expected(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    assert str(raised.value) == message


def test_every_bad_variable_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"HTK_WORKERS": "0", "HTK_GRPC_PORT": "x"})
    assert "HTK_WORKERS must be" in str(raised.value)
    assert "HTK_GRPC_PORT must be" in str(raised.value)


def test_every_setting_names_its_variable_and_says_what_it_means() -> None:
    # OpenTelemetry's standard variables keep their own names.
    for name, field in Settings.model_fields.items():
        assert variable(field) in ("DATABASE_URL", f"HTK_{name.upper()}") or (
            name.startswith("otel_") and variable(field) == name.upper()
        ), name
        assert field.description, name


def test_the_cli_prints_a_bad_setting_as_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HTK_WORKERS", "0")
    with pytest.raises(SystemExit) as exited:
        cli.main(["token", "list", "--org", "acme"])
    assert exited.value.code == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line == "htk: error: HTK_WORKERS must be a whole number, at least 1, got '0'"


# --- the network: bind address, TLS, ports ---------------------------------------------


def test_the_bind_address_is_an_ip_address_in_its_plain_spelling() -> None:
    assert Settings.from_env({}).bind_address == "127.0.0.1"
    everywhere = "0.0.0.0"  # noqa: S104 (the setting that serves other machines)
    assert Settings.from_env({"HTK_BIND_ADDRESS": everywhere}).bind_address == everywhere
    assert Settings.from_env({"HTK_BIND_ADDRESS": "0:0::0"}).bind_address == "::"
    with pytest.raises(SettingsError, match="HTK_BIND_ADDRESS must be an IP address, got 'h'"):
        Settings.from_env({"HTK_BIND_ADDRESS": "h"})


@pytest.mark.parametrize(
    ("env", "clash"),
    [
        ({"HTK_HTTP_PORT": "9901"}, "HTK_HTTP_PORT and HTK_ENVOY_ADMIN_PORT are both 9901"),
        ({"HTK_GRPC_PORT": "8080"}, "HTK_HTTP_PORT and HTK_GRPC_PORT are both 8080"),
        (
            {"HTK_HTTP_PORT": "7000", "HTK_GRPC_PORT": "7000", "HTK_ENVOY_ADMIN_PORT": "7000"},
            "HTK_HTTP_PORT and HTK_GRPC_PORT and HTK_ENVOY_ADMIN_PORT are all 7000",
        ),
    ],
)
def test_two_settings_of_one_port_are_refused_naming_both(env: dict[str, str], clash: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env)
    assert str(refused.value) == f"{clash}: each port must differ from the others"


def test_every_port_setting_takes_part_in_the_collision_check() -> None:
    """A port is any setting whose variable ends in _PORT, so that a new one
    cannot be left out: each, set to another's value, is refused."""
    ports = [setting.variable for setting in documented() if setting.variable.endswith("_PORT")]
    assert {"HTK_HTTP_PORT", "HTK_GRPC_PORT", "HTK_ENVOY_ADMIN_PORT"} <= set(ports)
    for port in ports:
        other = "HTK_HTTP_PORT" if port != "HTK_HTTP_PORT" else "HTK_ENVOY_ADMIN_PORT"
        with pytest.raises(SettingsError, match=f"{port}|{other}"):
            Settings.from_env({port: "6500", other: "6500"})


def test_tls_takes_a_certificate_and_its_key(tmp_path: Path) -> None:
    certificate = make_certificate(tmp_path)
    settings = Settings.from_env(certificate.env)
    assert settings.tls
    assert (settings.tls_cert_file, settings.tls_key_file) == (
        certificate.cert_file,
        certificate.key_file,
    )
    assert not Settings.from_env({}).tls


@pytest.mark.parametrize("given", ["HTK_TLS_CERT_FILE", "HTK_TLS_KEY_FILE"])
def test_one_tls_file_alone_is_refused_naming_both(tmp_path: Path, given: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({given: make_certificate(tmp_path).env[given]})
    assert str(refused.value) == (
        "HTK_TLS_CERT_FILE and HTK_TLS_KEY_FILE go together (set both for TLS, or neither);"
        f" only {given} is set"
    )


def test_tls_files_that_do_not_load_are_refused_at_once(tmp_path: Path) -> None:
    cert_file = make_certificate(tmp_path).cert_file
    for key_file in (make_certificate(tmp_path / "other").key_file, tmp_path / "missing.pem"):
        with pytest.raises(SettingsError, match="do not load as a certificate and its key"):
            Settings.from_env(
                {"HTK_TLS_CERT_FILE": str(cert_file), "HTK_TLS_KEY_FILE": str(key_file)}
            )


def test_htk_run_help_lists_every_setting_with_its_default_and_meaning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--help"])
    assert exited.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    for setting in documented():
        default = setting.default.replace("`", "").replace("(unset)", "unset")
        assert f"{setting.variable} (default: {default}; {setting.values})" in shown
        assert " ".join(setting.meaning.replace("`", "").split()) in shown
