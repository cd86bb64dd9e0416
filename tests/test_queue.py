"""The execution queue at production grade, against a real server: fencing by worker and
attempt, heartbeats, requested cancels, batch enqueue and claim, batched acknowledgements,
release on shutdown, staleness, and the plans and storage the claim relies on.

The worker that drives all of this is tested in test_worker.py."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from app import agents, messaging, tasks
from app.agents import ExecutionCreate, ExecutionResult
from app.database import (
    ConflictError,
    DatabaseConfig,
    DatabaseManager,
    InvalidInputError,
    NotFoundError,
)
from tests.conftest import generic_plans

Conn = psycopg.AsyncConnection[Any]


async def claimed(conn: Conn, agent_name: str = "a", worker_id: str = "w1") -> agents.Execution:
    """A freshly enqueued execution, claimed by `worker_id`."""
    execution = await agents.enqueue_execution(conn, agent_name=agent_name)
    [claim] = await agents.claim_executions(
        conn, worker_id=worker_id, agent_names=[agent_name], limit=1
    )
    assert claim.id == execution.id
    return claim


async def go_silent(conn: Conn, execution_id: UUID, seconds: float = 60) -> None:
    """Arrange: the worker of this run has not been heard of for `seconds`."""
    await conn.execute(
        "UPDATE agents.executions SET heartbeat_at = heartbeat_at - %s, "
        "started_at = started_at - %s WHERE id = %s",
        [timedelta(seconds=seconds), timedelta(seconds=seconds), execution_id],
    )


async def taken_over(conn: Conn) -> tuple[agents.Execution, agents.Execution]:
    """Worker w1's claim, and the same execution after it went stale, was requeued and was
    claimed again by w2."""
    first = await claimed(conn, worker_id="w1")
    await go_silent(conn, first.id)
    assert await agents.requeue_stale_executions(conn, older_than=timedelta(seconds=30)) == 1
    [second] = await agents.claim_executions(conn, worker_id="w2", limit=1)
    assert second.id == first.id and second.attempt == first.attempt + 1
    return first, second


# Fencing ----------------------------------------------------------------------------------


async def test_a_worker_whose_run_was_requeued_and_claimed_again_cannot_complete_it(
    conn: Conn,
) -> None:
    first, second = await taken_over(conn)
    with pytest.raises(ConflictError, match="taken away; it is now attempt 2 of worker w2"):
        await agents.complete_execution(
            conn, first.id, output={"stale": True}, worker_id="w1", attempt=first.attempt
        )
    assert await agents.get_execution(conn, first.id) == second
    done = await agents.complete_execution(
        conn, second.id, output={"fresh": True}, worker_id="w2", attempt=second.attempt
    )
    assert done.status == "succeeded" and done.output == {"fresh": True}


async def test_the_same_worker_claiming_again_is_fenced_by_the_attempt(conn: Conn) -> None:
    first = await claimed(conn, worker_id="w1")
    await go_silent(conn, first.id)
    await agents.requeue_stale_executions(conn, older_than=timedelta(seconds=30))
    [second] = await agents.claim_executions(conn, worker_id="w1", limit=1)
    with pytest.raises(ConflictError, match="attempt"):
        await agents.fail_execution(
            conn, first.id, error="late", worker_id="w1", attempt=first.attempt
        )
    assert await agents.get_execution(conn, first.id) == second


@pytest.mark.parametrize("call", ["fail", "heartbeat", "cancel", "complete"])
async def test_every_fenced_call_of_a_worker_that_lost_its_claim_changes_nothing(
    conn: Conn, call: str
) -> None:
    first, second = await taken_over(conn)
    fence: dict[str, Any] = {"worker_id": "w1", "attempt": first.attempt}
    with pytest.raises(ConflictError) as raised:
        if call == "fail":
            await agents.fail_execution(conn, first.id, error="x", **fence)
        elif call == "heartbeat":
            await agents.heartbeat_execution(conn, first.id, **fence)
        elif call == "cancel":
            await agents.cancel_execution(conn, first.id, **fence)
        else:
            await agents.complete_execution(conn, first.id, **fence)
    assert raised.value.field == "attempt"
    assert await agents.get_execution(conn, first.id) == second


async def test_a_fenced_call_after_the_run_was_requeued_but_not_yet_claimed_is_refused(
    conn: Conn,
) -> None:
    first = await claimed(conn)
    await go_silent(conn, first.id)
    await agents.requeue_stale_executions(conn, older_than=timedelta(seconds=30))
    queued = await agents.get_execution(conn, first.id)
    assert queued is not None and queued.status == "queued"
    with pytest.raises(ConflictError, match="it is now queued"):
        await agents.complete_execution(conn, first.id, worker_id="w1", attempt=first.attempt)
    assert await agents.get_execution(conn, first.id) == queued


async def test_a_fenced_call_from_another_worker_is_refused_even_without_an_attempt(
    conn: Conn,
) -> None:
    execution = await claimed(conn, worker_id="w1")
    with pytest.raises(ConflictError, match="worker"):
        await agents.complete_execution(conn, execution.id, worker_id="w9")
    assert await agents.heartbeat_execution(conn, execution.id, worker_id="w9") is False
    assert await agents.get_execution(conn, execution.id) == execution


async def test_fenced_calls_of_the_holder_succeed(conn: Conn) -> None:
    execution = await claimed(conn)
    fence: dict[str, Any] = {"worker_id": "w1", "attempt": execution.attempt}
    assert await agents.heartbeat_execution(conn, execution.id, **fence) is True
    failed = await agents.fail_execution(conn, execution.id, error="flaky", **fence)
    assert failed.status == "queued" and failed.error == "flaky"


async def test_a_stale_worker_racing_the_requeue_on_another_connection_never_overwrites(
    db: DatabaseManager,
) -> None:
    """The old worker's completion and the sweep that takes its run away run at the same
    moment on two connections, many times: each time exactly one of them wins, and a run the
    sweep took is never marked succeeded by the worker that lost it."""
    async with db.connection() as conn:
        for _ in range(20):
            execution = await claimed(conn)
            await go_silent(conn, execution.id)

            async def complete(execution: agents.Execution = execution) -> str:
                async with db.connection() as worker:
                    try:
                        await agents.complete_execution(
                            worker, execution.id, worker_id="w1", attempt=execution.attempt
                        )
                    except ConflictError:
                        return "fenced"
                    return "completed"

            async def sweep() -> int:
                async with db.connection() as sweeper:
                    return await agents.requeue_stale_executions(
                        sweeper, older_than=timedelta(seconds=30)
                    )

            outcome, swept = await asyncio.gather(complete(), sweep())
            final = await agents.get_execution(conn, execution.id)
            assert final is not None
            if outcome == "completed":
                assert final.status == "succeeded" and swept == 0
            else:
                assert final.status == "queued" and swept == 1
            await conn.execute("DELETE FROM agents.executions")


# Heartbeats -------------------------------------------------------------------------------


async def test_a_heartbeat_keeps_a_long_run_from_being_requeued(conn: Conn) -> None:
    execution = await claimed(conn)
    await go_silent(conn, execution.id, seconds=600)
    assert await agents.heartbeat_execution(
        conn, execution.id, worker_id="w1", attempt=execution.attempt
    )
    assert await agents.requeue_stale_executions(conn, older_than=timedelta(seconds=30)) == 0
    beaten = await agents.get_execution(conn, execution.id)
    assert beaten is not None and beaten.status == "running"
    assert beaten.heartbeat_at is not None and execution.heartbeat_at is not None
    assert beaten.heartbeat_at > execution.heartbeat_at


async def test_staleness_is_judged_by_the_heartbeat_not_by_the_start(conn: Conn) -> None:
    execution = await claimed(conn)
    await conn.execute(
        "UPDATE agents.executions SET started_at = started_at - interval '1 hour' WHERE id = %s",
        [execution.id],
    )
    assert await agents.requeue_stale_executions(conn, older_than=timedelta(seconds=30)) == 0


async def test_heartbeat_executions_renews_every_held_run_and_reports_cancels_and_losses(
    conn: Conn,
) -> None:
    kept, cancelled, lost = [await claimed(conn) for _ in range(3)]
    await agents.cancel_execution(conn, cancelled.id)
    await conn.execute("UPDATE agents.executions SET worker_id = 'w2' WHERE id = %s", [lost.id])
    for execution in (kept, cancelled, lost):
        await go_silent(conn, execution.id)
    beats = await agents.heartbeat_executions(
        conn,
        [(kept.id, kept.attempt), (cancelled.id, cancelled.attempt), (lost.id, lost.attempt)],
        worker_id="w1",
    )
    assert beats == {kept.id: True, cancelled.id: False}
    assert await agents.requeue_stale_executions(conn, older_than=timedelta(seconds=30)) == 1
    requeued = await agents.get_execution(conn, lost.id)
    assert requeued is not None and requeued.status == "queued"


async def test_heartbeat_executions_refuses_a_claim_that_is_not_a_pair(conn: Conn) -> None:
    execution = await claimed(conn)
    with pytest.raises(InvalidInputError, match=r"^claims\[1\]"):
        await agents.heartbeat_executions(
            conn,
            [(execution.id, 1), execution.id],  # type: ignore[list-item]
            worker_id="w1",
        )
    with pytest.raises(InvalidInputError, match=r"^claims\[0\]\[1\]"):
        await agents.heartbeat_executions(conn, [(execution.id, True)], worker_id="w1")


async def test_a_heartbeat_is_a_hot_update(conn: Conn) -> None:
    """No index holds heartbeat_at (migration 0024), so renewing it writes no index entry."""
    executions = [await claimed(conn) for _ in range(5)]
    await conn.execute("VACUUM agents.executions")  # room on the page for the new versions
    counters = (
        "SELECT pg_stat_get_xact_tuples_updated('agents.executions'::regclass), "
        "pg_stat_get_xact_tuples_hot_updated('agents.executions'::regclass)"
    )
    async with conn.transaction():  # the backend's counts not yet reported, then ours
        cursor = await conn.execute(counters)
        before = await cursor.fetchone()
        claims = [(execution.id, execution.attempt) for execution in executions]
        await agents.heartbeat_executions(conn, claims, worker_id="w1")
        cursor = await conn.execute(counters)
        after = await cursor.fetchone()
    assert before is not None and after is not None
    assert (after[0] - before[0], after[1] - before[1]) == (5, 5)


# Cancel -----------------------------------------------------------------------------------


async def test_a_requested_cancel_of_a_run_whose_worker_died_ends_it_cancelled(
    conn: Conn,
) -> None:
    execution = await claimed(conn)
    await agents.cancel_execution(conn, execution.id)
    await go_silent(conn, execution.id)
    assert await agents.requeue_stale_executions(conn, older_than=timedelta(seconds=30)) == 1
    ended = await agents.get_execution(conn, execution.id)
    assert ended is not None and ended.status == "cancelled" and ended.finished_at is not None


async def test_a_handler_failing_after_a_requested_cancel_ends_cancelled_not_retried(
    conn: Conn,
) -> None:
    execution = await claimed(conn)
    await agents.cancel_execution(conn, execution.id)
    ended = await agents.fail_execution(
        conn, execution.id, error="stopped", worker_id="w1", attempt=execution.attempt
    )
    assert ended.status == "cancelled" and ended.error == "stopped"


# enqueue_executions -----------------------------------------------------------------------


async def test_enqueue_executions_returns_one_execution_per_item_in_order(conn: Conn) -> None:
    items: list[Any] = [
        {"agent_name": "a", "input": {"n": n}, "priority": n % 3} for n in range(50)
    ]
    items[7] = ExecutionCreate(agent_name="b", input={"n": 7}, max_attempts=5)
    executions = await agents.enqueue_executions(conn, items)
    assert [execution.input["n"] for execution in executions] == list(range(50))
    assert executions[7].agent_name == "b" and executions[7].max_attempts == 5
    assert executions[1].priority == 1 and executions[0].max_attempts == 3
    assert all(execution.status == "queued" for execution in executions)
    assert len({execution.id for execution in executions}) == 50
    assert await agents.enqueue_executions(conn, []) == []


async def test_enqueue_executions_returns_what_the_table_holds_for_every_kind_of_item(
    db: DatabaseManager,
) -> None:
    """A batch without dedupe keys builds its executions from the items and the table's
    defaults (INSERT_EXECUTIONS returns only what the server decides): they must equal the
    rows as read back, whichever fields the items set, in one session or outside any."""
    owner, session_owner = uuid4(), uuid4()
    later = datetime(2030, 5, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    async with db.session() as conn:
        chat = await messaging.create_chat(conn, owner_id=owner)
        message = await messaging.add_message(conn, chat.id, role="user", content="hi")
        todo = await tasks.create_todo(conn, owner_id=owner, title="t")
    items: list[Any] = [
        {"agent_name": "a"},
        {"agent_name": "a", "chat_id": chat.id, "input": {"nested": {"list": [1, 2.5, None]}}},
        {"agent_name": "b", "message_id": message.id, "priority": -2, "max_attempts": 1},
        {"agent_name": "b", "todo_id": todo.id, "run_after": later},
        ExecutionCreate(agent_name="c", owner_id=uuid4(), input={"z": 1, "a": "ü"}),
    ]
    for owner_setting in (None, session_owner):
        async with db.session(owner_id=owner_setting) as conn:
            executions = await agents.enqueue_executions(conn, items)
            read_back = [await agents.get_execution(conn, e.id) for e in executions]
        assert executions == read_back
        assert executions[0].owner_id == owner_setting
        assert executions[3].run_after == later and executions[1].owner_id == owner
    async with db.connection() as conn:  # autocommit: the one statement is all or nothing
        executions = await agents.enqueue_executions(conn, items)
        assert executions == [await agents.get_execution(conn, e.id) for e in executions]


async def test_enqueue_executions_dedupes_within_the_batch_and_against_live_rows(
    conn: Conn,
) -> None:
    live = await agents.enqueue_execution(conn, agent_name="a", dedupe_key="old")
    executions = await agents.enqueue_executions(
        conn,
        [
            {"agent_name": "a", "dedupe_key": "new"},
            {"agent_name": "a", "dedupe_key": "old"},
            {"agent_name": "a", "dedupe_key": "new"},
            {"agent_name": "b", "dedupe_key": "new"},
            {"agent_name": "a"},
        ],
    )
    assert executions[1] == live
    assert executions[2] == executions[0]
    assert executions[3].id not in (executions[0].id, live.id)
    cursor = await conn.execute("SELECT count(*) FROM agents.executions")
    assert await cursor.fetchone() == (4,)


async def test_enqueue_executions_takes_the_owner_of_the_chat_or_todo(conn: Conn) -> None:
    owner, todo_owner = uuid4(), uuid4()
    chat = await messaging.create_chat(conn, owner_id=owner)
    todo = await tasks.create_todo(conn, owner_id=todo_owner, title="t")
    given = uuid4()
    executions = await agents.enqueue_executions(
        conn,
        [
            {"agent_name": "a", "chat_id": chat.id},
            {"agent_name": "a", "todo_id": todo.id},
            {"agent_name": "a", "owner_id": given, "chat_id": chat.id},
            {"agent_name": "a"},
        ],
    )
    assert [execution.owner_id for execution in executions] == [owner, todo_owner, given, None]


async def test_enqueue_executions_refuses_a_bad_item_naming_it_and_writes_nothing(
    conn: Conn,
) -> None:
    items: list[Any] = [{"agent_name": "a"}, {"agent_name": "a", "priority": "high"}]
    with pytest.raises(InvalidInputError, match=r"^items\[1\]\.priority") as raised:
        await agents.enqueue_executions(conn, items)
    assert raised.value.field == "items[1].priority"
    with pytest.raises(InvalidInputError, match=r"^items\[0\]\.colour"):
        await agents.enqueue_executions(conn, [{"agent_name": "a", "colour": "red"}])
    with pytest.raises(InvalidInputError, match=r"^items"):
        await agents.enqueue_executions(conn, {"agent_name": "a"})  # type: ignore[arg-type]
    cursor = await conn.execute("SELECT count(*) FROM agents.executions")
    assert await cursor.fetchone() == (0,)


async def test_enqueue_executions_of_a_missing_chat_raises_and_writes_nothing(
    conn: Conn,
) -> None:
    from app.database import ForeignKeyError

    with pytest.raises(ForeignKeyError):
        await agents.enqueue_executions(
            conn, [{"agent_name": "a"}, {"agent_name": "a", "chat_id": uuid4()}]
        )
    cursor = await conn.execute("SELECT count(*) FROM agents.executions")
    assert await cursor.fetchone() == (0,)


async def test_enqueue_executions_notifies_once_per_agent_name_at_commit(
    db: DatabaseManager, database_url: str
) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute("LISTEN agentdb_executions")
        async with db.session() as conn:
            await agents.enqueue_executions(
                conn, [{"agent_name": name} for name in ("a", "b", "a", "a", "b")]
            )
        payloads = sorted(
            [notify.payload async for notify in listener.notifies(timeout=1.0, stop_after=3)]
        )
    assert payloads == ["a", "b"]


async def test_concurrent_batches_with_the_same_keys_leave_one_live_execution_per_key(
    db: DatabaseManager,
) -> None:
    keys = [f"k{n}" for n in range(3000)]  # enough that the two INSERTs overlap

    async def produce(order: list[str]) -> list[agents.Execution]:
        async with db.session() as conn:
            executions = await agents.enqueue_executions(
                conn, [{"agent_name": "a", "dedupe_key": key} for key in order]
            )
            await asyncio.sleep(0.05)  # hold the rows uncommitted while the other inserts
            return executions

    first, second = await asyncio.gather(produce(keys), produce(keys[::-1]))
    by_key = {execution.dedupe_key: execution.id for execution in first}
    assert {execution.dedupe_key: execution.id for execution in second} == by_key
    async with db.connection() as conn:
        cursor = await conn.execute("SELECT count(*) FROM agents.executions")
        assert await cursor.fetchone() == (3000,)


# claim_executions -------------------------------------------------------------------------


async def test_claim_executions_takes_the_head_in_priority_then_run_after_then_age_order(
    conn: Conn,
) -> None:
    low = await agents.enqueue_execution(conn, agent_name="a", priority=0)
    high = await agents.enqueue_execution(conn, agent_name="a", priority=5)
    later = await agents.enqueue_execution(conn, agent_name="a", priority=0)
    await agents.enqueue_execution(
        conn, agent_name="a", priority=9, run_after=low.created_at + timedelta(hours=1)
    )
    other = await agents.enqueue_execution(conn, agent_name="b", priority=9)
    batch = await agents.claim_executions(conn, worker_id="w1", agent_names=["a"], limit=10)
    assert [execution.id for execution in batch] == [high.id, low.id, later.id]
    assert all(e.status == "running" and e.worker_id == "w1" and e.attempt == 1 for e in batch)
    [b] = await agents.claim_executions(conn, worker_id="w1")
    assert b.id == other.id
    assert await agents.claim_executions(conn, worker_id="w1") == []


async def test_claim_executions_takes_at_most_limit(conn: Conn) -> None:
    await agents.enqueue_executions(conn, [{"agent_name": "a"}] * 7)
    assert len(await agents.claim_executions(conn, worker_id="w1", limit=3)) == 3
    assert len(await agents.claim_executions(conn, worker_id="w1", limit=10)) == 4


@pytest.mark.parametrize("limit", [0, -1, 1_001, True, 2.0])
async def test_claim_executions_refuses_a_limit_out_of_range(conn: Conn, limit: Any) -> None:
    with pytest.raises(InvalidInputError, match=r"^limit"):
        await agents.claim_executions(conn, worker_id="w1", limit=limit)


async def test_concurrent_batch_claims_take_each_execution_exactly_once(
    db: DatabaseManager,
) -> None:
    async with db.connection() as conn:
        await agents.enqueue_executions(conn, [{"agent_name": "a"}] * 300)

    async def worker(name: str) -> list[UUID]:
        taken: list[UUID] = []
        async with db.connection() as conn:
            while batch := await agents.claim_executions(conn, worker_id=name, limit=7):
                taken.extend(execution.id for execution in batch)
        return taken

    per_worker = await asyncio.gather(*(worker(f"w{n}") for n in range(6)))
    everything = [execution_id for taken in per_worker for execution_id in taken]
    assert len(everything) == len(set(everything)) == 300


async def test_the_claim_uses_the_claim_index_with_100_000_finished_executions(
    conn: Conn,
) -> None:
    await conn.execute(
        """
        INSERT INTO agents.executions
            (agent_name, status, attempt, started_at, finished_at, heartbeat_at, worker_id)
        SELECT 'a', 'succeeded', 1, now(), now(), now(), 'w0'
        FROM generate_series(1, 100000)
        """
    )
    await agents.enqueue_executions(conn, [{"agent_name": "a"}] * 20)
    await conn.execute("ANALYZE agents.executions")
    from app.agents import queries

    explain = "EXPLAIN (FORMAT JSON) " + queries.CLAIM_EXECUTIONS
    for agent_names in (None, ["a"]):
        cursor = await conn.execute(
            explain, {"worker_id": "w1", "agent_names": agent_names, "limit": 10}
        )
        row = await cursor.fetchone()
        assert row is not None
        plan = str(row[0])
        assert "idx_executions_priority_run_after_created_at" in plan
        assert "Seq Scan" not in plan
    cursor = await conn.execute(
        "EXPLAIN (FORMAT JSON) " + queries.REQUEUE_STALE_EXECUTIONS,
        {"older_than": timedelta(seconds=30)},
    )
    row = await cursor.fetchone()
    assert row is not None and "idx_executions_worker_id" in str(row[0])
    assert len(await agents.claim_executions(conn, worker_id="w1", limit=50)) == 20


async def test_the_claims_generic_plans_find_their_rows_by_index_under_a_deep_queue(
    conn: Conn,
) -> None:
    """The worker's statements are prepared, and a prepared statement soon runs a generic
    plan, which cannot see the LIMIT: the plans actually run (auto_explain, as notices) for a
    claim and for acknowledgements with a claim, under 20,000 queued executions, read no
    table from end to end."""
    await agents.enqueue_executions(conn, [{"agent_name": "a"}] * 20_000)
    await conn.execute("ANALYZE agents.executions")
    plans = await generic_plans(conn)
    claimed = await agents.claim_executions(conn, worker_id="w1", limit=3)
    acks = [(execution.id, execution.attempt, ExecutionResult(None)) for execution in claimed]
    done, more = await agents.complete_and_claim_executions(conn, acks, worker_id="w1", limit=3)
    await conn.execute("RESET plan_cache_mode")
    assert len(claimed) == len(more) == len(done) == 3
    assert len(plans) == 2 and all("$1" in plan for plan in plans)  # generic: no values
    for plan in plans:
        assert "idx_executions_priority_run_after_created_at" in plan
        assert "Seq Scan" not in plan


async def test_the_claim_is_planned_once_and_reads_by_index_at_any_depth_of_the_queue(
    conn: Conn,
) -> None:
    """The worker's statements are prepared; the server plans one once only if its generic
    plan (which cannot see the parameters) looks no dearer than planning each call. Under
    20,000 queued executions, the claim and the acknowledgements with a claim, run on one
    connection as a worker runs them, go to their generic plans; and those plans, as run
    (auto_explain's notices), read no table from end to end."""
    await agents.enqueue_executions(conn, [{"agent_name": "a"}] * 20_000)
    await conn.execute("ANALYZE agents.executions")
    for _ in range(12):
        claimed = await agents.claim_executions(conn, worker_id="w0", agent_names=["a"], limit=1)
        acks = [(execution.id, execution.attempt, ExecutionResult(None)) for execution in claimed]
        await agents.complete_and_claim_executions(
            conn, acks, worker_id="w0", agent_names=["a"], limit=1
        )
    cursor = await conn.execute(
        "SELECT statement LIKE '%%acked AS%%', generic_plans > 0 FROM pg_prepared_statements"
        " WHERE statement LIKE '%%claimed AS%%' ORDER BY 1"
    )
    assert await cursor.fetchall() == [(False, True), (True, True)]

    plans = await generic_plans(conn)
    claimed = await agents.claim_executions(conn, worker_id="w1", limit=3)
    acks = [(execution.id, execution.attempt, ExecutionResult(None)) for execution in claimed]
    done, more = await agents.complete_and_claim_executions(conn, acks, worker_id="w1", limit=3)
    await conn.execute("RESET plan_cache_mode")
    assert len(claimed) == len(more) == len(done) == 3
    assert len(plans) == 2 and all("$1" in plan for plan in plans)  # generic: no values
    for plan in plans:
        assert "idx_executions_priority_run_after_created_at" in plan
        assert "Seq Scan" not in plan


# `runs` executions of the owners in turn, the first `queued` of them queued, the rest history.
RUNS_OF_OWNERS = """
INSERT INTO agents.executions (owner_id, agent_name, input, status, finished_at)
SELECT (%(owners)s::uuid[])[1 + run %% cardinality(%(owners)s::uuid[])], 'a', '{}'::jsonb,
       CASE WHEN run <= %(queued)s THEN 'queued' ELSE 'cancelled' END,
       CASE WHEN run <= %(queued)s THEN NULL ELSE now() END
FROM generate_series(1, %(runs)s) AS run
"""


async def test_an_owners_claim_under_row_level_security_reads_its_queue_head_by_index(
    conn: Conn, login_as: Any
) -> None:
    """For a login of agentdb_app, row-level security adds the owner to the claim: it reads
    that owner's queue head from idx_executions_owner_id_queued (an index condition, not the
    whole queue's index and the owner's whole history, sorted) and, prepared, goes to its
    generic plan as a worker's does. 40 owners with 50 queued and 450 finished runs each."""
    owners = [uuid4() for _ in range(40)]
    await conn.execute(RUNS_OF_OWNERS, {"owners": owners, "runs": 20_000, "queued": 2_000})
    await conn.execute("ANALYZE agents.executions")
    app_url = login_as("agentdb_app")
    config = DatabaseConfig(url=app_url, min_pool_size=1, max_pool_size=1)
    async with DatabaseManager(config) as app_db:
        for _ in range(12):
            async with app_db.session(owner_id=owners[0]) as session:
                claimed = await agents.claim_executions(session, worker_id="w0", limit=1)
                assert [execution.owner_id for execution in claimed] == [owners[0]]
        async with app_db.connection() as session:
            cursor = await session.execute(
                "SELECT generic_plans > 0 FROM pg_prepared_statements"
                " WHERE statement LIKE '%%claimed AS%%'"
            )
            assert await cursor.fetchall() == [(True,)]
    # The plan as run (auto_explain, which only a superuser may load), in that login's role.
    plans = await generic_plans(conn)
    login = conninfo_to_dict(app_url)["user"]
    await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(str(login))))
    await conn.execute("SELECT set_config('agentdb.owner_id', %s, false)", [str(owners[1])])
    del plans[:]  # the set_config's
    claimed = await agents.claim_executions(conn, worker_id="w1", limit=3)
    await conn.execute("RESET ROLE")
    await conn.execute("RESET plan_cache_mode")
    assert [execution.owner_id for execution in claimed] == [owners[1]] * 3
    assert len(plans) == 1 and "$1" in plans[0]
    assert "idx_executions_owner_id_queued" in plans[0]
    assert "Seq Scan" not in plans[0]
    assert "idx_executions_priority_run_after_created_at" not in plans[0]  # the whole queue


