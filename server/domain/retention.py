"""Retention: which finished processes are old enough to delete, and the
archive lines they are kept in once deleted.

The service hands in the time; storage runs the query that `expired` states;
transport renders the API's JSON a line carries, so that an archived process
reads exactly as GetProcess and ListProcessEvents showed it.
"""

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from server.domain.declared import ProcessStatus

# A running process is never deleted, however old: someone may still finish it.
FINISHED = (ProcessStatus.COMPLETED, ProcessStatus.FAILED, ProcessStatus.CANCELLED)

ARCHIVE_SUFFIX = ".jsonl.gz"

JsonObject = dict[str, Any]


def cutoff(now: datetime, days: float) -> datetime | None:
    """Processes that finished before this are deleted; None (`days` 0) keeps all."""
    if days <= 0:
        return None
    return now - timedelta(days=days)


def expired(status: ProcessStatus, finished_at: datetime | None, before: datetime | None) -> bool:
    """Whether retention deletes a process in this state at the cutoff `before`."""
    return (
        before is not None
        and status in FINISHED
        and finished_at is not None
        and finished_at < before
    )


# How often to look for expired processes, unless configured.
CHECK_SECONDS_LEAST, CHECK_SECONDS_MOST = 1.0, 60.0


def check_interval(days: float, configured: float | None) -> float:
    """How often each worker looks for expired processes: as configured, or
    a tenth of the retention within bounds, so that a short retention (a
    day's, or a test's few seconds) deletes on time, and a long one costs a
    query a minute. Nothing expires with a retention of 0."""
    if configured is not None:
        return configured
    if days <= 0:
        return CHECK_SECONDS_MOST
    tenth = timedelta(days=days).total_seconds() / 10
    return min(CHECK_SECONDS_MOST, max(CHECK_SECONDS_LEAST, tenth))


def rest_after(worked_seconds: float, duty_cycle: float) -> float:
    """How long a pass rests after a batch that took `worked_seconds`, so that
    it works `duty_cycle` of the time. The rest is in proportion to the work,
    not a constant: on a busy machine batches take longer and the pass backs
    off by itself, and the calls see a batch in at most about that share of
    their time, which keeps it out of their p95."""
    return worked_seconds * (1.0 / duty_cycle - 1.0)


def archive_file_name(archived_at: datetime) -> str:
    """One file per UTC day of archiving, so that old days can be moved or dropped whole."""
    return f"{archived_at.astimezone(UTC):%Y-%m-%d}{ARCHIVE_SUFFIX}"


@dataclass(frozen=True)
class ArchivedProcess:
    """A deleted process as the API showed it: GetProcess's response and every
    event of ListProcessEvents, in seq order, each in the API's JSON."""

    process: Mapping[str, Any]
    events: Sequence[Mapping[str, Any]]


def archive_line(archived: ArchivedProcess, archived_at: datetime) -> bytes:
    """The process as one line of an archive file, newline included: a line
    cut short by a crash has none, and is not read back."""
    record = {
        "process": archived.process,
        "events": archived.events,
        "archived_at": _rfc3339(archived_at),
    }
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    return text.encode() + b"\n"


def _rfc3339(moment: datetime) -> str:
    """A time as the API prints its timestamps: UTC, with 0, 3 or 6 digits
    of fraction as needed."""
    utc = moment.astimezone(UTC)
    micros = utc.microsecond
    fraction = (
        "" if micros == 0 else f".{micros // 1000:03d}" if micros % 1000 == 0 else f".{micros:06d}"
    )
    return f"{utc:%Y-%m-%dT%H:%M:%S}{fraction}Z"


def read_back(lines: Iterable[bytes]) -> list[JsonObject]:
    """Each archived process once, in the order first archived.

    A crash between a batch's write and its delete's commit leaves the batch
    in the archive while its processes stay in the database, and the next
    pass archives them again: the last complete line of a process wins (a
    finished process does not change, so both say the same). Lines that are
    not a whole record, as a crash mid-write leaves, are skipped.
    """
    records: dict[str, JsonObject] = {}
    for line in lines:
        record = _record(line)
        if record is not None:
            records[record["process"]["process_id"]] = record
    return list(records.values())


def _record(line: bytes) -> JsonObject | None:
    if not line.endswith(b"\n"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not (
        isinstance(record, dict)
        and isinstance(record.get("process"), dict)
        and isinstance(record["process"].get("process_id"), str)
        and isinstance(record.get("events"), list)
    ):
        return None
    return record
