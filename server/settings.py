"""The service's configuration: one typed object, read from the environment.

Each setting is one field below: its environment variable, type, default,
bounds and description. The configuration table of docs/operating.md is
rendered from these fields (`make generate`; `make check-generated` fails when
it is stale), so a new setting is a new field here and its regenerated row.
"""

import ipaddress
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args, get_origin
from urllib.parse import urlsplit

import annotated_types
from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from server.domain.errors import InvalidArgument
from server.domain.sign_in import group_scopes
from server.domain.trust import issuer_url

CHECKOUT = Path(__file__).resolve().parent.parent

Port = Annotated[int, Field(ge=1, le=65535)]
LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(str.upper)
]

LogFormat = Literal["text", "json"]


def _ip_address(value: str) -> str:
    """An IP address as Envoy takes it (no host names: Envoy would not resolve one)."""
    return str(ipaddress.ip_address(value))


IPAddress = Annotated[str, AfterValidator(_ip_address)]


def _seconds_list(value: Any) -> Any:
    """`5,300,1800` as the numbers it lists, each positive."""
    if not isinstance(value, str):
        return value
    try:
        seconds = tuple(float(part) for part in value.split(","))
    except ValueError:
        raise ValueError("must be positive numbers of seconds, comma-separated") from None
    if any(not 0 < wait < 1e9 for wait in seconds):
        raise ValueError("must be positive numbers of seconds, comma-separated")
    return seconds


OTLP_GRPC_PORT = 4317


def _otlp_endpoint(value: str) -> str:
    """An OTLP/gRPC endpoint Envoy and the workers can both export to:
    `http://host:port`, plaintext (a collector or agent beside htk)."""
    url = urlsplit(value)
    if url.scheme != "http" or not url.hostname or url.path not in ("", "/"):
        raise ValueError(
            "must be http://host:port, the plaintext OTLP/gRPC endpoint of a collector"
            " (https is not supported)"
        )
    try:
        port = url.port
    except ValueError as error:
        raise ValueError(f"has a bad port ({error})") from None
    # Both exporters need the port: OTLP/gRPC's own when none is named.
    return f"http://{url.netloc}:{OTLP_GRPC_PORT}" if port is None else f"http://{url.netloc}"


class SettingsError(ValueError):
    """A setting has a value it cannot take; the message names the variable."""


