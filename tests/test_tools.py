"""app.agents.tools against a real PostgreSQL: MCP servers, syncing their tool lists (inserts,
updates, disables, idempotence, a constant number of statements, concurrent syncs), semantic
tool selection with its filters, embeddings, and the tool-call log with its stats; and owner
isolation of all of it under the application's role."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import numpy as np
import psycopg
import pytest

from app import agents
from app.agents import tools
from app.agents.models import MAX_TOOL_PAYLOAD_BYTES
from app.database import (
    ConflictError,
    DatabaseConfig,
    DatabaseManager,
    InvalidInputError,
    NotFoundError,
)
from app.messaging import EMBEDDING_DIMENSIONS
from tests.conftest import wait_for_lock_waiters

Conn = psycopg.AsyncConnection[Any]


def unit(*hot: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A unit vector along the given axes (equal weights)."""
    vector = np.zeros(EMBEDDING_DIMENSIONS, dtype=np.float32)
    vector[list(hot)] = 1.0
    return vector / np.linalg.norm(vector)


def specs(*names: str, description: str = "does things") -> list[dict[str, Any]]:
    return [
        {"name": name, "description": f"{name} {description}", "input_schema": {"type": "object"}}
        for name in names
    ]


async def scalar(conn: Conn, statement: Any, params: Any = None) -> Any:
    row = await (await conn.execute(statement, params)).fetchone()
    assert row is not None
    return row[0]


async def server(conn: Conn, name: str = "github", owner_id: UUID | None = None) -> tools.McpServer:
    return await tools.upsert_mcp_server(
        conn, name=name, transport="http", endpoint=f"https://{name}.example/mcp", owner_id=owner_id
    )


# MCP servers ------------------------------------------------------------------------------


async def test_upsert_mcp_server_creates_then_updates_one_server_per_owner_and_name(
    conn: Conn,
) -> None:
    owner = uuid4()
    shared = await server(conn, "github")
    mine = await server(conn, "github", owner)
    assert shared.id != mine.id and shared.owner_id is None and mine.owner_id == owner
    moved = await tools.upsert_mcp_server(
        conn, name="github", transport="sse", endpoint="https://new", config={"token_env": "GH"}
    )
    assert moved.id == shared.id
    assert (moved.transport, moved.endpoint, moved.config) == (
        "sse",
        "https://new",
        {"token_env": "GH"},
    )
    await tools.delete_mcp_server(conn, shared.id)
    assert [s.id for s in await tools.list_mcp_servers(conn, owner_id=owner)] == [mine.id]
    back = await server(conn, "github")
    assert back.id == shared.id and back.deleted_at is None
    listed = await tools.list_mcp_servers(conn, owner_id=owner)
    assert [s.id for s in listed] == [shared.id, mine.id]  # shared first within a name
    assert [s.id for s in await tools.list_mcp_servers(conn)] == [shared.id]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"name": " "}, "name"),
        ({"transport": "websocket"}, "transport"),
        ({"endpoint": ""}, "endpoint"),
        ({"config": ["not", "an", "object"]}, "config"),
        ({"owner_id": "someone"}, "owner_id"),
    ],
)
async def test_a_bad_server_is_invalid_input_naming_the_field_and_nothing_is_written(
    conn: Conn, arguments: dict[str, Any], field: str
) -> None:
    values = {"name": "github", "transport": "http", "endpoint": "https://x"} | arguments
    with pytest.raises(InvalidInputError) as raised:
        await tools.upsert_mcp_server(conn, **values)
    assert raised.value.field == field
    assert await scalar(conn, "SELECT count(*) FROM agents.mcp_servers") == 0


# Syncing a server's tools -----------------------------------------------------------------


async def tool_rows(conn: Conn, server_id: UUID) -> dict[str, tuple[bool, bool, datetime]]:
    """name → (is_enabled, has_embedding, updated_at)."""
    return {
        tool.name: (tool.is_enabled, tool.has_embedding, tool.updated_at)
        for tool in await tools.list_tools(conn, server_id)
    }