async def test_a_claim_locks_only_the_rows_it_takes(db: DatabaseManager) -> None:
    async with db.connection() as conn:
        await agents.enqueue_executions(conn, [{"agent_name": "a"}] * 10)
    async with db.connection() as claimer, db.connection() as other, claimer.transaction():
        claimed = await agents.claim_executions(claimer, worker_id="w1", limit=2)
        cursor = await other.execute(
            "SELECT id FROM agents.executions WHERE status = 'queued' FOR UPDATE SKIP LOCKED"
        )
        free = {row[0] for row in await cursor.fetchall()}
    assert len(claimed) == 2 and len(free) == 8
    assert free.isdisjoint(execution.id for execution in claimed)


async def test_system_runs_leave_no_entries_in_the_indexes_of_links_yet_those_serve_lookups(
    conn: Conn,
) -> None:
    """Migration 0033: the chat, message, todo and owner indexes hold only rows that have
    one, and each still serves its lookups (the lists, the foreign keys' SET NULL, the
    owner's runs), which test the column for equality."""
    chat = await messaging.create_chat(conn, owner_id=uuid4())
    todo = await tasks.create_todo(conn, owner_id=uuid4(), title="t")
    await agents.enqueue_executions(conn, [{"agent_name": "a"}] * 500)
    await agents.enqueue_executions(
        conn, [{"agent_name": "a", "chat_id": chat.id}, {"agent_name": "a", "todo_id": todo.id}]
    )
    await conn.execute("ANALYZE agents.executions")
    cursor = await conn.execute(
        """
        SELECT c.relname, c.reltuples
        FROM pg_catalog.pg_index AS i
        JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
        WHERE i.indrelid = 'agents.executions'::regclass
          AND c.relname = ANY(%s)
        ORDER BY c.relname
        """,
        [
            [
                "idx_executions_chat_id_created_at",
                "idx_executions_message_id",
                "idx_executions_owner_id_created_at",
                "idx_executions_todo_id",
            ]
        ],
    )
    assert await cursor.fetchall() == [
        ("idx_executions_chat_id_created_at", 1),
        ("idx_executions_message_id", 0),
        ("idx_executions_owner_id_created_at", 2),
        ("idx_executions_todo_id", 1),
    ]
    await conn.execute("SET LOCAL enable_seqscan = off")
    for lookup, index in [
        ("SELECT id FROM agents.executions WHERE chat_id = %s", "idx_executions_chat_id"),
        ("UPDATE agents.executions SET todo_id = NULL WHERE todo_id = %s", "idx_executions_todo"),
        ("UPDATE agents.executions SET message_id = NULL WHERE message_id = %s", "message_id"),
        ("DELETE FROM agents.executions WHERE owner_id = %s", "idx_executions_owner_id"),
    ]:
        cursor = await conn.execute("EXPLAIN (FORMAT JSON) " + lookup, [uuid4()])
        row = await cursor.fetchone()
        assert row is not None and index in str(row[0]) and "Seq Scan" not in str(row[0])


