"""agentdb through a real PgBouncer in transaction mode (`prepare_threshold=None`): nothing a
client sets outlives its transaction on the server connection PgBouncer shares between
clients, and every module's functions work through it."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
import pytest
from aiogram.fsm.storage.base import StorageKey

from app import agents, messaging
from app.agents import Execution
from app.database import (
    DatabaseConfig,
    DatabaseManager,
    InvalidInputError,
    TransactionAbortedError,
)
from app.database.manager import is_through_pooler
from app.integrations.aiogram import PostgresEventIsolation, PostgresStorage, lock_id
from app.worker import ExecutionContext, run_worker

if TYPE_CHECKING:  # imported by pytest as a plugin (an import here would come first)
    from tests.pgbouncer import PgBouncer

pytest_plugins = ["tests.pgbouncer"]

Conn = psycopg.AsyncConnection[Any]
StartPgBouncer = Callable[..., "PgBouncer"]

BACKEND_PID = "SELECT pg_catalog.pg_backend_pid()"
OWNER_SETTING = "SELECT pg_catalog.current_setting('agentdb.owner_id', true)"
ACTOR_SETTING = "SELECT pg_catalog.current_setting('agentdb.actor', true)"
TRY_XACT_LOCK = "SELECT pg_catalog.pg_try_advisory_xact_lock(%s)"
COUNT_ADVISORY_LOCKS = "SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory'"
COUNT_SUCCEEDED = "SELECT count(*) FROM agents.executions WHERE status = 'succeeded'"
SHOW_STATEMENT_TIMEOUT = "SHOW statement_timeout"
SHOW_TIMEZONE = "SHOW TimeZone"
SET_TOKYO = "SET TimeZone = 'Asia/Tokyo'"
SEARCH_SETTINGS = """
SELECT COALESCE(pg_catalog.current_setting('hnsw.ef_search', true), '40'),
       COALESCE(pg_catalog.current_setting('hnsw.iterative_scan', true), 'off'),
       pg_catalog.current_setting('plan_cache_mode')
"""
DEFAULT_SEARCH_SETTINGS = ("40", "off", "auto")  # pgvector's and the server's (or not loaded)


WORKER_TIMINGS: dict[str, Any] = {"heartbeat_interval": 0.5, "stale_after": 10.0}


def pooled_config(url: str, **settings: Any) -> DatabaseConfig:
    """The configuration README gives for PgBouncer in transaction mode."""
    return DatabaseConfig(url=url, prepare_threshold=None, **{"max_pool_size": 4, **settings})


async def one(conn: Conn, statement: Any, params: Any = None) -> Any:
    row = await (await conn.execute(statement, params)).fetchone()
    assert row is not None
    return row[0] if len(row) == 1 else tuple(row)


@pytest.fixture
async def shared(
    pgbouncer: StartPgBouncer, database_url: str
) -> AsyncIterator[tuple[PgBouncer, str]]:
    """A PgBouncer with one server connection for this test's database (every client shares
    it), and the database's URL through it."""
    bouncer = pgbouncer(pool_size=1)
    yield bouncer, bouncer.url(database_url)


@pytest.fixture
async def other_client(shared: tuple[PgBouncer, str]) -> AsyncIterator[Conn]:
    """A plain client of the same PgBouncer (another application sharing the pool)."""
    async with await psycopg.AsyncConnection.connect(
        shared[1], autocommit=True, prepare_threshold=None
    ) as conn:
        yield conn


# The harness --------------------------------------------------------------------------------


async def test_the_harness_puts_pgbouncer_between_the_client_and_the_server(
    shared: tuple[PgBouncer, str], other_client: Conn
) -> None:
    assert await is_through_pooler(other_client)
    async with await psycopg.AsyncConnection.connect(shared[1], autocommit=True) as second:
        # Two clients, one server connection: the pool size is 1.
        assert await one(second, BACKEND_PID) == await one(other_client, BACKEND_PID)


async def test_a_direct_connection_is_not_taken_for_a_pooler(conn: Conn) -> None:
    assert not await is_through_pooler(conn)


# Session state: none, on a server connection shared by clients ------------------------------


async def test_session_owner_and_actor_never_reach_the_next_transaction_on_the_connection(
    shared: tuple[PgBouncer, str], other_client: Conn
) -> None:
    owner = uuid.uuid4()
    async with DatabaseManager(pooled_config(shared[1])) as db:
        async with db.session(owner_id=owner, actor="alice") as conn:
            assert await one(conn, OWNER_SETTING) == str(owner)
            assert await one(conn, ACTOR_SETTING) == "alice"
            pid = await one(conn, BACKEND_PID)
        async with db.session() as conn:
            assert await one(conn, OWNER_SETTING) in (None, "")
            assert await one(conn, ACTOR_SETTING) in (None, "")
    assert await one(other_client, BACKEND_PID) == pid  # the same server connection
    assert await one(other_client, OWNER_SETTING) in (None, "")
    assert await one(other_client, ACTOR_SETTING) in (None, "")


