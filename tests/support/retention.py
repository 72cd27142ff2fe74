"""What the retention tests share: processes made over REST, and the archive
as `htk archive read` prints it."""

from pathlib import Path
from typing import Any

import httpx

from tests.support.orgs import Org
from tests.support.stack import Stack, htk


def create(http: httpx.Client, org: Org, name: str) -> str:
    created = http.post(
        "/api/v1/processes",
        headers=org.auth(),
        json={
            "namespace": "retained",
            "name": name,
            "labels": {"env": "prod"},
            "step_defs": [
                {"key": "build", "label": "Build"},
                {"key": "review", "label": "Review", "human": True},
            ],
        },
    )
    assert created.status_code == 200, created.text
    process_id: str = created.json()["process_id"]
    return process_id


def send(http: httpx.Client, org: Org, process_id: str, **update: Any) -> None:
    sent = http.post(f"/api/v1/processes/{process_id}/update", headers=org.auth(), json=update)
    assert sent.status_code == 200, sent.text


def archive_files(stack: Stack) -> list[str]:
    return [str(p) for p in sorted(Path(stack.env["HTK_ARCHIVE_DIR"]).glob("*.jsonl.gz"))]


def archive_read(stack: Stack) -> list[str]:
    """`htk archive read` of every archive file: the lines it prints."""
    lines = []
    for path in archive_files(stack):
        done = htk(stack.env, "archive", "read", path)
        assert done.returncode == 0, done.stderr
        lines += done.stdout.splitlines()
    return lines
