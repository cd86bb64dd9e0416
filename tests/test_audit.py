"""app.audit against a real server: the audit triggers record who changed what (never the
content), nobody but the owner writes the trail, app sessions read only their owner's events,
erase_owner removes one owner from every table (one found in the catalog later, too) while the
queue keeps working, purge_deleted removes only what is due, and the CLI commands."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import errors as pg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from app import agents, audit, knowledge, messaging, tasks
from app.agents import tools
from app.database import (
    AccessDeniedError,
    ConflictError,
    DatabaseConfig,
    DatabaseManager,
    InvalidInputError,
    NotFoundError,
)
from app.database.errors import translate
from app.messaging import EMBEDDING_DIMENSIONS

Conn = psycopg.AsyncConnection[Any]
LoginAs = Callable[[str], str]

SECRET = "zebra-quartz-7f3a"
"""Content no audit event may hold: every title, text and description below carries it."""

ONE_HOT = [1.0] + [0.0] * (EMBEDDING_DIMENSIONS - 1)

# The test's own catalog sweep (not the one app.audit uses): every table with owner_id.
SELECT_OWNER_TABLES = """
SELECT ns.nspname, rel.relname
FROM pg_catalog.pg_attribute AS att
JOIN pg_catalog.pg_class AS rel ON rel.oid = att.attrelid
JOIN pg_catalog.pg_namespace AS ns ON ns.oid = rel.relnamespace
WHERE att.attname = 'owner_id'
  AND NOT att.attisdropped
  AND rel.relkind = 'r'
  AND ns.nspname NOT IN ('pg_catalog', 'information_schema', 'audit', 'public')
ORDER BY 1, 2
"""

OWNER_ROWS = sql.SQL(
    "SELECT count(*), md5(string_agg(t::text, ',' ORDER BY t.id)) "
    "FROM {schema}.{table} AS t WHERE t.owner_id = %s"
)

SELECT_FOREIGN_KEYS = """
SELECT referencing.relnamespace::regnamespace::text || '.' || referencing.relname,
       referenced.relnamespace::regnamespace::text || '.' || referenced.relname
FROM pg_catalog.pg_constraint AS con
JOIN pg_catalog.pg_class AS referencing ON referencing.oid = con.conrelid
JOIN pg_catalog.pg_class AS referenced ON referenced.oid = con.confrelid
WHERE con.contype = 'f'
  AND con.conrelid <> con.confrelid
"""


async def scalar(conn: Conn, query: Any, params: Any = None) -> Any:
    cursor = await conn.execute(query, params)
    row = await cursor.fetchone()
    assert row is not None
    return row[0]


async def trail_text(conn: Conn) -> str:
    """Every audit event as text, for the check that no content got into one."""
    return str(
        await scalar(conn, "SELECT coalesce(string_agg(e::text, ' '), '') FROM audit.events e")
    )


async def owner_events(conn: Conn, owner_id: UUID) -> list[audit.AuditEvent]:
    return (await audit.list_audit_events(conn, owner_id=owner_id, limit=1000)).items


async def owner_rows(conn: Conn, owner_id: UUID) -> dict[str, tuple[int, str | None]]:
    """Per table with an owner_id: the owner's row count and a checksum of those rows."""
    cursor = await conn.execute(SELECT_OWNER_TABLES)
    rows = {}
    for schema, table in await cursor.fetchall():
        query = OWNER_ROWS.format(schema=sql.Identifier(schema), table=sql.Identifier(table))
        count_cursor = await conn.execute(query, [owner_id])
        count, checksum = await count_cursor.fetchone() or (0, None)
        rows[f"{schema}.{table}"] = (count, checksum)
    return rows


@asynccontextmanager
async def manager_for(url: str) -> AsyncIterator[DatabaseManager]:
    """A DatabaseManager connected as the login of `url` (from `login_as`)."""
    async with DatabaseManager(DatabaseConfig(url=url, max_pool_size=4)) as manager:
        yield manager


@asynccontextmanager
async def acting_as(
    db: DatabaseManager, login_as: LoginAs, group: str | None
) -> AsyncIterator[DatabaseManager]:
    """`db` (the schema owner) for None, else a manager connected as a new login of `group`."""
    if group is None:
        yield db
    else:
        async with manager_for(login_as(group)) as manager:
            yield manager


