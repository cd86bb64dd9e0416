"""Least privilege and owner isolation, through real login roles that are members of the
group roles: row-level security holds against hand-written SQL that forgets its owner
filter, the application login cannot change the schema, the read-only login cannot write."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import numpy as np
import psycopg
import pytest
from psycopg import sql

from app import agents, knowledge, messaging, tasks, telegram
from app.agents import tools
from app.database import (
    AccessDeniedError,
    DatabaseConfig,
    DatabaseManager,
    InvalidInputError,
    NotFoundError,
)
from app.database.errors import translate
from app.database.vectors import plan_choice_params
from app.messaging import EMBEDDING_DIMENSIONS
from app.messaging import search as message_search
from app.tasks import queries as todo_queries

Conn = psycopg.AsyncConnection[Any]
Login = Callable[[str], str]

OWNER_TABLES = [
    "messaging.chats",
    "messaging.messages",
    "tasks.todos",
    "agents.executions",
    "agents.mcp_servers",
    "agents.tool_calls",
    "knowledge.memories",
    "knowledge.documents",
    "knowledge.chunks",
]
COUNT_ROWS = {
    table: sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*table.split(".")))
    for table in OWNER_TABLES
}
COUNT_OWNERS = {
    table: sql.SQL("SELECT count(DISTINCT owner_id) FROM {}").format(
        sql.Identifier(*table.split("."))
    )
    for table in OWNER_TABLES
}
TOUCH_ALL = {
    "messaging.chats": "UPDATE messaging.chats SET title = 'touched'",
    "messaging.messages": "UPDATE messaging.messages SET token_count = 99",
    "tasks.todos": "UPDATE tasks.todos SET priority = 1",
    "agents.executions": "UPDATE agents.executions SET priority = 9",
    "agents.mcp_servers": "UPDATE agents.mcp_servers SET endpoint = 'touched'",
    "agents.tool_calls": "UPDATE agents.tool_calls SET tool_name = 'touched'",
    "knowledge.memories": "UPDATE knowledge.memories SET content = 'touched'",
    "knowledge.documents": "UPDATE knowledge.documents SET title = 'touched'",
    "knowledge.chunks": "UPDATE knowledge.chunks SET content = 'touched'",
}
COUNT_TOUCHED = {
    "messaging.chats": "SELECT count(*) FROM messaging.chats WHERE title = 'touched'",
    "messaging.messages": "SELECT count(*) FROM messaging.messages WHERE token_count = 99",
    "tasks.todos": "SELECT count(*) FROM tasks.todos WHERE priority = 1",
    "agents.executions": "SELECT count(*) FROM agents.executions WHERE priority = 9",
    "agents.mcp_servers": "SELECT count(*) FROM agents.mcp_servers WHERE endpoint = 'touched'",
    "agents.tool_calls": "SELECT count(*) FROM agents.tool_calls WHERE tool_name = 'touched'",
    "knowledge.memories": "SELECT count(*) FROM knowledge.memories WHERE content = 'touched'",
    "knowledge.documents": "SELECT count(*) FROM knowledge.documents WHERE title = 'touched'",
    "knowledge.chunks": "SELECT count(*) FROM knowledge.chunks WHERE content = 'touched'",
}
INSERT_CHAT_FOR = "INSERT INTO messaging.chats (owner_id) VALUES (%s)"
MOVE_CHATS_TO = "UPDATE messaging.chats SET owner_id = %s"
SHOW_OWNER = "SELECT current_setting('agentdb.owner_id', true)"
ONE_HOT = [1.0] + [0.0] * (EMBEDDING_DIMENSIONS - 1)


async def scalar(conn: Conn, statement: Any, params: Any = None) -> Any:
    row = await (await conn.execute(statement, params)).fetchone()
    assert row is not None
    return row[0]


async def seed_owner(db: DatabaseManager, owner: UUID) -> None:
    """A chat with two messages, a todo, an execution with a tool call, an MCP server with an
    embedded tool, a memory, and a document with a chunk of `owner` (as the schema owner)."""
    async with db.session() as conn:
        chat = await messaging.create_chat(conn, owner_id=owner, title="mine")
        await messaging.add_message(conn, chat.id, role="user", content="a", embedding=ONE_HOT)
        await messaging.add_message(conn, chat.id, role="assistant", content="b")
        await tasks.create_todo(conn, owner_id=owner, title="t", chat_id=chat.id)
        execution = await agents.enqueue_execution(conn, agent_name="planner", chat_id=chat.id)
        await tools.start_tool_call(conn, execution.id, tool_name="search", arguments={})
        server = await tools.upsert_mcp_server(
            conn, name="mine", transport="stdio", endpoint="./mine", owner_id=owner
        )
        await tools.sync_tools(conn, server.id, [{"name": "search"}])
        (tool,) = await tools.list_tools(conn, server.id)
        await tools.set_tool_embeddings(conn, {tool.id: ONE_HOT})
        await knowledge.remember(conn, owner_id=owner, content="likes tea", embedding=ONE_HOT)
        document = await knowledge.add_document(conn, owner_id=owner, title="notes")
        await knowledge.add_chunks(conn, document.id, [{"chunk_index": 0, "content": "tea"}])


@pytest.fixture
async def owners(db: DatabaseManager) -> tuple[UUID, UUID]:
    a, b = uuid4(), uuid4()
    await seed_owner(db, a)
    await seed_owner(db, b)
    return a, b


async def test_with_no_owner_set_the_app_role_sees_no_rows_at_all(
    app_db: DatabaseManager, owners: tuple[UUID, UUID]
) -> None:
    async with app_db.session() as conn:
        for table, statement in COUNT_ROWS.items():
            assert await scalar(conn, statement) == 0, table


async def test_unfiltered_sql_of_owner_a_reads_and_changes_only_owner_as_rows(
    app_db: DatabaseManager, db: DatabaseManager, owners: tuple[UUID, UUID]
) -> None:
    a, b = owners
    async with app_db.session(owner_id=a) as conn:
        for table in OWNER_TABLES:
            assert await scalar(conn, COUNT_OWNERS[table]) == 1, table
            await conn.execute(TOUCH_ALL[table])
        await conn.execute("DELETE FROM messaging.messages WHERE role = 'assistant'")
    async with db.session() as admin:  # the schema owner sees everything
        for table in OWNER_TABLES:
            assert await scalar(admin, COUNT_TOUCHED[table]) == 1, table
            statement = COUNT_TOUCHED[table].replace("WHERE", "WHERE owner_id = %s AND")
            assert await scalar(admin, statement, [b]) == 0, table
        assert await messaging.count_messages(admin, (await first_chat(admin, b))) == 2


async def first_chat(conn: Conn, owner: UUID) -> UUID:
    page = await messaging.list_chats(conn, owner_id=owner)
    return page.items[0].id


async def test_inserting_a_row_for_another_owner_is_access_denied(
    app_db: DatabaseManager, owners: tuple[UUID, UUID]
) -> None:
    a, b = owners
    with pytest.raises(AccessDeniedError):
        async with app_db.session(owner_id=a) as conn:
            await messaging.create_chat(conn, owner_id=b)
    with pytest.raises(AccessDeniedError):
        async with app_db.session(owner_id=a) as conn:
            await tasks.create_todo(conn, owner_id=b, title="not yours")
    with pytest.raises(AccessDeniedError):
        async with app_db.session(owner_id=a) as conn:
            await agents.enqueue_execution(conn, agent_name="planner", owner_id=b)


async def test_moving_a_row_to_another_owner_is_access_denied(
    app_db: DatabaseManager, owners: tuple[UUID, UUID]
) -> None:
    a, b = owners
    with pytest.raises(AccessDeniedError):
        async with app_db.session(owner_id=a) as conn:
            await conn.execute(MOVE_CHATS_TO, [b])


async def test_another_owners_rows_are_not_found_by_the_query_functions(
    app_db: DatabaseManager, db: DatabaseManager, owners: tuple[UUID, UUID]
) -> None:
    a, b = owners
    async with db.session() as admin:
        theirs = await first_chat(admin, b)
    async with app_db.session(owner_id=a) as conn:
        assert await messaging.get_chat(conn, theirs) is None
        assert (await messaging.list_messages(conn, theirs)).items == []
        assert await messaging.search_messages(conn, owner_id=b, embedding=ONE_HOT) == []
        with pytest.raises(NotFoundError):
            await messaging.add_message(conn, theirs, role="user", content="sneaky")
        with pytest.raises(NotFoundError):
            await messaging.delete_chat(conn, theirs)


async def test_the_owner_setting_never_outlives_its_session_on_a_pooled_connection(
    app_db: DatabaseManager, owners: tuple[UUID, UUID]
) -> None:
    a, _ = owners
    async with app_db.session(owner_id=a, actor="alice") as conn:
        assert await scalar(conn, SHOW_OWNER) == str(a)
    for _ in range(3):  # every pooled connection
        async with app_db.session() as conn:
            assert await scalar(conn, SHOW_OWNER) in (None, "")
            assert await scalar(conn, COUNT_ROWS["messaging.chats"]) == 0
        async with app_db.connection() as conn:
            assert await scalar(conn, SHOW_OWNER) in (None, "")


async def test_a_scoped_session_rolls_back_on_an_exception(
    app_db: DatabaseManager, db: DatabaseManager
) -> None:
    owner = uuid4()
    with pytest.raises(RuntimeError):
        async with app_db.session(owner_id=owner) as conn:
            await messaging.create_chat(conn, owner_id=owner)
            raise RuntimeError("changed my mind")
    async with db.session() as admin:
        assert (await messaging.list_chats(admin, owner_id=owner)).items == []


@pytest.mark.parametrize(
    ("scope", "field"),
    [
        ({"owner_id": b"0123456789abcdef"}, "owner_id"),
        ({"owner_id": "nope"}, "owner_id"),
        ({"owner_id": uuid4(), "actor": ""}, "actor"),
        ({"owner_id": uuid4(), "actor": "a\x00b"}, "actor"),
    ],
    ids=["bytes", "not-a-uuid", "blank-actor", "nul-actor"],
)
async def test_a_bad_session_scope_is_invalid_input_naming_it(
    app_db: DatabaseManager, scope: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInputError, match=rf"^{field}: "):
        async with app_db.session(**scope):
            pass


# Every query function under agentdb_app, with an owner set --------------------------------


async def test_every_query_function_works_for_an_app_login_with_an_owner_set(
    app_db: DatabaseManager,
) -> None:
    owner = uuid4()
    key = telegram.SessionKey(bot_id=1, telegram_chat_id=2, telegram_user_id=3)
    async with app_db.session(owner_id=owner, actor="test") as conn:
        chat = await messaging.create_chat(conn, owner_id=owner, title="groceries")
        assert await messaging.get_chat(conn, chat.id) == chat
        await messaging.update_chat(conn, chat.id, title="shopping")
        first = await messaging.add_message(conn, chat.id, role="user", content="buy milk")
        added = await messaging.add_messages(
            conn, [{"chat_id": chat.id, "role": "assistant", "content": "ok"}] * 3
        )
        assert added == 3 and await messaging.count_messages(conn, chat.id) == 4
        await messaging.set_message_embedding(conn, first.id, ONE_HOT)
        assert await messaging.set_message_embeddings(conn, {first.id: ONE_HOT}) == 1
        assert len((await messaging.list_messages(conn, chat.id, limit=2)).items) == 2
        assert (await messaging.list_chats(conn, owner_id=owner)).items[0].id == chat.id
        hits = await messaging.search_messages(conn, owner_id=owner, embedding=ONE_HOT)
        assert [hit.message.id for hit in hits] == [first.id]
        hybrid = await messaging.hybrid_search_messages(
            conn, owner_id=owner, embedding=ONE_HOT, query="milk"
        )
        assert hybrid[0].message.id == first.id
        assert await messaging.get_message(conn, first.id) is not None
        await messaging.delete_message(conn, first.id)

        todo = await tasks.create_todo(conn, owner_id=owner, title="milk", chat_id=chat.id)
        assert await tasks.get_todo(conn, todo.id) == todo
        await tasks.update_todo(conn, todo.id, {"priority": 1})
        assert (await tasks.list_todos(conn, owner_id=owner)).items[0].id == todo.id
        assert [t.id for t in await tasks.get_todos_by_status(conn, "pending")] == [todo.id]
        assert (await tasks.count_todos_by_status(conn, owner_id=owner))["pending"] == 1
        await tasks.complete_todo(conn, todo.id)
        await tasks.delete_todo(conn, todo.id)

        execution = await agents.enqueue_execution(conn, agent_name="planner", chat_id=chat.id)
        assert execution.owner_id == owner
        claimed = await agents.claim_next_execution(conn, worker_id="w1")
        assert claimed is not None and claimed.id == execution.id
        await agents.fail_execution(conn, claimed.id, error="boom", retry=False)
        other = await agents.enqueue_execution(conn, agent_name="planner")  # the session's owner
        assert other.owner_id == owner
        await agents.cancel_execution(conn, other.id)
        assert await agents.get_execution(conn, other.id) is not None
        assert len((await agents.list_executions(conn, chat_id=chat.id)).items) == 1
        assert await agents.requeue_stale_executions(conn, older_than=timedelta(hours=1)) == 0
        assert (await agents.execution_stats(conn)).total == 2

        await telegram.upsert_session(conn, key, username="u")
        await telegram.link_chat(conn, key, chat.id)
        await telegram.set_state(conn, key, "Form:name")
        assert await telegram.get_state(conn, key) == "Form:name"
        await telegram.set_data(conn, key, {"a": 1})
        assert await telegram.update_data(conn, key, {"b": 2}) == {"a": 1, "b": 2}
        assert await telegram.get_data(conn, key) == {"a": 1, "b": 2}
        assert (await telegram.get_session(conn, key)) is not None
        assert len((await telegram.list_active_sessions(conn, bot_id=1)).items) == 1
        await telegram.deactivate_session(conn, key)
        await messaging.delete_chat(conn, chat.id)


# Least privilege ----------------------------------------------------------------------------

DDL = [
    "DROP TABLE messaging.messages",
    "ALTER TABLE messaging.chats ADD COLUMN sneaky text",
    "CREATE TABLE messaging.sneaky (id uuid)",
    "CREATE INDEX ON messaging.chats (title)",
    "TRUNCATE messaging.chats",
    "TRUNCATE telegram.sessions",
    "ALTER TABLE messaging.chats DISABLE ROW LEVEL SECURITY",
    "DROP POLICY pol_chats_app_owner ON messaging.chats",
    "CREATE SCHEMA sneaky",
]


@pytest.mark.parametrize("group", ["agentdb_app", "agentdb_worker", "agentdb_readonly"])
@pytest.mark.parametrize("statement", DDL)
async def test_no_group_role_can_change_the_schema(
    login_as: Login, group: str, statement: str
) -> None:
    async with await psycopg.AsyncConnection.connect(login_as(group)) as conn:
        with pytest.raises(psycopg.Error) as raised:
            await conn.execute(statement)
    assert isinstance(translate(raised.value), AccessDeniedError), raised.value


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO messaging.chats (owner_id) VALUES (gen_random_uuid())",
        "UPDATE messaging.chats SET title = 'x'",
        "DELETE FROM tasks.todos",
        "UPDATE telegram.sessions SET state = 'x'",
    ],
)
async def test_the_readonly_role_reads_everything_and_writes_nothing(
    login_as: Login, owners: tuple[UUID, UUID], statement: str
) -> None:
    async with await psycopg.AsyncConnection.connect(login_as("agentdb_readonly")) as conn:
        for table in OWNER_TABLES:
            assert await scalar(conn, COUNT_OWNERS[table]) == 2, table
        with pytest.raises(psycopg.Error) as raised:
            await conn.execute(statement)
    assert isinstance(translate(raised.value), AccessDeniedError)


async def test_the_worker_role_works_across_owners(
    login_as: Login, owners: tuple[UUID, UUID]
) -> None:
    config = DatabaseConfig(url=login_as("agentdb_worker"), max_pool_size=1)
    async with DatabaseManager(config) as worker, worker.session() as conn:
        for table in OWNER_TABLES:
            assert await scalar(conn, COUNT_OWNERS[table]) == 2, table
        claimed = [await agents.claim_next_execution(conn, worker_id="w") for _ in range(2)]
        assert {execution.owner_id for execution in claimed if execution} == set(owners)


# Owner isolation costs no plan change -------------------------------------------------------

INDEX_NAME = re.compile(r"(?:Index|Index Only|Bitmap Index) Scan(?: Backward)? using (\w+)")


LEADING_COLUMN = """
SELECT i.indrelid::regclass::text || '.' || a.attname
FROM pg_catalog.pg_index AS i
JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
JOIN pg_catalog.pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE c.relname = %s
"""

# Tables that other tables' policies consult (a tool is visible when its server is): their
# probes appear in the plans of the tables they guard.
POLICY_LOOKUP_TABLES = ("agents.mcp_servers.",)


async def indexes_used(conn: Conn, statement: Any, params: Any) -> list[tuple[str, str]]:
    """(table.column, index kind) of each index EXPLAIN shows for `statement`, by the column
    the index leads with, with sequential scans ruled out so that the tiny test tables do not
    hide the plan a real table gets."""
    await conn.execute("SET LOCAL enable_seqscan = off")
    await conn.execute(message_search.SET_SEARCH_SETTINGS, ["40"])
    cursor = await conn.execute(sql.SQL("EXPLAIN ") + sql.SQL(statement), params, binary=True)
    plan = "\n".join(row[0] for row in await cursor.fetchall())
    used = []
    for index in INDEX_NAME.findall(plan):
        column = await scalar(conn, LEADING_COLUMN, [index])
        used.append((column, "hnsw" if "embedding" in index else "btree"))
    return sorted(used)


def plan_cases(
    owner: UUID, chat_id: UUID, execution_id: UUID
) -> list[tuple[str, Any, dict[str, Any]]]:
    infinity = datetime(9999, 1, 1, tzinfo=UTC)
    last = UUID(int=(1 << 128) - 1)
    return [
        ("get_chat", messaging.queries.SELECT_CHAT, {"": chat_id}),
        (
            "select_tools",
            tools.SELECT_NEAREST_TOOLS,
            {
                "embedding": np.asarray(ONE_HOT, dtype=np.float32),
                "limit": 8,
                "owner_id": owner,
                "server_ids": None,
            },
        ),
        ("list_tool_calls", tools.SELECT_TOOL_CALLS, {"": execution_id}),
        (
            "list_chats",
            messaging.queries.SELECT_CHATS_PAGE,
            {"owner_id": owner, "after_activity": infinity, "after_id": last, "limit": 51},
        ),
        (
            "list_messages",
            messaging.queries.SELECT_MESSAGES_PAGE,
            {"chat_id": chat_id, "before_created_at": infinity, "before_id": last, "limit": 51},
        ),
        ("count_messages", messaging.queries.COUNT_MESSAGES, {"chat_id": chat_id}),
        (
            "search_messages",
            message_search.SEARCH_MESSAGES,
            {
                "owner_id": owner,
                "embedding": np.asarray(ONE_HOT, dtype=np.float32),
                "chat_id": None,
                "candidates": 10,
                **plan_choice_params(),
            },
        ),
        (
            "hybrid_search_messages",
            message_search.HYBRID_SEARCH_MESSAGES,
            {
                "owner_id": owner,
                "embedding": np.asarray(ONE_HOT, dtype=np.float32),
                "chat_id": None,
                "query": "milk",
                "candidates": 40,
                "k": 60,
                "limit": 10,
                **plan_choice_params(),
            },
        ),
        (
            "list_todos",
            todo_queries.SELECT_TODOS_PAGE,
            {
                "owner_id": owner,
                "after_priority": 0,
                "after_due_at": "-infinity",
                "after_id": UUID(int=0),
                "statuses": ["pending"],
                "due_before": None,
                "limit": 51,
            },
        ),
    ]


async def test_row_level_security_keeps_every_querys_index(
    app_db: DatabaseManager, db: DatabaseManager, owners: tuple[UUID, UUID]
) -> None:
    a, _ = owners
    async with db.session() as admin:
        chat_id = await first_chat(admin, a)
        execution_id = (await agents.list_executions(admin, chat_id=chat_id)).items[0].id
        await admin.execute("ANALYZE")
    for name, statement, params in plan_cases(a, chat_id, execution_id):
        values: Any = list(params.values()) if "" in params else params
        async with db.session() as admin:
            unrestricted = await indexes_used(admin, statement, values)
        async with app_db.session(owner_id=a) as conn:
            restricted = await indexes_used(conn, statement, values)
        # An index that leads with the same column: (id) or the unique (id, owner_id) for a
        # chat by id, which the policy's owner_id = … lets the planner use as well. Beyond
        # those, only the probes of a policy's own sub-SELECT (a tool follows its server).
        assert unrestricted, f"{name}: no index in the owner's plan"
        assert set(unrestricted) <= set(restricted), name
        extra = set(restricted) - set(unrestricted)
        assert all(column.startswith(POLICY_LOOKUP_TABLES) for column, _ in extra), (name, extra)


PLAN_ROWS = re.compile(r"on messages .*?rows=(\d+)")


async def estimated_messages(conn: Conn, chat_id: UUID) -> int:
    """The planner's estimate of the rows list_messages reads from messaging.messages."""
    infinity, last = datetime(9999, 1, 1, tzinfo=UTC), UUID(int=(1 << 128) - 1)
    statement = sql.SQL("EXPLAIN ") + sql.SQL(messaging.queries.SELECT_MESSAGES_PAGE)
    params = {"chat_id": chat_id, "before_created_at": infinity, "before_id": last, "limit": 500}
    cursor = await conn.execute(statement, params)
    plan = "\n".join(row[0] for row in await cursor.fetchall())
    found = PLAN_ROWS.search(plan)
    assert found is not None, plan
    return int(found.group(1))