class Settings(BaseSettings):
    """Build with `Settings.from_env()`: its errors read as plain sentences."""

    model_config = SettingsConfigDict(frozen=True)

    # Each field names its variable in full (validation_alias), so that a
    # search for HTK_WORKERS finds its declaration.

    database_url: str | None = Field(
        None,
        validation_alias="DATABASE_URL",
        description="any PostgreSQL, e.g. `postgresql://user:pass@host/db`; libpq's"
        " multi-host form (`postgresql://user:pass@h1:5432,h2:5432/db"
        "?target_session_attrs=read-write`) follows the primary through a failover"
        " (docs/production.md); without it the embedded PostgreSQL runs",
    )
    data_dir: Annotated[Path, AfterValidator(Path.resolve)] = Field(
        CHECKOUT / ".data",
        validation_alias="HTK_DATA_DIR",
        description="the embedded PostgreSQL's data and Envoy's rendered config",
    )
    http_port: Port = Field(
        8080, validation_alias="HTK_HTTP_PORT", description="Envoy: REST and native gRPC"
    )
    grpc_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        validation_alias="HTK_GRPC_PORT",
        description="the gRPC server workers directly, without Envoy; off unless set, since"
        " callers there bypass Envoy's per-token rate limit",
    )
    envoy_admin_port: Port = Field(
        9901,
        validation_alias="HTK_ENVOY_ADMIN_PORT",
        description="Envoy's admin interface (stats)",
    )
    metrics_port: int = Field(
        9464,
        ge=0,
        le=65535,
        validation_alias="HTK_METRICS_PORT",
        description="Prometheus metrics at `/metrics`: every worker's together, and Envoy's"
        " statistics (`0`: off)",
    )
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        validation_alias="HTK_WORKERS",
        description="gRPC server processes behind Envoy; each has its own connection pool",
        json_schema_extra={"shown_default": "number of cores"},
    )
    db_pool_size: int = Field(
        10,
        ge=1,
        validation_alias="HTK_DB_POOL_SIZE",
        description="database connections of each worker",
    )
    rate_limit_per_second: int = Field(
        100,
        ge=0,
        validation_alias="HTK_RATE_LIMIT_PER_SECOND",
        description="requests per second per token, counted by Envoy (`0`: no limit)",
    )
    rate_limit_burst: int = Field(
        200,
        ge=1,
        validation_alias="HTK_RATE_LIMIT_BURST",
        description="requests a token may send at once above that rate"
        " (at least `HTK_RATE_LIMIT_PER_SECOND`)",
    )
    rate_limit_per_address_per_second: int = Field(
        1000,
        ge=1,
        validation_alias="HTK_RATE_LIMIT_PER_ADDRESS_PER_SECOND",
        description="requests per second from one client address, whatever their tokens"
        " (bursts up to twice this); counted by Envoy before any token is looked up,"
        " so that a fresh made-up token per request gains nothing",
    )
    rate_limit_anonymous_per_second: int = Field(
        100,
        ge=1,
        validation_alias="HTK_RATE_LIMIT_ANONYMOUS_PER_SECOND",
        description="API requests per second without a token, all clients together"
        " (bursts up to twice this); the dashboard's files are not counted",
    )
    request_headers_timeout_seconds: int = Field(
        10,
        ge=1,
        validation_alias="HTK_REQUEST_HEADERS_TIMEOUT_SECONDS",
        description="a request whose headers have not all arrived within this long is"
        " refused (408) and its connection closed",
    )
    request_timeout_seconds: int = Field(
        15,
        ge=1,
        validation_alias="HTK_REQUEST_TIMEOUT_SECONDS",
        description="end-to-end limit of a request, unless a gRPC caller's deadline is shorter"
        " (504 / DEADLINE_EXCEEDED past it); a request not received in full within it is"
        " refused (408), streams included, which live on once received",
    )
    idempotency_key_hours: int = Field(
        24,
        ge=24,
        validation_alias="HTK_IDEMPOTENCY_KEY_HOURS",
        description=(
            "how long CreateProcess, UpdateProcess and CancelProcess remember an Idempotency-Key"
        ),
    )
    retention_days: float = Field(
        90.0,
        ge=0.0,
        validation_alias="HTK_RETENTION_DAYS",
        description="finished processes (completed, failed, cancelled) are deleted this many days"
        " after they finished, with their steps, tasks, events and idempotency keys, so that"
        " the database stops growing (`0`: kept forever); running processes never are;"
        " fractions are allowed (`0.5`: twelve hours)",
        json_schema_extra={"shown_default": "`90`"},
    )
    archive_dir: Path | None = Field(
        None,
        validation_alias="HTK_ARCHIVE_DIR",
        description="each process retention deletes is first written here, with its event"
        " log, one JSON line in a gzip file per day (`YYYY-MM-DD.jsonl.gz`, UTC), fsynced"
        " before the delete commits; read with `htk archive read`. Unset: deleted unarchived."
        " Give every instance of a database the same folder",
    )
    retention_batch_size: int = Field(
        50,
        ge=1,
        le=10000,
        validation_alias="HTK_RETENTION_BATCH_SIZE",
        description="processes deleted per transaction: a batch's delete locks its processes'"
        " rows and the counters' rows until it commits, so a small batch keeps the wait of"
        " a call finishing a process of the same namespace short",
    )
    retention_duty_cycle: float = Field(
        0.02,
        gt=0.0,
        le=1.0,
        validation_alias="HTK_RETENTION_DUTY_CYCLE",
        description="the share of the time a pass works through a backlog (the first pass over"
        " a year of runs): after a batch that took t seconds it rests t * (1 / share - 1),"
        " so that it keeps out of the calls' way, and backs off by itself when the machine"
        " is busy and batches take longer (`1`: as fast as it can)",
        json_schema_extra={"shown_default": "`0.02`"},
    )
    retention_interval_seconds: float | None = Field(
        None,
        gt=0.0,
        validation_alias="HTK_RETENTION_INTERVAL_SECONDS",
        description="how often each worker looks for expired processes (one worker of all"
        " instances deletes at a time, batch after batch until none is left). Unset: a tenth"
        " of the retention, at least 1 and at most 60 seconds, so that a short retention is"
        " kept to within about a tenth of it",
        json_schema_extra={"shown_default": "a tenth of the retention, 1 to 60"},
    )
    heartbeat_seconds: int = Field(
        15,
        ge=1,
        validation_alias="HTK_HEARTBEAT_SECONDS",
        description="a watch stream with nothing else to send sends a heartbeat this often",
    )
    watch_poll_seconds: float = Field(
        1.0,
        gt=0.0,
        le=60.0,
        validation_alias="HTK_WATCH_POLL_SECONDS",
        description="each worker reads this often how far the logs of the processes it streams"
        " go: a change whose notification was lost (its worker died right after the commit)"
        " reaches watchers at most this much later",
    )
    max_watchers: int = Field(
        1000,
        ge=1,
        validation_alias="HTK_MAX_WATCHERS",
        description="watch streams each worker serves at once; more are refused"
        " (429 / RESOURCE_EXHAUSTED)",
    )
    max_watchers_per_token: int = Field(
        100,
        ge=1,
        validation_alias="HTK_MAX_WATCHERS_PER_TOKEN",
        description="watch streams one token may hold open at once on an instance, each worker"
        " allowing its share (this divided by `HTK_WORKERS`, rounded up); more are refused"
        " (429 / RESOURCE_EXHAUSTED)",
    )
    max_watchers_per_org: int = Field(
        400,
        ge=1,
        validation_alias="HTK_MAX_WATCHERS_PER_ORG",
        description="watch streams the tokens of one organization may hold open at once on an"
        " instance, each worker allowing its share, as above",
    )
    max_streams_per_connection: int = Field(
        100,
        ge=1,
        validation_alias="HTK_MAX_STREAMS_PER_CONNECTION",
        description="requests (streams included) one HTTP/2 client connection may have open"
        " at once, counted by Envoy; a client's further requests wait for one to end",
    )
    watch_stall_seconds: int = Field(
        30,
        ge=1,
        validation_alias="HTK_WATCH_STALL_SECONDS",
        description="a watch stream whose client has read nothing for this long, while messages"
        " wait for it, ends (RESOURCE_EXHAUSTED), to be resumed with `after_seq`",
    )
    token_cache_size: int = Field(
        10000,
        ge=0,
        validation_alias="HTK_TOKEN_CACHE_SIZE",
        description="valid tokens each worker remembers, so that their calls need no lookup"
        " (`0`: every call looks its token up)",
    )
    token_cache_seconds: int = Field(
        300,
        ge=1,
        validation_alias="HTK_TOKEN_CACHE_SECONDS",
        description="a remembered token is looked up again after this long; a backstop,"
        " since every worker forgets a revoked token within a second",
    )
    unknown_token_cache_seconds: int = Field(
        2,
        ge=0,
        validation_alias="HTK_UNKNOWN_TOKEN_CACHE_SECONDS",
        description="a token found neither active nor at all is refused without a lookup for"
        " this long (up to `HTK_TOKEN_CACHE_SIZE` of them; `0`: never remembered); short,"
        " since creating a token notifies no worker",
    )
    jwks_cache_seconds: int = Field(
        600,
        ge=1,
        validation_alias="HTK_JWKS_CACHE_SECONDS",
        description="an OIDC issuer's signing keys (for the token exchange) are fetched again"
        " after this long; a token signed by a key not yet known fetches them at once",
    )
    jwks_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=30,
        validation_alias="HTK_JWKS_TIMEOUT_SECONDS",
        description="how long fetching an OIDC issuer's configuration or keys may take before"
        " the exchange gives up (UNAVAILABLE, HTTP 503)",
    )
    oidc_issuer: str | None = Field(
        None,
        validation_alias="HTK_OIDC_ISSUER",
        description="the identity provider people sign in to the dashboard with (OpenID"
        " Connect), e.g. `https://login.example.com`; with `HTK_OIDC_CLIENT_ID` and"
        " `HTK_OIDC_CLIENT_SECRET` (docs/identity.md); unset: tokens are pasted",
    )
    oidc_client_id: str | None = Field(
        None, validation_alias="HTK_OIDC_CLIENT_ID", description="htk's client at the provider"
    )
    oidc_client_secret: str | None = Field(
        None,
        validation_alias="HTK_OIDC_CLIENT_SECRET",
        description="its secret, which only the server uses",
    )
    oidc_org_claim: str = Field(
        "org",
        min_length=1,
        validation_alias="HTK_OIDC_ORG_CLAIM",
        description="the ID token claim that names the person's organization",
    )
    oidc_groups_claim: str = Field(
        "groups",
        min_length=1,
        validation_alias="HTK_OIDC_GROUPS_CLAIM",
        description="the ID token claim that lists the person's groups",
    )
    oidc_group_scopes: str = Field(
        "",
        validation_alias="HTK_OIDC_GROUP_SCOPES",
        description="the scopes each group gives, e.g."
        " `release-managers=tasks:complete,deployers=processes:write+tasks:create`;"
        " a person in no listed group reads only",
    )
    oidc_token_hours: int = Field(
        8,
        ge=1,
        le=24,
        validation_alias="HTK_OIDC_TOKEN_HOURS",
        description="how long the token a person signs in for lasts (sign-out revokes it)",
    )
    log_level: LogLevel = Field(
        "INFO",
        validation_alias="HTK_LOG_LEVEL",
        description="what the server and `htk run` log (`htk token` logs only warnings"
        " unless this is set)",
    )
    # Logs are read by people in a terminal and by log shippers, which want
    # one object per line rather than a format to parse.
    log_format: LogFormat = Field(
        "text",
        validation_alias="HTK_LOG_FORMAT",
        description="`text` for people; `json`: every line (the server's, Envoy's, and"
        " the access log of every request) one JSON object",
    )

    # Where the HTTP port listens, and TLS on it. The workers and Envoy's
    # admin interface stay on loopback whatever these say.
    bind_address: IPAddress = Field(
        "127.0.0.1",
        validation_alias="HTK_BIND_ADDRESS",
        description="the address `HTK_HTTP_PORT` and `HTK_METRICS_PORT` listen on: `0.0.0.0`"
        " (IPv4) or `::` (IPv6 and IPv4) to serve other machines",
        json_schema_extra={"values": "an IP address"},
    )
    tls_cert_file: Path | None = Field(
        None,
        validation_alias="HTK_TLS_CERT_FILE",
        description="a PEM certificate (chain): with `HTK_TLS_KEY_FILE`, `HTK_HTTP_PORT` serves"
        " HTTPS and gRPC over TLS only (HTTP/2 or HTTP/1.1, by ALPN)",
    )
    tls_key_file: Path | None = Field(
        None,
        validation_alias="HTK_TLS_KEY_FILE",
        description="the PEM private key of `HTK_TLS_CERT_FILE`",
    )

    # Traces: OpenTelemetry's own variables, under their standard names.
    otel_exporter_otlp_endpoint: Annotated[str, AfterValidator(_otlp_endpoint)] | None = Field(
        None,
        validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT",
        description="tracing: Envoy and the workers send spans to this OTLP/gRPC collector"
        " (`http://host:port`, e.g. `http://127.0.0.1:4317`); tracing is off (and costs"
        " nothing) unless set",
    )
    webhook_timeout_seconds: float = Field(
        10.0,
        gt=0.0,
        le=60.0,
        validation_alias="HTK_WEBHOOK_TIMEOUT_SECONDS",
        description="webhooks: how long an attempt waits for the receiver's reply; none by"
        " then is a failed attempt, retried",
    )
    webhook_retry_schedule: Annotated[
        tuple[float, ...], NoDecode, BeforeValidator(_seconds_list)
    ] = Field(
        (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0),
        min_length=1,
        max_length=20,
        validation_alias="HTK_WEBHOOK_RETRY_SCHEDULE",
        description="webhooks: the waits, in seconds and comma-separated, before each retry of"
        " a failed delivery (each up to 20% earlier or later, at random); after the last the"
        " delivery has failed",
        json_schema_extra={"shown_default": "`5,300,1800,7200,18000,36000,36000`"},
    )
    webhook_allow_private: bool = Field(
        False,
        validation_alias="HTK_WEBHOOK_ALLOW_PRIVATE",
        description="webhooks: `1` lets webhook URLs reach loopback and private addresses"
        " (receivers on premises, tests); link-local ones, which hold the cloud metadata"
        " services, are refused all the same",
    )
    otel_service_name: str = Field(
        "htk",
        min_length=1,
        validation_alias="OTEL_SERVICE_NAME",
        description="tracing: the `service.name` of Envoy's and the workers' spans",
    )
    otel_traces_sampler: Literal[
        "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"
    ] = Field(
        "parentbased_always_on",
        validation_alias="OTEL_TRACES_SAMPLER",
        description="tracing: which requests Envoy traces: all, none, or the fraction"
        " `OTEL_TRACES_SAMPLER_ARG` of them (the workers follow Envoy's decision); a request"
        " whose caller's `traceparent` says it is not sampled never is",
    )
    otel_traces_sampler_arg: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        validation_alias="OTEL_TRACES_SAMPLER_ARG",
        description="tracing: the fraction of requests `parentbased_traceidratio` traces",
    )

    @model_validator(mode="after")
    def _burst_covers_the_rate(self) -> Self:
        if self.rate_limit_burst < self.rate_limit_per_second:
            raise ValueError(
                "HTK_RATE_LIMIT_BURST must be at least HTK_RATE_LIMIT_PER_SECOND"
                f" ({self.rate_limit_per_second}), got {self.rate_limit_burst}"
            )
        return self

    @model_validator(mode="after")
    def _ports_differ(self) -> Self:
        # Every setting whose variable ends in _PORT is a port the stack
        # listens on (None or 0: off), so a new one is checked by declaring it.
        holders: dict[int, list[str]] = {}
        for name, field in type(self).model_fields.items():
            if variable(field).endswith("_PORT") and (port := getattr(self, name)):
                holders.setdefault(port, []).append(variable(field))
        clashes = [
            f"{' and '.join(names)} are {'both' if len(names) == 2 else 'all'} {port}"
            for port, names in holders.items()
            if len(names) > 1
        ]
        if clashes:
            raise ValueError(f"{'; '.join(clashes)}: each port must differ from the others")
        return self

    @model_validator(mode="after")
    def _tls_is_whole(self) -> Self:
        """Both files or neither; and they must load, so that a mistake stops
        `htk run` with its reason before Envoy starts (and would keep exiting)."""
        if self.tls_cert_file is None and self.tls_key_file is None:
            return self
        if self.tls_cert_file is None or self.tls_key_file is None:
            given = "HTK_TLS_CERT_FILE" if self.tls_cert_file else "HTK_TLS_KEY_FILE"
            raise ValueError(
                "HTK_TLS_CERT_FILE and HTK_TLS_KEY_FILE go together (set both for TLS, or"
                f" neither); only {given} is set"
            )
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                self.tls_cert_file, self.tls_key_file
            )
        except (OSError, ssl.SSLError) as error:
            raise ValueError(
                f"HTK_TLS_CERT_FILE ({self.tls_cert_file}) and HTK_TLS_KEY_FILE"
                f" ({self.tls_key_file}) do not load as a certificate and its key: {error}"
            ) from None
        return self

    @model_validator(mode="after")
    def _oidc_is_whole(self) -> Self:
        given = [
            name
            for name, value in (
                ("HTK_OIDC_ISSUER", self.oidc_issuer),
                ("HTK_OIDC_CLIENT_ID", self.oidc_client_id),
                ("HTK_OIDC_CLIENT_SECRET", self.oidc_client_secret),
            )
            if value
        ]
        if given and len(given) < 3:
            raise ValueError(
                "HTK_OIDC_ISSUER, HTK_OIDC_CLIENT_ID and HTK_OIDC_CLIENT_SECRET go together;"
                f" only {' and '.join(given)} set"
            )
        if self.oidc_issuer:
            try:
                issuer_url(self.oidc_issuer)
            except InvalidArgument as error:
                raise ValueError(f"HTK_OIDC_ISSUER {error.problem}") from None
        try:
            group_scopes(self.oidc_group_scopes)
        except ValueError as error:
            raise ValueError(f"HTK_OIDC_GROUP_SCOPES: {error}") from None
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only the values `from_env` passes: it reads the environment itself,
        # from a mapping that tests can give.
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Self:
        """The settings in `env`; raises SettingsError naming each bad variable.

        Variables are matched by their exact names; other variables (PATH,
        HTK_FUZZ_EXAMPLES, ...) are not settings, and an empty one means the
        default, as if it were unset.
        """
        names = [variable(field) for field in cls.model_fields.values()]
        values = {name: env[name] for name in names if env.get(name)}
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            fields = {variable(field): field for field in cls.model_fields.values()}
            problems = [_explain(problem, fields, env) for problem in error.errors()]
            raise SettingsError("; ".join(problems)) from None

    @property
    def tracing(self) -> bool:
        return self.otel_exporter_otlp_endpoint is not None

    @property
    def trace_sampling_percent(self) -> float:
        """The share of requests Envoy's sampler picks to trace."""
        return {
            "parentbased_always_on": 100.0,
            "parentbased_always_off": 0.0,
            "parentbased_traceidratio": 100.0 * self.otel_traces_sampler_arg,
        }[self.otel_traces_sampler]

    @property
    def grpc_addresses(self) -> list[str]:
        """Where the workers serve gRPC directly: HTK_GRPC_PORT, if set."""
        return [] if self.grpc_port is None else [f"127.0.0.1:{self.grpc_port}"]


