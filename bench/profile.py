"""py-spy records one server worker during an extra REST window of the Get
and the Update phases beside pgbench, into build/profiles/<phase>.svg (a
flame graph) and <phase>.txt (the same samples as collapsed stacks, to diff
a profile before a change with one after), and sorts the samples into the
layers of a call. The window is not one of the measured rounds, so no
figure carries py-spy's cost. BENCH_PROFILE=0 leaves it out."""

import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from server.settings import CHECKOUT
from tests.support.stack import Stack

PROFILES = CHECKOUT / "build" / "profiles"
FORMATS = {"svg": "flamegraph", "txt": "raw"}
SAMPLING = ("--rate", "250")


# A sample belongs to the layer of its innermost frame in htk's own code (a
# library's frames count for the htk code that called them): the first
# layer, in this order, with a file of that frame. SQLAlchemy runs its
# statements in a greenlet, whose stack holds no htk frame: those samples
# are storage's. The rest are grpc.aio's machinery and the event loop.
LAYERS = (
    ("REST reading", ("server/edge/rest_input.py", "server/transport/decoding.py")),
    (
        "guards",
        (
            "server/transport/interceptors.py",
            "server/transport/errors.py",
            "server/transport/tracing.py",
            "server/service/tokens.py",
            "server/service/call_deadline.py",
            "server/domain/tokens.py",
            "server/domain/token_cache.py",
            "server/metrics.py",
            "server/logs.py",
        ),
    ),
    ("message building", ("server/transport/messages.py",)),
    ("storage", ("server/storage/",)),
    ("service and domain", ("server/service/", "server/domain/")),
    ("servicer", ("server/transport/",)),
)
OUTSIDE = "grpc.aio and the event loop"
DRIVERS = ("sqlalchemy/", "psycopg/")
# py-spy counts the event loop waiting in epoll as busy, and cannot tell
# grpc's poller thread (C, with no Python frame of its own) waiting from
# working: samples whose innermost frame is one of these are left out, so
# the shares are of the worker's Python work.
IDLE = ("selectors.py", "threading.py")
# py-spy's frame: `function (file:line)`.
_FILE = re.compile(r"\(([^()]*?)(?::\d+)?\)$")


def enabled() -> bool:
    return os.environ.get("BENCH_PROFILE", "1") not in ("", "0")


def layer_of(stack: str) -> str | None:
    """The layer a collapsed stack (`outer;...;inner`) is sorted into, None
    for a sample left out (IDLE)."""
    files = [found.group(1) for frame in stack.split(";") if (found := _FILE.search(frame))]
    if files and files[-1].endswith(IDLE):
        return None
    for file in reversed(files):
        path = "/" + file
        for layer, prefixes in LAYERS:
            if any(f"/{prefix}" in path for prefix in prefixes):
                return layer
    if any(driver in file for file in files for driver in DRIVERS):
        return "storage"
    return OUTSIDE


def shares(collapsed: str) -> dict[str, float]:
    """Each layer's share of the busy samples in py-spy's raw output (a
    stack and its count a line), every layer listed; empty without samples."""
    counts: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        layer = layer_of(stack) if stack and count.isdigit() else None
        if layer is not None:
            counts[layer] += int(count)
    total = sum(counts.values())
    if not total:
        return {}
    return {layer: counts[layer] / total for layer in (*(name for name, _ in LAYERS), OUTSIDE)}


def recorded(phase: str) -> dict[str, float]:
    """The shares of the last profile of the phase, if one was recorded."""
    path = PROFILES / f"{phase}.txt"
    return shares(path.read_text()) if path.exists() else {}


@contextmanager
def profiled(stack: Stack, phase: str) -> Iterator[None]:
    """Records the stack's first worker while the block runs."""
    # The virtual environment's, when it runs without being activated.
    py_spy = shutil.which(
        "py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if py_spy is None:
        raise RuntimeError("BENCH_PROFILE needs py-spy: pip install -e '.[dev]'")
    PROFILES.mkdir(parents=True, exist_ok=True)
    worker = min(stack.workers().items())[1]
    recorders = [
        subprocess.Popen(  # noqa: S603
            [py_spy, "record", "--pid", str(worker.pid), "--format", form, *SAMPLING,
             "--output", str(PROFILES / f"{phase}.{suffix}")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for suffix, form in FORMATS.items()
    ]  # fmt: skip
    try:
        yield
    finally:
        for recorder in recorders:
            recorder.send_signal(signal.SIGINT)  # py-spy writes its file and ends
        for recorder in recorders:
            recorder.wait(timeout=60)
