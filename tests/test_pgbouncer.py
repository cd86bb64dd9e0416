"""agentdb through a real PgBouncer in transaction mode (`prepare_threshold=None`): nothing a
client sets outlives its transaction on the server connection PgBouncer shares between
clients, and every module's functions work through it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
import pytest

from app import messaging
from app.database import (
    DatabaseConfig,
    DatabaseManager,
    InvalidInputError,
    TransactionAbortedError,
)
from app.database.manager import is_through_pooler

if TYPE_CHECKING:  # imported by pytest as a plugin (an import here would come first)
    from tests.pgbouncer import PgBouncer

pytest_plugins = ["tests.pgbouncer"]

Conn = psycopg.AsyncConnection[Any]
StartPgBouncer = Callable[..., "PgBouncer"]

BACKEND_PID = "SELECT pg_catalog.pg_backend_pid()"
OWNER_SETTING = "SELECT pg_catalog.current_setting('agentdb.owner_id', true)"
ACTOR_SETTING = "SELECT pg_catalog.current_setting('agentdb.actor', true)"
SHOW_STATEMENT_TIMEOUT = "SHOW statement_timeout"
SHOW_TIMEZONE = "SHOW TimeZone"
SET_TOKYO = "SET TimeZone = 'Asia/Tokyo'"
SEARCH_SETTINGS = """
SELECT COALESCE(pg_catalog.current_setting('hnsw.ef_search', true), '40'),
       COALESCE(pg_catalog.current_setting('hnsw.iterative_scan', true), 'off'),
       pg_catalog.current_setting('plan_cache_mode')
"""
DEFAULT_SEARCH_SETTINGS = ("40", "off", "auto")  # pgvector's and the server's (or not loaded)


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
