"""BENCH_PROFILE=1: py-spy records one server worker during the first REST
round of the Get and the Update phases, into build/profiles/<phase>.svg (a
flame graph) and <phase>.txt (the same samples as collapsed stacks, to diff
a profile before a change with one after). The figures of a profiled run
carry py-spy's cost."""

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from server.settings import CHECKOUT
from tests.support.stack import Stack

PROFILES = CHECKOUT / "build" / "profiles"
FORMATS = {"svg": "flamegraph", "txt": "raw"}


def enabled() -> bool:
    return os.environ.get("BENCH_PROFILE", "") not in ("", "0")


@contextmanager
def profiled(stack: Stack, phase: str, wanted: bool) -> Iterator[None]:
    """Records the stack's first worker while the block runs, if `wanted`
    and BENCH_PROFILE is set."""
    if not (wanted and enabled()):
        yield
        return
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
            [py_spy, "record", "--pid", str(worker.pid), "--format", form,
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
