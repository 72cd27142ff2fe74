"""The network commands' pure parts: safe text, option parsing, the SSE
reader, and the watch output, on made-up API messages (the end-to-end tests
of `htk processes watch` need the watch stream of the API)."""

import argparse
import io
import json
import subprocess
import sys

import httpx
import pytest
from rich.console import Console

from server.client import api
from server.client.api import server_sent_events
from server.client.commands import _step_def, _watch_lines
from server.client.text import safe, show_duration
from server.client.views import WatchView, event_line


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("Deploy v2.1.0", "Deploy v2.1.0"),
        ("Déploiement ✓ 日本", "Déploiement ✓ 日本"),
        ("\x1b[2Jclear", "\\x1b[2Jclear"),
        ("title\x1b]0;pwned\x07", "title\\x1b]0;pwned\\x07"),
        ("one\r\ntwo", "one\\r\\ntwo"),
        ("\x9b31m", "\\x9b31m"),
        ("exe.\u202etxt", "exe.\\u202etxt"),
        ("one\u2028two\u2029three", "one\\u2028two\\u2029three"),
        (None, ""),
        (42, "42"),
    ],
)
def test_safe_text_cannot_act_on_a_terminal(raw: object, shown: str) -> None:
    assert safe(raw) == shown


@pytest.mark.parametrize(
    ("spec", "step"),
    [
        ("build", {"key": "build", "label": "build", "human": False}),
        ("build:Build", {"key": "build", "label": "Build", "human": False}),
        ("review:Review:human", {"key": "review", "label": "Review", "human": True}),
        ("review:human", {"key": "review", "label": "review", "human": True}),
        ("deploy:Deploy: prod", {"key": "deploy", "label": "Deploy: prod", "human": False}),
    ],
)
def test_step_options(spec: str, step: dict[str, object]) -> None:
    assert _step_def(spec) == step


def test_a_step_needs_a_key() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="KEY"):
        _step_def(":Build")


def test_server_sent_events_are_the_data_lines_of_each_event() -> None:
    lines = [
        'data: {"heartbeat": {}}',
        "",
        ": comment",
        'data: {"event":',
        'data: {"seq": "3"}}',
        "",
    ]
    assert list(server_sent_events(iter(lines))) == [{"heartbeat": {}}, {"event": {"seq": "3"}}]


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0, "0s"), (59.9, "59s"), (185, "3m05s"), (7260, "2h01m")]
)
def test_durations(seconds: float, shown: str) -> None:
    assert show_duration(seconds) == shown


PROCESS = {
    "process_id": "p-1",
    "name": "Deploy \x1b[31mv2",
    "status": "running",
    "timeline": [
        {"step": "build", "label": "Build", "status": "completed", "duration_ms": 65000},
        {
            "step": "test",
            "label": "Test",
            "status": "running",
            "started_at": "2026-01-01T00:00:00Z",
            "progress_percent": 40,
            "progress_message": "unit tests",
        },
        {"step": "deploy", "label": "Deploy", "status": "pending"},
    ],
}


def test_without_a_terminal_watch_prints_a_line_per_event_and_returns_the_final_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream = [
        {"process": PROCESS},
        {"heartbeat": {}},
        {
            "event": {
                "seq": "7",
                "type": "progress",
                "step": "test",
                "timestamp": "2026-01-01T00:00:05Z",
                "percent": 60,
            }
        },
        {
            "event": {
                "seq": "8",
                "type": "failed",
                "timestamp": "2026-01-01T00:00:06Z",
                "error": "boom\x1b[2J",
            }
        },
    ]
    assert _watch_lines(iter(stream)) == "failed"
    assert capsys.readouterr().out.splitlines() == [
        "process p-1 (Deploy \\x1b[31mv2): running",
        "2026-01-01 00:00:05Z  progress  test  percent=60",
        "2026-01-01 00:00:06Z  failed  error=boom\\x1b[2J",
    ]


def test_the_live_view_shows_each_steps_status_elapsed_time_progress_and_message() -> None:
    view = WatchView(PROCESS)
    view.last_event = {
        "type": "progress",
        "step": "test",
        "percent": 40,
        "timestamp": "2026-01-01T00:00:05Z",
    }
    terminal = Console(file=io.StringIO(), width=120, color_system=None, force_terminal=True)
    terminal.print(view)
    shown = terminal.file.getvalue()  # type: ignore[attr-defined]
    rows = {line.split()[0]: line for line in shown.splitlines() if line.strip()}
    assert "\x1b[31m" not in shown and "Deploy \\x1b[31mv2" in shown
    assert "completed" in rows["Build"] and "1m05s" in rows["Build"] and "100%" in rows["Build"]
    assert "running" in rows["Test"] and " 40%" in rows["Test"] and "unit tests" in rows["Test"]
    assert rows["Deploy"].split()[:2] == ["Deploy", "pending"]
    assert event_line(view.last_event) in shown


def test_the_network_commands_load_nothing_of_the_server() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, server.client.commands; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    server_side = (
        "server.storage",
        "server.service",
        "server.transport",
        "sqlalchemy",
        "grpc",
        "psycopg",
    )
    assert not [name for name in loaded if name.startswith(server_side)]


def _sse(*messages: dict[str, object]) -> bytes:
    return b"".join(b"data: " + json.dumps(message).encode() + b"\n\n" for message in messages)


def test_a_watch_that_ends_early_resumes_after_the_last_event_it_saw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(api, "RESUME_PAUSE_SECONDS", 0)
    running = {"process_id": "p-1", "status": "running"}
    streams = {
        None: _sse({"process": running}, {"event": {"seq": 3, "type": "step_started"}}),
        "3": _sse({"heartbeat": {}}, {"event": {"seq": 4, "type": "completed"}}),
    }
    requested: list[str | None] = []

    def serve(request: httpx.Request) -> httpx.Response:
        after_seq = request.url.params.get("after_seq")
        requested.append(after_seq)
        return httpx.Response(200, content=streams[after_seq])

    client = api.HtkApi("http://htk.test", "token", transport=httpx.MockTransport(serve))
    messages = list(client.watch_process("p-1"))
    assert requested == [None, "3"]
    assert messages == [
        {"process": running},
        {"event": {"seq": 3, "type": "step_started"}},
        {"heartbeat": {}},
        {"event": {"seq": 4, "type": "completed"}},
    ]


def test_a_watch_error_sent_in_band_is_an_api_error() -> None:
    def serve(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=_sse({"error": {"code": 14, "message": "shutting down"}})
        )

    client = api.HtkApi("http://htk.test", "token", transport=httpx.MockTransport(serve))
    with pytest.raises(api.ApiError, match="shutting down"):
        list(client.watch_process("p-1"))


def test_a_watch_that_cannot_connect_fails_at_once() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    client = api.HtkApi("http://htk.test", "token", transport=httpx.MockTransport(refuse))
    with pytest.raises(api.Unreachable, match=r"http://htk\.test: connection refused"):
        list(client.watch_process("p-1"))
