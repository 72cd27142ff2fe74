"""`htk tasks list|complete`: the tasks of human steps."""

import argparse
import sys

from rich.console import Console

from htk_client.cli.options import command, group, idempotency_key, paging, print_json, query
from htk_client.rest import RestApi
from htk_client.text import safe
from htk_client.views import page_footer, tasks_table
from htk_client.words import APPROVED, REJECTED, TASK_STATUSES


def add(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Adds `tasks` and its actions to the htk command."""
    tasks = group(commands, "tasks", "list and complete the tasks of human steps")
    _add_list(tasks)
    _add_complete(tasks)


def _add_list(tasks: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    listing = command(
        tasks,
        "list",
        _list,
        "List tasks, newest first",
        "A task is open while its human step waits for a person.",
        "  htk tasks list --status open\n  htk tasks list --process $PROCESS --json",
    )
    listing.add_argument("--status", choices=TASK_STATUSES)
    listing.add_argument("--namespace", help="e.g. acme.deployments")
    listing.add_argument("--process", dest="process_id", metavar="ID", help="one process's tasks")
    paging(listing, "tasks")


def _list(api: RestApi, args: argparse.Namespace, out: Console) -> int:
    page = api.list_tasks(
        query(args, "status", "namespace", "process_id", "limit", "offset", "page_token")
    )
    if not print_json(args, page):
        out.print(tasks_table(page.json))
        print(page_footer(page.json, "tasks", "tasks"), file=sys.stderr)
    return 0


def _add_complete(tasks: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    complete = command(
        tasks,
        "complete",
        _complete,
        "Approve or reject an open task",
        "Approving completes the human step; rejecting fails it. The token needs the\n"
        "scope tasks:complete. Prints the outcome on stderr (the task with --json).",
        "  htk tasks complete $TASK --approve --comment 'Looks good'\n"
        "  htk tasks complete $TASK --reject --comment 'Wrong image'",
    )
    complete.add_argument("task_id", metavar="TASK_ID")
    outcome = complete.add_mutually_exclusive_group(required=True)
    outcome.add_argument(
        "--approve", dest="outcome", action="store_const", const=APPROVED, help="approve"
    )
    outcome.add_argument(
        "--reject", dest="outcome", action="store_const", const=REJECTED, help="reject"
    )
    complete.add_argument("--comment", help="why, recorded with the task")
    idempotency_key(complete)


def _complete(api: RestApi, args: argparse.Namespace, out: Console) -> int:
    body = {"outcome": args.outcome, **query(args, "comment")}
    task = api.complete_task(args.task_id, body, args.idempotency_key)
    if not print_json(args, task):
        print(safe(f"task {task.json.get('task_id')}: {task.json.get('outcome')}"), file=sys.stderr)
    return 0