async def test_row_level_security_leaves_the_row_estimates_of_a_chats_messages_alone(
    app_db: DatabaseManager, db: DatabaseManager
) -> None:
    # Forty owners with a chat of 50 messages each: without the statistics that say a chat
    # decides its owner, the owner check would count as a second filter and the planner
    # would expect a fortieth of the chat.
    chats: dict[UUID, UUID] = {}
    async with db.session() as admin:
        for _ in range(40):
            owner = uuid4()
            chat = await messaging.create_chat(admin, owner_id=owner)
            batch = [{"chat_id": chat.id, "role": "user", "content": "hi"}] * 50
            await messaging.add_messages(admin, batch)
            chats[owner] = chat.id
    async with db.connection() as admin:
        await admin.execute("ANALYZE messaging.messages")
    owner, chat_id = next(iter(chats.items()))
    async with db.session() as admin:
        unrestricted = await estimated_messages(admin, chat_id)
    async with app_db.session(owner_id=owner) as conn:
        restricted = await estimated_messages(conn, chat_id)
    assert unrestricted >= 10
    assert restricted == unrestricted


async def test_bulk_inserts_under_row_level_security_each_insert_only_their_own_batch(
    app_db: DatabaseManager, db: DatabaseManager, owners: tuple[UUID, UUID]
) -> None:
    # COPY into an RLS table is refused: the batch goes through a temporary staging table,
    # which each batch leaves empty (two in one transaction), and a rollback takes back.
    a, b = owners
    async with app_db.session(owner_id=a) as conn:
        chat_id = await first_chat(conn, a)
        for batch in ("first", "second"):
            rows = [{"chat_id": chat_id, "role": "user", "content": batch}] * 3
            assert await messaging.add_messages(conn, rows) == 3
        staged = "SELECT count(*) FROM pg_temp.agentdb_staged_messages"
        assert await scalar(conn, staged) == 0
    with pytest.raises(RuntimeError):
        async with app_db.session(owner_id=a) as conn:
            await messaging.add_messages(
                conn, [{"chat_id": chat_id, "role": "user", "content": "x"}]
            )
            raise RuntimeError("changed my mind")
    async with db.session() as admin:
        contents = await (
            await admin.execute(
                "SELECT content, count(*) FROM messaging.messages WHERE chat_id = %s GROUP BY 1",
                [chat_id],
            )
        ).fetchall()
        assert dict(contents) == {"a": 1, "b": 1, "first": 3, "second": 3}
        other_chat = await first_chat(admin, b)
    # owner b's chat is not found for owner a: nothing is written
    with pytest.raises(NotFoundError):
        async with app_db.session(owner_id=a) as conn:
            rows = [{"chat_id": other_chat, "role": "user", "content": "sneaky"}]
            await messaging.add_messages(conn, rows)
    async with db.session() as admin:
        assert await messaging.count_messages(admin, other_chat) == 2


