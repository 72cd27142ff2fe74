"""The gRPC servicer of WebhookService: request messages in, service calls, responses out."""

from htk.processes.v1 import webhook_service_pb2 as pb
from htk.processes.v1 import webhook_service_pb2_grpc as pb_grpc
from server.domain.checks import parse_id
from server.domain.webhooks import delivery_query, new_webhook
from server.service.webhooks import WebhookService
from server.transport import messages
from server.transport.interceptors import Context, current_caller


class WebhookServicer(pb_grpc.WebhookServiceServicer):
    def __init__(self, service: WebhookService) -> None:
        self._service = service

    async def CreateWebhook(  # noqa: N802 - gRPC's method name
        self, request: pb.CreateWebhookRequest, context: Context
    ) -> pb.Webhook:
        org_id = current_caller().org_id
        new = new_webhook(
            org_id,
            url=request.url,
            events=list(request.events),
            namespace=request.namespace if request.HasField("namespace") else None,
            description=request.description if request.HasField("description") else None,
        )
        return messages.webhook(await self._service.create(org_id, new))

    async def ListWebhooks(  # noqa: N802
        self, request: pb.ListWebhooksRequest, context: Context
    ) -> pb.ListWebhooksResponse:
        found = await self._service.list(current_caller().org_id)
        return pb.ListWebhooksResponse(webhooks=[messages.webhook(webhook) for webhook in found])

    async def GetWebhook(  # noqa: N802
        self, request: pb.GetWebhookRequest, context: Context
    ) -> pb.Webhook:
        webhook_id = parse_id("webhook", request.webhook_id)
        return messages.webhook(await self._service.get(current_caller().org_id, webhook_id))

    async def DeleteWebhook(  # noqa: N802
        self, request: pb.DeleteWebhookRequest, context: Context
    ) -> pb.Webhook:
        webhook_id = parse_id("webhook", request.webhook_id)
        return messages.webhook(await self._service.delete(current_caller().org_id, webhook_id))

    async def EnableWebhook(  # noqa: N802
        self, request: pb.EnableWebhookRequest, context: Context
    ) -> pb.Webhook:
        webhook_id = parse_id("webhook", request.webhook_id)
        return messages.webhook(await self._service.enable(current_caller().org_id, webhook_id))

    async def ListWebhookDeliveries(  # noqa: N802
        self, request: pb.ListWebhookDeliveriesRequest, context: Context
    ) -> pb.ListWebhookDeliveriesResponse:
        query = delivery_query(
            current_caller().org_id,
            parse_id("webhook", request.webhook_id),
            limit=request.limit if request.HasField("limit") else None,
            page_token=request.page_token,
        )
        return messages.delivery_page(await self._service.deliveries(query))

    async def RedeliverWebhookDelivery(  # noqa: N802
        self, request: pb.RedeliverWebhookDeliveryRequest, context: Context
    ) -> pb.WebhookDelivery:
        delivery = await self._service.redeliver(
            current_caller().org_id,
            parse_id("webhook", request.webhook_id),
            parse_id("delivery", request.delivery_id),
        )
        return messages.delivery(delivery)