async def seed_owner(conn: Conn, owner_id: UUID) -> None:
    """Two chats with messages (one embedded), todos, executions, MCP servers with a tool,
    tool calls, memories, and documents with chunks of `owner_id`."""
    for number in range(2):
        chat = await messaging.create_chat(conn, owner_id=owner_id, title=f"{SECRET} {number}")
        message = await messaging.add_message(
            conn, chat.id, role="user", content=f"{SECRET} text", embedding=ONE_HOT
        )
        await messaging.add_message(conn, chat.id, role="assistant", content=SECRET)
        todo = await tasks.create_todo(
            conn, owner_id=owner_id, chat_id=chat.id, title=SECRET, description=SECRET
        )
        execution = await agents.enqueue_execution(conn, agent_name="summarizer", chat_id=chat.id)
        await agents.enqueue_execution(
            conn, agent_name="summarizer", message_id=message.id, todo_id=todo.id
        )
        server = await tools.upsert_mcp_server(
            conn, name=f"{SECRET} {number}", transport="stdio", endpoint=SECRET, owner_id=owner_id
        )
        await tools.sync_tools(conn, server.id, [{"name": "search", "description": SECRET}])
        call = await tools.start_tool_call(
            conn, execution.id, tool_name="search", arguments={"q": SECRET}
        )
        await tools.finish_tool_call(conn, call.id, result=SECRET)
        await knowledge.remember(
            conn,
            owner_id=owner_id,
            content=SECRET,
            embedding=ONE_HOT,
            chat_id=chat.id,
            source_message_id=message.id,
            kind=("fact", "episode")[number],
        )
        document = await knowledge.add_document(conn, owner_id=owner_id, title=SECRET)
        await knowledge.add_chunks(
            conn, document.id, [{"chunk_index": 0, "content": SECRET, "embedding": ONE_HOT}]
        )


# The audit triggers -----------------------------------------------------------------------


async def test_an_update_is_audited_with_role_actor_owner_row_and_changed_column_names_only(
    db: DatabaseManager,
) -> None:
    owner = uuid4()
    async with db.session(actor="alice") as conn:
        chat = await messaging.create_chat(conn, owner_id=owner, title=SECRET)
        message = await messaging.add_message(conn, chat.id, role="user", content=SECRET)
        todo = await tasks.create_todo(conn, owner_id=owner, title=SECRET)
        await messaging.update_chat(conn, chat.id, title=f"{SECRET} renamed")
        await messaging.set_message_embedding(conn, message.id, ONE_HOT)
        await tasks.update_todo(conn, todo.id, {"title": f"{SECRET} too", "status": "done"})
        role = await scalar(conn, "SELECT session_user")

    async with db.connection() as conn:
        listed = await owner_events(conn, owner)
        text = await trail_text(conn)
    events = {event.row_id: event for event in listed}
    assert len(listed) == len(events) == 3  # one event per update
    assert {
        row_id: (e.table_name, e.operation, e.changed_columns) for row_id, e in events.items()
    } == {
        chat.id: ("chats", "update", ["title"]),
        message.id: ("messages", "update", ["embedding"]),
        todo.id: ("todos", "update", ["completed_at", "status", "title"]),
    }
    for event in events.values():
        assert (event.db_role, event.actor, event.owner_id) == (role, "alice", owner)
        assert event.details == {}
    assert SECRET not in text


async def test_a_soft_delete_is_audited_for_chats_messages_and_todos(db: DatabaseManager) -> None:
    owner = uuid4()
    async with db.session(actor="alice") as conn:
        chat = await messaging.create_chat(conn, owner_id=owner, title=SECRET)
        first = await messaging.add_message(conn, chat.id, role="user", content=SECRET)
        second = await messaging.add_message(conn, chat.id, role="user", content=SECRET)
        todo = await tasks.create_todo(conn, owner_id=owner, title=SECRET, chat_id=chat.id)
    async with db.session(actor="alice") as conn:
        await messaging.delete_message(conn, first.id)
        await tasks.delete_todo(conn, todo.id)
        await messaging.delete_chat(conn, chat.id)  # and its remaining message

    async with db.connection() as conn:
        events = await owner_events(conn, owner)
        text = await trail_text(conn)
    assert sorted(
        (e.table_name, e.row_id, e.operation, e.changed_columns) for e in events
    ) == sorted(
        [
            ("messages", first.id, "soft_delete", ["deleted_at"]),
            ("todos", todo.id, "soft_delete", ["deleted_at"]),
            ("chats", chat.id, "soft_delete", ["deleted_at"]),
            ("messages", second.id, "soft_delete", ["deleted_at"]),
        ]
    )
    assert {(e.actor, e.owner_id) for e in events} == {("alice", owner)}
    assert SECRET not in text


