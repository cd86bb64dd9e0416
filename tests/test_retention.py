"""Retention of what grows without bound, against a real server: purge_finished_executions
and purge_finished_tool_calls delete only finished rows older than the cutoff, in batches
that each commit on their own, race the claim without a deadlock or a live row lost, find
their rows by index however many there are (and leave the claim on its own), record one
audit event, refuse bad input, and `agentdb purge-executions` runs both."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString
from uuid import UUID

import psycopg
import pytest

from app import agents, audit
from app.agents import queries, tools
from app.database import AgentDBError, DatabaseConfig, DatabaseManager, InvalidInputError
from tests.conftest import generic_plans

Conn = psycopg.AsyncConnection[Any]

# Arrange, as the owner: `count` executions in `status` whose last change was `days` ago
# (finished then, when the status is final; created a minute before).
INSERT_AGED_EXECUTIONS = """
INSERT INTO agents.executions
    (agent_name, status, attempt, worker_id, created_at, started_at, heartbeat_at, finished_at)
SELECT 'a',
       %(status)s::varchar,
       1,
       'w0',
       now() - make_interval(days => %(days)s, mins => 1),
       now() - make_interval(days => %(days)s, mins => 1),
       now() - make_interval(days => %(days)s),
       CASE WHEN %(status)s IN ('succeeded', 'failed', 'cancelled')
            THEN now() - make_interval(days => %(days)s) END
FROM generate_series(1, %(count)s)
RETURNING id
"""

# Arrange: `count` tool calls of one execution in `status`, started `days` ago and a minute,
# finished `days` ago unless running.
INSERT_AGED_TOOL_CALLS = """
INSERT INTO agents.tool_calls (execution_id, tool_name, status, error, started_at, finished_at)
SELECT %(execution_id)s,
       'search',
       %(status)s::varchar,
       CASE WHEN %(status)s = 'failed' THEN 'boom' END,
       now() - make_interval(days => %(days)s, mins => 1),
       CASE WHEN %(status)s <> 'running' THEN now() - make_interval(days => %(days)s) END
FROM generate_series(1, %(count)s)
RETURNING id
"""

THIRTY_DAYS = timedelta(days=30)


async def aged_executions(conn: Conn, status: str, days: int, count: int = 1) -> list[UUID]:
    cursor = await conn.execute(
        INSERT_AGED_EXECUTIONS, {"status": status, "days": days, "count": count}
    )
    return [row[0] for row in await cursor.fetchall()]


async def aged_tool_calls(
    conn: Conn, execution_id: UUID, status: str, days: int, count: int = 1
) -> list[UUID]:
    params = {"execution_id": execution_id, "status": status, "days": days, "count": count}
    cursor = await conn.execute(INSERT_AGED_TOOL_CALLS, params)
    return [row[0] for row in await cursor.fetchall()]


async def ids(conn: Conn, table: str) -> set[UUID]:
    query = {
        "executions": "SELECT id FROM agents.executions",
        "tool_calls": "SELECT id FROM agents.tool_calls",
    }[table]
    cursor = await conn.execute(query)
    return {row[0] for row in await cursor.fetchall()}


async def purge_events(conn: Conn, table_name: str) -> list[audit.AuditEvent]:
    page = await audit.list_audit_events(conn, table_name=table_name)
    return [event for event in page.items if event.operation == "purge"]


def plan_nodes(plan: Any) -> Iterator[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan."""
    if isinstance(plan, list):
        for item in plan:
            yield from plan_nodes(item)
    elif isinstance(plan, dict):
        if "Node Type" in plan:
            yield plan
        for key in ("Plan", "Plans"):
            if key in plan:
                yield from plan_nodes(plan[key])


async def explain(
    conn: Conn, statement: LiteralString, params: dict[str, Any]
) -> list[dict[str, Any]]:
    cursor = await conn.execute("EXPLAIN (FORMAT JSON) " + statement, params)
    row = await cursor.fetchone()
    assert row is not None
    return list(plan_nodes(row[0]))


# What goes and what stays ---------------------------------------------------------------


