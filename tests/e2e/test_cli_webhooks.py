"""`htk webhooks ...` against a stack whose webhooks may call 127.0.0.1: a
person creates a webhook, sees a delivery arrive in the log, redelivers it,
and turns the webhook off; `htk token create` makes the token it needs."""

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stack import HTK, Stack, running_stack
from tests.support.webhooks import LOCAL_RECEIVERS, Receiver, receiver

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def hooks_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(Path(tmp_path_factory.mktemp("cli-hooks")), env=LOCAL_RECEIVERS) as running:
        yield running


@pytest.fixture
def inbox() -> Iterator[Receiver]:
    with receiver() as running:
        yield running


def test_a_person_manages_webhooks_with_htk(hooks_stack: Stack, inbox: Receiver) -> None:
    made = hooks_stack.htk(
        "token",
        "create",
        "--org",
        "acme",
        "--scopes",
        "webhooks:manage,processes:write",
        "--name",
        "ops",
    )
    assert made.returncode == 0, made.stderr
    env = {
        "PATH": hooks_stack.env["PATH"],
        "HTK_URL": hooks_stack.http_url,
        "HTK_TOKEN": made.stdout.strip(),
    }

    def htk(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([HTK, *args], env=env, capture_output=True, text=True, timeout=60)

    created = htk(
        "webhooks",
        "create",
        inbox.url("cli"),
        "--event",
        "process.created",
        "--description",
        "ops",
    )
    assert created.returncode == 0, created.stderr
    webhook_id = created.stdout.strip()
    assert UUID.fullmatch(webhook_id)
    secret = re.search(r"whsec_\S+", created.stderr)
    assert secret is not None
    inbox.expect("cli", secret.group())
    assert webhook_id in htk("webhooks", "list").stdout
    shown = json.loads(htk("webhooks", "get", webhook_id, "--json").stdout)
    assert "secret" not in shown and shown["events"] == ["process.created"]

    process = htk("processes", "create", "--namespace", "cli", "--name", "v1", "--step", "build")
    assert process.returncode == 0, process.stderr
    (arrival,) = inbox.wait_for(lambda got: len(got) == 1, "cli")
    assert arrival.verified
    log = htk("webhooks", "deliveries", webhook_id)
    assert arrival.webhook_id in log.stdout and "process.created" in log.stdout
    redelivered = htk("webhooks", "redeliver", webhook_id, arrival.webhook_id)
    assert redelivered.returncode == 0, redelivered.stderr
    _, again = inbox.wait_for(lambda got: len(got) == 2, "cli")
    assert again.webhook_id == arrival.webhook_id
    assert htk("webhooks", "enable", webhook_id).returncode == 0
    assert htk("webhooks", "delete", webhook_id).returncode == 0
    missing = htk("webhooks", "get", webhook_id)
    assert missing.returncode == 2 and "not found" in missing.stderr
    refused = htk("webhooks", "create", "http://169.254.169.254/", "--token", "htk_x")
    assert refused.returncode == 2
