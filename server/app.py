"""The gRPC server process: htk's services behind the guards, health checking and reflection."""

import asyncio
import logging
import math
import signal
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer  # health.aio's, named so for the type stubs
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace

from htk.processes.v1 import (
    process_service_pb2_grpc,
    sign_in_service_pb2_grpc,
    task_service_pb2_grpc,
    trust_service_pb2_grpc,
    webhook_service_pb2_grpc,
)
from server import metrics, tracing
from server.domain.errors import DomainError
from server.domain.processes import utc_now
from server.domain.retention import check_interval
from server.domain.sign_in import Provider, group_scopes
from server.domain.token_cache import CallerCache
from server.edge.constants import MAX_METADATA_BYTES
from server.edge.rest_input import read_rest_input
from server.service.deadlines import DeadlineService
from server.service.hub import WatchHub, WatchLimits
from server.service.issuer_keys import IssuerKeys
from server.service.processes import ProcessService
from server.service.retention import ArchiveTo, RetentionService
from server.service.sign_in import SignInService
from server.service.tasks import TaskService
from server.service.tokens import TokenService, token_changes
from server.service.trust import TrustService
from server.service.watch import WatchService
from server.service.webhooks import DeliverySettings, DeliveryWorker, WebhookService
from server.service.writes import Clock, Writes
from server.settings import Settings
from server.storage.database import CONNECT_TIMEOUT_SECONDS, Database
from server.storage.notifications import Listener
from server.transport import interceptors, messages
from server.transport.decoding import DecodingInterceptor
from server.transport.health import Health
from server.transport.methods import api_services, method_table
from server.transport.servicer import ProcessServicer
from server.transport.sign_in_servicer import SignInServicer
from server.transport.task_servicer import TaskServicer
from server.transport.tracing import RpcSpans
from server.transport.trust_servicer import TrustServicer
from server.transport.webhook_servicer import WebhookServicer

log = logging.getLogger(__name__)

# In-flight calls get this long to finish once a shutdown begins.
SHUTDOWN_GRACE_SECONDS = 10.0
# Longer than the two failed health checks (1 s apart) after which Envoy takes
# a worker out of rotation (server/edge/envoy.yaml).
ENVOY_NOTICE_SECONDS = 2.5
IDEMPOTENCY_PURGE_INTERVAL_SECONDS = 3600.0
# Step deadlines are enforced within this (plus a round's work) of passing.
DEADLINE_SCAN_INTERVAL_SECONDS = 1.0
# Upkeep that keeps failing (a database away during a failover) is retried
# this often at most: step deadlines are enforced again at most this long
# after writes succeed again.
UPKEEP_LONGEST_RETRY_SECONDS = 5.0
# The gauges read from the worker's state (not kept up on every call) are
# this old at most; a scrape comes every few seconds.
METRICS_SAMPLE_INTERVAL_SECONDS = 1.0


class Server:
    """One server process's gRPC server, with what its shutdown and upkeep need."""

    def __init__(
        self,
        grpc_server: grpc.aio.Server,
        health_servicer: HealthServicer,
        draining: interceptors.Draining,
        upkeep: list["PeriodicJob"],
        watch_hub: WatchHub,
        listener: Listener,
        delivery_worker: DeliveryWorker,
    ) -> None:
        self.grpc_server = grpc_server
        self._health = health_servicer
        self._draining = draining
        self._upkeep = upkeep
        self._upkeep_tasks: list[asyncio.Task[None]] = []
        self.watch_hub = watch_hub
        # The worker's one listening connection: watch streams and cached tokens.
        self.listener = listener
        self._listening: asyncio.Task[None] | None = None
        self.delivery_worker = delivery_worker
        self._delivering: asyncio.Task[None] | None = None

    def add_address(self, address: str) -> int:
        """Listens on `address` too (`host:0` picks a free port); returns the port."""
        return self.grpc_server.add_insecure_port(address)

    async def start(self) -> None:
        self._listening = asyncio.create_task(self.listener.run())
        # A server that can reach its database serves every stream, and
        # answers from its token cache, as soon as it is up.
        with suppress(TimeoutError):
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                await self.listener.first_attempt.wait()
        self.watch_hub.start()
        await self.grpc_server.start()
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        for service in api_services():
            await self._health.set(service.full_name, health_pb2.HealthCheckResponse.SERVING)
        self._upkeep_tasks = [asyncio.create_task(job.run_forever()) for job in self._upkeep]
        self._delivering = asyncio.create_task(self.delivery_worker.run())

    async def stop(self, *, notice_seconds: float = 0.0) -> None:
        """Refuses new calls, fails health checks for `notice_seconds` (so that
        Envoy routes elsewhere), ends the watch streams, then lets in-flight
        calls finish."""
        # Calls arriving from now on are refused with UNAVAILABLE (HTTP 503), and
        # the health checks fail, so Envoy stops sending any. Only then does the
        # server stop: gRPC would cancel (HTTP 499) a call that arrives after that.
        self._draining.begin()
        await self._health.enter_graceful_shutdown()
        await asyncio.sleep(notice_seconds)
        # Streams would never finish by themselves: each ends with a last
        # message telling its client to resume, by then on another worker.
        await self.watch_hub.close()
        await self.grpc_server.stop(SHUTDOWN_GRACE_SECONDS)
        for task in self._upkeep_tasks:
            task.cancel()
        if self._delivering is not None:
            # An attempt cut short is made again once its lease runs out.
            self._delivering.cancel()
            with suppress(asyncio.CancelledError):
                await self._delivering
        if self._listening is not None:
            self._listening.cancel()
            with suppress(asyncio.CancelledError):
                await self._listening