async def test_sync_inserts_updates_and_disables_and_clears_only_changed_embeddings(
    db: DatabaseManager,
) -> None:
    async with db.session() as conn:
        github = await server(conn)
        first = await tools.sync_tools(conn, github.id, specs("search", "create_issue", "close"))
        assert first == tools.ToolSync(inserted=3, updated=0, disabled=0, unchanged=0)
        stored = await tools.list_tools(conn, github.id)
        await tools.set_tool_embeddings(conn, {tool.id: unit(n) for n, tool in enumerate(stored)})
    async with db.session() as conn:  # another transaction: updated_at would move
        changed = specs("search", "create_issue") + specs("close", description="closes now")
        changed += specs("label")
        second = await tools.sync_tools(conn, github.id, [*changed[:1], *changed[2:]])
        assert second == tools.ToolSync(inserted=1, updated=1, disabled=1, unchanged=1)
        rows = await tool_rows(conn, github.id)
    assert {name: row[:2] for name, row in rows.items()} == {
        "search": (True, True),  # unchanged: keeps its embedding
        "close": (True, False),  # changed: to be embedded again
        "label": (True, False),  # new
        "create_issue": (False, True),  # no longer offered: disabled, never deleted
    }
    async with db.session() as conn:
        again = await tools.sync_tools(conn, github.id, specs("search", "create_issue"))
        assert again == tools.ToolSync(inserted=0, updated=1, disabled=2, unchanged=1)
        rows = await tool_rows(conn, github.id)
    # offered again with the same content: enabled, and its embedding kept
    assert rows["create_issue"][:2] == (True, True)


async def test_syncing_the_same_list_twice_changes_nothing_not_even_updated_at(
    db: DatabaseManager,
) -> None:
    async with db.session() as conn:
        github = await server(conn)
        await tools.sync_tools(conn, github.id, specs("search", "create_issue"))
        before = await tool_rows(conn, github.id)
    async with db.session() as conn:
        result = await tools.sync_tools(conn, github.id, specs("search", "create_issue"))
        after = await tool_rows(conn, github.id)
    assert result == tools.ToolSync(inserted=0, updated=0, disabled=0, unchanged=2)
    assert after == before


