"""What the commands print for people: tables, a process with its timeline,
the live watch view, and one line per event where there is no terminal.
Every string from the server goes through `safe` into a rich `Text`, which
never interprets markup."""

import json
from datetime import UTC, datetime
from typing import IO, Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from htk_client.rest import JsonObject
from htk_client.text import parse_time, safe, show_duration, show_time

STATUS_STYLES = {
    "pending": "dim",
    "running": "yellow",
    "open": "cyan",
    "completed": "green",
    "failed": "red",
    "cancelled": "dim",
    "skipped": "dim",
    "expired": "red",
    "delivered": "green",
}
# What an event says besides its type and step, in this order.
EVENT_TEXT_FIELDS = (
    "detail",
    "message",
    "percent",
    "error",
    "summary",
    "reason",
    "outcome",
    "comment",
    "completed_by",
)


def console(stream: IO[str]) -> Console:
    """A console on `stream`. Without a terminal, rows are never cut or
    wrapped (no width to fit) and nothing is colored."""
    if stream.isatty():
        return Console(file=stream, highlight=False)
    return Console(file=stream, width=100_000, highlight=False, no_color=True)


def cell(value: Any) -> Text:
    return Text(safe(value))


def status_cell(status: Any) -> Text:
    return Text(safe(status), style=STATUS_STYLES.get(str(status), ""))


def _table(*columns: str) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False, show_edge=False)
    for column in columns:
        table.add_column(
            column, no_wrap=column in {"ID", "PROCESS", "TASK", "SEQ", "WEBHOOK", "DELIVERY"}
        )
    return table


def processes_table(page: JsonObject) -> Table:
    table = _table("ID", "NAMESPACE", "NAME", "STATUS", "CURRENT STEP", "STEPS", "STARTED")
    for process in page.get("processes", []):
        table.add_row(
            cell(process.get("process_id")),
            cell(process.get("namespace")),
            cell(process.get("name")),
            status_cell(process.get("status")),
            cell(process.get("current_step")),
            cell(process.get("step_count")),
            cell(show_time(process.get("started_at"))),
        )
    return table


def page_footer(page: JsonObject, noun: str, items: str) -> str:
    """`3 of 42 processes; next page: --page-token ...`."""
    shown, total = len(page.get(items, [])), page.get("total", 0)
    if not shown:
        return f"no {noun} ({total} in all)" if total else f"no {noun}"
    first = int(page.get("offset", 0)) + 1
    line = f"{noun} {first}-{first + shown - 1} of {total}"
    if page.get("next_page_token"):
        line += f"; next page: --page-token {safe(page['next_page_token'])}"
    return line


def process_view(process: JsonObject) -> Group:
    """A process: what it is, where it stands, and its timeline."""
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("name", cell(process.get("name")))
    facts.add_row("id", cell(process.get("process_id")))
    facts.add_row("namespace", cell(process.get("namespace")))
    facts.add_row("status", status_cell(process.get("status")))
    facts.add_row("started", cell(show_time(process.get("started_at"))))
    if process.get("created_by"):
        facts.add_row("created by", cell(process["created_by"]))
    if process.get("labels"):
        labels = sorted(process["labels"].items())
        facts.add_row("labels", cell(", ".join(f"{key}={value}" for key, value in labels)))
    if process.get("url"):
        facts.add_row("link", cell(process["url"]))
    for label, key in (
        ("finished", "finished_at"),
        ("summary", "summary"),
        ("error", "error"),
        ("reason", "reason"),
    ):
        if process.get(key):
            value = show_time(process[key]) if key == "finished_at" else process[key]
            facts.add_row(label, cell(value))
    timeline = _table("STEP", "LABEL", "STATUS", "STARTED", "DURATION", "NOTE", "TASK")
    for entry in process.get("timeline", []):
        duration = entry.get("duration_ms")
        timeline.add_row(
            cell(entry.get("step")),
            cell(entry.get("label")),
            status_cell(entry.get("status")),
            cell(show_time(entry.get("started_at"))),
            cell("" if duration is None else show_duration(float(duration) / 1000)),
            cell(step_note(entry)),
            cell(entry.get("task_id")),
        )
    return Group(facts, Text(""), timeline)


def step_note(entry: JsonObject) -> str:
    """The most telling text of a step: its error, its progress, or its detail."""
    if entry.get("error"):
        return str(entry["error"])
    if "progress_message" in entry or "progress_percent" in entry:
        percent = entry.get("progress_percent")
        message = entry.get("progress_message", "")
        return f"{percent}% {message}".strip() if percent is not None else str(message)
    return str(entry.get("detail", ""))


def events_table(events: list[JsonObject]) -> Table:
    table = _table("SEQ", "TIME", "TYPE", "STEP", "BY", "DETAILS")
    for event in events:
        table.add_row(
            cell(event.get("seq")),
            cell(show_time(event.get("timestamp"))),
            cell(event.get("type")),
            cell(event.get("step")),
            cell(event.get("actor")),
            cell(event_text(event)),
        )
    return table