async def test_the_statement_timeout_holds_for_agentdb_and_never_for_the_pools_other_clients(
    shared: tuple[PgBouncer, str], other_client: Conn
) -> None:
    server_default = await one(other_client, SHOW_STATEMENT_TIMEOUT)
    async with DatabaseManager(pooled_config(shared[1], statement_timeout=1.5)) as db:
        async with db.session() as conn:
            assert await one(conn, SHOW_STATEMENT_TIMEOUT) == "1500ms"
        async with db.session(owner_id=uuid.uuid4()) as conn:
            assert await one(conn, SHOW_STATEMENT_TIMEOUT) == "1500ms"
        with pytest.raises(TransactionAbortedError):
            async with db.session() as conn:
                with pytest.raises(psycopg.errors.QueryCanceled):
                    await conn.execute("SELECT pg_catalog.pg_sleep(5)")
        assert await one(other_client, SHOW_STATEMENT_TIMEOUT) == server_default


async def test_agentdb_reads_utc_and_another_client_keeps_its_own_time_zone(
    shared: tuple[PgBouncer, str], other_client: Conn
) -> None:
    await other_client.execute(SET_TOKYO)
    async with DatabaseManager(pooled_config(shared[1])) as db:
        for _ in range(3):
            async with db.session() as conn:
                assert await one(conn, SHOW_TIMEZONE) == "UTC"
                now = await one(conn, "SELECT now()")
                assert now.utcoffset().total_seconds() == 0
            assert await one(other_client, SHOW_TIMEZONE) == "Asia/Tokyo"


async def test_search_settings_end_with_the_search(
    shared: tuple[PgBouncer, str], other_client: Conn
) -> None:
    owner = uuid.uuid4()
    vector = np.random.default_rng(7).standard_normal(1536).astype(np.float32)
    async with DatabaseManager(pooled_config(shared[1])) as db:
        async with db.session() as conn:
            chat = await messaging.create_chat(conn, owner_id=owner)
            await messaging.add_message(
                conn, chat.id, role="user", content="hello", embedding=vector
            )
        async with db.connection() as conn:  # autocommit: the search's own implicit transaction
            hits = await messaging.search_messages(conn, owner_id=owner, embedding=vector)
            assert [hit.message.content for hit in hits] == ["hello"]
            assert await one(conn, SEARCH_SETTINGS) == DEFAULT_SEARCH_SETTINGS
        async with db.session() as conn:  # inside a transaction: put back right after it
            hits = await messaging.search_messages(conn, owner_id=owner, embedding=vector)
            assert len(hits) == 1
            assert await one(conn, SEARCH_SETTINGS) == DEFAULT_SEARCH_SETTINGS
    assert await one(other_client, SEARCH_SETTINGS) == DEFAULT_SEARCH_SETTINGS


# aiogram: the storage, and an isolation lock that stays inside its transaction -----------


def storage_key(user: int) -> StorageKey:
    return StorageKey(bot_id=1, chat_id=user, user_id=user)


@pytest.mark.parametrize("threshold", [None, 5], ids=["prepare_threshold=None", "default"])
async def test_the_aiogram_storage_works_through_pgbouncer(
    pgbouncer: StartPgBouncer, database_url: str, threshold: int | None
) -> None:
    # With the default threshold too: a pooler is found, and nothing is prepared through it.
    bouncer = pgbouncer(pool_size=3)
    config = DatabaseConfig(url=bouncer.url(database_url), prepare_threshold=threshold)
    async with (
        DatabaseManager(config) as db,
        await psycopg.AsyncConnection.connect(bouncer.url(database_url)) as other,
    ):
        storage = PostgresStorage(db)
        isolation = storage.create_isolation()
        try:
            # Past psycopg's prepare threshold, on changing server connections (every other
            # round another client's transaction holds one): a statement prepared on one
            # server connection would be unknown to the next.
            for round_ in range(12):
                if round_ % 2:
                    await other.execute(BACKEND_PID)  # its transaction holds a connection
                async with isolation.lock(storage_key(1)):
                    await storage.set_state(storage_key(1), f"Form:step{round_}")
                    await storage.update_data(storage_key(1), {f"k{round_}": round_})
                await other.rollback()
            assert await storage.get_state(storage_key(1)) == "Form:step11"
            assert await storage.get_data(storage_key(1)) == {f"k{n}": n for n in range(12)}
            await storage.set_data(storage_key(1), {"name": "Alice"})
            assert await storage.get_value(storage_key(1), "name") == "Alice"
        finally:
            await isolation.close()
            await storage.close()