@pytest.mark.parametrize("count", [3, 300])
async def test_sync_runs_three_statements_whatever_the_number_of_tools(
    conn: Conn, count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    github = await server(conn)
    sent: list[Any] = []
    execute = conn.execute

    async def counting(query: Any, params: Any = None, **options: Any) -> Any:
        sent.append(query)
        return await execute(query, params, **options)

    monkeypatch.setattr(conn, "execute", counting)
    names = [f"tool_{n}" for n in range(count)]
    assert (await tools.sync_tools(conn, github.id, specs(*names))).inserted == count
    read = [tools.LOCK_MCP_SERVER, tools.SELECT_TOOL_HASHES]
    assert sent == [*read, tools.SYNC_TOOLS]
    sent.clear()
    assert (await tools.sync_tools(conn, github.id, specs(*names))).unchanged == count
    assert sent == read  # nothing changed: nothing to write


async def test_two_concurrent_syncs_of_one_server_leave_the_later_list_exactly(
    db: DatabaseManager, conn: Conn
) -> None:
    async with db.session() as setup:
        github = await server(setup)
        await tools.sync_tools(setup, github.id, specs("a", "b", "c"))
    first_done, release = asyncio.Event(), asyncio.Event()

    async def first() -> tools.ToolSync:
        async with db.session() as session:
            result = await tools.sync_tools(session, github.id, specs("a", "d"))
            first_done.set()
            await release.wait()  # commits only after the second sync is waiting
        return result

    async def second() -> tools.ToolSync:
        await first_done.wait()
        async with db.session() as session:
            return await tools.sync_tools(session, github.id, specs("b", "e"))

    racing = asyncio.gather(first(), second())
    await asyncio.wait_for(first_done.wait(), 10)
    await wait_for_lock_waiters(conn)
    release.set()
    one, two = await asyncio.wait_for(racing, 10)
    assert one == tools.ToolSync(inserted=1, updated=0, disabled=2, unchanged=1)
    # the second saw the first's committed list: d disabled, b enabled again, e new
    assert two == tools.ToolSync(inserted=1, updated=1, disabled=2, unchanged=0)
    rows = await tool_rows(conn, github.id)
    assert {name for name, row in rows.items() if row[0]} == {"b", "e"}
    assert set(rows) == {"a", "b", "c", "d", "e"}


@pytest.mark.parametrize(
    ("offered", "field"),
    [
        ([{"name": "ok"}, {"name": ""}], "tools[1].name"),
        ([{"name": "ok", "input_schema": ["array"]}], "tools[0].input_schema"),
        ([{"name": "ok", "description": 5}], "tools[0].description"),
        (["search"], "tools[0]"),
        ([{"name": "same"}, {"name": "same"}], "tools"),
        ([{"name": "ok", "annotations": {}}], "tools[0].annotations"),
        ("search", "tools"),
    ],
)
async def test_a_bad_tool_list_is_invalid_input_naming_the_tool_and_nothing_is_written(
    conn: Conn, offered: Any, field: str
) -> None:
    github = await server(conn)
    with pytest.raises(InvalidInputError) as raised:
        await tools.sync_tools(conn, github.id, offered)
    assert raised.value.field == field
    assert await tools.list_tools(conn, github.id) == []


async def test_syncing_a_missing_or_deleted_server_is_not_found(conn: Conn) -> None:
    with pytest.raises(NotFoundError):
        await tools.sync_tools(conn, uuid4(), specs("search"))
    github = await server(conn)
    await tools.delete_mcp_server(conn, github.id)
    with pytest.raises(NotFoundError):
        await tools.sync_tools(conn, github.id, specs("search"))


async def test_content_hash_ignores_key_order_and_sees_every_part() -> None:
    base = tools.ToolSpec(name="search", description="d", input_schema={"a": 1, "b": [1, 2]})
    same = tools.ToolSpec(name="search", description="d", input_schema={"b": [1, 2], "a": 1})
    assert tools.content_hash(base) == tools.content_hash(same)
    for other in (
        tools.ToolSpec(name="search2", description="d", input_schema=base.input_schema),
        tools.ToolSpec(name="search", description="e", input_schema=base.input_schema),
        tools.ToolSpec(name="search", description="d", input_schema={"a": 2, "b": [1, 2]}),
    ):
        assert tools.content_hash(other) != tools.content_hash(base)


# Embeddings and selection -----------------------------------------------------------------


async def test_set_tool_embeddings_takes_a_mapping_or_pairs_and_refuses_bad_vectors(
    conn: Conn,
) -> None:
    github = await server(conn)
    await tools.sync_tools(conn, github.id, specs("a", "b"))
    a, b = await tools.list_tools(conn, github.id)
    assert await tools.set_tool_embeddings(conn, {a.id: unit(0)}) == 1
    assert await tools.set_tool_embeddings(conn, [(b.id, unit(1).tolist())]) == 1
    assert await tools.set_tool_embeddings(conn, []) == 0
    for bad in (np.zeros(EMBEDDING_DIMENSIONS), [1.0, 2.0], [float("nan")] * EMBEDDING_DIMENSIONS):
        with pytest.raises(InvalidInputError) as raised:
            await tools.set_tool_embeddings(conn, [(a.id, unit(5)), (b.id, bad)])
        assert raised.value.field == "items[1].embedding"
    hits = await tools.select_tools(conn, embedding=unit(0), limit=2)
    assert [hit.tool.name for hit in hits] == ["a", "b"]  # nothing of the refused batch landed


async def test_select_tools_returns_the_nearest_enabled_tools_of_live_enabled_visible_servers(
    conn: Conn,
) -> None:
    owner, stranger = uuid4(), uuid4()
    shared = await server(conn, "shared")
    mine = await server(conn, "mine", owner)
    theirs = await server(conn, "theirs", stranger)
    off = await server(conn, "off")
    await conn.execute("UPDATE agents.mcp_servers SET is_enabled = false WHERE id = %s", [off.id])
    gone = await server(conn, "gone")
    for each, names in (
        (shared, ["s_near", "s_far", "s_disabled", "s_unembedded"]),
        (mine, ["m_near"]),
        (theirs, ["t_nearest"]),
        (off, ["o_nearest"]),
        (gone, ["g_nearest"]),
    ):
        await tools.sync_tools(conn, each.id, specs(*names))
    ids = {
        tool.name: tool.id
        for each in (shared, mine, theirs, off, gone)
        for tool in await tools.list_tools(conn, each.id)
    }
    await tools.set_tool_embeddings(
        conn,
        {
            ids["s_near"]: unit(0, 1),
            ids["s_far"]: unit(2),
            ids["s_disabled"]: unit(0),
            ids["m_near"]: unit(0, 3, 4),
            ids["t_nearest"]: unit(0),
            ids["o_nearest"]: unit(0),
            ids["g_nearest"]: unit(0),
        },
    )
    await tools.sync_tools(conn, shared.id, specs("s_near", "s_far", "s_unembedded"))  # disables
    await tools.delete_mcp_server(conn, gone.id)

    hits = await tools.select_tools(conn, embedding=unit(0), limit=10, owner_id=owner)
    assert [hit.tool.name for hit in hits] == ["s_near", "m_near", "s_far"]
    assert hits[0].similarity == pytest.approx(2**-0.5, rel=1e-5)
    shared_only = await tools.select_tools(conn, embedding=unit(0), limit=10)
    assert [hit.tool.name for hit in shared_only] == ["s_near", "s_far"]
    of_mine = await tools.select_tools(
        conn, embedding=unit(0), limit=10, owner_id=owner, server_ids=[mine.id]
    )
    assert [hit.tool.name for hit in of_mine] == ["m_near"]


async def test_select_tools_returns_limit_tools_whenever_that_many_pass_the_filters(
    conn: Conn,
) -> None:
    # 300 embedded tools nearest to the query belong to disabled servers; 12 selectable ones
    # lie further away. The index scan must go on past the first candidates to find them.
    rng = np.random.default_rng(7)
    query = unit(0)
    blocked = [await server(conn, f"blocked{n}") for n in range(3)]
    for each in blocked:
        await tools.sync_tools(conn, each.id, specs(*(f"{each.name}_{n}" for n in range(100))))
        await conn.execute(
            "UPDATE agents.mcp_servers SET is_enabled = false WHERE id = %s", [each.id]
        )
    open_server = await server(conn, "open")
    await tools.sync_tools(conn, open_server.id, specs(*(f"open_{n}" for n in range(12))))
    vectors = {}
    for each in [*blocked, open_server]:
        for tool in await tools.list_tools(conn, each.id):
            noise = rng.normal(size=EMBEDDING_DIMENSIONS).astype(np.float32)
            weight = 0.2 if each.name == "open" else 3.0  # blocked ones sit closest
            vectors[tool.id] = query * weight + noise / np.linalg.norm(noise)
    await tools.set_tool_embeddings(conn, vectors)
    await conn.execute("ANALYZE agents.tools")
    hits = await tools.select_tools(conn, embedding=query, limit=8)
    assert len(hits) == 8 and all(hit.tool.name.startswith("open_") for hit in hits)
    assert [hit.similarity for hit in hits] == sorted(
        (hit.similarity for hit in hits), reverse=True
    )
    assert len(await tools.select_tools(conn, embedding=query, limit=50)) == 12  # all there are


SEARCH_PLAN_COUNTS = """
SELECT generic_plans, custom_plans FROM pg_catalog.pg_prepared_statements
WHERE statement LIKE '%AS nearest%'
"""


async def test_select_tools_over_every_server_runs_one_generic_plan_walking_the_hnsw_index(
    db: DatabaseManager, conn: Conn
) -> None:
    shared = await server(conn, "shared")
    names = [f"tool_{number}" for number in range(1500)]
    await tools.sync_tools(conn, shared.id, specs(*names))
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((len(names), EMBEDDING_DIMENSIONS)).astype(np.float32)
    listed = {tool.name: tool.id for tool in await tools.list_tools(conn, shared.id)}
    await tools.set_tool_embeddings(
        conn, {listed[n]: v for n, v in zip(names, vectors, strict=True)}
    )
    await conn.execute("ANALYZE agents.tools")
    async with db.connection() as search:
        plans: list[str] = []
        search.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
        await search.execute("LOAD 'auto_explain'")
        await search.execute("SET auto_explain.log_min_duration = 0")
        await search.execute("SET auto_explain.log_level = 'notice'")
        for query in vectors[:8]:  # prepared after prepare_threshold calls, then generic
            hits = await tools.select_tools(search, embedding=query, limit=8)
            assert len(hits) == 8
        searched = plans[-1]  # the last search's (its settings' plan came just before)
        generic, custom = await (await search.execute(SEARCH_PLAN_COUNTS)).fetchone()  # type: ignore[misc]
        assert generic >= 2 and custom == 0
        assert "Index Scan using idx_tools_embedding" in searched
        assert "Seq Scan on tools" not in searched
        for query in vectors[:8]:  # with server_ids (a statement of its own): planned for them
            await tools.select_tools(search, embedding=query, limit=8, server_ids=[shared.id])
        counts = await (await search.execute(SEARCH_PLAN_COUNTS)).fetchall()
        assert sorted(counts) == [(0, 3), (generic, 0)]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"embedding": [1.0] * 3}, "embedding"),
        ({"limit": 0}, "limit"),
        ({"limit": True}, "limit"),
        ({"owner_id": 5}, "owner_id"),
        ({"server_ids": ["nope"]}, "server_ids.0"),
    ],
)
async def test_bad_selection_arguments_are_invalid_input_naming_them(
    conn: Conn, arguments: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInputError) as raised:
        await tools.select_tools(conn, **({"embedding": unit(0)} | arguments))
    assert raised.value.field == field


