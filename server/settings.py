"""The service's configuration: one typed object, read from the environment."""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    # An external PostgreSQL (`postgresql://...`); None runs the embedded one.
    database_url: str | None
    # Where the embedded PostgreSQL keeps its data, and Envoy its rendered config.
    data_dir: Path
    grpc_port: int
    http_port: int
    envoy_admin_port: int
    # gRPC server processes behind Envoy; each has its own connection pool.
    workers: int
    # Database connections each server process keeps open.
    db_pool_size: int
    # Envoy's per-token limit: requests per second, and the burst allowed
    # above it. 0 turns rate limiting off.
    rate_limit_per_second: int
    rate_limit_burst: int
    # How long a request may take end to end, unless a gRPC caller sets a
    # shorter deadline; Envoy answers 504 DEADLINE_EXCEEDED past it.
    request_timeout_seconds: int
    # How long CreateProcess and UpdateProcess remember an Idempotency-Key.
    idempotency_key_hours: int
    # A watch stream with nothing to send sends a heartbeat this often.
    heartbeat_seconds: int
    # Watch streams each server process serves at once; more are refused (429).
    max_watchers: int
    log_level: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Settings":
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            data_dir=Path(env.get("HTK_DATA_DIR", CHECKOUT / ".data")).resolve(),
            grpc_port=_port(env, "HTK_GRPC_PORT", 50051),
            http_port=_port(env, "HTK_HTTP_PORT", 8080),
            envoy_admin_port=_port(env, "HTK_ENVOY_ADMIN_PORT", 9901),
            workers=_integer(env, "HTK_WORKERS", os.cpu_count() or 1, minimum=1),
            db_pool_size=_integer(env, "HTK_DB_POOL_SIZE", 10, minimum=1),
            rate_limit_per_second=_integer(env, "HTK_RATE_LIMIT_PER_SECOND", 100, minimum=0),
            rate_limit_burst=_integer(env, "HTK_RATE_LIMIT_BURST", 200, minimum=1),
            request_timeout_seconds=_integer(env, "HTK_REQUEST_TIMEOUT_SECONDS", 15, minimum=1),
            idempotency_key_hours=_integer(env, "HTK_IDEMPOTENCY_KEY_HOURS", 24, minimum=24),
            heartbeat_seconds=_integer(env, "HTK_HEARTBEAT_SECONDS", 15, minimum=1),
            max_watchers=_integer(env, "HTK_MAX_WATCHERS", 1000, minimum=1),
            log_level=_log_level(env.get("HTK_LOG_LEVEL", "INFO")),
        )

    def __post_init__(self) -> None:
        if self.rate_limit_burst < self.rate_limit_per_second:
            raise ValueError(
                "HTK_RATE_LIMIT_BURST must be at least HTK_RATE_LIMIT_PER_SECOND"
                f" ({self.rate_limit_per_second}), got {self.rate_limit_burst}"
            )

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def _integer(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {text!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    port = _integer(env, name, default, minimum=1)
    if port > 65535:
        raise ValueError(f"{name} must be a port number (1-65535), got {port}")
    return port


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"HTK_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {text!r}")
    return level