async def test_a_hard_delete_is_audited_for_chats_messages_and_todos(db: DatabaseManager) -> None:
    owner = uuid4()
    async with db.session() as conn:
        chat = await messaging.create_chat(conn, owner_id=owner, title=SECRET)
        message = await messaging.add_message(conn, chat.id, role="user", content=SECRET)
        todo = await tasks.create_todo(conn, owner_id=owner, title=SECRET, description=SECRET)
    async with db.session(actor="alice") as conn:
        await conn.execute("DELETE FROM tasks.todos WHERE id = %s", [todo.id])
        await conn.execute("DELETE FROM messaging.messages WHERE id = %s", [message.id])
        await conn.execute("DELETE FROM messaging.chats WHERE id = %s", [chat.id])
        role = await scalar(conn, "SELECT session_user")

    async with db.connection() as conn:
        events = await owner_events(conn, owner)
        text = await trail_text(conn)
    assert sorted((e.schema_name, e.table_name, e.row_id) for e in events) == sorted(
        [
            ("tasks", "todos", todo.id),
            ("messaging", "messages", message.id),
            ("messaging", "chats", chat.id),
        ]
    )
    for event in events:
        assert (event.operation, event.changed_columns) == ("delete", None)
        assert (event.db_role, event.actor, event.owner_id) == (role, "alice", owner)
    assert SECRET not in text


# Who may write and read the trail ---------------------------------------------------------

WRITES = [
    "UPDATE audit.events SET actor = 'mallory'",
    "DELETE FROM audit.events",
    "TRUNCATE audit.events",
    "INSERT INTO audit.events (db_role, schema_name, table_name, operation) "
    "VALUES ('mallory', 'messaging', 'chats', 'update')",
]


async def one_event(db: DatabaseManager) -> UUID:
    """Arrange: an owner with one audited update."""
    owner = uuid4()
    async with db.session() as conn:
        chat = await messaging.create_chat(conn, owner_id=owner)
        await messaging.update_chat(conn, chat.id, title="renamed")
    return owner


@pytest.mark.parametrize("group", ["agentdb_app", "agentdb_worker"])
async def test_the_app_and_worker_roles_cannot_update_delete_truncate_or_insert_audit_events(
    db: DatabaseManager, login_as: LoginAs, group: str
) -> None:
    await one_event(db)
    async with db.connection() as conn:
        before = await trail_text(conn)
    async with await psycopg.AsyncConnection.connect(login_as(group), autocommit=True) as login:
        for statement in WRITES:
            with pytest.raises(pg.InsufficientPrivilege) as raised:
                await login.execute(statement)
            assert isinstance(translate(raised.value), AccessDeniedError)
    async with db.connection() as conn:
        assert await trail_text(conn) == before != ""


async def test_the_app_role_cannot_call_record_event_but_the_worker_role_can(
    db: DatabaseManager, login_as: LoginAs
) -> None:
    record = "SELECT audit.record_event('erase', '*', '*', %s, '{}')"
    async with await psycopg.AsyncConnection.connect(
        login_as("agentdb_app"), autocommit=True
    ) as app:
        with pytest.raises(pg.InsufficientPrivilege) as raised:
            await app.execute(record, [uuid4()])
        assert isinstance(translate(raised.value), AccessDeniedError)
    worker_url = login_as("agentdb_worker")
    async with await psycopg.AsyncConnection.connect(worker_url, autocommit=True) as worker:
        assert isinstance(await scalar(worker, record, [uuid4()]), UUID)


async def test_even_the_owner_cannot_update_an_audit_event(db: DatabaseManager) -> None:
    await one_event(db)
    async with db.connection() as conn:
        with pytest.raises(pg.InsufficientPrivilege, match="append-only"):
            await conn.execute("UPDATE audit.events SET actor = 'mallory'")


