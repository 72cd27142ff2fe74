"""`htk processes list|get|create|update|cancel|events` (and `watch`, in watch.py):
one function declares each action's options, one handles it."""

import argparse
import sys

from rich.console import Console

from htk_client.cli import watch
from htk_client.cli.options import (
    command,
    group,
    idempotency_key,
    json_object,
    label,
    paging,
    print_json,
    query,
    step_def,
)
from htk_client.rest import RestApi
from htk_client.text import safe
from htk_client.views import events_table, page_footer, process_view, processes_table
from htk_client.words import PROCESS_STATUSES, SORT_ORDERS, UPDATE_TYPES


def add(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Adds `processes` and its actions to the htk command."""
    processes = group(
        commands, "processes", "list, inspect, create, update, cancel and watch processes"
    )
    for add_action in (
        _add_list,
        _add_get,
        _add_create,
        _add_update,
        _add_cancel,
        _add_events,
        watch.add,
    ):
        add_action(processes)


def _add_list(processes: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    listing = command(
        processes,
        "list",
        _list,
        "List processes, newest first",
        "Prints a table of one page of processes and, on stderr, which ones of how\n"
        "many they are and the --page-token of the next page. All filters combine.",
        "  htk processes list --status running --search deploy\n"
        "  htk processes list --label env=prod --label team=payments\n"
        "  htk processes list --namespace acme.deployments --sort oldest --limit 100 --json",
    )
    listing.add_argument("--status", choices=PROCESS_STATUSES)
    listing.add_argument("--namespace", help="e.g. acme.deployments")
    listing.add_argument("--search", help="text the name contains, ignoring case")
    listing.add_argument("--sort", choices=SORT_ORDERS, help="by start time")
    listing.add_argument(
        "--label",
        dest="labels",
        action="append",
        type=label,
        metavar="KEY=VALUE",
        help="only processes with this label; repeat for more, all must match",
    )
    paging(listing, "processes")


def _list(api: RestApi, args: argparse.Namespace, out: Console) -> int:
    filters = query(args, "status", "namespace", "search", "sort", "limit", "offset", "page_token")
    if args.labels:
        filters["label"] = [f"{key}={value}" for key, value in args.labels]
    page = api.list_processes(filters)
    if not print_json(args, page):
        out.print(processes_table(page.json))
        print(page_footer(page.json, "processes", "processes"), file=sys.stderr)
    return 0


def _add_get(processes: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    get = command(
        processes,
        "get",
        _get,
        "Show a process and its step timeline",
        "Prints the process's name, status and times, then one row per step with its\n"
        "status, duration and latest note (error, progress or detail).",
        "  htk processes get 3f1c...\n  htk processes get 3f1c... --json | jq .timeline",
    )
    get.add_argument("process_id", metavar="ID")


def _get(api: RestApi, args: argparse.Namespace, out: Console) -> int:
    process = api.get_process(args.process_id)
    if not print_json(args, process):
        out.print(process_view(process.json))
    return 0


def _add_create(processes: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    create = command(
        processes,
        "create",
        _create,
        "Start tracking a new process",
        "Prints the new process's id alone, so that a script can keep it; with --json,\n"
        "the whole process. A bare namespace gets your organization's prefix.",
        "  PROCESS=$(htk processes create --namespace deployments --name 'Deploy v2.1.0' \\\n"
        "      --step build:Build --step test:Test --step review:Review:human \\\n"
        "      --label env=prod --link https://ci.example.com/runs/42)",
    )
    create.add_argument("--namespace", required=True, help="e.g. deployments")
    create.add_argument("--name", required=True, help="e.g. 'Deploy v2.1.0'")
    create.add_argument(
        "--step",
        dest="steps",
        action="append",
        required=True,
        type=step_def,
        metavar="KEY[:LABEL[:human]]",
        help="a step, in order; repeat for each (the label defaults to the key)",
    )
    create.add_argument(
        "--label",
        dest="labels",
        action="append",
        type=label,
        metavar="KEY=VALUE",
        help="a label to find the process by (htk processes list --label); repeat for more",
    )
    # Not --url, which every command takes for the API's address.
    create.add_argument(
        "--link",
        metavar="URL",
        help="the process's url: what drives it, e.g. the CI run's page (http or https)",
    )
    idempotency_key(create)


def _create(api: RestApi, args: argparse.Namespace, out: Console) -> int:
    body = {"namespace": args.namespace, "name": args.name, "step_defs": args.steps}
    if args.labels:
        body["labels"] = dict(args.labels)
    if args.link is not None:
        body["url"] = args.link
    process = api.create_process(body, args.idempotency_key)
    if not print_json(args, process):
        print(safe(process.json["process_id"]))
    return 0


def _add_update(processes: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    update = command(
        processes,
        "update",
        _update,
        "Push one state change to a process",
        "What a pipeline's shell step calls instead of curl. TYPE is step_started,\n"
        "step_completed, step_failed, progress, completed or failed; each takes its own\n"
        "options (see the API), and any other is refused with a message naming it.\n"
        "Prints nothing on success (the acknowledgement with --json).",
        "  htk processes update $PROCESS step_started --step build --detail 'Building...'\n"
        "  htk processes update $PROCESS progress --step build --message Compiling --percent 50\n"
        '  htk processes update $PROCESS step_completed --step build --data \'{"tag": "v2"}\'\n'
        "  htk processes update $PROCESS completed --summary 'All done!'",
    )
    update.add_argument("process_id", metavar="ID")
    update.add_argument("type", metavar="TYPE", choices=UPDATE_TYPES)
    update.add_argument("--step", help="the step's key")
    update.add_argument("--detail", help="a note on the step")
    update.add_argument("--data", type=json_object, help="a JSON object, with step_completed")
    update.add_argument("--error", help="what went wrong, with step_failed and failed")
    update.add_argument("--message", help="a progress message")
    update.add_argument("--percent", type=int, help="progress, 0-100")
    update.add_argument("--summary", help="a closing summary, with completed")
    idempotency_key(update)


def _update(api: RestApi, args: argparse.Namespace, out: Console) -> int:
    body = {
        "type": args.type,
        **query(args, "step", "detail", "data", "error", "message", "percent", "summary"),
    }
    print_json(args, api.update_process(args.process_id, body, args.idempotency_key))
    return 0


def _add_cancel(processes: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    cancel = command(
        processes,
        "cancel",
        _cancel,
        "Stop a running process for good",
        "The process becomes cancelled: a step still running ends cancelled, the steps\n"
        "never started skipped, and waiting tasks are cancelled. Needs a token with\n"
        "processes:write. Prints the cancelled process (with --json, as JSON); a process\n"
        "that has already finished is refused, naming how it ended.",
        "  htk processes cancel $PROCESS --reason 'superseded by v2.1.1'",
    )
    cancel.add_argument("process_id", metavar="ID")
    cancel.add_argument("--reason", help="why, shown on the process and its cancelled event")
    idempotency_key(cancel)


def _cancel(api: RestApi, args: argparse.Namespace, out: Console) -> int:
    process = api.cancel_process(args.process_id, query(args, "reason"), args.idempotency_key)
    if not print_json(args, process):
        out.print(process_view(process.json))
    return 0


def _add_events(processes: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    events = command(
        processes,
        "events",
        _events,
        "List a process's events",
        "Every accepted update and task completion, in order, with its sequence\n"
        "number; --after-seq N continues after event N.",
        "  htk processes events $PROCESS\n  htk processes events $PROCESS --after-seq 12 --json",
    )
    events.add_argument("process_id", metavar="ID")
    events.add_argument("--after-seq", type=int, help="only events after this sequence number")
    events.add_argument("--limit", type=int, help="at most this many, 1-1000 (default 100)")


def _events(api: RestApi, args: argparse.Namespace, out: Console) -> int:
    page = api.list_events(args.process_id, query(args, "after_seq", "limit"))
    if not print_json(args, page):
        events = page.json.get("events", [])
        out.print(events_table(events))
        if events:
            print(
                f"events {safe(events[0].get('seq'))}-{safe(events[-1].get('seq'))};"
                f" later ones: --after-seq {safe(events[-1].get('seq'))}",
                file=sys.stderr,
            )
    return 0
