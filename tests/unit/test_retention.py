"""Retention's rules and the archive's files: the cutoff, which processes
qualify, an archive line's shape, and the read-back rule (each process once,
its last whole line) over files a crash cut short."""

import gzip
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from server.domain.declared import ProcessStatus
from server.domain.retention import (
    ArchivedProcess,
    archive_file_name,
    archive_line,
    check_interval,
    cutoff,
    expired,
    read_back,
    rest_after,
)
from server.settings import Settings, SettingsError
from server.storage.archive import append, read_lines

NOW = datetime(2026, 12, 6, 23, 30, tzinfo=UTC)


def test_the_cutoff_is_the_retention_before_now_and_zero_keeps_everything() -> None:
    assert cutoff(NOW, 90) == NOW - timedelta(days=90)
    assert cutoff(NOW, 0.00002) == NOW - timedelta(seconds=1.728)
    assert cutoff(NOW, 0) is None


@pytest.mark.parametrize("status", [s for s in ProcessStatus if s is not ProcessStatus.RUNNING])
def test_a_finished_process_qualifies_once_it_finished_before_the_cutoff(
    status: ProcessStatus,
) -> None:
    before = NOW - timedelta(days=1)
    assert expired(status, before - timedelta(microseconds=1), before)
    assert not expired(status, before, before)
    assert not expired(status, before - timedelta(days=999), None)
    assert not expired(status, None, before)


def test_a_running_process_never_qualifies_however_old() -> None:
    ancient = datetime(1970, 1, 1, tzinfo=UTC)
    assert not expired(ProcessStatus.RUNNING, ancient, NOW)
    assert not expired(ProcessStatus.RUNNING, None, NOW)


def test_files_are_named_by_the_utc_day_of_archiving() -> None:
    east = timezone(timedelta(hours=2))
    assert archive_file_name(datetime(2026, 12, 7, 1, 0, tzinfo=east)) == "2026-12-06.jsonl.gz"
    assert archive_file_name(NOW) == "2026-12-06.jsonl.gz"


def archived(process_id: str, name: str = "Deploy") -> ArchivedProcess:
    return ArchivedProcess(
        process={"process_id": process_id, "name": name, "summary": "line\nbreak ✓"},
        events=[{"seq": 1, "type": "completed"}],
    )


def test_a_line_is_one_json_object_with_the_process_its_events_and_when() -> None:
    line = archive_line(archived("p1"), NOW)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {
        "process": {"process_id": "p1", "name": "Deploy", "summary": "line\nbreak ✓"},
        "events": [{"seq": 1, "type": "completed"}],
        "archived_at": "2026-12-06T23:30:00Z",
    }


def test_archived_at_reads_as_the_apis_timestamps() -> None:
    for moment, text in [
        (NOW, "2026-12-06T23:30:00Z"),
        (NOW + timedelta(milliseconds=976), "2026-12-06T23:30:00.976Z"),
        (NOW + timedelta(microseconds=5), "2026-12-06T23:30:00.000005Z"),
    ]:
        assert json.loads(archive_line(archived("p1"), moment))["archived_at"] == text


def test_reading_back_keeps_each_process_once_its_last_whole_line() -> None:
    first = archive_line(archived("p1", "old copy"), NOW)
    other = archive_line(archived("p2"), NOW)
    again = archive_line(archived("p1", "new copy"), NOW + timedelta(seconds=5))
    cut = archive_line(archived("p3"), NOW)[:-10]
    records = read_back([first, other, b"not json\n", b"[1, 2]\n", again, cut])
    assert [(r["process"]["process_id"], r["process"]["name"]) for r in records] == [
        ("p1", "new copy"),
        ("p2", "Deploy"),
    ]


def test_appends_are_gzip_members_read_back_in_order(tmp_path: Path) -> None:
    directory = tmp_path / "archive"
    path = append(directory, [archive_line(archived("p1"), NOW)], NOW)
    assert append(directory, [archive_line(archived("p2"), NOW)], NOW) == path
    assert path == directory / "2026-12-06.jsonl.gz"
    # Any gzip reader reads the file whole.
    assert gzip.decompress(path.read_bytes()).count(b"\n") == 2
    ids = [r["process"]["process_id"] for r in read_back(read_lines(path))]
    assert ids == ["p1", "p2"]


def test_a_member_cut_short_by_a_crash_is_skipped_and_reading_resumes_after_it(
    tmp_path: Path,
) -> None:
    path = append(tmp_path, [archive_line(archived("p1"), NOW)], NOW)
    # A crash mid-write: part of a member. Its batch never committed, so its
    # processes are written again by the next pass, after it.
    lines = [archive_line(archived(f"lost-{n}"), NOW) for n in range(50)]
    member = gzip.compress(b"".join(lines))
    with path.open("ab") as file:
        file.write(member[: len(member) // 2])
    append(tmp_path, [archive_line(archived("p2"), NOW)], NOW)
    # And a torn tail after it.
    with path.open("ab") as file:
        file.write(member[:20])
    ids = [r["process"]["process_id"] for r in read_back(read_lines(path))]
    assert ids == ["p1", "p2"]


def test_large_batches_read_back_whole(tmp_path: Path) -> None:
    # More than one read chunk per member, compressed.
    lines = [archive_line(archived(f"p{n}", "x" * (n % 97)), NOW) for n in range(5000)]
    path = append(tmp_path, lines[:2500], NOW)
    append(tmp_path, lines[2500:], NOW)
    assert len(read_back(read_lines(path))) == 5000


def test_a_pass_rests_so_that_it_works_its_duty_cycle_of_the_time() -> None:
    # 5%: a batch of 70 ms, then 1.33 s of rest; twice as slow a batch, twice the rest.
    assert rest_after(0.07, 0.05) == pytest.approx(1.33)
    assert rest_after(0.14, 0.05) == pytest.approx(2.66)
    assert rest_after(0.07, 0.5) == pytest.approx(0.07)
    assert rest_after(0.07, 1.0) == 0.0


def test_a_short_retention_is_checked_often_and_a_long_one_once_a_minute() -> None:
    assert check_interval(90, None) == 60
    assert check_interval(0.001, None) == pytest.approx(8.64)  # 86.4 s of retention
    assert check_interval(0.00002, None) == 1  # 1.7 s: not more often than a second
    assert check_interval(0, None) == 60  # nothing ever expires
    assert check_interval(90, 5) == 5


def test_retention_settings_take_fractions_and_refuse_negative_days() -> None:
    settings = Settings.from_env({"HTK_RETENTION_DAYS": "0.00002"})
    assert settings.retention_days == 0.00002
    assert Settings.from_env({}).retention_days == 90
    assert Settings.from_env({}).archive_dir is None
    with pytest.raises(SettingsError, match="HTK_RETENTION_DAYS must be a number, at least 0"):
        Settings.from_env({"HTK_RETENTION_DAYS": "-1"})
    assert Settings.from_env({}).retention_duty_cycle == 0.02
    assert Settings.from_env({}).retention_interval_seconds is None
    for outside in ("0", "1.5"):
        with pytest.raises(SettingsError, match="HTK_RETENTION_DUTY_CYCLE"):
            Settings.from_env({"HTK_RETENTION_DUTY_CYCLE": outside})
    with pytest.raises(SettingsError, match="HTK_RETENTION_BATCH_SIZE"):
        Settings.from_env({"HTK_RETENTION_BATCH_SIZE": "0"})