async def test_an_app_session_lists_only_its_owners_audit_events(
    db: DatabaseManager, login_as: LoginAs
) -> None:
    mine, theirs = await one_event(db), await one_event(db)
    async with manager_for(login_as("agentdb_app")) as app_db:
        async with app_db.session(owner_id=mine) as conn:
            everything = await audit.list_audit_events(conn)
            asked_for_theirs = await audit.list_audit_events(conn, owner_id=theirs)
        async with app_db.session() as conn:
            unscoped = await audit.list_audit_events(conn)
    assert [event.owner_id for event in everything.items] == [mine]
    assert asked_for_theirs.items == [] and unscoped.items == []


# list_audit_events ------------------------------------------------------------------------


async def test_list_audit_events_pages_newest_first_and_never_repeats_an_event(
    db: DatabaseManager,
) -> None:
    owner = uuid4()
    async with db.session() as conn:
        chat = await messaging.create_chat(conn, owner_id=owner)
        for number in range(5):  # one transaction: five events with the same occurred_at
            await messaging.update_chat(conn, chat.id, title=f"title {number}")
    for number in range(3):
        async with db.session() as conn:
            await messaging.update_chat(conn, chat.id, metadata={"n": number})

    async with db.connection() as conn:
        for filters in ({}, {"owner_id": owner}, {"table_name": "chats"}):
            seen: list[audit.AuditEvent] = []
            cursor = None
            while True:
                page = await audit.list_audit_events(conn, limit=3, cursor=cursor, **filters)
                seen.extend(page.items)
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            keys = [(event.occurred_at, event.id) for event in seen]
            assert len(seen) == 8 and len(set(keys)) == 8
            assert keys == sorted(keys, reverse=True)


async def test_list_audit_events_returns_only_events_matching_every_filter(
    db: DatabaseManager,
) -> None:
    mine, theirs = uuid4(), uuid4()
    async with db.session() as conn:
        for owner in (mine, theirs):
            chat = await messaging.create_chat(conn, owner_id=owner)
            await messaging.update_chat(conn, chat.id, title="x")
            todo = await tasks.create_todo(conn, owner_id=owner, title="t")
            await tasks.update_todo(conn, todo.id, {"priority": 1})
    async with db.session() as conn:
        since = await scalar(conn, "SELECT now()")
        await tasks.update_todo(conn, todo.id, {"priority": 2})  # `theirs`

    async with db.connection() as conn:
        todos = await audit.list_audit_events(conn, table_name="todos")
        my_chats = await audit.list_audit_events(conn, owner_id=mine, table_name="chats")
        recent = await audit.list_audit_events(conn, since=since)
        recent_of_mine = await audit.list_audit_events(conn, owner_id=mine, since=since)
    assert {(e.table_name, e.owner_id) for e in todos.items} == {("todos", mine), ("todos", theirs)}
    assert len(todos.items) == 3
    assert [(e.table_name, e.owner_id) for e in my_chats.items] == [("chats", mine)]
    assert [(e.table_name, e.owner_id, e.row_id) for e in recent.items] == [
        ("todos", theirs, todo.id)
    ]
    assert recent_of_mine.items == []


async def test_an_audit_events_cursor_is_refused_by_a_list_with_other_filters(
    db: DatabaseManager,
) -> None:
    owner = uuid4()
    async with db.session() as conn:
        chat = await messaging.create_chat(conn, owner_id=owner)
        for number in range(3):
            await messaging.update_chat(conn, chat.id, title=f"title {number}")
    async with db.connection() as conn:
        page = await audit.list_audit_events(conn, owner_id=owner, limit=1)
        assert page.next_cursor is not None
        for filters in ({}, {"owner_id": uuid4()}, {"owner_id": owner, "table_name": "chats"}):
            with pytest.raises(InvalidInputError) as raised:
                await audit.list_audit_events(conn, cursor=page.next_cursor, **filters)
            assert raised.value.field == "cursor"


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"owner_id": UUID(int=1).bytes}, "owner_id"),
        ({"table_name": ""}, "table_name"),
        ({"since": datetime(2024, 1, 1)}, "since"),  # naive
        ({"since": 1_700_000_000}, "since"),
        ({"limit": 0}, "limit"),
    ],
)
async def test_list_audit_events_refuses_bad_filters_naming_them(
    conn: Conn, filters: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInputError) as raised:
        await audit.list_audit_events(conn, **filters)
    assert raised.value.field == field


