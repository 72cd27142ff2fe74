"""The primary PostgreSQL lost under load, its synchronous standby promoted: the
four zeroes at a small scale (issue 27).

Two embedded PostgreSQL servers in synchronous streaming replication; an htk
stack of two workers whose DATABASE_URL lists both (libpq's multi-host form);
the load and checks of tests/chaos/failover_load.py (also the drill's,
`make drill`). Then the primary's machine dies (kill -9 of its postmaster and
every process it started), the test promotes the standby as an HA manager
would, and the load runs on.
"""

import time
from collections.abc import Callable
from pathlib import Path

from tests.chaos.failover_load import (
    Fault,
    Load,
    Writer,
    fail_over_under_load,
    refused_since,
    until,
)
from tests.chaos.replication import Pair, replicated_pair
from tests.support.stack import running_stack

LOAD = Load(
    pipelines=3,
    watchers_per_process=2,
    timeout_steps_seconds=(1, 3, 6),
    acknowledged_before=30,
    acknowledged_after=30,
)
# A safety limit, not a measurement.
RECOVERY_LIMIT_SECONDS = 60.0
ORG = "failover"


def test_a_lost_primary_loses_nothing_acknowledged_and_writes_resume(tmp_path: Path) -> None:
    with (
        replicated_pair(tmp_path / "postgres") as pair,
        running_stack(
            tmp_path / "stack", database_url=pair.database_url(), env={"HTK_WORKERS": "2"}
        ) as stack,
    ):
        # The startup line (logged once Envoy is ready, maybe after this
        # point) names both servers; the URL has no password to mask.
        until(lambda: f"database {pair.database_url()} (Ctrl-C" in stack.log, "the startup line")
        outcome = fail_over_under_load([stack], ORG, stack.token(ORG), LOAD, _promoting(pair))
    report = "\nfailover: " + outcome.summary()
    assert outcome.problems == [], report + "\n" + "\n".join(outcome.problems)
    assert outcome.writes_back_after < RECOVERY_LIMIT_SECONDS, report
    print(report)


def _promoting(pair: Pair) -> Callable[[list[Writer]], Fault]:
    def fault(writers: list[Writer]) -> Fault:
        pair.primary.lose()
        # Once every process of the primary is gone: a write sent after this
        # has no server to take it until the promotion.
        lost_at = time.monotonic()
        # Until a standby is promoted no server takes writes: every client sees
        # it fail (the delay an HA manager takes to decide, here a few refusals).
        until(
            lambda: refused_since(writers, lost_at) >= LOAD.pipelines,
            "clients to see the primary gone",
        )
        promoting_at = time.monotonic()
        pair.standby.promote()
        promoted_in = time.monotonic() - promoting_at
        return Fault(
            lost_at,
            no_primary_until=promoting_at,
            detail=f" (the test promoted the standby {promoting_at - lost_at:.2f} s after the"
            f" loss, in {promoted_in:.2f} s)",
        )

    return fault
