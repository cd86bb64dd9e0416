"""DatabaseManager: the connection pool's lifecycle, transactions, health."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import psycopg
import psycopg_pool

from app.database.config import DatabaseConfig
from app.database.errors import DatabaseUnavailableError, translate
from app.database.vectors import register_vector_types

Connection = psycopg.AsyncConnection[Any]

# Session settings every pooled connection starts with: UTC so timestamps read the same
# everywhere, and the configured statement timeout ('0' = the server's default of none).
CONFIGURE_SESSION = """
SELECT pg_catalog.set_config('TimeZone', 'UTC', false),
       pg_catalog.set_config('statement_timeout', %s, false)
"""


class DatabaseManager:
    """Owns an `AsyncConnectionPool`; use it as `async with DatabaseManager(config) as db:`."""

    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
        self._pool = psycopg_pool.AsyncConnectionPool(
            config.conninfo(),
            min_size=config.min_pool_size,
            max_size=config.max_pool_size,
            timeout=config.pool_timeout,
            kwargs={"autocommit": True, "prepare_threshold": config.prepare_threshold},
            configure=self._configure,
            open=False,
            name=config.application_name,
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
        """Open the pool; with `wait`, until `min_pool_size` connections are ready (at most
        `pool_timeout` seconds)."""
        try:
            await self._pool.open(
                wait=wait and self.config.min_pool_size > 0, timeout=self.config.pool_timeout
            )
        except psycopg_pool.PoolTimeout as error:
            await self._pool.close()
            raise DatabaseUnavailableError(
                f"cannot connect to {self.config.describe()}: {error}"
            ) from None

    async def close(self) -> None:
        """Close the pool and every connection in it."""
        await self._pool.close()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Connection]:
        """A connection inside one transaction: commit on exit, rollback on any exception."""
        # The pool's and the transaction's context managers directly, not through
        # connection(): one generator-based context manager less on every unit of work.
        # PoolTimeout and PoolClosed are psycopg errors too.
        try:
            async with self._pool.connection() as conn, conn.transaction():
                yield conn
        except psycopg.Error as error:
            raise translate(error) from error

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection in autocommit mode, for callers that manage transactions."""
        try:
            async with self._pool.connection() as conn:
                yield conn
        except (psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as error:
            raise translate(error) from error

    async def health_check(self, timeout: float = 2.0) -> bool:
        """True when a pooled connection answers `SELECT 1` within `timeout`; never raises."""
        try:
            async with asyncio.timeout(timeout):
                async with self._pool.connection(timeout=timeout) as conn:
                    await conn.execute("SELECT 1")
            return True
        except Exception:
            return False

    def pool_stats(self) -> dict[str, int]:
        """The pool's counters (`pool_size`, `pool_available`, `requests_waiting`, …)."""
        return self._pool.get_stats()

    async def _configure(self, conn: Connection) -> None:
        timeout_ms = (
            round(self.config.statement_timeout * 1000) if self.config.statement_timeout else 0
        )
        await conn.execute(CONFIGURE_SESSION, [str(timeout_ms)])
        await register_vector_types(conn)
