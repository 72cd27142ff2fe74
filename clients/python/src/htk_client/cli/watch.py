"""`htk processes watch`: the process's watch stream (which resumes by itself,
see RestApi.watch_process) as a live view on a terminal, else a line per
message."""

import argparse
import sys
from collections.abc import Iterable, Iterator

from rich.console import Console
from rich.live import Live
from rich.text import Text

from htk_client.cli.options import command
from htk_client.rest import (
    ApiError,
    JsonObject,
    RestApi,
    Unreachable,
    in_background,
    last_seq,
)
from htk_client.text import safe
from htk_client.views import WatchView, event_line
from htk_client.words import COMPLETED, FINISHED


def add(processes: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    watch = command(
        processes,
        "watch",
        _watch,
        "Follow a process live until it finishes",
        "On a terminal: one row per step with its status, elapsed time, progress bar\n"
        "and message, redrawn as events arrive. Otherwise: one line per event. Returns\n"
        "when the process finishes (completes, fails or is cancelled). If the connection\n"
        "drops or the server restarts, it reconnects with a growing pause and resumes\n"
        "after the last event seen; if it gives up, it says which --after-seq to resume\n"
        "from.",
        "  htk processes watch $PROCESS\n"
        "  htk processes watch $PROCESS --exit-status && echo deployed\n"
        "  htk processes watch $PROCESS --after-seq 12",
        json_output=False,
    )
    watch.add_argument("process_id", metavar="ID")
    watch.add_argument(
        "--after-seq",
        type=int,
        metavar="N",
        help="start after event N, with the events logged since (no snapshot)",
    )
    watch.add_argument(
        "--exit-status",
        action="store_true",
        help="exit 1 if the process failed or was cancelled (0 if it completed)",
    )


def _watch(api: RestApi, args: argparse.Namespace, out: Console) -> int:
    seen = Seen(args.after_seq)
    stream = seen.follow(api.watch_process(args.process_id, args.after_seq))
    try:
        status = live(api, args.process_id, stream, out) if out.is_terminal else lines(stream)
    except (ApiError, Unreachable):
        if seen.seq is not None:
            print(
                f"htk: to resume: htk processes watch {safe(args.process_id)}"
                f" --after-seq {seen.seq}",
                file=sys.stderr,
            )
        raise
    return 1 if args.exit_status and status in FINISHED - {COMPLETED} else 0


class Seen:
    """The seq of the last event a watch passed on, to resume from if it gives up."""

    def __init__(self, after_seq: int | None) -> None:
        self.seq = after_seq

    def follow(self, stream: Iterable[JsonObject]) -> Iterator[JsonObject]:
        for message in stream:
            if (seq := last_seq(message)) is not None:
                self.seq = seq
            yield message


def lines(stream: Iterable[JsonObject]) -> str | None:
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


def live(api: RestApi, process_id: str, stream: Iterable[JsonObject], out: Console) -> str | None:
    """The live view, redrawn from the process as it stands after each batch of
    events (the server's state, not one rebuilt here)."""
    view: WatchView | None = None
    inbox = in_background(iter(stream))
    with Live(Text(""), console=out, refresh_per_second=4) as shown:
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
                shown.update(view)