async def test_only_finished_executions_older_than_the_cutoff_are_purged(conn: Conn) -> None:
    old = [
        *await aged_executions(conn, "succeeded", 40),
        *await aged_executions(conn, "failed", 40),
        *await aged_executions(conn, "cancelled", 31),
    ]
    kept = [
        *await aged_executions(conn, "queued", 40),  # waited long: still to run
        *await aged_executions(conn, "running", 40),  # runs long: still live
        *await aged_executions(conn, "succeeded", 29),  # finished within the 30 days
        *await aged_executions(conn, "failed", 1),
        *await aged_executions(conn, "cancelled", 0),
    ]
    fresh = await agents.enqueue_execution(conn, agent_name="a")
    purged = await agents.purge_finished_executions(conn, older_than=THIRTY_DAYS)
    assert purged == len(old) == 3
    assert await ids(conn, "executions") == {*kept, fresh.id}


async def test_only_finished_tool_calls_older_than_the_cutoff_are_purged(conn: Conn) -> None:
    [execution] = await aged_executions(conn, "succeeded", 40)
    old = [
        *await aged_tool_calls(conn, execution, "succeeded", 40, count=2),
        *await aged_tool_calls(conn, execution, "failed", 31),
    ]
    kept = [
        *await aged_tool_calls(conn, execution, "running", 40),  # started long ago, running
        *await aged_tool_calls(conn, execution, "succeeded", 29),
        *await aged_tool_calls(conn, execution, "failed", 0),
    ]
    live = await tools.start_tool_call(conn, execution, tool_name="search", arguments={})
    purged = await tools.purge_finished_tool_calls(conn, older_than=THIRTY_DAYS)
    assert purged == len(old) == 3
    assert await ids(conn, "tool_calls") == {*kept, live.id}
    assert await ids(conn, "executions") == {execution}  # its execution is not purged


async def test_a_purged_execution_takes_its_tool_calls_along_and_counts_them(conn: Conn) -> None:
    [old, young] = [
        *await aged_executions(conn, "failed", 40),
        *await aged_executions(conn, "failed", 1),
    ]
    await aged_tool_calls(conn, old, "succeeded", 1, count=2)  # younger than their run
    await aged_tool_calls(conn, old, "running", 40)  # left running when the run failed
    young_calls = await aged_tool_calls(conn, young, "succeeded", 1)
    assert await agents.purge_finished_executions(conn, older_than=THIRTY_DAYS) == 1
    assert await ids(conn, "executions") == {young}
    assert await ids(conn, "tool_calls") == set(young_calls)
    [event] = await purge_events(conn, "executions")
    assert (event.details["deleted"], event.details["tool_calls"]) == (1, 3)


# Batches ----------------------------------------------------------------------------------


async def test_batches_of_7_purge_all_50_due_executions_and_one_event_counts_them(
    conn: Conn,
) -> None:
    due = await aged_executions(conn, "succeeded", 40, count=50)
    for execution in due[:4]:
        await aged_tool_calls(conn, execution, "succeeded", 40)
    kept = await aged_executions(conn, "succeeded", 10, count=3)
    before = await audit.list_audit_events(conn)
    purged = await agents.purge_finished_executions(conn, older_than=THIRTY_DAYS, batch_size=7)
    assert purged == 50
    assert await ids(conn, "executions") == set(kept)
    assert await ids(conn, "tool_calls") == set()
    after = await audit.list_audit_events(conn)
    # one event for the whole purge: none per batch, none per cascaded tool call
    assert len(after.items) == len(before.items) + 1
    [event] = await purge_events(conn, "executions")
    assert (event.schema_name, event.row_id, event.owner_id) == ("agents", None, None)
    assert (event.details["deleted"], event.details["tool_calls"]) == (50, 4)
    cutoff = datetime.fromisoformat(event.details["cutoff"])
    assert abs(cutoff - (datetime.now(UTC) - THIRTY_DAYS)) < timedelta(minutes=5)