def variable(field: FieldInfo) -> str:
    """The environment variable a setting is read from."""
    assert isinstance(field.validation_alias, str)
    return field.validation_alias


def allowed_values(field: FieldInfo) -> str | None:
    """What a setting accepts, in words; None when any text will do."""
    if isinstance(field.json_schema_extra, dict) and "values" in field.json_schema_extra:
        return str(field.json_schema_extra["values"])
    if get_origin(field.annotation) is Literal:
        return "one of " + ", ".join(get_args(field.annotation))
    # An optional setting (None: off) takes what its type takes.
    kind = next((arg for arg in get_args(field.annotation) if arg is not type(None)), None)
    kind = (
        kind if kind is not None and type(None) in get_args(field.annotation) else field.annotation
    )
    if kind is Path:
        return "a path"
    if kind not in _NUMBERS:
        return None
    number = _NUMBERS[kind]
    limits = [
        f"{phrase} {getattr(bound, attribute)}"
        for bound in field.metadata
        for kind, phrase, attribute in _BOUNDS
        if isinstance(bound, kind)
    ]
    return f"{number}, {' and '.join(limits)}" if limits else number


_NUMBERS: dict[object, str] = {int: "a whole number", float: "a number"}
_BOUNDS = (
    (annotated_types.Ge, "at least", "ge"),
    (annotated_types.Gt, "more than", "gt"),
    (annotated_types.Le, "at most", "le"),
    (annotated_types.Lt, "less than", "lt"),
)