# complete_executions and release_executions ------------------------------------------------


async def test_complete_executions_completes_the_held_runs_and_skips_the_lost_one(
    conn: Conn,
) -> None:
    held = [await claimed(conn) for _ in range(3)]
    first, second = await taken_over(conn)
    results = [
        (held[0].id, held[0].attempt, ExecutionResult({"n": 0}, model="m", prompt_tokens=3)),
        (held[1].id, held[1].attempt, ExecutionResult()),
        (held[2].id, held[2].attempt, ExecutionResult([1, 2], cost_usd=0.5)),
        (first.id, first.attempt, ExecutionResult({"stale": True})),
    ]
    done = await agents.complete_executions(conn, results, worker_id="w1")
    assert done == {execution.id for execution in held}
    zero = await agents.get_execution(conn, held[0].id)
    assert zero is not None and zero.status == "succeeded" and zero.output == {"n": 0}
    assert zero.model == "m" and zero.prompt_tokens == 3
    two = await agents.get_execution(conn, held[2].id)
    assert two is not None and two.output == [1, 2] and float(two.cost_usd or 0) == 0.5
    assert await agents.get_execution(conn, first.id) == second
    assert await agents.complete_executions(conn, [], worker_id="w1") == set()


async def test_complete_executions_refuses_a_result_that_is_not_an_execution_result(
    conn: Conn,
) -> None:
    execution = await claimed(conn)
    with pytest.raises(InvalidInputError, match=r"^results\[0\]"):
        await agents.complete_executions(
            conn,
            [(execution.id, 1, {"n": 1})],  # type: ignore[list-item]
            worker_id="w1",
        )
    assert await agents.get_execution(conn, execution.id) == execution


