"""The workers' metrics in prometheus-client's multiprocess mode: each process
writes files of its own, a forked child too, though the process id is not
asked of the system at every value written (server/metrics.py)."""

import subprocess
import sys
from pathlib import Path

from server.metrics import DIRECTORY_VARIABLE

# Counts a hit in a process and twice in a child it forks, then reads the
# folder as a scrape does. Run apart: the mode is chosen when prometheus-client
# is imported, which this test process did without the variable.
_SCRIPT = """
import os
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from server import metrics

metrics.TOKEN_CACHE_HIT.inc()
child = os.fork()
if child == 0:
    metrics.TOKEN_CACHE_HIT.inc()
    metrics.TOKEN_CACHE_HIT.inc()
    os._exit(0)
os.waitpid(child, 0)
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
print(os.getpid(), child)
print(generate_latest(registry).decode())
"""


def test_a_forked_child_writes_its_own_files_and_both_count(tmp_path: Path) -> None:
    ran = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        env={DIRECTORY_VARIABLE: str(tmp_path), "PYTHONPATH": ":".join(sys.path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    ids, _, page = ran.stdout.partition("\n")
    parent, child = ids.split()
    assert sorted(path.name for path in tmp_path.glob("counter_*.db")) == sorted(
        [f"counter_{parent}.db", f"counter_{child}.db"]
    )
    assert 'htk_token_cache_requests_total{result="hit"} 3.0' in page