async def test_batches_of_7_purge_all_50_due_tool_calls_and_one_event_counts_them(
    conn: Conn,
) -> None:
    [execution] = await aged_executions(conn, "succeeded", 1)
    await aged_tool_calls(conn, execution, "failed", 40, count=25)
    await aged_tool_calls(conn, execution, "succeeded", 35, count=25)
    kept = await aged_tool_calls(conn, execution, "running", 40, count=2)
    purged = await tools.purge_finished_tool_calls(conn, older_than=THIRTY_DAYS, batch_size=7)
    assert purged == 50
    assert await ids(conn, "tool_calls") == set(kept)
    events = (await audit.list_audit_events(conn)).items
    assert [(e.operation, e.table_name, e.details["deleted"]) for e in events] == [
        ("purge", "tool_calls", 50)
    ]  # and no 'delete' event per call (trg_tool_calls_audit stays quiet in bulk mode)


async def test_a_batch_size_that_divides_the_rows_ends_with_an_empty_batch(conn: Conn) -> None:
    await aged_executions(conn, "succeeded", 40, count=21)
    assert await agents.purge_finished_executions(conn, older_than=THIRTY_DAYS, batch_size=7) == 21
    assert await ids(conn, "executions") == set()
    assert len(await purge_events(conn, "executions")) == 1


async def test_each_batch_commits_on_its_own(db: DatabaseManager) -> None:
    """A batch is its own transaction: when a later batch fails, the earlier ones stay
    purged (here a trigger of the test's refuses to delete the youngest due row, which is
    in the last batch)."""
    async with db.connection() as conn:
        due = await aged_executions(conn, "succeeded", 40, count=10)
        last = (await aged_executions(conn, "succeeded", 35))[0]
        await conn.execute(
            "CREATE FUNCTION pg_temp.refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN RAISE EXCEPTION 'refused'; END$$"
        )
        await conn.execute(
            "CREATE TRIGGER refuse BEFORE DELETE ON agents.executions FOR EACH ROW "
            "WHEN (OLD.finished_at > now() - interval '36 days') "
            "EXECUTE FUNCTION pg_temp.refuse()"
        )
        with pytest.raises(AgentDBError, match="refused"):
            await agents.purge_finished_executions(conn, older_than=THIRTY_DAYS, batch_size=5)
        assert await ids(conn, "executions") == {last}
        assert set(due).isdisjoint(await ids(conn, "executions"))


async def test_a_purge_inside_a_transaction_is_refused_and_deletes_nothing(
    db: DatabaseManager,
) -> None:
    async with db.connection() as conn:
        due = await aged_executions(conn, "succeeded", 40, count=3)
        await aged_tool_calls(conn, due[0], "succeeded", 40)
    for purge in (agents.purge_finished_executions, tools.purge_finished_tool_calls):
        async with db.session() as conn:
            with pytest.raises(InvalidInputError) as raised:
                await purge(conn, older_than=THIRTY_DAYS)
            assert raised.value.field == "conn"
            assert "db.connection()" in str(raised.value)
    async with db.connection() as conn:
        assert await ids(conn, "executions") == set(due)
        assert len(await ids(conn, "tool_calls")) == 1


# Racing the queue -------------------------------------------------------------------------


async def test_a_purge_racing_the_claim_on_another_connection_takes_only_what_was_due(
    db: DatabaseManager,
) -> None:
    """A worker claims and completes 300 queued executions while a purge deletes 3,000
    finished ones on another connection: no deadlock, nothing live deleted, and every due
    row gone. Two purges run at once, too (SKIP LOCKED: neither waits for the other)."""
    async with db.connection() as conn:
        due = await aged_executions(conn, "succeeded", 40, count=3000)
        for execution in due[:300]:
            await aged_tool_calls(conn, execution, "succeeded", 40)
        queued = await agents.enqueue_executions(conn, [{"agent_name": "a"}] * 300)

    async def work() -> list[UUID]:
        done: list[UUID] = []
        async with db.connection() as conn:
            while batch := await agents.claim_executions(conn, worker_id="w1", limit=5):
                for execution in batch:
                    await tools.start_tool_call(
                        conn, execution.id, tool_name="search", arguments={}
                    )
                    await agents.complete_execution(
                        conn, execution.id, worker_id="w1", attempt=execution.attempt
                    )
                    done.append(execution.id)
        return done

    async def purge() -> int:
        async with db.connection() as conn:
            return await agents.purge_finished_executions(
                conn, older_than=THIRTY_DAYS, batch_size=25
            )

    done, first, second = await asyncio.gather(work(), purge(), purge())
    assert sorted(done) == sorted(execution.id for execution in queued)
    async with db.connection() as conn:
        left_over = await agents.purge_finished_executions(conn, older_than=THIRTY_DAYS)
        assert first + second + left_over == 3000
        assert await ids(conn, "executions") == set(done)
        cursor = await conn.execute(
            "SELECT execution.status, count(*), count(DISTINCT tool_call.execution_id) "
            "FROM agents.executions AS execution "
            "JOIN agents.tool_calls AS tool_call ON tool_call.execution_id = execution.id "
            "GROUP BY execution.status"
        )
        assert await cursor.fetchall() == [("succeeded", 300, 300)]


