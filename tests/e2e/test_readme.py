"""The README's curl session works as pasted (against the test stack's port)."""

import json
import re
import subprocess
from typing import Any

from server.settings import CHECKOUT
from tests.e2e.conftest import Stack


def _readme_session() -> str:
    readme = (CHECKOUT / "README.md").read_text()
    match = re.search(r"<!-- readme-session -->\n```bash\n(.*?)```", readme, re.DOTALL)
    assert match, "the README lost its marked session"
    return match.group(1)


def _json_documents(output: str) -> list[dict[str, Any]]:
    """The JSON documents the curls printed back to back (a stream's `data: `
    framing taken off)."""
    output = re.sub(r'(?<!")data: (?=\{)', "", output)
    decoder, documents, position = json.JSONDecoder(), [], 0
    while position < len(output):
        document, position = decoder.raw_decode(output, position)
        documents.append(document)
        while position < len(output) and output[position].isspace():
            position += 1
    return documents


def test_the_readme_session_runs_as_pasted(stack: Stack) -> None:
    script = _readme_session().replace("localhost:8080", f"127.0.0.1:{stack.env['HTK_HTTP_PORT']}")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=CHECKOUT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    documents = _json_documents(result.stdout)
    assert [doc.get("update_type") for doc in documents] == [
        "step_started",
        "progress",
        "step_completed",
        "step_started",
        None,
        None,
        "completed",
        None,
        None,
        None,
    ]
    listed, process = documents[4], documents[5]
    history, *watched = documents[7:]
    assert [(event["seq"], event["type"]) for event in history["events"]] == [
        (4, "step_started"),
        (5, "completed"),
    ]
    assert [message["event"] for message in watched] == history["events"]
    assert process["process_id"] in [item["process_id"] for item in listed["processes"]]
    assert process["current_step"] == "test"
    assert process["timeline"][0]["data"] == {"image_tag": "v2.1.0-abc123"}