# Tool calls -------------------------------------------------------------------------------


async def test_a_tool_call_is_logged_from_start_to_finish_with_the_servers_clock(
    conn: Conn,
) -> None:
    owner = uuid4()
    execution = await agents.enqueue_execution(
        conn, agent_name="planner", owner_id=owner, input={"task": "x"}
    )
    github = await server(conn)
    await tools.sync_tools(conn, github.id, specs("search"))
    (search,) = await tools.list_tools(conn, github.id)
    async with conn.transaction():  # one transaction: now() would not move, the clock does
        call = await tools.start_tool_call(
            conn, execution.id, tool_name="search", arguments={"q": "milk"}, tool_id=search.id
        )
        assert (call.status, call.owner_id, call.tool_id, call.finished_at) == (
            "running",
            owner,
            search.id,
            None,
        )
        await conn.execute("SELECT pg_sleep(0.02)")
        done = await tools.finish_tool_call(conn, call.id, result=["3 results"])
    assert (done.status, done.result, done.error) == ("succeeded", ["3 results"], None)
    assert done.duration is not None and done.duration >= timedelta(milliseconds=20)
    failed_call = await tools.start_tool_call(conn, execution.id, tool_name="fetch", arguments={})
    failed = await tools.finish_tool_call(conn, failed_call.id, error="timeout after 30 s")
    assert (failed.status, failed.error, failed.result, failed.tool_id) == (
        "failed",
        "timeout after 30 s",
        None,
        None,
    )
    listed = await tools.list_tool_calls(conn, execution.id)
    assert [c.id for c in listed] == [call.id, failed_call.id]
    assert listed[0] == done


