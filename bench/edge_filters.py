"""Envoy's CPU per REST call, and each HTTP filter's share of it.

`python -m bench.edge_filters [variant ...]` starts one stack (its workers
and database), creates a 10-step process, and runs Envoy by hand beside it
on copies of the stack's rendered config, each with one filter or feature
cut out. Per-call CPU moves by 10-20% with whatever else the machine runs,
more than most filters cost, so each copy (B) is measured at the same time
as the config as it is (A): wrk drives Get and Update at concurrency 16
against both at once, and each Envoy's CPU (utime + stime) over the run is
divided by its calls. B - A is the share of what B lacks.

`EDGE_BASELINE=<rendered config>` makes A that config instead (another
commit's, rendered with `render_envoy_config`), to compare two commits.
`EDGE_SECONDS` (8) and `EDGE_ROUNDS` (1) set the length and the repeats.
"""

import concurrent.futures
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml  # type: ignore[import-untyped]

from server.edge.envoy import envoy_command
from tests.support.stack import free_port, running_stack

SECONDS = int(os.environ.get("EDGE_SECONDS", "8"))
ROUNDS = int(os.environ.get("EDGE_ROUNDS", "1"))
CONCURRENCY = 16

Config = dict[str, Any]


def _manager(config: Config) -> Config:
    listener = config["static_resources"]["listeners"][0]
    manager: Config = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return manager


def _routes(config: Config) -> list[Config]:
    routes: list[Config] = _manager(config)["route_config"]["virtual_hosts"][0]["routes"]
    return routes


def _without_filters(*names: str) -> Callable[[Config], None]:
    def cut(config: Config) -> None:
        manager = _manager(config)
        manager["http_filters"] = [f for f in manager["http_filters"] if f["name"] not in names]
        for route in _routes(config):
            per_filter = route.get("typed_per_filter_config", {})
            for name in names:
                per_filter.pop(name, None)

    return cut


def _without_keys(*keys: str) -> Callable[[Config], None]:
    def cut(config: Config) -> None:
        for key in keys:
            _manager(config).pop(key, None)

    return cut


def _without_response_headers(config: Config) -> None:
    _manager(config)["route_config"].pop("response_headers_to_add", None)


def _without_health_checks(config: Config) -> None:
    for cluster in config["static_resources"]["clusters"]:
        cluster.pop("health_checks", None)


def _transcoder_alone(config: Config) -> None:
    kept = ("envoy.filters.http.grpc_json_transcoder", "envoy.filters.http.router")
    manager = _manager(config)
    manager["http_filters"] = [f for f in manager["http_filters"] if f["name"] in kept]
    for key in ("access_log", "local_reply_config", "early_header_mutation_extensions"):
        manager.pop(key, None)
    _without_response_headers(config)
    for route in _routes(config):
        route.pop("typed_per_filter_config", None)


VARIANTS: dict[str, Callable[[Config], None]] = {
    "as it is": lambda config: None,
    "no rest_filter.lua": _without_filters("envoy.filters.http.lua"),
    "no sse_event_ids.lua": _without_filters("htk.sse_event_ids"),
    "no local_ratelimit": _without_filters("envoy.filters.http.local_ratelimit"),
    "no access log": _without_keys("access_log"),
    "no early header mutation": _without_keys("early_header_mutation_extensions"),
    "no header_mutation": _without_filters("envoy.filters.http.header_mutation"),
    "no header_to_metadata (both)": _without_filters(
        "envoy.filters.http.header_to_metadata", "htk.rest_error_status"
    ),
    "no compressor": _without_filters("envoy.filters.http.compressor"),
    "no grpc_web": _without_filters("envoy.filters.http.grpc_web"),
    "no response_headers_to_add": _without_response_headers,
    "no health checks": _without_health_checks,
    "transcoder + router alone": _transcoder_alone,
}

_GET = """
wrk.headers["Authorization"] = "Bearer {token}"
function request() return wrk.format("GET", "/api/v1/processes/{process_id}") end
"""
_UPDATE = """
wrk.headers["Authorization"] = "Bearer {token}"
wrk.headers["Content-Type"] = "application/json"
local sent = 0
function request()
  sent = sent + 1
  local body = string.format(
    '{{"type": "progress", "step": "s3", "percent": %d, "message": "bench %d"}}', sent % 101, sent)
  return wrk.format("POST", "/api/v1/processes/{process_id}/update", nil, body)
end
"""
_DONE = """
function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format("RESULT %d %d\\n", summary.requests,
    errors.status + errors.connect + errors.read + errors.write + errors.timeout))
end
"""


