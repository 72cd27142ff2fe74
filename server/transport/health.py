"""gRPC health checking, with one more service name than the API's: whether
the worker's notification listener is up (for the supervisor's /readyz).

A worker whose listener is down still serves calls, so the server's own
status ("") stays SERVING and Envoy keeps routing to it; its watch streams
and token cache wait for the listener, which /readyz reports.
"""

from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer  # health.aio's, named so for the type stubs

NOTIFICATIONS_SERVICE = "htk.notifications"


# grpcio-health-checking's asyncio servicer has no type stubs.
class Health(HealthServicer):  # type: ignore[misc]
    def __init__(self, listening: Callable[[], bool]) -> None:
        super().__init__()
        self._listening = listening

    async def Check(  # noqa: N802 (gRPC's name)
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> health_pb2.HealthCheckResponse:
        if request.service != NOTIFICATIONS_SERVICE:
            return await super().Check(request, context)
        # A worker shutting down says so under "", which is checked first.
        return health_pb2.HealthCheckResponse(
            status=health_pb2.HealthCheckResponse.SERVING
            if self._listening()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
