"""`htk processes ...` and `htk tasks ...`: htk's API for people (tables, a
live view) and for pipelines (`--json`, exit statuses), over REST."""

import argparse
import json
import os
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from server.client.api import (
    FINISHED,
    ApiError,
    HtkApi,
    JsonObject,
    Response,
    Unreachable,
    in_background,
)
from server.client.text import safe
from server.client.views import (
    WatchView,
    console,
    event_line,
    events_table,
    page_footer,
    process_view,
    processes_table,
    tasks_table,
)
from server.domain.processes import ProcessStatus, SortOrder, UpdateType
from server.domain.tasks import Outcome, TaskStatus

DEFAULT_URL = "http://localhost:8080"

# Exit statuses, as every command's help lists them.
EXIT_API_ERROR = 2
EXIT_UNREACHABLE = 3
EXIT_STATUSES = """\
exit status:
  0  success
  1  (watch --exit-status) the process failed
  2  the API refused the request (its message is printed on stderr), or bad usage
  3  htk could not be reached at the URL tried"""

ENVIRONMENT = f"""\
environment:
  HTK_URL    htk's address (default {DEFAULT_URL}); --url wins
  HTK_TOKEN  the API token (`htk token create`); --token wins"""

Handler = Callable[[HtkApi, argparse.Namespace, Console], int]


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Adds `processes` and `tasks` to the htk command."""
    connection = argparse.ArgumentParser(add_help=False)
    connection_options = connection.add_argument_group("connection")
    connection_options.add_argument(
        "--url", help=f"htk's address (default: $HTK_URL, else {DEFAULT_URL})"
    )
    connection_options.add_argument("--token", help="the API token (default: $HTK_TOKEN)")
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument(
        "--json", action="store_true", help="print the API's JSON response exactly, for scripts"
    )

    def command(
        parent: "argparse._SubParsersAction[argparse.ArgumentParser]",
        name: str,
        handler: Handler,
        summary: str,
        description: str,
        examples: str,
        *,
        json_output: bool = True,
    ) -> argparse.ArgumentParser:
        parser = parent.add_parser(
            name,
            help=summary,
            description=f"{summary}.\n\n{description}",
            epilog=f"examples:\n{examples}\n\n{ENVIRONMENT}\n\n{EXIT_STATUSES}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[connection, output] if json_output else [connection],
        )
        parser.set_defaults(client_handler=handler)
        return parser

    def group(name: str, summary: str) -> "argparse._SubParsersAction[argparse.ArgumentParser]":
        return commands.add_parser(
            name,
            help=f"{summary} (over the network)",
            description=f"{name.capitalize()} of your token's organization, through htk's API"
            " at $HTK_URL.",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=f"{ENVIRONMENT}\n\n{EXIT_STATUSES}",
        ).add_subparsers(dest="action", required=True, metavar="ACTION")

    processes = group("processes", "list, inspect, create, update and watch processes")

    listing = command(
        processes,
        "list",
        _list_processes,
        "List processes, newest first",
        "Prints a table of one page of processes and, on stderr, which ones of how\n"
        "many they are and the --page-token of the next page. All filters combine.",
        "  htk processes list --status running --search deploy\n"
        "  htk processes list --namespace acme.deployments --sort oldest --limit 100 --json",
    )
    listing.add_argument("--status", choices=_words(ProcessStatus))
    listing.add_argument("--namespace", help="e.g. acme.deployments")
    listing.add_argument("--search", help="text the name contains, ignoring case")
    listing.add_argument("--sort", choices=_words(SortOrder), help="by start time")
    _paging(listing, "processes")

    get = command(
        processes,
        "get",
        _get_process,
        "Show a process and its step timeline",
        "Prints the process's name, status and times, then one row per step with its\n"
        "status, duration and latest note (error, progress or detail).",
        "  htk processes get 3f1c...\n  htk processes get 3f1c... --json | jq .timeline",
    )
    get.add_argument("process_id", metavar="ID")

    create = command(
        processes,
        "create",
        _create_process,
        "Start tracking a new process",
        "Prints the new process's id alone, so that a script can keep it; with --json,\n"
        "the whole process. A bare namespace gets your organization's prefix.",
        "  PROCESS=$(htk processes create --namespace deployments --name 'Deploy v2.1.0' \\\n"
        "      --step build:Build --step test:Test --step review:Review:human)",
    )
    create.add_argument("--namespace", required=True, help="e.g. deployments")
    create.add_argument("--name", required=True, help="e.g. 'Deploy v2.1.0'")
    create.add_argument(
        "--step",
        dest="steps",
        action="append",
        required=True,
        type=_step_def,
        metavar="KEY[:LABEL[:human]]",
        help="a step, in order; repeat for each (the label defaults to the key)",
    )
    _idempotency_key(create)

    update = command(
        processes,
        "update",
        _update_process,
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
    update.add_argument(
        "type",
        metavar="TYPE",
        choices=_words(UpdateType),
    )
    update.add_argument("--step", help="the step's key")
    update.add_argument("--detail", help="a note on the step")
    update.add_argument("--data", type=_json_object, help="a JSON object, with step_completed")
    update.add_argument("--error", help="what went wrong, with step_failed and failed")
    update.add_argument("--message", help="a progress message")
    update.add_argument("--percent", type=int, help="progress, 0-100")
    update.add_argument("--summary", help="a closing summary, with completed")
    _idempotency_key(update)

    events = command(
        processes,
        "events",
        _list_events,
        "List a process's events",
        "Every accepted update and task completion, in order, with its sequence\n"
        "number; --after-seq N continues after event N.",
        "  htk processes events $PROCESS\n  htk processes events $PROCESS --after-seq 12 --json",
    )
    events.add_argument("process_id", metavar="ID")
    events.add_argument("--after-seq", type=int, help="only events after this sequence number")
    events.add_argument("--limit", type=int, help="at most this many, 1-1000 (default 100)")

    watch = command(
        processes,
        "watch",
        _watch_process,
        "Follow a process live until it finishes",
        "On a terminal: one row per step with its status, elapsed time, progress bar\n"
        "and message, redrawn as events arrive. Otherwise: one line per event. Returns\n"
        "when the process completes or fails, and resumes after the last event seen if\n"
        "the connection drops.",
        "  htk processes watch $PROCESS\n"
        "  htk processes watch $PROCESS --exit-status && echo deployed",
        json_output=False,
    )
    watch.add_argument("process_id", metavar="ID")
    watch.add_argument(
        "--exit-status",
        action="store_true",
        help="exit 1 if the process failed (0 if it completed)",
    )

    tasks = group("tasks", "list and complete the tasks of human steps")

    task_list = command(
        tasks,
        "list",
        _list_tasks,
        "List tasks, newest first",
        "A task is open while its human step waits for a person.",
        "  htk tasks list --status open\n  htk tasks list --process $PROCESS --json",
    )
    task_list.add_argument("--status", choices=_words(TaskStatus))
    task_list.add_argument("--namespace", help="e.g. acme.deployments")
    task_list.add_argument("--process", dest="process_id", metavar="ID", help="one process's tasks")
    _paging(task_list, "tasks")

    complete = command(
        tasks,
        "complete",
        _complete_task,
        "Approve or reject an open task",
        "Approving completes the human step; rejecting fails it. The token needs the\n"
        "scope tasks:complete. Prints the outcome on stderr (the task with --json).",
        "  htk tasks complete $TASK --approve --comment 'Looks good'\n"
        "  htk tasks complete $TASK --reject --comment 'Wrong image'",
    )
    complete.add_argument("task_id", metavar="TASK_ID")
    outcome = complete.add_mutually_exclusive_group(required=True)
    outcome.add_argument(
        "--approve", dest="outcome", action="store_const", const=Outcome.APPROVED, help="approve"
    )
    outcome.add_argument(
        "--reject", dest="outcome", action="store_const", const=Outcome.REJECTED, help="reject"
    )
    complete.add_argument("--comment", help="why, recorded with the task")
    _idempotency_key(complete)


def run(args: argparse.Namespace) -> int:
    """Runs the client command `args` names; prints errors on stderr."""
    url = args.url or os.environ.get("HTK_URL") or DEFAULT_URL
    token = args.token or os.environ.get("HTK_TOKEN")
    if not token:
        print("htk: no token: set HTK_TOKEN or pass --token", file=sys.stderr)
        return EXIT_API_ERROR
    api = HtkApi(url, token)
    try:
        handler: Handler = args.client_handler
        return handler(api, args, console(sys.stdout))
    except ApiError as error:
        print(f"htk: {safe(error)}", file=sys.stderr)
        return EXIT_API_ERROR
    except Unreachable as error:
        print(f"htk: {safe(error)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 130
    finally:
        api.close()


def _list_processes(api: HtkApi, args: argparse.Namespace, out: Console) -> int:
    page = api.list_processes(
        _query(args, "status", "namespace", "search", "sort", "limit", "offset", "page_token")
    )
    if not _print_json(args, page):
        out.print(processes_table(page.json))
        print(page_footer(page.json, "processes", "processes"), file=sys.stderr)
    return 0


def _get_process(api: HtkApi, args: argparse.Namespace, out: Console) -> int:
    process = api.get_process(args.process_id)
    if not _print_json(args, process):
        out.print(process_view(process.json))
    return 0


def _create_process(api: HtkApi, args: argparse.Namespace, out: Console) -> int:
    body = {"namespace": args.namespace, "name": args.name, "step_defs": args.steps}
    process = api.create_process(body, args.idempotency_key)
    if not _print_json(args, process):
        print(safe(process.json["process_id"]))
    return 0


def _update_process(api: HtkApi, args: argparse.Namespace, out: Console) -> int:
    body = {
        "type": args.type,
        **_query(args, "step", "detail", "data", "error", "message", "percent", "summary"),
    }
    _print_json(args, api.update_process(args.process_id, body, args.idempotency_key))
    return 0


def _list_events(api: HtkApi, args: argparse.Namespace, out: Console) -> int:
    page = api.list_events(args.process_id, _query(args, "after_seq", "limit"))
    if not _print_json(args, page):
        events = page.json.get("events", [])
        out.print(events_table(events))
        if events:
            print(
                f"events {safe(events[0].get('seq'))}-{safe(events[-1].get('seq'))};"
                f" later ones: --after-seq {safe(events[-1].get('seq'))}",
                file=sys.stderr,
            )
    return 0


def _watch_process(api: HtkApi, args: argparse.Namespace, out: Console) -> int:
    stream = api.watch_process(args.process_id)
    if out.is_terminal:
        status = _watch_live(api, args.process_id, stream, out)
    else:
        status = _watch_lines(stream)
    return 1 if args.exit_status and status == "failed" else 0


def _watch_lines(stream: Any) -> str | None:
    """One line per message; returns the process's final status."""
    status = None
    for message in stream:
        if "process" in message:
            process = message["process"]
            status = process.get("status")
            print(
                safe(f"process {process.get('process_id')} ({process.get('name')}): {status}"),
                flush=True,
            )
        elif "event" in message:
            event = message["event"]
            if event.get("type") in FINISHED:
                status = event["type"]
            print(event_line(event), flush=True)
    return status


