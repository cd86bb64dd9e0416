"""DatabaseManager: the connection pool's lifecycle, transactions, health."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import select
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any
from uuid import UUID

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.types.json import set_json_dumps, set_json_loads

from app.database.config import DatabaseConfig
from app.database.errors import (
    DatabaseUnavailableError,
    InvalidInputError,
    aborted_error,
    forget_errors,
    last_error,
    translate,
)
from app.database.replicas import (
    CHECKOUT_TIMEOUT,
    SELECT_PRIMARY_LSN,
    SELECT_REPLAYED,
    ReplicaSet,
    format_lsn,
    has_replayed,
    parse_lsn,
    wal_end,
)
from app.database.rows import dump_json, load_json
from app.database.transactions import PLAIN_BEGIN, PendingBegin, PooledConnection, execute
from app.database.validation import InputModel, Name, Uuid, validated
from app.database.vectors import register_vector_types

Connection = psycopg.AsyncConnection[Any]


# Settings every pooled connection starts with: UTC so timestamps read the same everywhere,
# and the configured statement timeout ('0' = the server's default of none). The timeout is
# session state, so it is set only on a connection of the server's own: through a
# transaction pooler (PgBouncer) the session is a server connection other clients share, and
# the timeout goes with each transaction instead (SET_STATEMENT_TIMEOUT). A pooler is told
# by the backend pid: PgBouncer hands its clients a made-up one (its cancel key), so the pid
# the connection reported differs from the server's. TimeZone is set either way: PgBouncer
# keeps it per client (one of the parameters it tracks and sets again on every server
# connection it hands that client), so it never reaches another client.
CONFIGURE_SESSION = """
SELECT pg_catalog.pg_backend_pid() <> %(reported_pid)s AS is_through_pooler,
       pg_catalog.set_config('TimeZone', 'UTC', false),
       CASE WHEN pg_catalog.pg_backend_pid() = %(reported_pid)s
            THEN pg_catalog.set_config('statement_timeout', %(timeout)s, false)
       END
