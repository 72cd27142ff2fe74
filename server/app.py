"""The gRPC server process: ProcessService, health checking and reflection."""

import asyncio
import logging
import signal
from datetime import timedelta

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer  # health.aio's, named so for the type stubs
from grpc_reflection.v1alpha import reflection

from htk.processes.v1 import process_service_pb2_grpc
from server.domain.errors import DomainError
from server.settings import Settings
from server.storage.database import Database
from server.storage.processes import ProcessStore
from server.storage.tokens import TokenStore
from server.transport.decoding import DecodingInterceptor
from server.transport.interceptors import (
    SERVICE,
    AuthInterceptor,
    DeadlineInterceptor,
    DrainingInterceptor,
    ErrorInterceptor,
    JsonBodyInterceptor,
)
from server.transport.servicer import ProcessServicer

log = logging.getLogger(__name__)

# In-flight calls get this long to finish once a shutdown begins.
SHUTDOWN_GRACE_SECONDS = 10.0
# Longer than the two failed health checks (1 s apart) after which Envoy takes
# a worker out of rotation (envoy/envoy.yaml).
ENVOY_NOTICE_SECONDS = 2.5
# Envoy hands REST bodies over in a header (server/transport/rest_input.py);
# Envoy buffers at most 1 MiB of body, which base64 grows to 1.34 MiB.
MAX_METADATA_BYTES = 2 * 1024 * 1024
IDEMPOTENCY_PURGE_INTERVAL_SECONDS = 3600.0


async def serve(settings: Settings, database_url: str, own_addresses: list[str]) -> None:
    """Serves until SIGTERM or SIGINT, then drains in-flight calls and exits.

    Every worker shares HTK_GRPC_PORT if it is set (grpc sets SO_REUSEPORT, so
    the kernel spreads direct callers over the workers). `own_addresses`
    reach this worker alone: Envoy health-checks and balances over them.
    """
    database = Database(database_url, pool_size=settings.db_pool_size)
    store = ProcessStore(
        database, idempotency_retention=timedelta(hours=settings.idempotency_key_hours)
    )
    draining = DrainingInterceptor()
    server = grpc.aio.server(
        interceptors=[
            DecodingInterceptor(),
            ErrorInterceptor(),
            draining,
            DeadlineInterceptor(),
            AuthInterceptor(TokenStore(database)),
            JsonBodyInterceptor(),
        ],
        options=[
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
        ],
    )
    process_service_pb2_grpc.add_ProcessServiceServicer_to_server(ProcessServicer(store), server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    addresses = [*settings.grpc_addresses, *own_addresses]
    for address in addresses:
        server.add_insecure_port(address)
    await server.start()
    for service in ("", SERVICE.full_name):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    log.info("gRPC server listening on %s", ", ".join(addresses))

    purging = asyncio.create_task(_purge_idempotency_keys(store))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()

    log.info("shutting down: refusing new calls, finishing in-flight ones")
    # Calls arriving from now on are refused with UNAVAILABLE (HTTP 503), and
    # the health checks fail, so Envoy stops sending any. Only then does the
    # server stop: gRPC would cancel (HTTP 499) a call that arrives after that.
    draining.begin()
    await health_servicer.enter_graceful_shutdown()
    await asyncio.sleep(ENVOY_NOTICE_SECONDS)
    await server.stop(SHUTDOWN_GRACE_SECONDS)
    purging.cancel()
    await database.close()


async def _purge_idempotency_keys(store: ProcessStore) -> None:
    """Forgets expired idempotency keys now and then, so the table stays small."""
    while True:
        try:
            forgotten = await store.forget_expired_idempotency_keys()
            if forgotten:
                log.info("forgot %d expired idempotency keys", forgotten)
        except DomainError as error:  # the database is away; try again next time
            log.warning("could not purge idempotency keys: %s", error)
        await asyncio.sleep(IDEMPOTENCY_PURGE_INTERVAL_SECONDS)