async def test_finishing_a_call_twice_is_a_conflict_and_an_unknown_one_not_found(
    conn: Conn,
) -> None:
    execution = await agents.enqueue_execution(conn, agent_name="planner")
    call = await tools.start_tool_call(conn, execution.id, tool_name="search", arguments={})
    await tools.finish_tool_call(conn, call.id, result={"ok": True})
    with pytest.raises(ConflictError, match="succeeded"):
        await tools.finish_tool_call(conn, call.id, error="late failure")
    assert (await tools.list_tool_calls(conn, execution.id))[0].result == {"ok": True}
    with pytest.raises(NotFoundError):
        await tools.finish_tool_call(conn, uuid4(), result=1)
    with pytest.raises(NotFoundError):
        await tools.start_tool_call(conn, uuid4(), tool_name="search", arguments={})


async def test_two_finishes_racing_on_separate_connections_finish_the_call_once(
    db: DatabaseManager,
) -> None:
    async with db.session() as conn:
        execution = await agents.enqueue_execution(conn, agent_name="planner")
        call = await tools.start_tool_call(conn, execution.id, tool_name="x", arguments={})

    async def finish(result: int) -> Any:
        async with db.session() as conn:
            return await tools.finish_tool_call(conn, call.id, result=result)

    outcomes = await asyncio.gather(finish(1), finish(2), return_exceptions=True)
    finished = [o for o in outcomes if isinstance(o, tools.ToolCall)]
    assert len(finished) == 1
    assert [type(o) for o in outcomes if not isinstance(o, tools.ToolCall)] == [ConflictError]
    async with db.session() as conn:
        assert (await tools.list_tool_calls(conn, execution.id))[0].result == finished[0].result


