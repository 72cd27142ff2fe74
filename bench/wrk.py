"""REST load through Envoy with wrk: Lua scripts for the token, varying bodies and
the summary (p50/p95/p99 from wrk's own latency histogram)."""

import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.stack import run_client

RESULT_MARKER = "BENCH-RESULT "

# wrk calls done() once, after all threads finish. Latencies are in microseconds.
_DONE = """
function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '%s{"requests": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d,'
    .. ' "errors": %d}\\n',
    "BENCH-RESULT ", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    errors.connect + errors.read + errors.write + errors.status + errors.timeout))
end
"""


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid Lua string literal here


def script(token: str, *, get_ids: list[str] | None = None, updates: Any = None) -> str:
    """The Lua for one phase: a GET of the command line's URL, a Get cycling
    over `get_ids`, or progress updates spread over `updates` (id, step) pairs."""
    lines = [f'wrk.headers["Authorization"] = {_lua_string("Bearer " + token)}']
    if get_ids:
        ids = ", ".join(_lua_string(pid) for pid in get_ids)
        lines.append(
            f"""
local ids = {{{ids}}}
local next_id = 0
function request()
  next_id = next_id % #ids + 1
  return wrk.format("GET", "/api/v1/processes/" .. ids[next_id])
end
"""
        )
    if updates:
        pairs = ", ".join(f"{{{_lua_string(pid)}, {_lua_string(step)}}}" for pid, step in updates)
        lines.append(
            f"""
wrk.headers["Content-Type"] = "application/json"
local targets = {{{pairs}}}
local sent = 0
function request()
  sent = sent + 1
  local target = targets[math.random(#targets)]
  local body = string.format(
    '{{"type": "progress", "step": "%s", "percent": %d, "message": "bench %d"}}',
    target[2], math.random(0, 100), sent)
  return wrk.format("POST", "/api/v1/processes/" .. target[1] .. "/update", nil, body)
end
"""
        )
    lines.append(_DONE)
    return "\n".join(lines)


def ensure_wrk(log: Any) -> str:
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk is missing; installing it: apt-get install -y wrk")
    subprocess.run(
        ["apt-get", "install", "-y", "wrk"],  # noqa: S607
        check=False,
        capture_output=True,
    )
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is required: apt-get install -y wrk (Debian/Ubuntu)")
    return found


def run(
    wrk: str,
    lua: Path,
    url: str,
    concurrency: int,
    seconds: float,
) -> dict[str, Any]:
    """One wrk run; also its CPU time."""
    command = [
        wrk,
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, math.ceil(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(lua),
        url,
    ]
    completed = run_client(command)
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARKER) :])
            result["client_cpu_seconds"] = completed.cpu_seconds
            return result
    raise RuntimeError(f"wrk printed no result: {completed.stdout} {completed.stderr}")