"""

SELECT_BACKEND_PID = "SELECT pg_catalog.pg_backend_pid()"

# The statement timeout of a transaction through a pooler, sent with its BEGIN.
SET_STATEMENT_TIMEOUT = sql.SQL("SET LOCAL statement_timeout = {}")

# What db.session(owner_id=…, actor=…) sets for its transaction only (SET LOCAL, which is
# set_config(…, true) as a utility command: nothing to plan): row-level security reads
# agentdb.owner_id, the audit triggers agentdb.actor. Sent with BEGIN and the block's first
# statement (see app.database.transactions), so a scoped session costs no more round trips
# than a plain one, and the server parses utility commands instead of planning a SELECT.
# They are sent as a simple query or without parameters in a pipeline: the validated values
# are quoted by psycopg's sql.Literal.
SET_OWNER = sql.SQL("SET LOCAL agentdb.owner_id = {}")
SET_ACTOR = sql.SQL("SET LOCAL agentdb.actor = {}")

CHECK_IDLE_SECONDS = 0.5
"""A pooled connection idle longer than this is checked with a round trip before it is
handed out (HikariCP's alive-bypass window); one used more recently is checked only for
bytes the server sent while it sat idle (a shutdown's farewell, a closed socket)."""

_INERROR = TransactionStatus.INERROR

READ_ONLY_BEGIN = PendingBegin(b"BEGIN READ ONLY", (b"BEGIN READ ONLY",))


class SessionScope(InputModel):
    owner_id: Uuid | None = None
    actor: Name | None = None


class DatabaseManager:
    """Owns an `AsyncConnectionPool`; use it as `async with DatabaseManager(config) as db:`."""

    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
        self._pool: psycopg_pool.AsyncConnectionPool[PooledConnection] | None = None
        # When each connection was last given back (monotonic seconds), for the check.
        self._returned_at: weakref.WeakKeyDictionary[Connection, float] = (
            weakref.WeakKeyDictionary()
        )
        self._replicas: ReplicaSet | None = None
        # The SET LOCAL of the statement timeout, for transactions through a pooler: built
        # once (the timeout is the config's, quoted by sql.Literal), not per session.
        self._local_timeout = (
            None
            if not config.statement_timeout
            else SET_STATEMENT_TIMEOUT.format(
                sql.Literal(f"{round(config.statement_timeout * 1000)}ms")
            ).as_bytes(None)
        )

    async def __aenter__(self) -> DatabaseManager:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self, *, wait: bool = True) -> None:
        """Connect once, then open the pool. That connection must succeed within
        `connect_timeout` (a refusal raises DatabaseUnavailableError with the server's
        reason); with `wait`, open returns once `min_pool_size` connections are ready (at
        most `pool_timeout` seconds).

        An embedded config starts the embedded server first, in a thread."""
        if self._pool is not None and not self._pool.closed:
            return
        if self.config.url is None and self.config.use_embedded:
            self.config = await asyncio.to_thread(self.config.resolved)
        conninfo = self.config.conninfo()
        await self._probe(conninfo)
        pool_kwargs: dict[str, Any] = {
            "connection_class": PooledConnection,
            "min_size": self.config.min_pool_size,
            "max_size": self.config.max_pool_size,
            "timeout": self.config.pool_timeout,
            "kwargs": {"autocommit": True, "prepare_threshold": self.config.prepare_threshold},
            "configure": self._configure,
            "check": self._check,
            "name": self.config.application_name,
        }
        self._pool = psycopg_pool.AsyncConnectionPool(conninfo, open=False, **pool_kwargs)
        try:
            await self._pool.open(
                wait=wait and self.config.min_pool_size > 0, timeout=self.config.pool_timeout
            )
        except psycopg_pool.PoolTimeout as error:
            await self._pool.close()
            raise DatabaseUnavailableError(
                f"cannot connect to {self.config.describe()}: {error}"
            ) from None
        if self.config.replica_urls:
            self._replicas = ReplicaSet(
                self.config.replica_conninfos(),
                max_lag=self.config.max_replica_lag,
                check_interval=self.config.replica_check_interval,
                pool_kwargs=pool_kwargs,
            )
            await self._replicas.open(self._pool)

    @property
    def is_open(self) -> bool:
        """Whether the pool is open (after `open()` or `async with`, until `close()`)."""
        return self._pool is not None and not self._pool.closed

    async def close(self) -> None:
        """Close the pool and every connection in it (and the replicas' pools)."""
        if self._replicas is not None:
            await self._replicas.close()
            self._replicas = None
        if self._pool is not None:
            await self._pool.close()

    def session(
        self, *, owner_id: UUID | str | None = None, actor: str | None = None
    ) -> AbstractAsyncContextManager[Connection]:
        """A connection inside one transaction: commit on exit, rollback on any exception.

        `owner_id` scopes the transaction to one owner (row-level security shows a login of
        agentdb_app only that owner's rows, and none without it); `actor` names who acts,
        for the audit trail. Both are transaction-local and never outlive it.

        A statement that failed inside the block leaves the transaction aborted even when the
        caller caught its error; leaving the block then rolls back and raises
        TransactionAbortedError naming that error, instead of a silent rollback.
        """
        return self._session(begin_for(owner_id, actor, read_only=False))

    def _begin_on(self, conn: PooledConnection, begin: PendingBegin) -> PendingBegin:
        """`begin`, with the statement timeout made local to the transaction on a connection
        through a pooler (where the connection's own setting would be shared state)."""
        timeout = self._local_timeout
        if timeout is None or not conn.is_through_pooler:
            return begin
        return PendingBegin(begin.query + b"; " + timeout, (*begin.commands, timeout))

    @asynccontextmanager
    async def _session(self, begin: PendingBegin) -> AsyncIterator[Connection]:
        # The BEGIN waits on the connection for the block's first statement (one round trip
        # for both when that statement is sent from a pipeline); the transaction is then
        # ours to end. A block that sent nothing has nothing to commit: commit() and
        # rollback() send nothing on an idle connection. The pool's context manager
        # directly, not through connection(): one generator-based context manager less on
        # every unit of work. PoolTimeout and PoolClosed are psycopg errors too.
        try:
            async with self._checked_pool().connection() as conn:
                forget_errors(conn)
                conn.pending_begin = self._begin_on(conn, begin)
                try:
                    yield conn
                except BaseException:
                    await _abandon(conn)
                    raise
                await self._end(conn)
        except psycopg.Error as error:
            raise translate(error) from error

    def read_session(
        self, *, owner_id: UUID | str | None = None, after: str | None = None
    ) -> AbstractAsyncContextManager[Connection]:
        """A read-only transaction on a healthy replica, else on the primary.

        A replica (`DatabaseConfig.replica_urls`) is healthy when it answers and lags at most
        `max_replica_lag` seconds behind the primary. A write in the session is
        AccessDeniedError.

        `after`, a WAL position from `current_lsn()` taken after a write, reads only where
        that write is replayed (read-your-writes): on a replica that has it, else on the
        primary. `owner_id` scopes it like `session()`. A replica that cannot be reached is
        left out, and the read goes elsewhere instead of failing."""
        position = None
        if after is not None:
            if not isinstance(after, str):
                raise InvalidInputError(
                    "after: a WAL position (text, from db.current_lsn())", field="after"
                )
            position = parse_lsn(after)
        return self._read_session(begin_for(owner_id, None, read_only=True), after, position)

    @asynccontextmanager
    async def _read_session(
        self, begin: PendingBegin, after: str | None, position: int | None
    ) -> AsyncIterator[Connection]:
        try:
            async with contextlib.AsyncExitStack() as stack:
                conn = await self._read_connection(stack, begin, after, position)
                try:
                    yield conn
                except BaseException:
                    await _abandon(conn)
                    raise
                await self._end(conn)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
            raise translate(error) from error

    async def _read_connection(
        self,
        stack: contextlib.AsyncExitStack,
        begin: PendingBegin,
        after: str | None,
        position: int | None,
    ) -> PooledConnection:
        """A connection for a read session, its BEGIN pending (or sent, when a replica had to
        be asked whether it has replayed `after`); its release is on `stack`."""
        candidates = self._replicas.candidates(position) if self._replicas is not None else []
        for replica in candidates:
            attempt = contextlib.AsyncExitStack()
            try:
                conn = await attempt.enter_async_context(
                    replica.pool.connection(timeout=CHECKOUT_TIMEOUT)
                )
            except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
                await attempt.aclose()
                replica.mark_down(f"no connection ({type(error).__name__})")
                continue
            forget_errors(conn)
            conn.pending_begin = self._begin_on(conn, begin)
            if position is not None and not has_replayed(replica, position):
                try:
                    async with conn.cursor() as cursor:
                        await execute(cursor, SELECT_REPLAYED, [after])
                        row = await cursor.fetchone()
                    is_replayed = row is not None and bool(row[0])
                except psycopg.Error as error:
                    replica.mark_down(f"no answer ({type(error).__name__})")
                    is_replayed = False
                if not is_replayed:
                    await _abandon(conn)
                    await attempt.aclose()
                    continue
            stack.push_async_exit(attempt)
            return conn
        conn = await stack.enter_async_context(self._checked_pool().connection())
        forget_errors(conn)
        conn.pending_begin = self._begin_on(conn, begin)
        return conn

    async def current_lsn(self) -> str:
        """The primary's WAL position now, as `pg_lsn` text.

        Taken after a write has committed and passed to `read_session(after=…)`, it makes
        that read see the write (on a replica that has replayed it, or on the primary)."""
        try:
            async with self._checked_pool().connection() as conn:
                row = await (await conn.execute(SELECT_PRIMARY_LSN)).fetchone()
                self._returned_at[conn] = time.monotonic()
        except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
            raise translate(error) from error
        assert row is not None
        return format_lsn(wal_end(*row))

    async def _end(self, conn: PooledConnection) -> None:
        """Commit a session's transaction, or roll back one that an error aborted (raising
        TransactionAbortedError naming that error)."""
        conn.pending_begin = None
        if conn.pgconn.transaction_status == _INERROR:
            await conn.rollback()
            raise aborted_error(last_error(conn), rolled_back=True)
        await conn.commit()
        self._returned_at[conn] = time.monotonic()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection in autocommit mode, for callers that manage transactions."""
        try:
            async with self._checked_pool().connection() as conn:
                yield conn
                self._returned_at[conn] = time.monotonic()
        except (psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as error:
            raise translate(error) from error

    async def health_check(self, timeout: float = 2.0) -> bool:
        """True when a pooled connection answers `SELECT 1` within `timeout`; never raises."""
        try:
            async with asyncio.timeout(timeout):
                async with self._checked_pool().connection(timeout=timeout) as conn:
                    await conn.execute("SELECT 1")
            return True
        except Exception:
            return False

    def pool_stats(self) -> dict[str, int]:
        """The pool's counters (`pool_size`, `pool_available`, `requests_waiting`, …)."""
        return self._pool.get_stats() if self._pool is not None else {}

    def _checked_pool(self) -> psycopg_pool.AsyncConnectionPool[PooledConnection]:
        if self._pool is None:
            raise DatabaseUnavailableError(
                "the DatabaseManager is not open: use `async with DatabaseManager(config)`"
            )
        return self._pool

    async def _probe(self, conninfo: str) -> None:
        """One connection, to fail fast with the server's own reason (the pool would retry
        quietly until pool_timeout and then say only that it timed out)."""
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
            await conn.close()
        except TimeoutError:
            raise DatabaseUnavailableError(
                f"cannot connect to {self.config.describe()}: no answer within "
                f"{self.config.connect_timeout:g} s (connect_timeout)"
            ) from None
        except psycopg.Error as error:
            raise DatabaseUnavailableError(
                f"cannot connect to {self.config.describe()}: {connect_reason(error)}"
            ) from None

    async def _configure(self, conn: PooledConnection) -> None:
        timeout_ms = (
            round(self.config.statement_timeout * 1000) if self.config.statement_timeout else 0
        )
        cursor = await conn.execute(
            CONFIGURE_SESSION, {"reported_pid": conn.info.backend_pid, "timeout": str(timeout_ms)}
        )
        row = await cursor.fetchone()
        conn.is_through_pooler = bool(row and row[0])
        set_json_loads(load_json, conn)
        set_json_dumps(dump_json, conn)
        if conn.is_through_pooler:
            # A statement prepared on one server connection is unknown to the next one the
            # pooler hands out: never prepare through it, whatever prepare_threshold says.
            conn.prepare_threshold = None
        await register_vector_types(conn)
        self._returned_at[conn] = time.monotonic()

    async def _check(self, conn: Connection) -> None:
        """The pool's check before it hands `conn` out; raising makes it take another.

        A round trip only for a connection idle a while, or one the server wrote to while it
        sat in the pool (after a restart, the server's farewell and EOF are waiting there)."""
        returned_at = self._returned_at.get(conn)
        if (
            returned_at is not None
            and time.monotonic() - returned_at < CHECK_IDLE_SECONDS
            and not _has_input(conn)
        ):
            return
        await psycopg_pool.AsyncConnectionPool.check_connection(conn)


async def _abandon(conn: PooledConnection) -> None:
    """Roll back a session left by an exception (a lost connection has nothing to roll back)."""
    conn.pending_begin = None
    with contextlib.suppress(psycopg.OperationalError):
        await conn.rollback()


def _scoped_begin(owner_id: object, actor: object, read_only: bool = False) -> PendingBegin:
    """The BEGIN (READ ONLY, for a read session) of a session scoped to `owner_id` and
    `actor`, validated (InvalidInputError naming the field) and quoted. An actor left out is
    left unset (a setting made local to a transaction ends with it)."""
    scope = validated(SessionScope, owner_id=owner_id, actor=actor)
    owner = "" if scope.owner_id is None else str(scope.owner_id)
    commands = [
        b"BEGIN READ ONLY" if read_only else b"BEGIN",
        SET_OWNER.format(sql.Literal(owner)).as_bytes(None),
    ]
    if scope.actor:
        commands.append(SET_ACTOR.format(sql.Literal(scope.actor)).as_bytes(None))
    return PendingBegin(b"; ".join(commands), tuple(commands))


scoped_begin = functools.lru_cache(maxsize=4096)(_scoped_begin)
"""`_scoped_begin`, remembered per (owner_id, actor, read_only) as given: a service serves the same
owners again and again, and validating and quoting cost more than the rest of the call.
Invalid input raises every time (an exception is not remembered)."""


def begin_for(owner_id: object, actor: object, *, read_only: bool) -> PendingBegin:
    """The pending BEGIN of a session (READ ONLY for a read session): the plain one without
    a scope, else `scoped_begin`'s, remembered (or built each time for an unhashable, and
    so invalid, value)."""
    if owner_id is None and actor is None:
        return READ_ONLY_BEGIN if read_only else PLAIN_BEGIN
    try:
        return scoped_begin(owner_id, actor, read_only)
    except TypeError:  # unhashable, so not cacheable: invalid whatever it is
        return _scoped_begin(owner_id, actor, read_only)


async def is_through_pooler(conn: Connection) -> bool:
    """Whether `conn` reaches the server through a pooler such as PgBouncer (the backend pid
    it reported is not the server's: a pooler makes one up). One round trip."""
    row = await (await conn.execute(SELECT_BACKEND_PID)).fetchone()
    return row is not None and row[0] != conn.info.backend_pid


def _has_input(conn: Connection) -> bool:
    """True when the server sent something to an idle connection (or its socket is gone)."""
    try:
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.OperationalError):
        return True
    return bool(readable)


def connect_reason(error: psycopg.Error) -> str:
    """The server's (or the network's) reason in a connection error, in one line: libpq
    wraps it in the address it tried (which the caller names already) and a hint line."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    attempts = [line for line in lines if "failed:" in line]
    reason = attempts[-1].rsplit("failed:", 1)[1] if attempts else (lines or [""])[0]
    return reason.strip().removeprefix("FATAL:").strip() or type(error).__name__