# Plans ------------------------------------------------------------------------------------


async def test_a_batch_finds_old_executions_by_index_among_100_000_and_the_claim_keeps_its_own(
    conn: Conn,
) -> None:
    await aged_executions(conn, "succeeded", 40, count=100_000)
    await agents.enqueue_executions(conn, [{"agent_name": "a"}] * 20)
    await conn.execute("ANALYZE agents.executions")
    await conn.execute("ANALYZE agents.tool_calls")
    cutoff = datetime.now(UTC) - THIRTY_DAYS
    params = {"cutoff": cutoff, "after": "-infinity", "batch_size": 1000}

    nodes = await explain(conn, queries.PURGE_FINISHED_EXECUTIONS, params)
    assert "idx_executions_finished_at" in {node.get("Index Name") for node in nodes}
    assert not [
        node
        for node in nodes
        if node["Node Type"] == "Seq Scan" and node.get("Relation Name") == "executions"
    ]
    # the claim reads its own partial index, never the finished rows' one
    for agent_names in (None, ["a"]):
        claim = {"worker_id": "w1", "agent_names": agent_names, "limit": 10}
        indexes = {
            node.get("Index Name") for node in await explain(conn, queries.CLAIM_EXECUTIONS, claim)
        }
        assert "idx_executions_priority_run_after_created_at" in indexes
        assert "idx_executions_finished_at" not in indexes

    # and as run, by a generic plan too (auto_explain's notices), from the first batch
    plans = await generic_plans(conn)
    purged = await agents.purge_finished_executions(conn, older_than=timedelta(days=3650))
    await conn.execute("RESET plan_cache_mode")
    assert purged == 0
    [batch] = [plan for plan in plans if "Delete on executions" in plan]
    assert "$1" in batch  # generic: no values
    assert "idx_executions_finished_at" in batch
    assert "Seq Scan on executions" not in batch


async def test_a_batch_finds_old_tool_calls_by_index_among_100_000(conn: Conn) -> None:
    [execution] = await aged_executions(conn, "succeeded", 40)
    await aged_tool_calls(conn, execution, "succeeded", 40, count=100_000)
    await aged_tool_calls(conn, execution, "running", 0, count=10)
    await conn.execute("ANALYZE agents.tool_calls")
    params = {
        "cutoff": datetime.now(UTC) - THIRTY_DAYS,
        "after": "-infinity",
        "batch_size": 1000,
    }
    nodes = await explain(conn, tools.PURGE_FINISHED_TOOL_CALLS, params)
    assert "idx_tool_calls_started_at" in {node.get("Index Name") for node in nodes}
    assert not [node for node in nodes if node["Node Type"] == "Seq Scan"]


# Roles, input -----------------------------------------------------------------------------


