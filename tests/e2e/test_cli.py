"""The `htk processes ...` commands, as a pipeline or a person runs them: the
installed `htk` in a subprocess, talking to the test stack over REST, with
HTK_URL and HTK_TOKEN in its environment (no database of its own)."""

import json
import re
import subprocess
import uuid

import httpx
import pytest

from tests.support.orgs import Org
from tests.support.stack import HTK, Stack

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Cli:
    """`htk` with one organization's writer token, against the test stack."""

    def __init__(self, stack: Stack, org: Org) -> None:
        self.env = {"PATH": stack.env["PATH"], "HTK_URL": stack.http_url, "HTK_TOKEN": org.writer}

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [HTK, *args], env={**self.env, **env}, capture_output=True, text=True, timeout=60
        )

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def create(self, name: str = "Deploy v2.1.0") -> str:
        steps = ["--step", "build:Build", "--step", "test", "--step", "review:Review:human"]
        return self.ok("processes", "create", "--namespace", "cli", "--name", name, *steps).strip()


@pytest.fixture
def htk(stack: Stack, org: Org) -> Cli:
    return Cli(stack, org)


def test_a_pipeline_drives_a_process_with_htk_alone(htk: Cli, rest: httpx.Client, org: Org) -> None:
    process_id = htk.create()
    assert UUID.fullmatch(process_id), "create prints the new id alone"

    for update in [
        ["step_started", "--step", "build", "--detail", "Building Docker image..."],
        ["progress", "--step", "build", "--message", "Compiling...", "--percent", "50"],
        ["step_completed", "--step", "build", "--data", '{"image_tag": "v2.1.0-abc123"}'],
        ["step_started", "--step", "test"],
    ]:
        assert htk.ok("processes", "update", process_id, *update) == ""

    process = httpx.get(
        f"{htk.env['HTK_URL']}/api/v1/processes/{process_id}", headers=org.auth()
    ).json()
    assert [entry["status"] for entry in process["timeline"]] == ["completed", "running", "pending"]
    assert process["timeline"][0]["data"] == {"image_tag": "v2.1.0-abc123"}
    assert process["step_defs"][1] == {"key": "test", "label": "test", "human": False}
    assert process["step_defs"][2] == {"key": "review", "label": "Review", "human": True}

    shown = htk.ok("processes", "get", process_id)
    assert re.search(r"^build\s+Build\s+completed\s", shown, re.MULTILINE)
    assert re.search(r"^test\s+test\s+running\s", shown, re.MULTILINE)
    assert re.search(rf"^review\s+Review\s+pending\s+{process['task_ids'][0]}", shown, re.MULTILINE)

    listed = htk.ok("processes", "list", "--status", "running", "--search", "deploy")
    header, *rows = listed.splitlines()
    assert header.split()[:3] == ["ID", "NAMESPACE", "NAME"]
    assert [row.split()[0] for row in rows] == [process_id]

    htk.ok("processes", "update", process_id, "completed", "--summary", "All done!")
    assert json.loads(htk.ok("processes", "get", process_id, "--json"))["status"] == "completed"


def test_json_is_the_apis_json_exactly(htk: Cli, rest: httpx.Client, org: Org) -> None:
    process_id = htk.create()
    for args, path in [
        (["processes", "get", process_id], f"/api/v1/processes/{process_id}"),
        (["processes", "list", "--search", "deploy"], "/api/v1/processes?search=deploy"),
    ]:
        assert htk.ok(*args, "--json") == rest.get(path, headers=org.auth()).text + "\n"

    created = json.loads(
        htk.ok("processes", "create", "--namespace", "cli", "--name", "n", "--step", "a", "--json")
    )
    assert created["namespace"] == f"{org.org_id}.cli"
    acknowledged = json.loads(
        htk.ok("processes", "update", process_id, "failed", "--error", "x", "--json")
    )
    assert acknowledged["update_type"] == "failed"


def test_list_filters_and_pages(htk: Cli) -> None:
    namespace = f"cli-{uuid.uuid4().hex[:8]}"
    ids = [
        htk.ok(
            "processes", "create", "--namespace", namespace, "--name", name, "--step", "a"
        ).strip()
        for name in ("first", "second", "third")
    ]
    full_namespace = json.loads(htk.ok("processes", "get", ids[0], "--json"))["namespace"]
    listing = ["processes", "list", "--namespace", full_namespace, "--json"]

    oldest = json.loads(htk.ok(*listing, "--sort", "oldest"))
    assert [process["process_id"] for process in oldest["processes"]] == ids
    first_page = htk("processes", "list", "--namespace", full_namespace, "--limit", "2")
    assert first_page.returncode == 0
    token = re.search(r"--page-token (\S+)", first_page.stderr)
    assert token, first_page.stderr
    assert "processes 1-2 of 3" in first_page.stderr
    second_page = json.loads(htk.ok(*listing, "--limit", "2", "--page-token", token.group(1)))
    assert [process["process_id"] for process in second_page["processes"]] == [ids[0]]


