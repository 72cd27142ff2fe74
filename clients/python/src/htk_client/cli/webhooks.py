"""`htk webhooks create|list|get|delete|enable|deliveries|redeliver`: the
organization's webhooks and their delivery log (the token needs the scope
webhooks:manage)."""

import argparse
import sys

from rich.console import Console

from htk_client.cli.options import command, group, print_json
from htk_client.rest import Response, RestApi
from htk_client.text import safe
from htk_client.views import deliveries_table, webhooks_table

EVENT_TYPES = (
    "process.created, process.completed, process.failed, process.cancelled, step.failed,"
    " step.timed_out, task.opened, task.completed, task.expired"
)


def add(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Adds `webhooks` and its actions to the htk command."""
    webhooks = group(commands, "webhooks", "manage webhooks and redeliver their messages")
    _add_create(webhooks)
    command(
        webhooks,
        "list",
        _list,
        "List the organization's webhooks, newest first",
        "Secrets are never shown again after create.",
        "  htk webhooks list",
    )
    for name, handler, summary in (
        ("get", _get, "Show one webhook"),
        ("delete", _delete, "Delete a webhook and its delivery log"),
        ("enable", _enable, "Turn on a webhook that a 410 Gone disabled"),
    ):
        one = command(webhooks, name, handler, summary, "", f"  htk webhooks {name} $WEBHOOK")
        one.add_argument("webhook_id", metavar="WEBHOOK_ID")
    deliveries = command(
        webhooks,
        "deliveries",
        _deliveries,
        "Show a webhook's delivery log, newest first",
        "Each delivery is one message: pending (an attempt is due), delivered or failed,\n"
        "with its attempts and the last one's status code or error.",
        "  htk webhooks deliveries $WEBHOOK --limit 20",
    )
    deliveries.add_argument("webhook_id", metavar="WEBHOOK_ID")
    deliveries.add_argument("--limit", type=int, help="page size, 1-200 (default 50)")
    deliveries.add_argument("--page-token", help="the next page, as the previous one gave it")
    redeliver = command(
        webhooks,
        "redeliver",
        _redeliver,
        "Send a delivery's message again, now",
        "The same message with the same webhook-id, so the receiver can tell it saw it.",
        "  htk webhooks redeliver $WEBHOOK $DELIVERY",
    )
    redeliver.add_argument("webhook_id", metavar="WEBHOOK_ID")
    redeliver.add_argument("delivery_id", metavar="DELIVERY_ID")


def _add_create(webhooks: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    create = command(
        webhooks,
        "create",
        _create,
        "Send the organization's events to a URL",
        "Prints the webhook's id on stdout and its signing secret on stderr: the secret\n"
        "is shown this once (--json prints both). Event types: " + EVENT_TYPES + ",\n"
        "or * for all (the default).",
        "  htk webhooks create https://hooks.example.com/htk --event task.opened\n"
        "  htk webhooks create https://ci.example.com/hook --namespace deployments",
    )
    create.add_argument("target", metavar="URL", help="where to POST the messages")
    create.add_argument(
        "--event",
        dest="events",
        action="append",
        metavar="TYPE",
        help="an event type to send (repeat for more; default: *)",
    )
    create.add_argument("--namespace", help="only this namespace's processes")
    create.add_argument("--description", help="what the webhook is for")


def _create(api: RestApi, args: argparse.Namespace, out: Console) -> int:
    body = {"url": args.target, "events": args.events or ["*"]}
    for name in ("namespace", "description"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    webhook = api.create_webhook(body)
    if not print_json(args, webhook):
        print(safe(webhook.json["webhook_id"]))
        print(f"secret (shown once): {safe(webhook.json['secret'])}", file=sys.stderr)
    return 0


def _list(api: RestApi, args: argparse.Namespace, out: Console) -> int:
    found = api.list_webhooks()
    if not print_json(args, found):
        out.print(webhooks_table(found.json.get("webhooks", [])))
    return 0


def _get(api: RestApi, args: argparse.Namespace, out: Console) -> int:
    return _one(api.get_webhook(args.webhook_id), args, out)


def _delete(api: RestApi, args: argparse.Namespace, out: Console) -> int:
    deleted = api.delete_webhook(args.webhook_id)
    if not print_json(args, deleted):
        print(safe(f"webhook {deleted.json.get('webhook_id')}: deleted"), file=sys.stderr)
    return 0


def _enable(api: RestApi, args: argparse.Namespace, out: Console) -> int:
    return _one(api.enable_webhook(args.webhook_id), args, out)


def _one(webhook: Response, args: argparse.Namespace, out: Console) -> int:
    if not print_json(args, webhook):
        out.print(webhooks_table([webhook.json]))
    return 0


def _deliveries(api: RestApi, args: argparse.Namespace, out: Console) -> int:
    query = {
        name: getattr(args, name)
        for name in ("limit", "page_token")
        if getattr(args, name) is not None
    }
    page = api.list_webhook_deliveries(args.webhook_id, query)
    if not print_json(args, page):
        out.print(deliveries_table(page.json.get("deliveries", [])))
        if page.json.get("next_page_token"):
            print(f"next page: --page-token {safe(page.json['next_page_token'])}", file=sys.stderr)
    return 0


def _redeliver(api: RestApi, args: argparse.Namespace, out: Console) -> int:
    delivery = api.redeliver_webhook_delivery(args.webhook_id, args.delivery_id)
    if not print_json(args, delivery):
        print(safe(f"delivery {delivery.json.get('delivery_id')}: queued"), file=sys.stderr)
    return 0
