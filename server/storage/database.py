"""Connections to PostgreSQL, and the one way to run work in a transaction."""

import asyncio
import contextvars
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import PipelineStatus, TransactionStatus
from sqlalchemy import Connection, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

from server import tracing
from server.domain.errors import DeadlineExceeded, Unavailable
from server.metrics import DB_QUERY_DURATION
from server.storage.wire import Row, Statement, Wire

log = logging.getLogger(__name__)


def sqlalchemy_url(database_url: str) -> str:
    """The URL SQLAlchemy takes for a libpq connection URI (DATABASE_URL): the
    psycopg 3 driver for a plain `postgresql://` URL.

    libpq's multi-host form, which lets every new connection find the primary
    after a failover (`postgresql://u@h1:5432,h2:5432/db?target_session_attrs=read-write`),
    becomes the form SQLAlchemy's parser reads (`?host=h1,h2&port=5432,5432`),
    which hands psycopg the same host and port lists; the Unix-socket form
    (`?host=/dir1,/dir2`) needs nothing. Raises ValueError, never quoting the
    URL (it may hold a password), when it is neither.
    """
    url = make_url(_hosts_in_query(database_url))
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def redacted_url(database_url: str) -> str:
    """DATABASE_URL as logs may show it: the password masked, hosts kept as written."""
    url = urlsplit(database_url)
    user, at, hosts = url.netloc.rpartition("@")
    if at and ":" in user:
        user = f"{user.partition(':')[0]}:***"
    query = "&".join(
        f"{name}=***" if name == "password" else part
        for part in url.query.split("&")
        if part
        for name in [part.partition("=")[0]]
    )
    return urlunsplit(url._replace(netloc=f"{user}{at}{hosts}", query=query))


def _hosts_in_query(database_url: str) -> str:
    """A URI with several hosts in its authority rewritten to name them in its
    query, as `host` and `port` lists of equal length (an empty port: libpq's
    default); other URIs unchanged."""
    try:
        url = urlsplit(database_url)
    except ValueError as error:  # its message quotes no part of the URL
        raise ValueError(f"DATABASE_URL is not a URL ({error})") from None
    userinfo, at, hostlist = url.netloc.rpartition("@")
    if "," not in hostlist:
        return database_url
    query = parse_qsl(url.query, keep_blank_values=True)
    if any(name in ("host", "hostaddr", "port") for name, _ in query):
        raise ValueError(
            "DATABASE_URL names its hosts both before the path and in the query"
            " (host, hostaddr or port); name them in one place"
        )
    hosts, ports = zip(*map(_host_and_port, hostlist.split(",")), strict=True)
    query += [("host", ",".join(hosts)), ("port", ",".join(ports))]
    return urlunsplit(url._replace(netloc=f"{userinfo}{at}", query=urlencode(query)))


_HOST_AND_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::(?P<port>[0-9]*))?")


def _host_and_port(item: str) -> tuple[str, str]:
    """One `host[:port]` of a multi-host URI (`[::1]:5432` for IPv6), decoded."""
    match = _HOST_AND_PORT.fullmatch(item)
    if match is None:
        raise ValueError(
            "DATABASE_URL has an empty or malformed host in its host list"
            " (expected host:port,host:port)"
        )
    return unquote(match["host"].strip("[]")), match["port"] or ""


# All inside Envoy's request timeout (HTK_REQUEST_TIMEOUT_SECONDS, 15 s by
# default), so that the server, not a cut connection, tells the caller.
POOL_TIMEOUT_SECONDS = 10
STATEMENT_TIMEOUT_SECONDS = 10
LOCK_TIMEOUT_SECONDS = 5
CONNECT_TIMEOUT_SECONDS = 5

Isolation = Literal["READ COMMITTED", "REPEATABLE READ", "AUTOCOMMIT"]

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)