# erase_owner ------------------------------------------------------------------------------


@pytest.mark.parametrize("group", [None, "agentdb_worker"], ids=["owner", "worker"])
async def test_erase_owner_leaves_no_row_of_the_owner_and_changes_no_row_of_another(
    db: DatabaseManager, login_as: LoginAs, group: str | None
) -> None:
    erased, kept = uuid4(), uuid4()
    async with db.session() as conn:
        await seed_owner(conn, erased)
        await seed_owner(conn, kept)
    async with db.connection() as conn:
        erased_before, kept_before = await owner_rows(conn, erased), await owner_rows(conn, kept)

    async with acting_as(db, login_as, group) as manager, manager.connection() as conn:
        report = await audit.erase_owner(conn, erased)

    async with db.connection() as conn:
        erased_after, kept_after = await owner_rows(conn, erased), await owner_rows(conn, kept)
    assert report.owner_id == erased
    assert report.deleted == {table: count for table, (count, _) in erased_before.items()}
    assert min(report.deleted.values()) > 0  # every owner table had rows to erase
    assert {count for count, _ in erased_after.values()} == {0}
    assert kept_after == kept_before


@pytest.mark.parametrize("group", [None, "agentdb_worker"], ids=["owner", "worker"])
async def test_erase_owner_records_one_erase_event_with_the_counts_and_no_other(
    db: DatabaseManager, login_as: LoginAs, group: str | None
) -> None:
    erased = uuid4()
    async with db.session() as conn:
        await seed_owner(conn, erased)
        before = await scalar(conn, "SELECT count(*) FROM audit.events")
    async with (
        acting_as(db, login_as, group) as manager,
        manager.session(actor="gdpr-bot") as conn,
    ):
        report = await audit.erase_owner(conn, erased)
        role = await scalar(conn, "SELECT session_user")

    async with db.connection() as conn:
        events = await owner_events(conn, erased)
        after = await scalar(conn, "SELECT count(*) FROM audit.events")
        text = await trail_text(conn)
    assert after == before + 1  # no event per deleted row
    (event,) = events
    assert event.id == report.event_id
    assert (event.operation, event.row_id, event.changed_columns) == ("erase", None, None)
    assert (event.db_role, event.actor) == (role, "gdpr-bot")
    assert event.details == {"deleted": report.deleted}
    assert SECRET not in text


async def test_erase_owner_deletes_referencing_tables_before_the_tables_they_reference(
    conn: Conn,
) -> None:
    report = await audit.erase_owner(conn, uuid4())
    order = list(report.deleted)
    cursor = await conn.execute(SELECT_FOREIGN_KEYS)
    pairs = [(a, b) for a, b in await cursor.fetchall() if a in order and b in order]
    assert ("messaging.messages", "messaging.chats") in pairs
    for referencing, referenced in pairs:
        assert order.index(referencing) < order.index(referenced)


async def test_erase_owner_covers_a_table_added_later_without_a_code_change(
    db: DatabaseManager,
) -> None:
    erased, kept = uuid4(), uuid4()
    async with db.session() as conn:
        # NO ACTION on its chat: erased after the chats, its rows would block their delete.
        await conn.execute(
            "CREATE TABLE tasks.extra_things (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
            "owner_id uuid, chat_id uuid REFERENCES messaging.chats (id))"
        )
        for owner in (erased, erased, kept):
            chat = await messaging.create_chat(conn, owner_id=owner)
            await conn.execute(
                "INSERT INTO tasks.extra_things (owner_id, chat_id) VALUES (%s, %s)",
                [owner, chat.id],
            )
    async with db.connection() as conn:
        report = await audit.erase_owner(conn, erased)
        remaining = await conn.execute("SELECT owner_id FROM tasks.extra_things")
        owners = [row[0] for row in await remaining.fetchall()]
    assert report.deleted["tasks.extra_things"] == 2
    assert report.deleted["messaging.chats"] == 2
    assert owners == [kept]