def _watch_live(api: HtkApi, process_id: str, stream: Any, out: Console) -> str | None:
    """The live view, redrawn from the process as it stands after each batch of
    events (the server's state, not one rebuilt here)."""
    view: WatchView | None = None
    inbox = in_background(stream)
    with Live(Text(""), console=out, refresh_per_second=4) as live:
        while True:
            batch = [inbox.get()]
            while not inbox.empty():
                batch.append(inbox.get_nowait())
            for message in batch:
                if isinstance(message, BaseException):
                    raise message
                if message is None:
                    return view.process.get("status") if view else None
                if "process" in message:
                    view = WatchView(message["process"])
                elif "event" in message:
                    view = view or WatchView({})
                    view.last_event = message["event"]
            if view is not None and view.last_event is not None:
                view.process = api.get_process(process_id).json
            if view is not None:
                live.update(view)


def _list_tasks(api: HtkApi, args: argparse.Namespace, out: Console) -> int:
    page = api.list_tasks(
        _query(args, "status", "namespace", "process_id", "limit", "offset", "page_token")
    )
    if not _print_json(args, page):
        out.print(tasks_table(page.json))
        print(page_footer(page.json, "tasks", "tasks"), file=sys.stderr)
    return 0


def _complete_task(api: HtkApi, args: argparse.Namespace, out: Console) -> int:
    body = {"outcome": args.outcome, **_query(args, "comment")}
    task = api.complete_task(args.task_id, body, args.idempotency_key)
    if not _print_json(args, task):
        print(safe(f"task {task.json.get('task_id')}: {task.json.get('outcome')}"), file=sys.stderr)
    return 0