@contextmanager
def deadline_in(seconds: float | None) -> Iterator[None]:
    """Bounds the database work started inside by a caller's deadline (None: no deadline)."""
    token = _deadline.set(None if seconds is None else time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


class Database:
    """A connection pool and the sessions drawn from it."""

    def __init__(self, database_url: str, *, pool_size: int, traced: bool = False) -> None:
        """`traced`: each statement of a traced call gets a span (server/tracing.py)."""
        self.engine: AsyncEngine = create_async_engine(
            sqlalchemy_url(database_url),
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=POOL_TIMEOUT_SECONDS,
            # No pre-ping (a round trip per transaction): a connection lost to
            # a database restart fails one call with UNAVAILABLE, and that
            # failure makes the pool replace every connection older than it.
            pool_pre_ping=False,
            # Parameters (token digests among them) stay out of error messages and logs.
            hide_parameters=True,
            # psycopg never opens a transaction itself: `transaction` does,
            # with a BEGIN that its first statement carries (`_begin_first`).
            isolation_level="AUTOCOMMIT",
            connect_args={
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "options": f"-c statement_timeout={STATEMENT_TIMEOUT_SECONDS}s"
                f" -c lock_timeout={LOCK_TIMEOUT_SECONDS}s",
                # The hot statements are prepared by `Wire`. psycopg's own
                # preparing would, at any ROLLBACK, deallocate every
                # statement prepared on the connection, Wire's too.
                "prepare_threshold": None,
            },
        )
        event.listen(self.engine.sync_engine, "before_cursor_execute", _begin_first)
        event.listen(self.engine.sync_engine, "before_cursor_execute", _time_statement)
        event.listen(self.engine.sync_engine, "after_cursor_execute", _observe_statement)
        if traced:
            for name, listener in _STATEMENT_SPAN_LISTENERS.items():
                event.listen(self.engine.sync_engine, name, listener)
        # SQLAlchemy's connections stay open between calls, each call taking
        # one (`_checkout`): drawing one from SQLAlchemy's pool and giving it
        # back cost more CPU than the statements of a Get.
        self._idle: list[AsyncConnection] = []
        self._slots = asyncio.Semaphore(pool_size)
        self._in_use = 0

    def pool_connections(self) -> tuple[int, int]:
        """The pool's connections now: in use by a call, and idle."""
        return self._in_use, len(self._idle) + cast(QueuePool, self.engine.pool).checkedin()

    @asynccontextmanager
    async def transaction(
        self, *, isolation: Isolation = "READ COMMITTED"
    ) -> AsyncIterator[AsyncConnection]:
        """A connection inside one transaction: committed on success, rolled back on error.

        Core statements on a connection, not ORM sessions: the models
        describe the schema, and the hot paths skip the ORM's bookkeeping.

        `REPEATABLE READ` gives every statement the same snapshot, e.g. a page
        and the count of all matches. `AUTOCOMMIT` runs each statement in a
        transaction of its own, saving the BEGIN and COMMIT round trips; it
        suits reads whose statements need no common snapshot, which READ
        COMMITTED would not give them either. A statement that outlives the
        caller's deadline or the database's timeouts becomes
        `DeadlineExceeded`; a lost or refused connection or a full pool
        becomes `Unavailable`, which callers may retry.
        """
        try:
            async with self._checkout() as connection:
                # Held here: once the connection is lost, reading its `info`
                # would reconnect.
                info = connection.info
                autocommit = isolation == "AUTOCOMMIT"
                if not autocommit:
                    info[_DUE_BEGIN] = f"BEGIN ISOLATION LEVEL {isolation}"
                try:
                    if not autocommit:
                        await _apply_deadline(connection)
                    yield connection
                    await _end(connection, commit=not autocommit)
                except BaseException as error:
                    if isinstance(error, DBAPIError | psycopg.Error) and isinstance(
                        _cause(error), pg_errors.ReadOnlySqlTransaction
                    ):
                        # The server was a standby, or is one now: this
                        # connection must not serve another call.
                        await connection.invalidate()
                    else:
                        await _roll_back(connection)
                    raise
                finally:
                    # A rolled back transaction's writes (and what was to
                    # follow its commit) are never sent.
                    info.pop(_DUE_BEGIN, None)
                    info.pop(_DUE_WRITES, None)
                    info.pop(_DUE_AFTER_COMMIT, None)
        except (DBAPIError, psycopg.Error) as error:
            cause = _cause(error)
            if isinstance(cause, pg_errors.QueryCanceled | pg_errors.LockNotAvailable):
                raise DeadlineExceeded("the database did not answer in time") from error
            if isinstance(error, OperationalError | InterfaceError) or isinstance(
                cause,
                psycopg.OperationalError
                | psycopg.InterfaceError
                # A write reached a server that cannot take it (a standby, when
                # DATABASE_URL lacks target_session_attrs=read-write): the
                # primary is elsewhere, and a retry may find it.
                | pg_errors.ReadOnlySqlTransaction,
            ):
                raise Unavailable("the database is unavailable; retry later") from error
            raise
        except PoolTimeoutError as error:
            raise Unavailable("the database is unavailable; retry later") from error

    @asynccontextmanager
    async def _checkout(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one call, open since an earlier call if one is idle.

        Given back for the next call only as it was taken: no transaction
        open, on the driver's side or in SQLAlchemy's bookkeeping (statements
        SQLAlchemy ran in autocommit leave a transaction of its own), and no
        database error met. Any other is closed, back to SQLAlchemy's pool,
        which replaces it if it was lost; a lost connection also closes the
        idle ones, opened before the loss as well (SQLAlchemy's pool replaces
        every connection older than a lost one).
        """
        if self._slots.locked():
            try:
                await asyncio.wait_for(self._slots.acquire(), POOL_TIMEOUT_SECONDS)
            except TimeoutError:
                raise Unavailable("the database is unavailable; retry later") from None
        else:
            await self._slots.acquire()
        self._in_use += 1
        try:
            connection = self._idle.pop() if self._idle else await self.engine.connect()
            reusable = False
            try:
                yield connection
                reusable = True
            except (DBAPIError, psycopg.Error):
                if _lost(connection):
                    await self._close_idle()
                raise
            except Exception:
                reusable = True
                raise
            finally:
                if reusable and _at_rest(connection):
                    self._idle.append(connection)
                else:
                    await connection.close()
        finally:
            self._in_use -= 1
            self._slots.release()

    async def _close_idle(self) -> None:
        while self._idle:
            await self._idle.pop().close()

    async def dedicated_connection(self, application_name: str) -> psycopg.AsyncConnection[Any]:
        """A connection of its own, outside the pool and in autocommit, for work
        that keeps one open (LISTEN); `application_name` shows in pg_stat_activity."""
        _, parameters = self.engine.dialect.create_connect_args(self.engine.url)
        return await psycopg.AsyncConnection.connect(
            **parameters,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            application_name=application_name,
        )

    async def close(self) -> None:
        await self._close_idle()
        await self.engine.dispose()


def _lost(connection: AsyncConnection) -> bool:
    """Whether `connection` to the database is gone (to SQLAlchemy's
    knowledge, or psycopg's: statements run on the driver bypass SQLAlchemy)."""
    driver = connection.info.get(_DRIVER) if not connection.invalidated else None
    return connection.invalidated or (driver is not None and (driver.broken or driver.closed))


def _at_rest(connection: AsyncConnection) -> bool:
    """Whether a call left `connection` as the next one needs it: open, and
    outside any transaction."""
    if connection.closed or connection.invalidated or connection.in_transaction():
        return False
    driver = connection.info.get(_DRIVER)
    return driver is None or (
        driver.info.transaction_status == TransactionStatus.IDLE
        and driver.pgconn.pipeline_status == PipelineStatus.OFF
    )


def _cause(error: DBAPIError | psycopg.Error) -> BaseException | None:
    """psycopg's error behind `error`: psycopg's own errors come from statements
    run on the driver connection (`in_one_round_trip`), SQLAlchemy's wrap the others."""
    return error.orig if isinstance(error, DBAPIError) else error


# In a connection's `info`: psycopg's connection under it, once looked up
# (SQLAlchemy clears `info` when it replaces the connection).
_DRIVER = "htk_driver"
# In a connection's `info`: its `Wire`, once made.
_WIRE = "htk_wire"
# In a connection's `info`: the BEGIN that opens its transaction, until a
# statement has carried it.
_DUE_BEGIN = "htk_due_begin"
# In a connection's `info`: the writes left for the transaction's next round
# trip (`write_later`), in order.
_DUE_WRITES = "htk_due_writes"
# In a connection's `info`: the statements to send once its transaction has
# committed (`after_commit`), in order.
_DUE_AFTER_COMMIT = "htk_due_after_commit"


def write_later(connection: AsyncConnection, statement: Statement) -> None:
    """Leaves a write whose result nobody reads to the transaction's next round
    trip: the next statement's, or else the COMMIT's, so that a transaction's
    last write costs no round trip of its own.

    Statements still run in the order they were given. An error of the write
    surfaces from that later round trip and rolls the transaction back like
    any other; a transaction rolled back before then never sends it.
    """
    connection.info.setdefault(_DUE_WRITES, []).append(statement)


def after_commit(connection: AsyncConnection, statement: Statement) -> None:
    """Leaves a statement to run once the transaction has committed: right
    after the COMMIT, in the same round trip, in a transaction of its own.

    For a NOTIFY: inside the transaction, PostgreSQL would hold its global
    notification lock from the commit's start until its WAL flush is done,
    serializing every committing writer behind it. The write stands whatever
    becomes of the statement, so a failure of it is logged, never raised;
    whoever relies on it must cope with its loss. A transaction rolled back
    never sends it.
    """
    connection.info.setdefault(_DUE_AFTER_COMMIT, []).append(statement)


def _begin_first(
    connection: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> None:
    """Opens the transaction before the first SQLAlchemy statement in it, if
    no statement has done so yet, and sends the writes left before it."""
    begin = connection.info.pop(_DUE_BEGIN, None)
    if begin is not None:
        cursor.execute(begin)
    for query, query_parameters in connection.info.pop(_DUE_WRITES, ()):
        cursor.execute(query, query_parameters)


# On a statement's execution context: when it was sent.
_SENT_AT = "_htk_sent_at"


def _time_statement(
    connection: Connection, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
) -> None:
    setattr(context, _SENT_AT, time.perf_counter())


def _observe_statement(
    connection: Connection, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
) -> None:
    sent_at = getattr(context, _SENT_AT, None)
    if sent_at is not None:
        DB_QUERY_DURATION.observe(time.perf_counter() - sent_at)


# In a connection's `info`: the span of its statement under way, if traced.
_STATEMENT_SPAN = "htk_statement_span"


def _start_statement_span(connection: Connection, cursor: Any, statement: str, *args: Any) -> None:
    connection.info[_STATEMENT_SPAN] = tracing.statement_span(statement)


def _end_statement_span(connection: Connection, *args: Any) -> None:
    tracing.end_statement_span(connection.info.pop(_STATEMENT_SPAN, None))


def _fail_statement_span(context: Any) -> None:
    if context.connection is not None:
        span = context.connection.info.pop(_STATEMENT_SPAN, None)
        tracing.end_statement_span(span, context.original_exception)


_STATEMENT_SPAN_LISTENERS: dict[str, Callable[..., None]] = {
    "before_cursor_execute": _start_statement_span,
    "after_cursor_execute": _end_statement_span,
    "handle_error": _fail_statement_span,
}


async def in_one_round_trip(connection: AsyncConnection, *statements: Statement) -> list[Row]:
    """Runs `statements` on the psycopg connection under `connection`, in its
    transaction, and returns the last one's rows.

    For the hot statements, which SQLAlchemy's layers would only slow down
    (they go by `Wire`). The statements, and the BEGIN of the transaction
    and the writes left for later (`write_later`) when they are due, go to
    PostgreSQL together: one round trip. Each still starts once the one
    before it has finished.
    """
    rows = await _round_trip(connection, statements, commit=False, ending=False)
    assert rows is not None  # given statements, the round trip ran them
    return rows


async def _end(connection: AsyncConnection, *, commit: bool) -> None:
    """Ends a transaction that succeeded: the writes left for later, the
    COMMIT when `commit` and a statement opened the transaction, and the
    statements to follow it, in one round trip (none when nothing is due).

    SQLAlchemy's own bookkeeping of a transaction, opened by a statement of
    its, is closed too: the COMMIT has ended what it kept (so the driver's
    commit sends nothing), and the connection can serve the next call.
    """
    info = connection.info
    due = bool(info.get(_DUE_WRITES) or info.get(_DUE_AFTER_COMMIT))
    if due or (commit and _DUE_BEGIN not in info):
        await _round_trip(connection, (), commit=commit, ending=True)
    if connection.in_transaction():
        await connection.commit()


async def _roll_back(connection: AsyncConnection) -> None:
    """Rolls back whatever a failed call left open, on the driver and in
    SQLAlchemy's bookkeeping. Not when a statement is still under way (a
    cancelled call): the connection then goes back to SQLAlchemy's pool,
    whose reset rolls it back or replaces it."""
    if _lost(connection) or connection.closed:
        return
    driver = connection.info.get(_DRIVER)
    try:
        if driver is not None and driver.info.transaction_status in _ROLLBACK_NEEDED:
            await driver.rollback()
        if connection.in_transaction() and (driver is None or not driver.pgconn.is_busy()):
            await connection.rollback()
    except (DBAPIError, psycopg.Error) as failure:
        # The call's own error is the one to report; the connection, not
        # at rest, is not given to another call.
        log.warning("rolling back a failed call's transaction failed: %s", failure)


_ROLLBACK_NEEDED = (TransactionStatus.INTRANS, TransactionStatus.INERROR)


async def _round_trip(
    connection: AsyncConnection, statements: tuple[Statement, ...], *, commit: bool, ending: bool
) -> list[Row] | None:
    """Sends what is due (BEGIN, the writes left for later), `statements`,
    the COMMIT if `commit` and, if the transaction is `ending`, what is to
    follow it (`after_commit`), in one round trip; returns the last
    statement's rows (None when `statements` is empty)."""
    info = connection.info
    wire = info.get(_WIRE)
    if wire is None:
        pooled = await connection.get_raw_connection()
        driver = info[_DRIVER] = cast(psycopg.AsyncConnection[Any], pooled.driver_connection)
        wire = info[_WIRE] = Wire(driver)
    begin = info.pop(_DUE_BEGIN, None)
    sent = [*info.pop(_DUE_WRITES, ()), *statements]
    following = info.pop(_DUE_AFTER_COMMIT, ()) if ending else ()
    sent_at = time.perf_counter()
    # Each statement's span lasts until its result is in: the round trip's end.
    spans = [tracing.statement_span(query) for query, _ in sent]
    error: BaseException | None = None
    try:
        outcomes = await wire.run(
            [*((begin,) if begin else ()), *sent, *(("COMMIT",) if commit else ()), *following]
        )
        # Once the transaction's statements have succeeded, its work stands:
        # a failure of what follows the commit is logged, never raised.
        standing = len(outcomes) - len(following)
        error = next((outcome.error for outcome in outcomes[:standing] if outcome.error), None)
        if error is not None:
            raise error
        if failed := next(
            (outcome.error for outcome in outcomes[standing:] if outcome.error), None
        ):
            log.warning("a statement after a commit failed: %s", failed)
        return outcomes[(begin is not None) + len(sent) - 1].rows if statements else None
    except BaseException as failure:
        error = failure
        raise
    finally:
        DB_QUERY_DURATION.observe(time.perf_counter() - sent_at)
        for span in spans:
            tracing.end_statement_span(span, error)


async def _apply_deadline(connection: AsyncConnection) -> None:
    """Shortens this transaction's statement timeout to the caller's deadline.

    Only when the deadline is the nearer limit: the common case costs no
    round trip. The limit holds for each statement, so a transaction of
    several may end somewhat past the deadline; the caller has its answer
    at the deadline regardless. (Autocommit reads keep the statement timeout.)
    """
    deadline = _deadline.get()
    if deadline is None:
        return
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlineExceeded("the deadline passed before the database was reached")
    if remaining < STATEMENT_TIMEOUT_SECONDS:
        milliseconds = str(max(1, int(remaining * 1000)))
        await connection.execute(select(func.set_config("statement_timeout", milliseconds, True)))