@pytest.mark.parametrize(
    ("start", "finish", "field"),
    [
        ({"tool_name": ""}, {}, "tool_name"),
        ({"arguments": ["a"]}, {}, "arguments"),
        ({"arguments": {"blob": "x" * MAX_TOOL_PAYLOAD_BYTES}}, {}, "arguments"),
        ({"tool_id": "t"}, {}, "tool_id"),
        ({}, {"result": "x" * (MAX_TOOL_PAYLOAD_BYTES + 1)}, "result"),
        ({}, {"result": 1, "error": "both"}, "result"),
        ({}, {"error": " "}, "error"),
        ({}, {"error": "e" * (MAX_TOOL_PAYLOAD_BYTES + 1)}, "error"),
        ({}, {"result": {"when": datetime.now(UTC)}}, "result"),
    ],
)
async def test_bad_tool_calls_are_invalid_input_naming_the_field_and_change_nothing(
    conn: Conn, start: dict[str, Any], finish: dict[str, Any], field: str
) -> None:
    execution = await agents.enqueue_execution(conn, agent_name="planner")
    with pytest.raises(InvalidInputError) as raised:
        call = await tools.start_tool_call(
            conn, execution.id, **({"tool_name": "search", "arguments": {}} | start)
        )
        await tools.finish_tool_call(conn, call.id, **finish)
    assert raised.value.field == field
    calls = await tools.list_tool_calls(conn, execution.id)
    assert all(c.status == "running" for c in calls) and len(calls) == (1 if finish else 0)


async def test_the_size_limit_holds_for_any_writer_too(conn: Conn) -> None:
    execution = await agents.enqueue_execution(conn, agent_name="planner")
    with pytest.raises(psycopg.errors.CheckViolation, match="ck_tool_calls_arguments_size"):
        await conn.execute(
            "INSERT INTO agents.tool_calls (execution_id, tool_name, arguments)"
            " VALUES (%s, 'x', jsonb_build_object('blob', repeat('x', 70000)))",
            [execution.id],
        )


async def test_tool_call_stats_match_a_hand_computation(conn: Conn) -> None:
    execution = await agents.enqueue_execution(conn, agent_name="planner")
    durations = {"search": [10, 20, 30, 40, 1000], "fetch": [5, 15]}
    failures = {"search": 1, "fetch": 2}
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for name, millis in durations.items():
        for number, ms in enumerate(millis):
            call = await tools.start_tool_call(conn, execution.id, tool_name=name, arguments={})
            failed = number < failures[name]
            await tools.finish_tool_call(
                conn, call.id, **({"error": "boom"} if failed else {"result": 1})
            )
            await conn.execute(
                "UPDATE agents.tool_calls SET started_at = %s, finished_at = %s WHERE id = %s",
                [start, start + timedelta(milliseconds=ms), call.id],
            )
    old = await tools.start_tool_call(conn, execution.id, tool_name="search", arguments={})
    await conn.execute(
        "UPDATE agents.tool_calls SET started_at = %s WHERE id = %s",
        [start - timedelta(days=1), old.id],
    )
    running = await tools.start_tool_call(conn, execution.id, tool_name="fetch", arguments={})
    assert running.status == "running"

    stats = {s.tool_name: s for s in await tools.tool_call_stats(conn, since=start)}
    assert set(stats) == {"search", "fetch"}
    search, fetch = stats["search"], stats["fetch"]
    assert (search.calls, search.failures, search.failure_rate) == (5, 1, 0.2)
    assert (fetch.calls, fetch.failures) == (3, 2)  # the running call counts as a call
    assert fetch.failure_rate == pytest.approx(2 / 3)
    for stat, millis in ((search, durations["search"]), (fetch, durations["fetch"])):
        for got, q in ((stat.p50_duration, 50), (stat.p95_duration, 95)):
            expected = timedelta(milliseconds=float(np.percentile(millis, q)))
            assert got is not None and abs(got - expected) < timedelta(microseconds=2)
    only = await tools.tool_call_stats(conn, tool_name="search")
    assert [(s.tool_name, s.calls) for s in only] == [("search", 6)]  # with the old one