async def test_erase_owner_inside_a_session_leaves_the_later_changes_of_the_session_audited(
    db: DatabaseManager,
) -> None:
    erased, kept = uuid4(), uuid4()
    async with db.session() as conn:
        await seed_owner(conn, erased)
        chat = await messaging.create_chat(conn, owner_id=kept)
    async with db.session() as conn:
        await audit.erase_owner(conn, erased)
        await messaging.update_chat(conn, chat.id, title="after the erasure")
    async with db.connection() as conn:
        events = await owner_events(conn, kept)
    assert [(e.row_id, e.operation) for e in events] == [(chat.id, "update")]


async def test_erase_owner_as_the_app_role_is_refused_and_deletes_nothing(
    db: DatabaseManager, login_as: LoginAs
) -> None:
    erased = uuid4()
    async with db.session() as conn:
        await seed_owner(conn, erased)
        before = await owner_rows(conn, erased)
    async with manager_for(login_as("agentdb_app")) as app_db, app_db.connection() as conn:
        # Its own owner's rows are visible to it, but the erasure cannot be recorded.
        await conn.execute("SELECT set_config('agentdb.owner_id', %s, false)", [str(erased)])
        with pytest.raises(AccessDeniedError):
            await audit.erase_owner(conn, erased)
    async with db.connection() as conn:
        assert await owner_rows(conn, erased) == before


@pytest.mark.parametrize("owner_id", [UUID(int=1).bytes, 1, None, "not-a-uuid"])
async def test_erase_owner_refuses_what_is_not_a_uuid(conn: Conn, owner_id: Any) -> None:
    with pytest.raises(InvalidInputError) as raised:
        await audit.erase_owner(conn, owner_id)
    assert raised.value.field == "owner_id"


ERASE_RACE_AGENT = "erase-race"


async def drain(worker_db: DatabaseManager, claims: asyncio.Semaphore) -> int:
    """A worker: claim and complete (each in its own session) until the queue of
    ERASE_RACE_AGENT is empty; releases `claims` once per claim; returns how many it completed.
    Only an execution erased under its feet may fail, with NotFoundError or ConflictError."""
    completed = 0
    while True:
        async with worker_db.session() as conn:
            execution = await agents.claim_next_execution(
                conn, worker_id="w", agent_names=[ERASE_RACE_AGENT]
            )
        if execution is None:
            return completed
        claims.release()
        try:
            async with worker_db.session() as conn:
                await agents.complete_execution(conn, execution.id)
            completed += 1
        except (NotFoundError, ConflictError):
            pass


async def erase_after(
    db: DatabaseManager, claims: asyncio.Semaphore, count: int, owner_id: UUID
) -> audit.ErasureReport:
    """erase_owner(owner_id) once the workers have made `count` claims."""
    for _ in range(count):
        await claims.acquire()
    async with db.connection() as conn:
        return await audit.erase_owner(conn, owner_id)


async def test_erasing_an_owner_while_workers_drain_its_queue_neither_deadlocks_nor_errs(
    db: DatabaseManager, login_as: LoginAs
) -> None:
    rounds, queued = 3, 40
    completed = 0
    async with manager_for(login_as("agentdb_worker")) as worker_db:
        for round_number in range(rounds):
            erased = uuid4()
            async with db.session() as conn:
                chat = await messaging.create_chat(conn, owner_id=erased)
                await messaging.add_message(conn, chat.id, role="user", content="go")
                for _ in range(queued):
                    await agents.enqueue_execution(
                        conn, agent_name=ERASE_RACE_AGENT, chat_id=chat.id
                    )
            claims = asyncio.Semaphore(0)
            async with asyncio.timeout(30):
                first, second, report = await asyncio.gather(
                    drain(worker_db, claims),
                    drain(worker_db, claims),
                    erase_after(db, claims, 1 + 4 * round_number, erased),
                )
            completed += first + second
            assert report.deleted["agents.executions"] == queued
            async with db.connection() as conn:
                assert {count for count, _ in (await owner_rows(conn, erased)).values()} == {0}
    assert 0 < completed < rounds * queued  # the erasure did cut into the queue


# purge_deleted ----------------------------------------------------------------------------


BACKDATE = sql.SQL(
    "UPDATE {schema}.{table} SET deleted_at = now() - make_interval(days => %s) WHERE id = %s"
)


