"""aiogram 3 on PostgreSQL: an FSM storage and a cross-process event isolation (extra
`[aiogram]`).

Three lines switch a bot from Memory or Redis storage::

    storage = PostgresStorage.from_url(url)
    dp = Dispatcher(storage=storage, events_isolation=storage.create_isolation())

The storage keeps each aiogram `StorageKey` in one row of telegram.sessions (the six parts
are the table's key, so bot, chat, user, forum topic, business connection and destiny never
share a record), through `app.telegram`'s functions: one statement per call, on a pooled
connection in autocommit. `update_data` is one atomic merge in SQL, so concurrent updates of
one key from any number of processes all land (aiogram's own storages read, merge and write
back, and lose updates without an isolation that serializes handlers).

The isolation serializes the handlers of one key across processes with a PostgreSQL advisory
lock, held by a transaction of its own on a connection of its own for the handler's
duration: released when the handler returns or raises (the transaction ends), and by the
server when the process dies (its connection goes with it). Being transaction-scoped, the
lock can never stay behind on a server connection that a transaction pooler (PgBouncer)
hands to another client: the open transaction keeps that server connection the handler's
until the lock is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

try:
    from aiogram.exceptions import DataNotDictLikeError
    from aiogram.fsm.state import State
    from aiogram.fsm.storage.base import BaseEventIsolation, BaseStorage, StateType, StorageKey
except ImportError as error:  # pragma: no cover - exercised by a test in a clean interpreter
    raise ImportError(
        "app.integrations.aiogram needs aiogram: install the extra, pip install 'agentdb[aiogram]'"
    ) from error

import psycopg
import psycopg_pool
from psycopg.pq import TransactionStatus

from app import telegram
from app.database import DatabaseConfig, DatabaseManager, DatabaseUnavailableError
from app.database.errors import InvalidInputError, translate
from app.database.manager import is_through_pooler

__all__ = ["PostgresEventIsolation", "PostgresStorage", "lock_id"]

Ttl = int | timedelta
"""A time to live as aiogram's Redis storage takes it: seconds, or a timedelta."""

# A transaction-scoped advisory lock: it ends with its transaction, whatever the pooling.
# The transaction holds nothing else, so it is rolled back when the handler is done.
BEGIN = "BEGIN"
LOCK = "SELECT pg_catalog.pg_advisory_xact_lock(%s)"
END_LOCK = "ROLLBACK"


class PostgresStorage(BaseStorage):
    """aiogram's `BaseStorage` on telegram.sessions.

    `db` is shared with the application (open it before the bot runs; `close()` leaves it
    open), or owned: `from_url` makes one that opens on first use and closes with the
    storage. `state_ttl` / `data_ttl` (seconds or a timedelta) make a state or the data read
    as empty that long after it was written, as aiogram's Redis storage does.
    """

    def __init__(
        self,
        db: DatabaseManager,
        *,
        state_ttl: Ttl | None = None,
        data_ttl: Ttl | None = None,
    ) -> None:
        self.db = db
        self.state_ttl = _ttl(state_ttl, "state_ttl")
        self.data_ttl = _ttl(data_ttl, "data_ttl")
        self._owns_db = False
        self._opening = asyncio.Lock()
        self._isolations: list[PostgresEventIsolation] = []

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        state_ttl: Ttl | None = None,
        data_ttl: Ttl | None = None,
        **config: Any,
    ) -> PostgresStorage:
        """A storage with a DatabaseManager of its own on `url`, opened on first use, closed
        by `close()`. Further keywords go to DatabaseConfig (max_pool_size, for one)."""
        storage = cls(
            DatabaseManager(DatabaseConfig(url=url, **config)),
            state_ttl=state_ttl,
            data_ttl=data_ttl,
        )
        storage._owns_db = True
        return storage

    def create_isolation(self, **options: Any) -> PostgresEventIsolation:
        """An event isolation on the same database (options: see PostgresEventIsolation),
        closed with the storage."""
        isolation = PostgresEventIsolation(self.db, opener=self._database, **options)
        self._isolations.append(isolation)
        return isolation

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        """Set the key's FSM state (None: no state), with the storage's `state_ttl`."""
        value = state.state if isinstance(state, State) else state
        db = await self._database()
        async with db.connection() as conn:
            await telegram.set_state(conn, session_key(key), value, ttl=self.state_ttl)

    async def get_state(self, key: StorageKey) -> str | None:
        """The key's FSM state, or None."""
        db = await self._database()
        async with db.connection() as conn:
            return await telegram.get_state(conn, session_key(key))

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        """Replace the key's FSM data, with the storage's `data_ttl`."""
        if not isinstance(data, dict):
            raise DataNotDictLikeError(
                f"Data must be a dict or dict-like object, got {type(data).__name__}"
            )
        db = await self._database()
        async with db.connection() as conn:
            await telegram.set_data(conn, session_key(key), data, ttl=self.data_ttl)

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        """The key's FSM data ({} when there is none)."""
        db = await self._database()
        async with db.connection() as conn:
            return await telegram.get_data(conn, session_key(key))

    async def get_value(
        self, storage_key: StorageKey, dict_key: str, default: Any | None = None
    ) -> Any | None:
        """One value of the key's FSM data, read on the server (`default` when it has none)."""
        db = await self._database()
        async with db.connection() as conn:
            return await telegram.get_value(conn, session_key(storage_key), dict_key, default)

    async def update_data(self, key: StorageKey, data: Mapping[str, Any]) -> dict[str, Any]:
        """Merge `data` into the key's FSM data, atomically in SQL; return the merged data."""
        if not isinstance(data, dict):
            raise DataNotDictLikeError(
                f"Data must be a dict or dict-like object, got {type(data).__name__}"
            )
        db = await self._database()
        async with db.connection() as conn:
            return await telegram.update_data(conn, session_key(key), data, ttl=self.data_ttl)

    async def close(self) -> None:
        """Close the isolations this storage created, and the DatabaseManager if it is the
        storage's own."""
        for isolation in self._isolations:
            await isolation.close()
        self._isolations.clear()
        if self._owns_db:
            await self.db.close()

    async def _database(self) -> DatabaseManager:
        if self._owns_db and not self.db.is_open:
            async with self._opening:
                if not self.db.is_open:
                    await self.db.open()
        return self.db