# Owner isolation --------------------------------------------------------------------------


@pytest.fixture
async def app_db(login_as: Any) -> Any:
    async with DatabaseManager(DatabaseConfig(url=login_as("agentdb_app"))) as manager:
        yield manager


async def test_an_owner_sees_shared_servers_and_their_own_and_changes_only_their_own(
    db: DatabaseManager, app_db: DatabaseManager
) -> None:
    a, b = uuid4(), uuid4()
    async with db.session() as admin:
        shared = await server(admin, "shared")
        theirs = await server(admin, "theirs", b)
        await tools.sync_tools(admin, shared.id, specs("s"))
        await tools.sync_tools(admin, theirs.id, specs("t"))
        tool_ids = {
            t.name: t.id for s in (shared, theirs) for t in await tools.list_tools(admin, s.id)
        }
        await tools.set_tool_embeddings(admin, {tool_ids["s"]: unit(1), tool_ids["t"]: unit(0)})
        b_run = await agents.enqueue_execution(admin, agent_name="planner", owner_id=b)
        await tools.start_tool_call(admin, b_run.id, tool_name="t", arguments={"secret": 1})
    async with app_db.session(owner_id=a) as conn:
        mine = await server(conn, "mine", a)
        await tools.sync_tools(conn, mine.id, specs("m"))
        visible = {
            row[0]
            for row in await (await conn.execute("SELECT name FROM agents.mcp_servers")).fetchall()
        }
        assert visible == {"shared", "mine"}
        names = {
            row[0] for row in await (await conn.execute("SELECT name FROM agents.tools")).fetchall()
        }
        assert names == {"s", "m"}
        assert await scalar(conn, "SELECT count(*) FROM agents.tool_calls") == 0
        # owner_id=b asks for b's tools: row-level security shows a's and the shared only
        hits = await tools.select_tools(conn, embedding=unit(0), owner_id=b)
        assert [hit.tool.name for hit in hits] == ["s"]
        touched = await conn.execute(
            "UPDATE agents.mcp_servers SET endpoint = 'https://evil' RETURNING name"
        )
        assert [row[0] for row in await touched.fetchall()] == ["mine"]
    with pytest.raises(NotFoundError):  # the shared server is the operator's
        async with app_db.session(owner_id=a) as conn:
            await tools.sync_tools(conn, shared.id, specs("s", "evil"))
    async with db.session() as admin:
        assert [t.name for t in await tools.list_tools(admin, shared.id)] == ["s"]
        event = await scalar(
            admin,
            "SELECT changed_columns FROM audit.events WHERE table_name = 'mcp_servers'"
            " AND operation = 'update'",
        )
        assert event == ["endpoint"]


async def test_tool_specs_and_dicts_are_the_same_tools(conn: Conn) -> None:
    from app.agents.models import ToolSpecDict

    assert set(ToolSpecDict.__annotations__) == set(tools.ToolSpec.model_fields)
    github = await server(conn)
    spec = tools.ToolSpec(name="search")  # defaults: no description, an object schema
    await tools.sync_tools(conn, github.id, [spec])
    same = await tools.sync_tools(conn, github.id, [{"name": "search"}])
    assert same == tools.ToolSync(inserted=0, updated=0, disabled=0, unchanged=1)
    (stored,) = await tools.list_tools(conn, github.id)
    assert stored.content_hash == tools.content_hash(spec)
    assert (stored.description, stored.input_schema) == ("", {"type": "object"})


async def test_an_unchanged_tool_given_with_an_unknown_key_is_still_refused(conn: Conn) -> None:
    github = await server(conn)
    await tools.sync_tools(conn, github.id, [{"name": "search"}])
    with pytest.raises(InvalidInputError) as raised:
        await tools.sync_tools(conn, github.id, [{"name": "search", "title": "Search"}])
    assert raised.value.field == "tools[0].title"