async def backdate(conn: Conn, table: str, row_id: UUID, days: int) -> None:
    """Arrange: the row of `table` ("schema.table") was soft-deleted `days` ago (raw SQL, as
    the owner)."""
    schema, name = table.split(".")
    query = BACKDATE.format(schema=sql.Identifier(schema), table=sql.Identifier(name))
    await conn.execute(query, [days, row_id])


async def test_purge_deleted_removes_only_rows_soft_deleted_before_the_cutoff_and_audits_it(
    db: DatabaseManager,
) -> None:
    owner = uuid4()
    async with db.session() as conn:
        old_chat = await messaging.create_chat(conn, owner_id=owner)
        old_chat_message = await messaging.add_message(conn, old_chat.id, role="user", content="a")
        recent_chat = await messaging.create_chat(conn, owner_id=owner)
        live_chat = await messaging.create_chat(conn, owner_id=owner)
        old, recent, live = [
            await messaging.add_message(conn, live_chat.id, role="user", content="b")
            for _ in range(3)
        ]
        old_todo, recent_todo, live_todo = [
            await tasks.create_todo(conn, owner_id=owner, title="t") for _ in range(3)
        ]
        await messaging.delete_chat(conn, old_chat.id)  # and its message
        await messaging.delete_chat(conn, recent_chat.id)
        await messaging.delete_message(conn, old.id)
        await messaging.delete_message(conn, recent.id)
        await tasks.delete_todo(conn, old_todo.id)
        await tasks.delete_todo(conn, recent_todo.id)
        await backdate(conn, "messaging.chats", old_chat.id, 40)
        await backdate(conn, "messaging.messages", old_chat_message.id, 40)
        await backdate(conn, "messaging.messages", old.id, 40)
        await backdate(conn, "tasks.todos", old_todo.id, 40)
        await backdate(conn, "tasks.todos", recent_todo.id, 20)
        before = await scalar(conn, "SELECT count(*) FROM audit.events")

    async with db.connection() as conn:
        purged = await audit.purge_deleted(conn, older_than=timedelta(days=30))
        chats = await conn.execute("SELECT id FROM messaging.chats")
        messages = await conn.execute("SELECT id FROM messaging.messages")
        todos = await conn.execute("SELECT id FROM tasks.todos")
        left = {row[0] for cursor in (chats, messages, todos) for row in await cursor.fetchall()}
        events = await audit.list_audit_events(conn, since=datetime.now(UTC) - timedelta(hours=1))
        after = await scalar(conn, "SELECT count(*) FROM audit.events")

    # every table with a deleted_at, found in the catalog, is listed (0: nothing was due)
    assert purged == {
        "agents.mcp_servers": 0,
        "knowledge.chunks": 0,
        "knowledge.documents": 0,
        "knowledge.memories": 0,
        "messaging.messages": 2,
        "tasks.todos": 1,
        "messaging.chats": 1,
    }
    assert left == {recent_chat.id, live_chat.id, recent.id, live.id, recent_todo.id, live_todo.id}
    assert after == before + 3  # one per table, none per row
    purges = {(e.schema_name, e.table_name): e for e in events.items if e.operation == "purge"}
    assert {table: event.details["deleted"] for table, event in purges.items()} == {
        ("messaging", "messages"): 2,
        ("tasks", "todos"): 1,
        ("messaging", "chats"): 1,
    }
    cutoff = datetime.fromisoformat(purges["tasks", "todos"].details["cutoff"])
    assert abs(cutoff - (datetime.now(UTC) - timedelta(days=30))) < timedelta(minutes=5)
    assert {event.owner_id for event in purges.values()} == {None}


async def test_purge_deleted_with_nothing_due_returns_zeros_and_records_no_event(
    conn: Conn,
) -> None:
    purged = await audit.purge_deleted(conn, older_than=timedelta(days=30))
    assert purged == {
        "agents.mcp_servers": 0,
        "knowledge.chunks": 0,
        "knowledge.documents": 0,
        "knowledge.memories": 0,
        "messaging.chats": 0,
        "messaging.messages": 0,
        "tasks.todos": 0,
    }
    assert (await audit.list_audit_events(conn)).items == []