async def test_complete_and_claim_executions_acknowledges_and_claims_in_one_statement(
    conn: Conn,
) -> None:
    held = [await claimed(conn) for _ in range(2)]
    first, second = await taken_over(conn)
    waiting = [await agents.enqueue_execution(conn, agent_name="a") for _ in range(3)]
    results = [
        (held[0].id, held[0].attempt, ExecutionResult({"n": 0})),
        (held[1].id, held[1].attempt, ExecutionResult()),
        (first.id, first.attempt, ExecutionResult({"stale": True})),
    ]
    done, claims = await agents.complete_and_claim_executions(
        conn, results, worker_id="w1", agent_names=["a"], limit=2
    )
    assert done == {held[0].id, held[1].id}
    assert [claim.id for claim in claims] == [waiting[0].id, waiting[1].id]
    assert all(claim.status == "running" and claim.worker_id == "w1" for claim in claims)
    zero = await agents.get_execution(conn, held[0].id)
    assert zero is not None and zero.status == "succeeded" and zero.output == {"n": 0}
    assert await agents.get_execution(conn, first.id) == second
    # Nothing left to claim but the last one; then acks alone still come back.
    done, claims = await agents.complete_and_claim_executions(
        conn, [(claims[0].id, claims[0].attempt, ExecutionResult())], worker_id="w1", limit=5
    )
    assert done == {waiting[0].id} and [claim.id for claim in claims] == [waiting[2].id]
    done, claims = await agents.complete_and_claim_executions(
        conn, [(claims[0].id, claims[0].attempt, ExecutionResult())], worker_id="w1", limit=5
    )
    assert done == {waiting[2].id} and claims == []
    assert await agents.complete_and_claim_executions(conn, [], worker_id="w1") == (set(), [])