def _print_json(args: argparse.Namespace, response: Response) -> bool:
    """Prints the response's JSON as the API sent it, if --json was given."""
    if not args.json:
        return False
    sys.stdout.write(response.text if response.text.endswith("\n") else response.text + "\n")
    return True


def _query(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The options among `names` that were given, by their API names."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _paging(parser: argparse.ArgumentParser, noun: str) -> None:
    parser.add_argument("--limit", type=int, help="page size, 1-200 (default 50)")
    parser.add_argument("--offset", type=int, help=f"how many matching {noun} to skip")
    parser.add_argument("--page-token", help="the next page, as the previous one gave it")


def _idempotency_key(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="retry safely: a repeat with the same key and request writes nothing again",
    )


def _step_def(text: str) -> JsonObject:
    """`KEY[:LABEL[:human]]` as a step definition."""
    key, _, rest = text.partition(":")
    human = rest == "human" or rest.endswith(":human")
    label = rest.removesuffix("human").removesuffix(":") if human else rest
    if not key:
        raise argparse.ArgumentTypeError(f"a step needs a key, as KEY[:LABEL[:human]]: {text!r}")
    return {"key": key, "label": label or key, "human": human}


def _words(words: type[StrEnum]) -> list[str]:
    return [word.value for word in words]


def _json_object(text: str) -> JsonObject:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('must be a JSON object, e.g. \'{"image_tag": "v2"}\'')
    return value