async def test_the_staging_table_of_bulk_inserts_does_not_grow_with_the_batches(
    login_as: Any, db: DatabaseManager, owners: tuple[UUID, UUID]
) -> None:
    # No autovacuum visits a temporary table: rows deleted from it would stay, and it would
    # grow by every batch for the life of the connection. One pooled connection, 8 batches.
    a, _ = owners
    config = DatabaseConfig(url=login_as("agentdb_app"), min_pool_size=1, max_pool_size=1)
    async with db.session() as admin:
        before = await messaging.count_messages(admin, await first_chat(admin, a))
    async with DatabaseManager(config) as single:
        for _ in range(8):
            async with single.session(owner_id=a) as conn:
                chat_id = await first_chat(conn, a)
                rows = [{"chat_id": chat_id, "role": "user", "content": "x" * 200}] * 500
                assert await messaging.add_messages(conn, rows) == 500
        async with single.connection() as conn:
            size = "SELECT pg_relation_size('pg_temp.agentdb_staged_messages')"
            assert await scalar(conn, size) == 0
    async with db.session() as admin:
        assert await messaging.count_messages(admin, chat_id) == before + 8 * 500


OWNER_TABLES_WITHOUT_APP_POLICY = """
SELECT n.nspname || '.' || c.relname
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.oid AND a.attname = 'owner_id'
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'public', 'audit')
  AND (NOT c.relrowsecurity
       OR NOT EXISTS (
           SELECT FROM pg_catalog.pg_policies AS p
           WHERE p.schemaname = n.nspname
             AND p.tablename = c.relname
             AND 'agentdb_app' = ANY (p.roles)
             AND p.qual LIKE '%agentdb.owner_id%'
             AND p.with_check LIKE '%agentdb.owner_id%'))
ORDER BY 1
"""


async def test_every_table_with_an_owner_id_has_row_level_security_for_the_app_role(
    conn: Conn,
) -> None:
    cursor = await conn.execute(OWNER_TABLES_WITHOUT_APP_POLICY)
    assert await cursor.fetchall() == []
    # the check itself can fail: a new owner table without a policy is found
    await conn.execute("CREATE TABLE tasks.unguarded_things (id uuid, owner_id uuid)")
    cursor = await conn.execute(OWNER_TABLES_WITHOUT_APP_POLICY)
    assert await cursor.fetchall() == [("tasks.unguarded_things",)]
