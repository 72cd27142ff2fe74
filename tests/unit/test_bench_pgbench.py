"""The benchmark's pgbench reference: reading pgbench's output, its
per-transaction log and its scripts, and how the report sets rounds beside it."""

import dataclasses

import pytest

from bench import pgbench, report

# pgbench 18's standard output after a run (the embedded PostgreSQL's).
OUTPUT = """\
pgbench (18.6)
transaction type: bench/update.sql
scaling factor: 1
query mode: prepared
number of clients: 16
number of threads: 2
maximum number of tries: 1
duration: 5 s
number of transactions actually processed: 7421
number of failed transactions: 3 (0.040%)
latency average = 10.781 ms
initial connection time = 12.587 ms
tps = 1484.062091 (without initial connection time)
"""


def test_the_summary_gives_transactions_failures_tps_and_latency() -> None:
    assert pgbench.parse_summary(OUTPUT) == pgbench.Summary(
        transactions=7421, failed=3, tps=1484.062091, latency_ms=10.781
    )


def test_a_summary_without_tps_is_refused_by_name() -> None:
    cut = OUTPUT.replace("tps = 1484.062091 (without initial connection time)\n", "")
    with pytest.raises(ValueError, match="pgbench printed no tps"):
        pgbench.parse_summary(cut)


def test_the_log_gives_each_completed_transactions_latency_in_seconds() -> None:
    log = "0 1 15893 0 1795947754 299467\n1 7 failed 0 1795947754 305034\n0 2 5553 0 17959 30\n"
    assert pgbench.parse_log(log) == [0.015893, 0.005553]


def test_a_scripts_statements_leave_out_comments_and_meta_commands() -> None:
    script = """\
-- a comment; with a semicolon
\\set n random(1, :ids)
SELECT a -- trailing
FROM t WHERE n = :n
\\gset
BEGIN;
UPDATE t SET a = 1;
"""
    assert pgbench.statements(script) == [
        "SELECT a FROM t WHERE n = :n",
        "BEGIN",
        "UPDATE t SET a = 1",
    ]


def test_the_get_reference_reads_the_token_the_process_and_its_steps() -> None:
    get = pgbench.statements(pgbench.GET_SCRIPT.read_text())
    assert [statement.split(" FROM ")[1].split()[0] for statement in get] == [
        "api_tokens,",
        "processes",
        "steps",
    ]


def test_the_update_reference_is_the_token_then_one_read_committed_transaction() -> None:
    """Then the notification, after the COMMIT, as the server sends it."""
    update = pgbench.statements(pgbench.UPDATE_SCRIPT.read_text())
    assert [" ".join(statement.split()[:3]) for statement in update] == [
        "SELECT api_tokens.org_id, api_tokens.scopes,",
        "BEGIN ISOLATION LEVEL",
        "SELECT status, update_count",
        "SELECT position, key,",
        "UPDATE processes SET",
        "UPDATE steps SET",
        "INSERT INTO process_events",
        "COMMIT",
        "SELECT pg_notify('htk_process_events', json_build_array(:org_id::text,",
    ]
    assert update[2].endswith("FOR UPDATE")


def _measured(transport: str, rate: float) -> report.Measurement:
    return report.Measurement(
        name=pgbench.UPDATE, transport=transport, workers=2, concurrency=16, count=int(rate),
        seconds=1.0, p50_ms=1.0, p95_ms=2.0, p99_ms=3.0, errors=0, error_sample="",
        client_cores=0.1, server_cores=None, envoy_cores=None, postgres_cores=None,
        server_rss_mb=None, goal="",
    )  # fmt: skip


def _rounds(*rates: tuple[float, float, float]) -> list[report.Measurement]:
    """Rounds of (pgbench, gRPC, REST) rates, in the order the bench takes them."""
    return [
        _measured(transport, rate)
        for round_ in rates
        for transport, rate in zip(
            (pgbench.TRANSPORT, report.GRPC, report.REST), round_, strict=True
        )
    ]