class Envoy:
    """Envoy run by hand on a config, on ports of its own."""

    def __init__(self, config: Config, scratch: Path, name: str) -> None:
        self.port, admin = free_port(), free_port()
        config = copy.deepcopy(config)
        config["admin"]["address"]["socket_address"]["port_value"] = admin
        listener = config["static_resources"]["listeners"][0]
        listener["address"]["socket_address"]["port_value"] = self.port
        path = scratch / f"{name.replace(' ', '_')}.json"
        path.write_text(json.dumps(config))
        self.log = path.with_suffix(".log")
        with self.log.open("w") as log:
            self.process = subprocess.Popen(  # noqa: S603
                envoy_command(path), stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_until_routing(admin, config)
        children = psutil.Process(self.process.pid).children(recursive=True)
        self.pids = [self.process.pid, *(child.pid for child in children)]

    def _wait_until_routing(self, admin: int, config: Config) -> None:
        checked = "health_checks" in config["static_resources"]["clusters"][0]
        deadline = time.monotonic() + 60
        while True:
            try:
                clusters = httpx.get(f"http://127.0.0.1:{admin}/clusters", timeout=5).text
                if "grpc_server::" in clusters and (
                    not checked or "health_flags::healthy" in clusters
                ):
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(self.log.read_text())
            time.sleep(0.2)

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids:
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _wrk(port: int, script: Path, seconds: int) -> tuple[int, int]:
    """(calls, errors) of one wrk run."""
    url = f"http://127.0.0.1:{port}/"
    output = subprocess.run(  # noqa: S603
        ["wrk", "-t1", f"-c{CONCURRENCY}", f"-d{seconds}s", "-s", str(script), url],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    _, calls, errors = line.split()
    return int(calls), int(errors)


def measure_pair(a: Envoy, b: Envoy, script: Path) -> list[tuple[float, int, int]]:
    """(µs of Envoy CPU per call, calls, errors) of A and of B, loaded at once."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda envoy: _wrk(envoy.port, script, 2), (a, b)))  # warm-up
        before = [a.cpu_seconds(), b.cpu_seconds()]
        runs = list(pool.map(lambda envoy: _wrk(envoy.port, script, SECONDS), (a, b)))
        after = [a.cpu_seconds(), b.cpu_seconds()]
    return [
        ((after[i] - before[i]) / max(calls, 1) * 1e6, calls, errors)
        for i, (calls, errors) in enumerate(runs)
    ]


def _scripts(http: httpx.Client, token: str, scratch: Path) -> dict[str, Path]:
    auth = {"Authorization": f"Bearer {token}"}
    created = http.post(
        "/api/v1/processes",
        headers=auth,
        json={
            "namespace": "bench",
            "name": "edge",
            "labels": {"env": "prod", "team": "edge"},
            "step_defs": [{"key": f"s{i}", "label": f"Step {i}"} for i in range(10)],
        },
    )
    created.raise_for_status()
    process_id = created.json()["process_id"]
    started = http.post(
        f"/api/v1/processes/{process_id}/update",
        headers=auth,
        json={"type": "step_started", "step": "s3"},
    )
    started.raise_for_status()
    scripts = {}
    for call, template in (("Get", _GET), ("Update", _UPDATE)):
        scripts[call] = scratch / f"{call}.lua"
        scripts[call].write_text(template.format(token=token, process_id=process_id) + _DONE)
    return scripts


def main(argv: list[str]) -> int:
    unknown = [name for name in argv if name not in VARIANTS]
    if unknown:
        print(f"unknown variants {unknown}; known: {list(VARIANTS)}", file=sys.stderr)
        return 2
    variants = {name: VARIANTS[name] for name in argv or VARIANTS}
    scratch = Path(tempfile.mkdtemp(prefix="edge-filters-"))
    settings = {"HTK_WORKERS": "2", "HTK_LOG_LEVEL": "WARNING"}
    with running_stack(scratch / "stack", env=settings) as stack:
        org = stack.new_org("edge")
        with httpx.Client(base_url=stack.http_url, timeout=30) as http:
            scripts = _scripts(http, org.writer, scratch)
        config: Config = yaml.safe_load(next(stack.data_dir.glob("envoy-*.yaml")).read_text())
        baseline = config
        if path := os.environ.get("EDGE_BASELINE"):
            baseline = yaml.safe_load(Path(path).read_text())
            # Its workers are this stack's.
            baseline["static_resources"]["clusters"] = config["static_resources"]["clusters"]
        print(
            f"{'B (A: the baseline, loaded at the same time)':45} {'Get A':>6} {'Get B':>6}"
            f" {'B-A':>5} {'Upd A':>6} {'Upd B':>6} {'B-A':>5}  µs of Envoy CPU per call"
            " (calls/errors A, B)",
            flush=True,
        )
        a = Envoy(baseline, scratch, "baseline")
        try:
            for _ in range(ROUNDS):
                for name, cut in variants.items():
                    varied = copy.deepcopy(config)
                    cut(varied)
                    b = Envoy(varied, scratch, name)
                    try:
                        get = measure_pair(a, b, scripts["Get"])
                        update = measure_pair(a, b, scripts["Update"])
                    finally:
                        b.stop()
                    print(
                        f"{name:45} {get[0][0]:6.0f} {get[1][0]:6.0f} {get[1][0] - get[0][0]:5.0f}"
                        f" {update[0][0]:6.0f} {update[1][0]:6.0f}"
                        f" {update[1][0] - update[0][0]:5.0f}"
                        f"  (Get {get[0][1]}/{get[0][2]}, {get[1][1]}/{get[1][2]};"
                        f" Update {update[0][1]}/{update[0][2]}, {update[1][1]}/{update[1][2]})",
                        flush=True,
                    )
        finally:
            a.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
