"""The hot statements' way to PostgreSQL: sent together on libpq's pipeline
through psycopg's lowest layer, its `pq` connection and its adapters.

psycopg's cursors and pipeline build a cursor, an adapters map, a query
parser's result and a result-reading state machine per statement; on
htk's short statements that Python cost was most of the storage layer's
CPU (measured in issue 21's note). Here a statement costs its parameters'
dumping and libpq's calls: the placeholders are translated once per query,
each statement is prepared once per connection (as psycopg would), and the
whole round trip is one psycopg wait, which also cancels the server's work
when the call is cancelled, as psycopg's own waits do.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, LiteralString

import psycopg
from psycopg import errors, generators, pq
from psycopg.abc import Buffer, PQGen
from psycopg.adapt import PyFormat, Transformer

# A statement: SQL with psycopg's `%(name)s` placeholders, and their values.
Statement = tuple[LiteralString, Mapping[str, Any]]
Row = tuple[Any, ...]

# Prepared statements per connection, beyond which a statement is sent
# unprepared: List's filters make a few dozen shapes, and no more should be
# kept on the server for one connection.
MAX_PREPARED = 256

_PLACEHOLDER = re.compile(r"%%|%\((\w+)\)s|%.?")


@lru_cache(maxsize=1024)
def translated(query: str) -> tuple[bytes, tuple[str, ...]]:
    """`query` with PostgreSQL's `$n` placeholders, and the parameters' names
    in their order."""
    names: list[str] = []

    def placeholder(found: re.Match[str]) -> str:
        if found.group(0) == "%%":
            return "%"
        name = found.group(1)
        if name is None:
            raise ValueError(f"only %(name)s placeholders are supported: {query!r}")
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _PLACEHOLDER.sub(placeholder, query).encode(), tuple(names)


@dataclass(frozen=True)
class Outcome:
    """What one statement of a round trip came to: its rows, and its error
    (None for a success; a statement after a failed one in the same round
    trip is skipped and has the error of that one)."""

    rows: list[Row]
    error: psycopg.Error | None


# A statement's key among those a connection prepared: its SQL and its
# parameters' types (a statement prepared for text cannot take a uuid).
_Key = tuple[bytes, tuple[int, ...]]


class Wire:
    """One psycopg connection's way of sending statements together: its
    adapters and the statements it has prepared. Used by one call at a time,
    as the connection is."""

    def __init__(self, driver: psycopg.AsyncConnection[Any]) -> None:
        self._driver = driver
        self._transformer = Transformer(driver)
        self._prepared: dict[_Key, bytes] = {}
        self._names = 0

    async def run(self, statements: Sequence[Statement | LiteralString]) -> list[Outcome]:
        """Runs `statements` in order, in one round trip, and returns each one's
        outcome. A statement given as bare SQL takes no parameters and is not
        prepared (BEGIN, COMMIT). Until a transaction is opened, the
        statements form one implicit transaction, as the extended protocol
        has it: a failure undoes those before it."""
        driver = self._driver
        pgconn = driver.pgconn
        # Dumped before anything is sent: a value that cannot be dumped then
        # leaves the connection as it was.
        commands = [self._command(statement) for statement in statements]
        # The statements to prepare first (those this connection has not),
        # and the name each statement runs under (None: unprepared).
        preparing: list[tuple[_Key, bytes]] = []
        names: list[bytes | None] = []
        for sql, values, types, _ in commands:
            name = self._prepared.get((sql, types)) if values is not None else None
            if values is not None and name is None and len(self._prepared) < MAX_PREPARED:
                self._names += 1
                name = b"_htk_%d" % self._names
                preparing.append(((sql, types), name))
            names.append(name)
        async with driver.lock:
            pgconn.enter_pipeline_mode()
            try:
                # Prepared apart, before the statements: the statements'
                # transaction (an implicit one lasts to the sync) starts
                # with the first of them, as without preparing.
                for (sql, types), name in preparing:
                    pgconn.send_prepare(name, sql, param_types=types)
                if preparing:
                    pgconn.pipeline_sync()
                for (sql, values, types, formats), name in zip(commands, names, strict=True):
                    if name is not None:
                        pgconn.send_query_prepared(name, values, param_formats=formats)
                    else:
                        pgconn.send_query_params(
                            sql, values, param_types=types, param_formats=formats
                        )
                pgconn.pipeline_sync()
                results = await driver.wait(_exchange(pgconn, syncs=1 + bool(preparing)))
            finally:
                # Left on when results are still to come (a lost connection,
                # a cancelled call): such a connection serves no other call.
                if pgconn.pipeline_status == pq.PipelineStatus.ON and not pgconn.is_busy():
                    pgconn.exit_pipeline_mode()
        return self._outcomes(preparing, results)

    def _command(
        self, statement: Statement | LiteralString
    ) -> tuple[bytes, Sequence[Buffer | None] | None, tuple[int, ...], Sequence[pq.Format] | None]:
        """A statement's SQL, its parameters' values, types and formats."""
        if isinstance(statement, str):
            return statement.encode(), None, (), None
        query, parameters = statement
        sql, names = translated(query)
        transformer = self._transformer
        values = transformer.dump_sequence(
            [parameters[name] for name in names], [PyFormat.TEXT] * len(names)
        )
        return sql, values, transformer.types or (), list(transformer.formats or ())

    def _outcomes(
        self, preparing: list[tuple[_Key, bytes]], results: list[pq.abc.PGresult]
    ) -> list[Outcome]:
        """The statements' outcomes, from the results of the round trip (one
        per command: the `preparing` first, then the statements); keeps the
        statements whose preparing succeeded."""
        encoding = self._driver.info.encoding
        # The first error met; a statement that could not be prepared is
        # reported by its preparing's error, not by its missing name's.
        failure: psycopg.Error | None = None
        for (key, name), result in zip(preparing, results, strict=False):
            if result.status == pq.ExecStatus.COMMAND_OK:
                self._prepared[key] = name
            elif result.status == pq.ExecStatus.FATAL_ERROR:
                failure = failure or errors.error_from_result(result, encoding=encoding)
        transformer = self._transformer
        outcomes: list[Outcome] = []
        for result in results[len(preparing) :]:
            status = result.status
            if status == pq.ExecStatus.FATAL_ERROR:
                failure = failure or errors.error_from_result(result, encoding=encoding)
                if isinstance(failure, errors.InvalidSqlStatementName):
                    # Deallocated behind Wire's back (DEALLOCATE ALL, DISCARD
                    # ALL): this call fails, the next prepares afresh.
                    self._prepared.clear()
            rows: list[Row] = []
            if status == pq.ExecStatus.TUPLES_OK:
                transformer.set_pgresult(result)
                rows = transformer.load_rows(0, result.ntuples, tuple)
            error = failure if status in _FAILED else None
            outcomes.append(Outcome(rows, error))
        return outcomes


_FAILED = (pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.PIPELINE_ABORTED)


def _exchange(pgconn: pq.abc.PGconn, *, syncs: int) -> PQGen[list[pq.abc.PGresult]]:
    """psycopg's generators, waited on by psycopg: sends what is queued, then
    reads each command's result up to the last of the pipeline's `syncs`."""
    yield from generators.send(pgconn)
    results: list[pq.abc.PGresult] = []
    while syncs:
        batch = yield from generators.fetch_many(pgconn)
        if batch and batch[-1].status == pq.ExecStatus.PIPELINE_SYNC:
            syncs -= 1
        else:
            results.extend(batch)
    return results