def test_an_api_error_prints_the_servers_message_on_one_line_and_exits_2(htk: Cli) -> None:
    process_id = htk.create()
    out_of_range = htk(
        "processes", "update", process_id, "progress", "--step", "build", "--percent", "101"
    )
    assert (out_of_range.returncode, out_of_range.stdout) == (2, "")
    assert out_of_range.stderr == "htk: percent: must be between 0 and 100, got 101\n"

    missing = htk("processes", "get", str(uuid.uuid4()))
    assert missing.returncode == 2
    assert missing.stderr.startswith("htk: ") and "not found" in missing.stderr

    unknown = htk("processes", "list", HTK_TOKEN="htk_" + "x" * 36)
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1

    no_token = htk("processes", "list", HTK_TOKEN="")
    assert (no_token.returncode, no_token.stderr) == (
        2,
        "htk: no token: set HTK_TOKEN or pass --token\n",
    )


def test_a_read_only_token_is_refused(htk: Cli, org: Org) -> None:
    refused = htk(
        "processes",
        "create",
        "--namespace",
        "cli",
        "--name",
        "n",
        "--step",
        "a",
        "--token",
        org.reader,
    )
    assert refused.returncode == 2
    assert "processes:write" in refused.stderr


def test_an_unreachable_htk_names_the_url_it_tried(htk: Cli) -> None:
    with_option = htk("processes", "list", "--url", "http://127.0.0.1:9")
    assert with_option.returncode == 3
    assert "http://127.0.0.1:9" in with_option.stderr
    from_env = htk("processes", "list", HTK_URL="http://127.0.0.1:9")
    assert from_env.returncode == 3 and "http://127.0.0.1:9" in from_env.stderr


def test_bad_options_are_usage_errors_naming_them(htk: Cli) -> None:
    for args, named in [
        (["processes", "update", "p", "step_completed", "--data", "[1]"], "--data"),
        (["processes", "update", "p", "step_completed", "--data", "{"], "--data"),
        (["processes", "update", "p", "finished"], "TYPE"),
        (["processes", "create", "--namespace", "n", "--name", "n", "--step", ":x"], "--step"),
        (["processes", "list", "--sort", "sideways"], "--sort"),
    ]:
        result = htk(*args)
        assert result.returncode == 2, args
        assert named in result.stderr, result.stderr


def test_server_strings_cannot_drive_the_terminal(htk: Cli) -> None:
    hostile = "Deploy \x1b]0;pwned\x07\x1b[2J\u202etxt.exe\r\nFAKE LINE"
    process_id = htk.ok(
        "processes",
        "create",
        "--namespace",
        "cli",
        "--name",
        hostile,
        "--step",
        "build:\x1b[31mBuild",
    ).strip()
    htk.ok(
        "processes",
        "update",
        process_id,
        "step_started",
        "--step",
        "build",
        "--detail",
        "\x1b[5mblink",
    )
    for output in (
        htk.ok("processes", "get", process_id),
        htk.ok("processes", "list", "--search", "Deploy"),
    ):
        assert not {"\x1b", "\x07", "\r", "\u202e"} & set(output)
        assert "\\x1b]0;pwned\\x07" in output
        assert "FAKE LINE" not in output.replace("\\r\\nFAKE LINE", "")
    failure = htk("processes", "update", process_id, "step_started", "--step", "\x1b[2Jnope")
    assert failure.returncode == 2
    assert "\x1b" not in failure.stderr and failure.stderr.count("\n") == 1


def test_an_idempotency_key_makes_a_retry_harmless(htk: Cli) -> None:
    process_id = htk.create()
    update = ["processes", "update", process_id, "step_started", "--step", "build", "--json"]
    first = htk.ok(*update, "--idempotency-key", "retry-1")
    assert htk.ok(*update, "--idempotency-key", "retry-1") == first
    other = htk(
        "processes",
        "update",
        process_id,
        "step_started",
        "--step",
        "test",
        "--idempotency-key",
        "retry-1",
    )
    assert other.returncode == 2


def test_help_reads_like_a_manual_and_version_prints(htk: Cli) -> None:
    assert re.fullmatch(r"htk \d+\.\d+\.\d+\n", htk.ok("--version"))
    for command in ["list", "get", "create", "update", "events", "watch"]:
        page = htk.ok("processes", command, "--help")
        assert {"examples:", "environment:", "exit status:", "HTK_URL"} <= set(
            re.findall(r"examples:|environment:|exit status:|HTK_URL", page)
        ), command
    for command in ["list", "complete"]:
        assert "examples:" in htk.ok("tasks", command, "--help")
    assert "processes" in htk.ok("--help")


def test_token_list_has_a_header_row(stack: Stack, org: Org) -> None:
    listed = stack.htk("token", "list", "--org", org.org_id)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "STATE", "SCOPES", "NAME"]
    assert len(rows) == 2
