"""The archive's files: gzip per day, appended a member per batch, durable
before the batch's delete commits.

Blocking file I/O: the service runs it in a thread.
"""

import gzip
import os
import zlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

from server.domain.retention import archive_file_name

# Every gzip member starts with these bytes (ID1, ID2, deflate).
_GZIP_MAGIC = b"\x1f\x8b\x08"
# Compressed bytes fed to the decompressor at once: a member's unused tail
# is copied, so it must stay small however large the file.
_CHUNK = 1 << 16


def append(directory: Path, lines: Sequence[bytes], archived_at: datetime) -> Path:
    """Appends `lines` to the day's file as one gzip member and returns once
    they are on disk (fsync, and the folder's fsync when the file is new), so
    that a crash after this loses none of them.

    A failed write is cut off again, so the next member follows whole ones.
    Only one pass writes at a time (the service's advisory lock), so appends
    never interleave.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / archive_file_name(archived_at)
    member = gzip.compress(b"".join(lines), mtime=0)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o640)
        created = True
    except FileExistsError:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND)
        created = False
    try:
        whole = os.fstat(descriptor).st_size
        try:
            view = memoryview(member)
            while view:
                view = view[os.write(descriptor, view) :]
            os.fsync(descriptor)
        except OSError:
            os.ftruncate(descriptor, whole)
            raise
    finally:
        os.close(descriptor)
    if created:
        _fsync_directory(directory)
    return path


def _fsync_directory(directory: Path) -> None:
    """Makes a new file's name durable, not only its contents."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_lines(path: Path) -> Iterator[bytes]:
    """The lines of every whole member of an archive file, newlines kept.

    A member cut short (a crash while its batch was written; that batch never
    committed its delete, so its processes were archived again later) or
    otherwise unreadable is skipped: reading resumes at the next member.
    """
    raw = path.read_bytes()
    data = memoryview(raw)
    position = 0
    while position < len(data):
        decompressor = zlib.decompressobj(wbits=31)  # one gzip member
        parts = []
        cursor = position
        try:
            while not decompressor.eof and cursor < len(data):
                parts.append(decompressor.decompress(data[cursor : cursor + _CHUNK]))
                cursor += _CHUNK
        except zlib.error:
            pass
        if decompressor.eof:
            yield from b"".join(parts).splitlines(keepends=True)
            position = min(cursor, len(data)) - len(decompressor.unused_data)
        else:
            following = raw.find(_GZIP_MAGIC, position + 1)
            if following < 0:
                return
            position = following