@pytest.mark.parametrize(
    "older_than", [timedelta(0), timedelta(days=-1), 30, 30.0, "30d", None, timedelta.max]
)
async def test_purge_deleted_refuses_an_older_than_that_is_not_a_positive_timedelta(
    conn: Conn, older_than: Any
) -> None:
    with pytest.raises(InvalidInputError) as raised:
        await audit.purge_deleted(conn, older_than=older_than)
    assert raised.value.field == "older_than"


# The CLI ----------------------------------------------------------------------------------


async def run_cli(command: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [*command, *args], capture_output=True, text=True, timeout=60
    )


async def test_the_cli_grant_to_a_role_that_does_not_exist_fails_in_one_line(
    agentdb_command: list[str], database_url: str
) -> None:
    result = await run_cli(
        agentdb_command, "grant", "no_such_login", "--app", "--database", database_url
    )
    assert result.returncode == 1
    assert result.stderr.startswith("agentdb: error: role 'no_such_login' does not exist")
    assert len(result.stderr.strip().splitlines()) == 1


async def test_the_cli_grant_makes_the_login_a_member_and_records_a_grant_event(
    agentdb_command: list[str], database_url: str, login_as: LoginAs, conn: Conn
) -> None:
    login = str(conninfo_to_dict(login_as("agentdb_readonly"))["user"])
    result = await run_cli(agentdb_command, "grant", login, "--worker", "--database", database_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"granted agentdb_worker to {login}"
    assert await scalar(conn, "SELECT pg_has_role(%s, 'agentdb_worker', 'MEMBER')", [login])
    events = (await audit.list_audit_events(conn, table_name="pg_auth_members")).items
    assert [(e.operation, e.details) for e in events] == [
        ("grant", {"role": login, "group": "agentdb_worker"})
    ]


async def test_the_cli_erase_owner_refuses_without_yes_and_prints_the_counts_with_it(
    agentdb_command: list[str], database_url: str, db: DatabaseManager
) -> None:
    erased = uuid4()
    async with db.session() as conn:
        await seed_owner(conn, erased)
    refused = await run_cli(agentdb_command, "erase-owner", str(erased), "--database", database_url)
    assert refused.returncode == 1
    assert "pass --yes" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    async with db.connection() as conn:
        assert (await owner_rows(conn, erased))["messaging.chats"][0] == 2

    done = await run_cli(
        agentdb_command, "erase-owner", str(erased), "--yes", "--database", database_url
    )
    assert done.returncode == 0, done.stderr
    counts = dict(line.split() for line in done.stdout.splitlines()[:-1])
    assert counts == {
        "agents.tool_calls": "2",
        "agents.executions": "4",
        "agents.mcp_servers": "2",
        "knowledge.chunks": "2",
        "knowledge.documents": "2",
        "knowledge.memories": "2",
        "messaging.messages": "4",
        "tasks.todos": "2",
        "messaging.chats": "2",
    }
    assert done.stdout.splitlines()[-1].startswith(f"erased owner {erased}: 22 rows")


async def test_the_cli_purge_deleted_prints_the_counts_and_refuses_an_unreadable_age(
    agentdb_command: list[str], database_url: str, db: DatabaseManager
) -> None:
    async with db.session() as conn:
        todo = await tasks.create_todo(conn, owner_id=uuid4(), title="t")
        await tasks.delete_todo(conn, todo.id)
        await backdate(conn, "tasks.todos", todo.id, 40)
    result = await run_cli(
        agentdb_command, "purge-deleted", "--older-than", "30d", "--database", database_url
    )
    assert result.returncode == 0, result.stderr
    *counts, summary = result.stdout.splitlines()
    assert dict(line.split() for line in counts) == {
        "agents.mcp_servers": "0",
        "knowledge.chunks": "0",
        "knowledge.documents": "0",
        "knowledge.memories": "0",
        "messaging.messages": "0",
        "tasks.todos": "1",
        "messaging.chats": "0",
    }
    assert summary == "purged 1 rows soft-deleted more than 30d ago"

    refused = await run_cli(
        agentdb_command, "purge-deleted", "--older-than", "3w", "--database", database_url
    )
    assert refused.returncode == 1
    assert refused.stderr.startswith("agentdb: error: --older-than: ")
    assert len(refused.stderr.strip().splitlines()) == 1
