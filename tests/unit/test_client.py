"""The Python client's pure parts: safe text, option parsing, the SSE reader,
the watch output, the watch's resuming and the typed client's messages, on
made-up API answers (the end-to-end tests of `htk processes watch` need the
watch stream of the API)."""

import argparse
import io
import json
import subprocess
import sys
from typing import Any

import httpx
import pytest
from rich.console import Console

from htk.processes.v1 import process_service_pb2 as pb
from htk_client import HtkClient, rest
from htk_client.cli.options import step_def
from htk_client.cli.watch import lines
from htk_client.rest import server_sent_events
from htk_client.text import safe, show_duration
from htk_client.views import WatchView, event_line, event_text
from htk_client.words import FINISHED, PROCESS_STATUSES, UPDATE_TYPES


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
        ("review::human", {"key": "review", "label": "review", "human": True}),
    ],
)
def test_step_options(spec: str, step: dict[str, object]) -> None:
    assert step_def(spec) == step


@pytest.mark.parametrize(
    "spec",
    ["review:Review:Human", "review:Review:humna", "review:Review:", "review:Review:human:x",
     "deploy:Deploy: prod"],
)  # fmt: skip
def test_a_third_part_other_than_human_is_refused_not_dropped(spec: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="only the word 'human'"):
        step_def(spec)


def test_an_events_data_prints_as_json_and_its_actor_as_who() -> None:
    event = {"seq": 3, "type": "step_completed", "step": "build", "actor": "ci-pipeline",
             "data": {"image_tag": "v2", "ok": True, "layers": None}}  # fmt: skip
    assert event_text(event) == 'data={"image_tag": "v2", "ok": true, "layers": null}'
    assert event_line(event) == (
        "step_completed  build  by ci-pipeline  "
        'data={"image_tag": "v2", "ok": true, "layers": null}'
    )


def test_a_step_needs_a_key() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="KEY"):
        step_def(":Build")


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
    stream: list[dict[str, Any]] = [
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
    assert lines(iter(stream)) == "failed"
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


def test_the_client_loads_nothing_of_the_server() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, htk_client.cli; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    server_side = (
        "server",
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
    monkeypatch.setattr(rest, "RESUME_FIRST_PAUSE_SECONDS", 0)
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

    client = rest.RestApi("http://htk.test", "token", transport=httpx.MockTransport(serve))
    messages = list(client.watch_process("p-1"))
    assert requested == [None, "3"]
    assert messages == [
        {"process": running},
        {"event": {"seq": 3, "type": "step_started"}},
        {"heartbeat": {}},
        {"event": {"seq": 4, "type": "completed"}},
    ]


def test_a_watch_error_sent_in_band_is_an_api_error() -> None:
    # INTERNAL: not one the protos say to resume after (see the next tests).
    def serve(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=_sse({"error": {"code": 13, "message": "broken"}}))

    client = rest.RestApi("http://htk.test", "token", transport=httpx.MockTransport(serve))
    with pytest.raises(rest.ApiError, match="broken"):
        list(client.watch_process("p-1"))


def test_a_watch_that_cannot_connect_fails_at_once() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    client = rest.RestApi("http://htk.test", "token", transport=httpx.MockTransport(refuse))
    with pytest.raises(rest.Unreachable, match=r"http://htk\.test: connection refused"):
        list(client.watch_process("p-1"))


def test_the_words_come_from_the_protos_enums() -> None:
    assert PROCESS_STATUSES == ["running", "completed", "failed", "cancelled"]
    assert sorted(FINISHED) == ["cancelled", "completed", "failed"]
    assert UPDATE_TYPES[:2] == ["step_started", "step_completed"]


def test_a_watch_resumes_after_an_in_band_unavailable_and_a_refusal_for_now(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses: list[float] = []
    monkeypatch.setattr("htk_client.rest.time.sleep", pauses.append)
    answers = iter(
        [
            httpx.Response(200, content=_sse({"event": {"seq": 1, "type": "step_started"}})),
            httpx.Response(200, content=_sse({"error": {"code": 14, "message": "stopping"}})),
            httpx.Response(503, json={"code": 14, "message": "no worker"}),
            httpx.Response(503, text="upstream connect error"),
            httpx.Response(200, content=_sse({"event": {"seq": 2, "type": "completed"}})),
        ]
    )
    requested: list[str | None] = []

    def serve(request: httpx.Request) -> httpx.Response:
        requested.append(request.url.params.get("after_seq"))
        return next(answers)

    client = rest.RestApi("http://htk.test", "token", transport=httpx.MockTransport(serve))
    events = [message["event"]["seq"] for message in client.watch_process("p-1")]
    assert events == [1, 2]
    assert requested == [None, "1", "1", "1", "1"]
    # Each attempt in a row that brings nothing waits longer before the next.
    assert pauses == [rest.resume_pause(failures) for failures in (1, 2, 3, 4)]
    assert pauses == sorted(set(pauses))


def test_a_watch_gives_up_after_its_attempts_and_never_retries_a_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("htk_client.rest.time.sleep", lambda seconds: None)
    running = _sse({"process": {"process_id": "p-1", "status": "running"}})

    def end_early(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=running)

    client = rest.RestApi("http://htk.test", "token", transport=httpx.MockTransport(end_early))
    with pytest.raises(rest.Unreachable, match="keeps ending"):
        list(client.watch_process("p-1"))

    def not_found(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"code": 5, "message": "no process p-1"})

    client = rest.RestApi("http://htk.test", "token", transport=httpx.MockTransport(not_found))
    with pytest.raises(rest.ApiError, match="no process p-1"):
        list(client.watch_process("p-1"))


def test_the_typed_client_sends_the_rest_call_and_reads_past_fields_it_does_not_know() -> None:
    sent: list[httpx.Request] = []

    def serve(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"process_id": "p/1", "seq": 4, "added_later": True})

    with HtkClient("http://htk.test", "t0k", transport=httpx.MockTransport(serve)) as htk:
        update = pb.UpdateProcessRequest(process_id="p/1", type="progress", step="build")
        update.percent = 50
        acknowledged = htk.processes.update(update, idempotency_key="k-1")
    assert isinstance(acknowledged, pb.UpdateProcessResponse) and acknowledged.seq == 4
    request = sent[0]
    assert (request.method, request.url.raw_path) == ("POST", b"/api/v1/processes/p%2F1/update")
    assert request.headers["authorization"] == "Bearer t0k"
    assert request.headers["idempotency-key"] == "k-1"
    assert json.loads(request.content) == {"type": "progress", "step": "build", "percent": 50}


def test_the_typed_watch_yields_the_protos_messages() -> None:
    def serve(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            content=_sse(
                {"heartbeat": {}},
                {"event": {"seq": 1, "type": "completed", "summary": "done"}},
            ),
        )

    with HtkClient("http://htk.test", "token", transport=httpx.MockTransport(serve)) as htk:
        messages = list(htk.processes.watch("p-1"))
    assert [message.WhichOneof("kind") for message in messages] == ["heartbeat", "event"]
    assert (messages[1].event.seq, messages[1].event.summary) == (1, "done")