def test_rounds_are_set_beside_pgbench_and_ratios_taken_round_by_round() -> None:
    results = _rounds((1000, 400, 380), (500, 300, 240), (1000, 450, 400))
    (compared,) = report.Beside.all(results)
    assert [m.rate for m in compared.pgbench] == [1000, 500, 1000]
    assert report._ratios(compared.rest, compared.pgbench) == [0.38, 0.48, 0.4]
    assert report._median_of([0.38, 0.48, 0.4]) == "0.40x (0.38, 0.48, 0.40)"


def test_a_phase_measured_in_rounds_is_found_as_its_median() -> None:
    results = _rounds((1000, 400, 380), (500, 300, 240), (1000, 450, 400))
    found = report._find(results, pgbench.UPDATE, report.REST, 2, 16)
    assert found is not None and found.rate == 380


def test_the_goals_compare_rest_with_pgbench_by_the_median_round() -> None:
    results = _rounds((1000, 400, 380), (500, 300, 240), (1000, 450, 400))
    (row,) = [line for line in report.beside_pgbench(results) if line.startswith("| Update")]
    assert "| 0.40x (0.38, 0.48, 0.40) | >= 0.50x | **miss** |" in row
    assert "| 1,000 (1,000, 500, 1,000) |" in row


def test_each_layers_cpu_per_call_is_its_cpu_over_the_calls() -> None:
    get = dataclasses.replace(
        _measured(report.REST, 1000), name=pgbench.GET,
        server_cores=0.8, envoy_cores=0.2, postgres_cores=0.1, client_cores=0.05,
    )  # fmt: skip
    without_postgres = dataclasses.replace(get, transport=report.GRPC, postgres_cores=None)
    lines = report.cpu_per_layer([get, without_postgres], workers=2)
    assert "| Get (10 steps) | REST via Envoy | 16 | 1,000 | 800 | 200 | 100 | 50 |" in lines
    assert "| Get (10 steps) | gRPC direct | 16 | 1,000 | 800 | 200 | n/a | 50 |" in lines


def test_the_notification_cost_is_updates_with_it_over_without_it_round_by_round() -> None:
    results = [
        dataclasses.replace(
            _measured(pgbench.TRANSPORT, rate), name=f"{pgbench.UPDATE}, {state}", concurrency=64
        )
        for on, off in ((2000, 2400), (2100, 2000), (1800, 2000))
        for state, rate in ((report.NOTIFY_ON, on), (report.NOTIFY_OFF, off))
    ]
    (row,) = report.notify_cost(results)
    assert "| 0.90x (0.83, 1.05, 0.90) | pass |" in row
    assert "2,000/2,400, 2,100/2,000, 1,800/2,000" in row
    # Not beside an htk phase: the pgbench table leaves them out.
    assert report.Beside.all(results) == []


def test_the_update_reference_notifies_after_its_commit_unless_told_not_to() -> None:
    script = pgbench.UPDATE_SCRIPT.read_text()
    *_, commit, notifying = pgbench.statements(script)
    assert "pg_notify" in notifying and notifying.endswith("WHERE :notify = 1")
    assert commit == "COMMIT"
    # In the COMMIT's round trip, as the server sends it.
    assert "\\startpipeline\nCOMMIT;\nSELECT pg_notify" in script
    assert script.rstrip().endswith("\\endpipeline")
    assert pgbench.variables("t", 1, 1)["notify"] == "1"
    assert pgbench.variables("t", 1, 1, notify=False)["notify"] == "0"


def test_phases_without_a_reference_of_their_own_stay_out_of_the_pgbench_table() -> None:
    # As the synchronous standby's phase: pgbench, gRPC and REST rounds alike.
    results = [
        dataclasses.replace(m, name=f"{pgbench.UPDATE}, synchronous standby")
        for m in _rounds((1000, 400, 380))
    ]
    assert report.Beside.all(results) == []
    assert not [line for line in report.beside_pgbench(results) if line.startswith("| Update")]