def build_server(
    settings: Settings,
    database: Database,
    *,
    clock: Clock = utc_now,
    tracer: trace.Tracer | None = None,
) -> Server:
    """htk's services over `database`, guarded, with health checking and reflection;
    each call gets a span of `tracer`, if given.

    Refuses to build (UndeclaredAccess) if any RPC of the API lacks its access rule.
    """
    methods = method_table(api_services())
    writes = Writes(
        database, clock=clock, key_retention=timedelta(hours=settings.idempotency_key_hours)
    )
    draining = interceptors.Draining()
    callers = CallerCache(
        max_entries=settings.token_cache_size,
        ttl_seconds=settings.token_cache_seconds,
        unknown_ttl_seconds=settings.unknown_token_cache_seconds,
    )
    authentication = interceptors.Authentication(TokenService(database, clock, callers))
    grpc_server = grpc.aio.server(
        interceptors=[
            # First: a payload that does not decode never reaches a handler.
            DecodingInterceptor(),
            interceptors.GuardInterceptor(
                methods,
                authentication,
                draining=draining,
                spans=RpcSpans(tracer).span if tracer is not None else None,
                read_request=read_rest_input,
            ),
        ],
        options=[
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
        ],
    )
    watch_hub = WatchHub(
        database,
        limits=watch_limits(settings),
        poll_seconds=settings.watch_poll_seconds,
        clock=clock,
    )
    deliveries = DeliverySettings(
        timeout_seconds=settings.webhook_timeout_seconds,
        retry_schedule=settings.webhook_retry_schedule,
        allow_private=settings.webhook_allow_private,
    )
    delivery_worker = DeliveryWorker(database, clock, deliveries, messages.webhook_message)
    listener = Listener(
        lambda: database.dedicated_connection("htk listener"),
        [
            watch_hub.subscription,
            delivery_worker.subscription,
            token_changes(
                callers, revoked=watch_hub.end_streams_of, check_tokens=watch_hub.check_tokens
            ),
        ],
    )
    watches = WatchService(database, watch_hub, clock, heartbeat_seconds=settings.heartbeat_seconds)
    process_service_pb2_grpc.add_ProcessServiceServicer_to_server(
        ProcessServicer(
            ProcessService(database, writes, clock),
            watches,
            stall_seconds=settings.watch_stall_seconds,
        ),
        grpc_server,
    )
    task_service_pb2_grpc.add_TaskServiceServicer_to_server(
        TaskServicer(TaskService(database, writes, clock)), grpc_server
    )
    webhook_service_pb2_grpc.add_WebhookServiceServicer_to_server(
        WebhookServicer(WebhookService(database, clock, deliveries)), grpc_server
    )
    issuer_keys = IssuerKeys(
        cache_seconds=settings.jwks_cache_seconds, timeout_seconds=settings.jwks_timeout_seconds
    )
    trust_service_pb2_grpc.add_TrustServiceServicer_to_server(
        TrustServicer(TrustService(database, clock, issuer_keys)), grpc_server
    )
    sign_in_service_pb2_grpc.add_SignInServiceServicer_to_server(
        SignInServicer(
            SignInService(
                database,
                clock,
                issuer_keys,
                identity_provider(settings),
                timeout_seconds=settings.jwks_timeout_seconds,
            )
        ),
        grpc_server,
    )
    health_servicer = Health(lambda: listener.listening)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    reflection.enable_server_reflection(
        [
            *(service.full_name for service in api_services()),
            health.SERVICE_NAME,
            reflection.SERVICE_NAME,
        ],
        grpc_server,
    )
    deadlines = DeadlineService(database, clock)
    retention = RetentionService(
        database,
        clock,
        days=settings.retention_days,
        batch_size=settings.retention_batch_size,
        duty_cycle=settings.retention_duty_cycle,
        archive_to=(
            ArchiveTo(settings.archive_dir, messages.archived)
            if settings.archive_dir is not None
            else None
        ),
    )
    upkeep = [
        PeriodicJob("enforce step deadlines", deadlines.enforce, DEADLINE_SCAN_INTERVAL_SECONDS),
        PeriodicJob(
            "forget expired idempotency keys",
            writes.forget_expired_keys,
            IDEMPOTENCY_PURGE_INTERVAL_SECONDS,
        ),
        PeriodicJob(
            # Logged with how many went, and where they were archived.
            "delete expired processes"
            + (
                f" (archived to {settings.archive_dir})"
                if settings.archive_dir
                else " (unarchived)"
            ),
            retention.delete_expired,
            check_interval(settings.retention_days, settings.retention_interval_seconds),
        ),
        PeriodicJob(
            "sample metrics",
            gauge_sampler(settings, database, listener, watch_hub, deadlines),
            METRICS_SAMPLE_INTERVAL_SECONDS,
        ),
    ]
    return Server(
        grpc_server, health_servicer, draining, upkeep, watch_hub, listener, delivery_worker
    )


