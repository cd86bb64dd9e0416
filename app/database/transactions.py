"""The transaction of `db.session()`, begun with its first statement instead of ahead of it.

A session's BEGIN (with its transaction-local settings) is not sent when the session opens:
the pool's connection holds it as `pending_begin`, and psycopg sends it just before the
first statement of the block, whatever sends that statement (a cursor, `conn.execute`, a
COPY, `conn.transaction()`). Sent alone, it costs the round trip it always did. Sent from a
pipeline (`execute()` below, the query functions' hot path), it is queued ahead of the
statement: BEGIN, the settings and the statement reach the server together and come back
in one round trip instead of two. A block that runs nothing sends nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, LiteralString, NamedTuple

import psycopg
from psycopg import errors, generators
from psycopg.abc import Params, PQGen
from psycopg.pq import ExecStatus, TransactionStatus


class PendingBegin(NamedTuple):
    """A BEGIN not sent yet: as one simple query (sent alone) and as single statements (for
    a pipeline, whose extended protocol takes one statement per query)."""

    query: bytes
    commands: tuple[bytes, ...]


PLAIN_BEGIN = PendingBegin(b"BEGIN", (b"BEGIN",))

_FATAL_ERROR = ExecStatus.FATAL_ERROR
_IDLE = TransactionStatus.IDLE


class PooledConnection(psycopg.AsyncConnection[Any]):
    """The pool's connections (autocommit). `db.session()` sets `pending_begin`; the first
    statement sent sends it first."""

    pending_begin: PendingBegin | None = None
    is_through_pooler: bool = False  # set by the pool's configure hook

    def _start_query(self) -> PQGen[None]:
        # psycopg calls this before sending any query (the hook with which a non-autocommit
        # connection begins its implicit transaction).
        begin = self.pending_begin
        if begin is not None:
            self.pending_begin = None
            if self._pipeline is not None:
                for command in begin.commands:  # queued: they go out with the statement
                    yield from self._exec_command(command)
            elif len(begin.commands) == 1:
                yield from self._exec_command(begin.query)
            else:
                yield from _send_simple_query(self, begin.query)
        yield from super()._start_query()

    @asynccontextmanager
    async def transaction(
        self, savepoint_name: str | None = None, force_rollback: bool = False
    ) -> AsyncIterator[psycopg.AsyncTransaction]:
        """psycopg's `transaction()`; inside a session whose BEGIN is still pending, the
        BEGIN is sent first, so that this block is a savepoint of the session's transaction."""
        if self.pending_begin is not None:
            async with self.lock:
                await self.wait(self._start_query())
        async with super().transaction(savepoint_name, force_rollback) as transaction:
            yield transaction


def _send_simple_query(conn: PooledConnection, query: bytes) -> PQGen[None]:
    """Send `query` (several statements) as one simple query; raise the first error."""
    conn.pgconn.send_query(query)
    results = yield from generators.execute(conn.pgconn)
    for result in results:
        if result.status == _FATAL_ERROR:
            raise errors.error_from_result(result, encoding=conn.pgconn._encoding)


def in_transaction(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether a statement sent on `conn` now runs inside a transaction block: one psycopg
    opens (not autocommit), one open on the server, or a session's pending BEGIN."""
    return (
        not conn.autocommit
        or conn.pgconn.transaction_status != _IDLE
        or getattr(conn, "pending_begin", None) is not None
    )


async def execute(
    cursor: psycopg.AsyncCursor[Any],
    query: LiteralString,
    params: Params | None = None,
    *,
    binary: bool = False,
) -> None:
    """`cursor.execute(query, params)`; the first statement of a `db.session()` goes out in
    one pipeline with the session's pending BEGIN: one round trip for both. Its rows are on
    the cursor afterwards, and its error, if any, is raised here, as execute() raises it."""
    conn = cursor.connection
    if getattr(conn, "pending_begin", None) is None:
        await cursor.execute(query, params, binary=binary)
        return
    async with conn.pipeline():
        await cursor.execute(query, params, binary=binary)