def shown_default(field: FieldInfo) -> str:
    """A setting's default as docs/operating.md and `htk run --help` show it."""
    if isinstance(field.json_schema_extra, dict) and "shown_default" in field.json_schema_extra:
        return str(field.json_schema_extra["shown_default"])
    if field.default is None:
        return "(unset)"
    if isinstance(field.default, Path):
        return f"`{field.default.relative_to(CHECKOUT)}/`"
    return f"`{field.default}`"


@dataclass(frozen=True)
class Documented:
    """One setting as its documentation shows it (Markdown: `code` spans)."""

    variable: str
    default: str
    values: str
    meaning: str


def documented() -> list[Documented]:
    """Every setting, in declaration order: the configuration table of
    docs/operating.md and `htk run --help` both render these."""
    return [
        Documented(
            variable(field),
            shown_default(field),
            allowed_values(field) or "text",
            field.description or "",
        )
        for field in Settings.model_fields.values()
    ]


def _explain(error: ErrorDetails, fields: Mapping[str, FieldInfo], env: Mapping[str, str]) -> str:
    """One validation error as a sentence that names the variable and quotes
    its value as set (validators may have changed it, e.g. upper-cased)."""
    if not error["loc"]:
        # A rule across settings (a model validator) words its own message.
        return str(error.get("ctx", {}).get("error", error["msg"]))
    name = str(error["loc"][0])
    value: Any = env.get(name, error["input"])
    allowed = allowed_values(fields[name])
    if allowed is None:
        return f"{name}: {error['msg']}, got {value!r}"
    return f"{name} must be {allowed}, got {value!r}"