def identity_provider(settings: Settings) -> Provider | None:
    """The provider people sign in with, if HTK_OIDC_ISSUER configures one."""
    if not (settings.oidc_issuer and settings.oidc_client_id and settings.oidc_client_secret):
        return None
    return Provider(
        issuer=settings.oidc_issuer,
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret,
        org_claim=settings.oidc_org_claim,
        groups_claim=settings.oidc_groups_claim,
        scopes_of_groups=group_scopes(settings.oidc_group_scopes),
        token_hours=settings.oidc_token_hours,
    )


def gauge_sampler(
    settings: Settings,
    database: Database,
    listener: Listener,
    watch_hub: WatchHub,
    deadlines: DeadlineService,
) -> Callable[[], Awaitable[int]]:
    """Sets the worker's gauges from its state; nothing on the calls' path
    keeps them up."""
    metrics.DB_POOL_MAX_CONNECTIONS.set(settings.db_pool_size)

    async def sample() -> int:
        in_use, idle = database.pool_connections()
        metrics.DB_POOL_IN_USE.set(in_use)
        metrics.DB_POOL_IDLE.set(idle)
        metrics.WATCH_STREAMS.set(watch_hub.streams)
        metrics.NOTIFICATION_LISTENER_UP.set(listener.backend_pid is not None)
        metrics.DEADLINE_SCAN_LAG.set(deadlines.lag_seconds())
        return 0

    return sample


def watch_limits(settings: Settings) -> WatchLimits:
    """The stream limits of one worker. Those per token and organization are
    an instance's: Envoy spreads the streams of every connection over the
    workers, so each worker allows its share, and the instance at most
    `HTK_WORKERS` shares (the limit, or a little more when it does not
    divide). Several instances each allow as much."""
    return WatchLimits(
        total=settings.max_watchers,
        per_token=math.ceil(settings.max_watchers_per_token / settings.workers),
        per_org=math.ceil(settings.max_watchers_per_org / settings.workers),
    )


async def serve(settings: Settings, database_url: str, own_addresses: Sequence[str]) -> None:
    """Serves until SIGTERM or SIGINT, then drains in-flight calls and exits.

    Every worker shares HTK_GRPC_PORT if it is set (grpc sets SO_REUSEPORT, so
    the kernel spreads direct callers over the workers). `own_addresses`
    reach this worker alone: Envoy health-checks and balances over them.
    """
    traces = tracing.start(settings)
    database = Database(database_url, pool_size=settings.db_pool_size, traced=traces is not None)
    tracer = traces.get_tracer("htk") if traces is not None else None
    server = build_server(settings, database, tracer=tracer)
    addresses = [*settings.grpc_addresses, *own_addresses]
    for address in addresses:
        server.add_address(address)
    await server.start()
    log.debug("gRPC server listening on %s", ", ".join(addresses))

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()

    log.info("shutting down: refusing new calls, finishing in-flight ones")
    await server.stop(notice_seconds=ENVOY_NOTICE_SECONDS)
    await database.close()
    if traces is not None:
        tracing.stop(traces)


@dataclass(frozen=True)
class PeriodicJob:
    """Database upkeep each worker runs now and then; safe to run on every
    worker and instance at once."""

    name: str
    # Returns how many things it did (logged when any).
    work: Callable[[], Awaitable[int]]
    interval_seconds: float

    async def run_forever(self) -> None:
        failures = 0
        while True:
            try:
                if done := await self.work():
                    log.info("%s: %d", self.name, done)
                failures = 0
            except DomainError as error:  # the database is away (a failover); try again
                failures += 1
                log.warning("could not %s: %s", self.name, error)
            except Exception:
                # Not the database being away. Still tried again: a job that
                # stopped for good (step deadlines!) would fail silently.
                failures += 1
                log.exception("could not %s", self.name)
            await asyncio.sleep(self.pause(failures))

    def pause(self, failures: int) -> float:
        """The pause before the next round after `failures` in a row: the
        interval, doubling while they last, up to UPKEEP_LONGEST_RETRY_SECONDS
        (a longer interval stays as it is), so that a database away for a
        while is not asked every second by every worker."""
        if failures == 0:
            return self.interval_seconds
        longest = max(self.interval_seconds, UPKEEP_LONGEST_RETRY_SECONDS)
        return min(self.interval_seconds * 2.0 ** (failures - 1), longest)