async def test_the_isolation_lock_never_escapes_to_another_client_of_the_pool(
    pgbouncer: StartPgBouncer, database_url: str
) -> None:
    # A session-level lock taken in autocommit would stay on the server connection, which
    # PgBouncer then hands to the next client: that client would hold the lock too (advisory
    # locks are reentrant within a session).
    bouncer = pgbouncer(pool_size=2)
    number = lock_id(storage_key(1))
    async with DatabaseManager(pooled_config(bouncer.url(database_url))) as db:
        isolation = PostgresEventIsolation(db)
        try:
            for _ in range(3):
                async with (
                    await psycopg.AsyncConnection.connect(
                        bouncer.url(database_url), autocommit=True, prepare_threshold=None
                    ) as other,
                    isolation.lock(storage_key(1)),
                ):
                    assert await one(other, TRY_XACT_LOCK, [number]) is False
                    assert await one(other, TRY_XACT_LOCK, [lock_id(storage_key(2))]) is True
                async with await psycopg.AsyncConnection.connect(database_url) as direct:
                    assert await one(direct, COUNT_ADVISORY_LOCKS) == 0  # gone with its handler
        finally:
            await isolation.close()


# The worker: no LISTEN through the pooler --------------------------------------------------


async def succeeded(db: DatabaseManager) -> int:
    async with db.connection() as conn:
        return int(await one(conn, COUNT_SUCCEEDED))


async def wait_for(check: Callable[[], Any], timeout: float) -> bool:
    """Whether `check()` (a coroutine function) turns true within `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


async def echo(execution: Execution, context: ExecutionContext) -> dict[str, Any]:
    return {"n": execution.input["n"]}


async def test_a_worker_through_pgbouncer_without_a_direct_url_polls_and_drains_the_queue(
    pgbouncer: StartPgBouncer, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    bouncer = pgbouncer(pool_size=4)
    caplog.set_level(logging.INFO, logger="agentdb.worker")
    async with DatabaseManager(pooled_config(bouncer.url(database_url))) as db:
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_worker(db, {"echo": echo}, poll_interval=0.2, stop=stop, **WORKER_TIMINGS)
        )
        try:
            async with db.session() as conn:
                await agents.enqueue_executions(
                    conn, [{"agent_name": "echo", "input": {"n": n}} for n in range(50)]
                )
            assert await wait_for(lambda: is_count(db, 50), timeout=60)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    polling = [r.getMessage() for r in caplog.records if "polling every 0.2s" in r.getMessage()]
    assert len(polling) == 1 and "no direct URL is given (AGENTDB_DIRECT_URL)" in polling[0]


async def test_a_worker_through_pgbouncer_listens_on_the_direct_url(
    pgbouncer: StartPgBouncer, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Polling every 30 s, a job enqueued after the worker's first claim waits up to 30 s; a
    # NOTIFY heard on the direct connection starts it at once. 10 s is far from both.
    bouncer = pgbouncer(pool_size=4)
    caplog.set_level(logging.INFO, logger="agentdb.worker")
    config = pooled_config(bouncer.url(database_url), direct_url=database_url)
    async with DatabaseManager(config) as db:
        async with db.session() as conn:
            await agents.enqueue_execution(conn, agent_name="echo", input={"n": 0})
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_worker(db, {"echo": echo}, poll_interval=30, stop=stop, **WORKER_TIMINGS)
        )
        try:
            assert await wait_for(lambda: is_count(db, 1), timeout=20)  # the first claim
            await asyncio.sleep(0.5)  # the listener is up (and heard nothing meanwhile)
            async with db.session() as conn:
                await agents.enqueue_execution(conn, agent_name="echo", input={"n": 1})
            assert await wait_for(lambda: is_count(db, 2), timeout=10)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    assert not [r for r in caplog.records if "polling every" in r.getMessage()]


async def is_count(db: DatabaseManager, count: int) -> bool:
    return await succeeded(db) == count


# The direct URL (the worker's listener) ------------------------------------------------------


def test_the_direct_url_comes_from_agentdb_direct_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@pgbouncer:6432/agentdb")
    monkeypatch.setenv("AGENTDB_DIRECT_URL", "postgresql://app@db:5432/agentdb")
    config = DatabaseConfig.from_env()
    assert config.direct_url is not None
    assert config.direct_url.get_secret_value() == "postgresql://app@db:5432/agentdb"
    assert "host=db" in (config.direct_conninfo() or "")
    assert DatabaseConfig(url="postgresql://app@pgbouncer/agentdb").direct_conninfo() is None


def test_a_bad_direct_url_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@pgbouncer:6432/agentdb")
    monkeypatch.setenv("AGENTDB_DIRECT_URL", "mysql://app@db/agentdb")
    with pytest.raises(InvalidInputError, match=r"^AGENTDB_DIRECT_URL: not a PostgreSQL URL"):
        DatabaseConfig.from_env()