async def test_a_worker_login_purges_every_owners_rows_and_the_event_names_it(
    login_as: Any, conn: Conn
) -> None:
    cursor = await conn.execute(
        "INSERT INTO agents.executions (agent_name, owner_id, status, started_at, finished_at) "
        "SELECT 'a', gen_random_uuid(), 'succeeded', now() - interval '40 days', "
        "now() - interval '40 days' FROM generate_series(1, 4) RETURNING id"
    )
    for (execution,) in await cursor.fetchall():
        await aged_tool_calls(conn, execution, "succeeded", 40)
    worker_url = login_as("agentdb_worker")
    config = DatabaseConfig(url=worker_url, max_pool_size=2)
    async with DatabaseManager(config) as worker_db, worker_db.connection() as worker:
        assert await tools.purge_finished_tool_calls(worker, older_than=THIRTY_DAYS) == 4
        assert await agents.purge_finished_executions(worker, older_than=THIRTY_DAYS) == 4
    assert await ids(conn, "executions") == set()
    events = (await audit.list_audit_events(conn)).items
    login = psycopg.conninfo.conninfo_to_dict(worker_url)["user"]
    assert sorted((e.table_name, e.operation, e.db_role) for e in events) == [
        ("executions", "purge", login),
        ("tool_calls", "purge", login),
    ]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"older_than": timedelta(0)}, "older_than"),
        ({"older_than": timedelta(days=-1)}, "older_than"),
        ({"older_than": 30}, "older_than"),
        ({"older_than": "30d"}, "older_than"),
        ({"older_than": None}, "older_than"),
        ({"older_than": timedelta.max}, "older_than"),
        ({"older_than": THIRTY_DAYS, "batch_size": 0}, "batch_size"),
        ({"older_than": THIRTY_DAYS, "batch_size": 100_001}, "batch_size"),
        ({"older_than": THIRTY_DAYS, "batch_size": True}, "batch_size"),
        ({"older_than": THIRTY_DAYS, "batch_size": 7.0}, "batch_size"),
        ({"older_than": THIRTY_DAYS, "batch_size": "7"}, "batch_size"),
    ],
)
async def test_bad_input_is_refused_naming_the_field_and_nothing_is_deleted(
    conn: Conn, arguments: dict[str, Any], field: str
) -> None:
    [execution] = await aged_executions(conn, "succeeded", 400)
    [call] = await aged_tool_calls(conn, execution, "succeeded", 400)
    for purge in (agents.purge_finished_executions, tools.purge_finished_tool_calls):
        with pytest.raises(InvalidInputError) as raised:
            await purge(conn, **arguments)
        assert raised.value.field == field
    assert await ids(conn, "executions") == {execution}
    assert await ids(conn, "tool_calls") == {call}
    assert (await audit.list_audit_events(conn)).items == []


# The CLI ----------------------------------------------------------------------------------


def run_cli(command: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60)


async def test_the_cli_purge_executions_purges_both_and_prints_the_counts(
    agentdb_command: list[str], database_url: str, conn: Conn
) -> None:
    [old, young] = [
        *await aged_executions(conn, "failed", 40),
        *await aged_executions(conn, "succeeded", 1),
    ]
    await aged_tool_calls(conn, young, "succeeded", 40, count=3)  # due, of a run kept
    await aged_tool_calls(conn, old, "succeeded", 1)  # goes with its run
    result = await asyncio.to_thread(
        run_cli,
        agentdb_command,
        "purge-executions",
        "--older-than",
        "30d",
        "--batch-size",
        "2",
        "--database",
        database_url,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "agents.tool_calls  3",
        "agents.executions  1",
        "purged 1 executions and 3 tool calls finished more than 30d ago",
    ]
    assert await ids(conn, "executions") == {young}
    assert await ids(conn, "tool_calls") == set()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--older-than", "soon"], "--older-than"),
        (["--older-than", "0d"], "--older-than"),
        (["--older-than", "30d", "--batch-size", "0"], "--batch-size"),
        (["--older-than", "30d", "--batch-size", "many"], "--batch-size"),
    ],
)
async def test_the_cli_purge_executions_refuses_bad_options_in_one_line(
    agentdb_command: list[str], database_url: str, conn: Conn, args: list[str], named: str
) -> None:
    [execution] = await aged_executions(conn, "failed", 40)
    result = await asyncio.to_thread(
        run_cli, agentdb_command, "purge-executions", *args, "--database", database_url
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentdb: error:") and named in lines[0]
    assert await ids(conn, "executions") == {execution}