def event_text(event: JsonObject) -> str:
    """An event's own fields, `key=value`, e.g. `message=Compiling... percent=50`."""
    parts = [f"{key}={event[key]}" for key in EVENT_TEXT_FIELDS if event.get(key) is not None]
    if event.get("data"):
        # As JSON, so that a script can take it as it is.
        parts.append(f"data={json.dumps(event['data'], ensure_ascii=False)}")
    return " ".join(parts)


def event_line(event: JsonObject) -> str:
    """One event on one line, for logs: time, type, step, its fields."""
    fields = [
        show_time(event.get("timestamp")),
        str(event.get("type", "")),
        str(event.get("step", "")),
        f"by {event['actor']}" if event.get("actor") else "",
    ]
    return safe("  ".join(field for field in [*fields, event_text(event)] if field))


def tasks_table(page: JsonObject) -> Table:
    table = _table("TASK", "STATUS", "PROCESS", "STEP", "LABEL", "CREATED", "OUTCOME", "BY")
    for task in page.get("tasks", []):
        table.add_row(
            cell(task.get("task_id")),
            status_cell(task.get("status")),
            cell(task.get("process_name")),
            cell(task.get("step")),
            cell(task.get("label")),
            cell(show_time(task.get("created_at"))),
            cell(task.get("outcome")),
            cell(task.get("completed_by")),
        )
    return table


def webhooks_table(webhooks: list[JsonObject]) -> Table:
    table = _table("WEBHOOK", "URL", "EVENTS", "NAMESPACE", "ENABLED", "CREATED")
    for webhook in webhooks:
        table.add_row(
            cell(webhook.get("webhook_id")),
            cell(webhook.get("url")),
            cell(",".join(webhook.get("events", []))),
            cell(webhook.get("namespace")),
            cell("yes" if webhook.get("enabled") else "no (disabled)"),
            cell(show_time(webhook.get("created_at"))),
        )
    return table


def deliveries_table(deliveries: list[JsonObject]) -> Table:
    table = _table("DELIVERY", "EVENT", "PROCESS", "STATUS", "ATTEMPTS", "LAST", "CREATED")
    for delivery in deliveries:
        last = delivery.get("last_error") or delivery.get("last_status_code")
        table.add_row(
            cell(delivery.get("delivery_id")),
            cell(delivery.get("event_type")),
            cell(delivery.get("process_id")),
            status_cell(delivery.get("status")),
            cell(delivery.get("attempts")),
            cell(last),
            cell(show_time(delivery.get("created_at"))),
        )
    return table


def trust_policies_table(listing: JsonObject) -> Table:
    table = _table("ID", "NAME", "ISSUER", "AUDIENCE", "SUBJECT", "CLAIMS", "SCOPES", "TTL")
    for policy in listing.get("policies", []):
        claims = policy.get("claims") or {}
        table.add_row(
            cell(policy.get("policy_id")),
            cell(policy.get("name")),
            cell(policy.get("issuer")),
            cell(policy.get("audience")),
            cell(policy.get("subject")),
            cell(",".join(f"{key}={value}" for key, value in sorted(claims.items()))),
            cell(",".join(policy.get("scopes") or []) or "(read-only)"),
            cell(f"{policy.get('token_ttl_seconds')}s"),
        )
    return table


class WatchView:
    """The live view of `htk processes watch`: one row per step with its
    status, elapsed time, progress bar and message, under the process's name
    and status, and the latest event at the bottom. Rendered anew on every
    refresh, so running steps' elapsed times tick between events."""

    def __init__(self, process: JsonObject) -> None:
        self.process = process
        self.last_event: JsonObject | None = None

    def __rich__(self) -> RenderableType:
        process, now = self.process, datetime.now(UTC)
        title = Text.assemble(
            (safe(process.get("name")), "bold"),
            "  ",
            status_cell(process.get("status")),
            "  ",
            (safe(process.get("process_id")), "dim"),
        )
        steps = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for column in ("STEP", "STATUS", "ELAPSED", "PROGRESS", "MESSAGE"):
            steps.add_column(column, no_wrap=column != "MESSAGE")
        for entry in process.get("timeline", []):
            steps.add_row(
                cell(entry.get("label") or entry.get("step")),
                status_cell(entry.get("status")),
                Text(_elapsed(entry, now)),
                _progress(entry),
                cell(step_note(entry) if entry.get("status") != "pending" else ""),
            )
        parts: list[RenderableType] = [title, steps]
        if self.last_event is not None:
            parts.append(Text(event_line(self.last_event), style="dim"))
        return Group(*parts)


def _elapsed(entry: JsonObject, now: datetime) -> str:
    if entry.get("duration_ms") is not None:
        return show_duration(float(entry["duration_ms"]) / 1000)
    if entry.get("status") == "running" and entry.get("started_at"):
        return show_duration((now - parse_time(entry["started_at"])).total_seconds())
    return ""


def _progress(entry: JsonObject) -> RenderableType:
    status = entry.get("status")
    if status == "completed":
        percent = 100
    elif entry.get("progress_percent") is not None:
        percent = int(entry["progress_percent"])
    else:
        return Text("")
    bar = ProgressBar(total=100, completed=percent, width=20)
    grid = Table.grid(padding=(0, 1))
    grid.add_row(bar, Text(f"{percent:3d}%"))
    return grid
