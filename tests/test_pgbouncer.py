"""agentdb through a real PgBouncer in transaction mode (`prepare_threshold=None`): nothing a
client sets outlives its transaction on the server connection PgBouncer shares between
clients, and every module's functions work through it."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
import pytest
from aiogram.fsm.storage.base import StorageKey

from app import agents, audit, knowledge, messaging, tasks, telegram
from app.agents import Execution, tools
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


async def test_row_level_security_follows_each_transactions_owner_on_one_server_connection(
    pgbouncer: StartPgBouncer, database_url: str, login_as: Any
) -> None:
    # As agentdb_app: every transaction sees only its own owner's rows, and one without an
    # owner sees none (fail closed), although all of them run on the same server connection.
    app_login = login_as("agentdb_app")
    bouncer = pgbouncer(pool_size=1, login=app_login)
    alice, bob = uuid.uuid4(), uuid.uuid4()
    async with DatabaseManager(pooled_config(bouncer.url(database_url))) as db:
        async with db.session(owner_id=alice) as conn:
            chat = await messaging.create_chat(conn, owner_id=alice, title="alice's")
            pid = await one(conn, BACKEND_PID)
        async with db.session(owner_id=bob) as conn:
            assert await messaging.get_chat(conn, chat.id) is None
            assert await one(conn, BACKEND_PID) == pid
        async with db.session() as conn:
            assert await messaging.get_chat(conn, chat.id) is None
        async with db.connection() as conn:
            assert await messaging.get_chat(conn, chat.id) is None
        async with db.session(owner_id=alice) as conn:
            found = await messaging.get_chat(conn, chat.id)
            assert found is not None and found.title == "alice's"


async def test_the_statement_timeout_holds_for_agentdb_and_never_for_the_pools_other_clients(
    shared: tuple[PgBouncer, str], other_client: Conn
) -> None:
    server_default = await one(other_client, SHOW_STATEMENT_TIMEOUT)
    async with DatabaseManager(pooled_config(shared[1], statement_timeout=1.5)) as db:
        async with db.session() as conn:
            assert await one(conn, SHOW_STATEMENT_TIMEOUT) == "1500ms"
        async with db.session(owner_id=uuid.uuid4()) as conn:
            assert await one(conn, SHOW_STATEMENT_TIMEOUT) == "1500ms"
        async with db.read_session(owner_id=uuid.uuid4()) as conn:
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


# Every module's functions, through a pool of two server connections ------------------------


@pytest.fixture
async def pooled_db(pgbouncer: StartPgBouncer, database_url: str) -> AsyncIterator[DatabaseManager]:
    """A DatabaseManager of four connections through a PgBouncer of two server connections
    (its transactions land on whichever is free)."""
    bouncer = pgbouncer(pool_size=2)
    async with DatabaseManager(pooled_config(bouncer.url(database_url))) as db:
        yield db


WORDS = ["alpha", "bravo", "charlie", "delta"]


def vector(seed: int) -> Any:
    return np.random.default_rng(seed).standard_normal(1536).astype(np.float32)


async def test_messaging_through_pgbouncer(pooled_db: DatabaseManager) -> None:
    owner = uuid.uuid4()
    async with pooled_db.session(owner_id=owner, actor="scenario") as conn:
        chat = await messaging.create_chat(conn, owner_id=owner, title="Groceries")
        first = await messaging.add_message(conn, chat.id, role="user", content="buy milk")
    async with pooled_db.session() as conn:
        copied = await messaging.add_messages(
            conn,
            [
                messaging.MessageCreate(
                    chat_id=chat.id, role="assistant", content=f"noted {n}", embedding=vector(n)
                )
                for n in range(5)
            ],
        )
        assert copied == 5
        await messaging.set_message_embedding(conn, first.id, vector(99))
        await messaging.update_chat(conn, chat.id, title="Shopping")
    async with pooled_db.connection() as conn:
        page = await messaging.list_messages(conn, chat.id, limit=4)
        older = await messaging.list_messages(conn, chat.id, limit=4, before=page.next_cursor)
        assert [m.content for m in older.items + page.items] == ["buy milk"] + [
            f"noted {n}" for n in range(5)
        ]
        assert await messaging.count_messages(conn, chat.id) == 6
        hits = await messaging.search_messages(conn, owner_id=owner, embedding=vector(3))
        assert hits[0].message.content == "noted 3"
        hybrid = await messaging.hybrid_search_messages(
            conn, owner_id=owner, embedding=vector(99), query="milk"
        )
        assert hybrid[0].message.id == first.id
        await messaging.delete_message(conn, first.id)
        assert await messaging.get_message(conn, first.id) is None
        chats = await messaging.list_chats(conn, owner_id=owner)
        assert [c.title for c in chats.items] == ["Shopping"]
        await messaging.delete_chat(conn, chat.id)
        assert await messaging.get_chat(conn, chat.id) is None


async def test_tasks_through_pgbouncer(pooled_db: DatabaseManager) -> None:
    owner = uuid.uuid4()
    async with pooled_db.session(owner_id=owner) as conn:
        milk = await tasks.create_todo(conn, owner_id=owner, title="Buy milk", priority=1)
        bread = await tasks.create_todo(conn, owner_id=owner, title="Buy bread")
    async with pooled_db.session() as conn:
        await tasks.update_todo(conn, bread.id, {"status": "in_progress"})
        done = await tasks.complete_todo(conn, milk.id)
        assert done.completed_at is not None
    async with pooled_db.connection() as conn:
        counts = await tasks.count_todos_by_status(conn, owner_id=owner)
        assert (counts.get("in_progress"), counts.get("done"), counts.get("pending", 0)) == (
            1,
            1,
            0,
        )
        listed = await tasks.list_todos(conn, owner_id=owner, statuses=["in_progress"])
        assert [t.id for t in listed.items] == [bread.id]
        assert [t.id for t in await tasks.get_todos_by_status(conn, "done")] == [milk.id]
        await tasks.delete_todo(conn, bread.id)
        assert await tasks.get_todo(conn, bread.id) is None


async def test_the_queue_through_pgbouncer(pooled_db: DatabaseManager) -> None:
    async with pooled_db.session() as conn:
        one_ = await agents.enqueue_execution(conn, agent_name="a", input={"n": 1}, dedupe_key="k")
        again = await agents.enqueue_execution(conn, agent_name="a", input={"n": 1}, dedupe_key="k")
        assert again.id == one_.id
        await agents.enqueue_executions(
            conn, [{"agent_name": "a", "input": {"n": n}} for n in (2, 3)]
        )
    async with pooled_db.connection() as conn:
        claimed = await agents.claim_executions(conn, worker_id="w", agent_names=["a"], limit=3)
        assert len(claimed) == 3
        first, second, third = claimed
        assert await agents.heartbeat_execution(
            conn, first.id, worker_id="w", attempt=first.attempt
        )
        await agents.complete_execution(
            conn,
            first.id,
            output={"ok": True},
            model="m",
            prompt_tokens=3,
            completion_tokens=4,
            cost_usd=0.01,
            worker_id="w",
            attempt=first.attempt,
        )
        failed = await agents.fail_execution(conn, second.id, error="boom", retry=False)
        assert failed.status == "failed"
        await agents.cancel_execution(conn, third.id)
        stats = await agents.execution_stats(conn, agent_name="a")
        assert (stats.total, stats.success_rate, stats.prompt_tokens) == (3, 0.5, 3)
        page = await agents.list_executions(conn, agent_name="a", status="succeeded")
        assert [e.id for e in page.items] == [first.id]
        assert await agents.requeue_stale_executions(conn, older_than=timedelta(hours=1)) == 0
        done = await agents.get_execution(conn, first.id)
        assert done is not None and done.output == {"ok": True}


async def test_agent_tools_through_pgbouncer(pooled_db: DatabaseManager) -> None:
    async with pooled_db.session() as conn:
        server = await tools.upsert_mcp_server(
            conn, name="files", transport="stdio", endpoint="mcp-files"
        )
        sync = await tools.sync_tools(
            conn,
            server.id,
            [
                tools.ToolSpec(name=f"tool{n}", description=f"does {n}", input_schema={})
                for n in range(3)
            ],
        )
        assert sync.inserted == 3
    async with pooled_db.connection() as conn:
        listed = await tools.list_tools(conn, server.id)
        await tools.set_tool_embeddings(conn, {t.id: vector(n) for n, t in enumerate(listed)})
        hits = await tools.select_tools(conn, embedding=vector(0), limit=2)
        assert hits[0].tool.id == listed[0].id
        execution = await agents.enqueue_execution(conn, agent_name="a")
        call = await tools.start_tool_call(
            conn, execution.id, tool_name="tool0", arguments={"path": "/"}, tool_id=listed[0].id
        )
        finished = await tools.finish_tool_call(conn, call.id, result={"files": []})
        assert finished.status == "succeeded"
        assert [c.id for c in await tools.list_tool_calls(conn, execution.id)] == [call.id]
        assert [s.tool_name for s in await tools.tool_call_stats(conn)] == ["tool0"]


async def test_knowledge_through_pgbouncer(pooled_db: DatabaseManager) -> None:
    owner = uuid.uuid4()
    async with pooled_db.session(owner_id=owner) as conn:
        memory = await knowledge.remember(
            conn, owner_id=owner, content="likes tea", embedding=vector(1)
        )
        same = await knowledge.remember(
            conn, owner_id=owner, content="likes green tea", embedding=vector(1)
        )
        assert same.id == memory.id and same.times_reinforced == 1
        document = await knowledge.add_document(conn, owner_id=owner, title="Manual")
        added = await knowledge.add_chunks(
            conn,
            document.id,
            [
                knowledge.ChunkCreate(
                    chunk_index=n,
                    content=f"part {n} of the manual: {WORDS[n]}",
                    embedding=vector(10 + n),
                )
                for n in range(4)
            ],
        )
        assert added == 4
    async with pooled_db.session() as conn:
        recalled = await knowledge.recall(conn, owner_id=owner, embedding=vector(1))
        assert [hit.memory.id for hit in recalled] == [memory.id]
        await knowledge.update_memory(conn, memory.id, {"importance": 0.9})
    async with pooled_db.connection() as conn:
        chunks = await knowledge.search_chunks(conn, owner_id=owner, embedding=vector(12))
        assert chunks[0].chunk.chunk_index == 2
        hybrid = await knowledge.hybrid_search_chunks(
            conn, owner_id=owner, embedding=vector(13), query="delta"
        )
        assert hybrid[0].chunk.chunk_index == 3
        assert len(await knowledge.list_chunks(conn, document.id)) == 4
        assert [m.id for m in (await knowledge.list_memories(conn, owner_id=owner)).items] == [
            memory.id
        ]
        assert [d.id for d in (await knowledge.list_documents(conn, owner_id=owner)).items] == [
            document.id
        ]
        await knowledge.forget(conn, memory.id)
        await knowledge.delete_document(conn, document.id)
        assert await knowledge.search_chunks(conn, owner_id=owner, embedding=vector(12)) == []
        assert await knowledge.purge_expired_memories(conn) == 0


async def test_audit_through_pgbouncer(pooled_db: DatabaseManager) -> None:
    owner = uuid.uuid4()
    async with pooled_db.session(owner_id=owner, actor="alice") as conn:
        chat = await messaging.create_chat(conn, owner_id=owner, title="t")
        await messaging.add_message(conn, chat.id, role="user", content="hi")
    async with pooled_db.session(actor="bob") as conn:
        await messaging.update_chat(conn, chat.id, title="renamed")
    async with pooled_db.connection() as conn:
        events = await audit.list_audit_events(conn, owner_id=owner, table_name="chats")
        assert [(e.operation, e.actor) for e in events.items] == [("update", "bob")]
    async with pooled_db.session() as conn:
        report = await audit.erase_owner(conn, owner)
        assert report.deleted["messaging.messages"] == 1
        assert await audit.purge_deleted(conn, older_than=timedelta(days=1)) is not None
    async with pooled_db.connection() as conn:
        events = await audit.list_audit_events(conn, owner_id=owner)
        assert "erase" in [e.operation for e in events.items]


async def test_telegram_sessions_through_pgbouncer(pooled_db: DatabaseManager) -> None:
    key = telegram.SessionKey(bot_id=1, telegram_chat_id=5, telegram_user_id=5)
    async with pooled_db.session() as conn:
        chat = await messaging.create_chat(conn, owner_id=uuid.uuid4())
        await telegram.upsert_session(conn, key, username="alice", language_code="en")
        await telegram.link_chat(conn, key, chat.id)
    async with pooled_db.connection() as conn:
        await telegram.set_state(conn, key, "Form:name")
        await telegram.set_data(conn, key, {"a": 1})
        assert await telegram.update_data(conn, key, {"b": 2}) == {"a": 1, "b": 2}
        assert await telegram.get_state(conn, key) == "Form:name"
        assert await telegram.get_data(conn, key) == {"a": 1, "b": 2}
        session = await telegram.get_session(conn, key)
        assert session is not None and session.chat_id == chat.id
        active = await telegram.list_active_sessions(conn, bot_id=1)
        assert [s.username for s in active.items] == ["alice"]
        await telegram.deactivate_session(conn, key)
        assert (await telegram.list_active_sessions(conn, bot_id=1)).items == []