async def test_complete_and_claim_executions_writes_nothing_on_bad_input(conn: Conn) -> None:
    execution = await claimed(conn)
    waiting = await agents.enqueue_execution(conn, agent_name="a")
    with pytest.raises(InvalidInputError, match=r"^results\[0\]\[1\]"):
        await agents.complete_and_claim_executions(
            conn, [(execution.id, 0, ExecutionResult())], worker_id="w1"
        )
    with pytest.raises(InvalidInputError, match=r"^limit"):
        await agents.complete_and_claim_executions(
            conn, [(execution.id, 1, ExecutionResult())], worker_id="w1", limit=0
        )
    assert await agents.get_execution(conn, execution.id) == execution
    assert await agents.get_execution(conn, waiting.id) == waiting


def test_execution_result_validates_what_a_handler_returns() -> None:
    assert ExecutionResult({"a": 1}).output == {"a": 1}
    assert ExecutionResult(output={"a": 1}, model="m").model == "m"
    with pytest.raises(InvalidInputError, match=r"^prompt_tokens"):
        ExecutionResult(prompt_tokens=-1)
    with pytest.raises(InvalidInputError, match=r"^output"):
        ExecutionResult({"bad": float("nan")})


async def test_release_executions_puts_runs_back_without_counting_the_attempt(
    conn: Conn,
) -> None:
    kept, cancelled = await claimed(conn), await claimed(conn)
    await agents.cancel_execution(conn, cancelled.id)
    released = await agents.release_executions(
        conn, [(kept.id, kept.attempt), (cancelled.id, cancelled.attempt)], worker_id="w1"
    )
    assert released == {kept.id, cancelled.id}
    back = await agents.get_execution(conn, kept.id)
    assert back is not None and back.status == "queued" and back.attempt == 0
    ended = await agents.get_execution(conn, cancelled.id)
    assert ended is not None and ended.status == "cancelled"
    [again] = await agents.claim_executions(conn, worker_id="w2")
    assert again.id == kept.id and again.attempt == 1
    assert await agents.release_executions(conn, [(kept.id, 1)], worker_id="w1") == set()


async def test_requeue_stale_executions_passes_over_a_row_being_written(
    db: DatabaseManager,
) -> None:
    async with db.connection() as conn:
        busy, silent = await claimed(conn), await claimed(conn)
        await go_silent(conn, busy.id)
        await go_silent(conn, silent.id)
    async with db.session() as writer:  # a heartbeat that has not committed yet
        await writer.execute("SELECT 1 FROM agents.executions WHERE id = %s FOR UPDATE", [busy.id])
        async with db.connection() as sweeper:
            swept = await asyncio.wait_for(
                agents.requeue_stale_executions(sweeper, older_than=timedelta(seconds=30)), 5
            )
        assert swept == 1
    async with db.connection() as conn:
        still = await agents.get_execution(conn, busy.id)
        assert still is not None and still.status == "running"


async def test_fenced_calls_on_a_missing_execution_raise_not_found(conn: Conn) -> None:
    with pytest.raises(NotFoundError):
        await agents.complete_execution(conn, uuid4(), worker_id="w1", attempt=1)
    with pytest.raises(NotFoundError):
        await agents.heartbeat_execution(conn, uuid4(), worker_id="w1", attempt=1)