class PostgresEventIsolation(BaseEventIsolation):
    """aiogram's `BaseEventIsolation` with PostgreSQL advisory locks, across every process
    of the bot. The handlers of one `StorageKey` run one at a time; different keys never
    wait for each other.

    Each held (or awaited) lock takes a connection of the isolation's own pool, apart from
    the storage's, so handlers waiting for a lock never starve the queries of the handlers
    that run. The pool holds at most `max_connections`; a handler that finds none free
    within `timeout` seconds raises DatabaseUnavailableError saying so. Through PgBouncer
    each held lock also holds a server connection (its transaction): the bouncer's pool
    must be larger than the number of handlers running at once.
    """

    def __init__(
        self,
        db: DatabaseManager,
        *,
        max_connections: int = 20,
        timeout: float = 30.0,
        opener: Callable[[], Awaitable[DatabaseManager]] | None = None,
    ) -> None:
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise InvalidInputError("max_connections: must be an int", field="max_connections")
        if max_connections < 1:
            raise InvalidInputError("max_connections: must be at least 1", field="max_connections")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise InvalidInputError(
                "timeout: must be a positive number of seconds", field="timeout"
            )
        self.db = db
        self.max_connections = max_connections
        self.timeout = float(timeout)
        self._opener = opener
        self._pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._opening = asyncio.Lock()

    @asynccontextmanager
    async def lock(self, key: StorageKey) -> AsyncIterator[None]:
        """Hold the key's advisory lock while the block runs (waiting while another process
        holds it)."""
        number = lock_id(key)
        pool = await self._lock_pool()
        try:
            conn = await pool.getconn(timeout=self.timeout)
        except psycopg_pool.PoolTimeout:
            raise DatabaseUnavailableError(
                f"no lock connection free within {self.timeout:g} s: all {self.max_connections}"
                " are held by handlers running or waiting; raise max_connections"
            ) from None
        except psycopg.Error as error:
            raise translate(error) from error
        try:
            try:
                await conn.execute(BEGIN)
                await conn.execute(LOCK, [number])
            except psycopg.Error as error:
                raise translate(error) from error
            try:
                yield
            finally:
                with contextlib.suppress(psycopg.Error):
                    await conn.execute(END_LOCK)
        finally:
            if conn.closed or conn.pgconn.transaction_status != TransactionStatus.IDLE:
                # Cancelled while waiting, or the rollback failed: closing the connection is
                # what surely ends the transaction and its lock (through PgBouncer too, which
                # drops a server connection its client left inside a transaction).
                await conn.close()
            await pool.putconn(conn)

    async def close(self) -> None:
        """Close the isolation's pool of lock connections."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _lock_pool(self) -> psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    db = await self._opener() if self._opener else self.db
                    pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]] = (
                        psycopg_pool.AsyncConnectionPool(
                            db.config.conninfo(),
                            min_size=0,
                            max_size=self.max_connections,
                            kwargs={
                                "autocommit": True,
                                "prepare_threshold": db.config.prepare_threshold,
                            },
                            configure=_configure_lock_connection,
                            open=False,
                            name=f"{db.config.application_name}-aiogram-locks",
                        )
                    )
                    await pool.open(wait=False)
                    self._pool = pool
        return self._pool


async def _configure_lock_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    """Through a pooler, a lock connection never prepares its statements (a statement
    prepared on one server connection is unknown to the next)."""
    if await is_through_pooler(conn):
        conn.prepare_threshold = None


def session_key(key: StorageKey) -> telegram.SessionKey:
    """The telegram.sessions key of an aiogram StorageKey: the same six parts."""
    return telegram.SessionKey(
        bot_id=key.bot_id,
        telegram_chat_id=key.chat_id,
        telegram_user_id=key.user_id,
        thread_id=key.thread_id,
        business_connection_id=key.business_connection_id,
        destiny=key.destiny,
    )


def lock_id(key: StorageKey) -> int:
    """The advisory lock number of a key: 64 bits of a BLAKE2b digest of its six parts. It
    is the same in every process (unlike Python's hash), under a prefix of agentdb's own."""
    parts = [
        key.bot_id,
        key.chat_id,
        key.user_id,
        key.thread_id,
        key.business_connection_id,
        key.destiny,
    ]
    digest = hashlib.blake2b(
        json.dumps(parts).encode(), digest_size=8, person=b"agentdb.aiogram"
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


def _ttl(value: Ttl | None, field: str) -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | timedelta):
        raise InvalidInputError(
            f"{field}: must be seconds (int) or a timedelta, not {type(value).__name__}",
            field=field,
        )
    ttl = timedelta(seconds=value) if isinstance(value, int) else value
    if ttl <= timedelta(0):
        raise InvalidInputError(f"{field}: must be positive", field=field)
    return ttl
