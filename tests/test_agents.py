"""app.agents against a real server: the execution queue's state machine, validation,
deduplication, claiming order and concurrency, staleness, stats and keyset pages."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from app import agents, messaging
from app.database import (
    ConflictError,
    DatabaseManager,
    ForeignKeyError,
    InvalidInputError,
    NotFoundError,
)

Conn = psycopg.AsyncConnection[Any]

UUID_AS_BYTES = UUID(int=1).bytes
"""The 16 bytes of a UUID: never taken for one (bytes are no text of a UUID)."""


async def count_executions(conn: Conn) -> int:
    cursor = await conn.execute("SELECT count(*) FROM agents.executions")
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def running(conn: Conn, agent_name: str = "summarizer", **kwargs: Any) -> agents.Execution:
    """A freshly enqueued execution, claimed by worker w1."""
    execution = await agents.enqueue_execution(conn, agent_name=agent_name, **kwargs)
    claimed = await agents.claim_next_execution(conn, worker_id="w1", agent_names=[agent_name])
    assert claimed is not None and claimed.id == execution.id
    return claimed


async def make_due(conn: Conn, execution_id: UUID) -> None:
    """Arrange: the backoff of a requeued execution has elapsed."""
    await conn.execute(
        "UPDATE agents.executions SET run_after = now() WHERE id = %s", [execution_id]
    )


# The statements ---------------------------------------------------------------------------


def test_every_statement_returning_executions_selects_the_one_column_list_of_execution() -> None:
    from app.agents import queries

    fields = list(agents.Execution.model_fields)
    assert queries.EXECUTION_COLUMNS.replace(" ", "").split(",") == fields
    for statement in (
        queries.INSERT_EXECUTION,
        queries.SELECT_LIVE_EXECUTION_BY_DEDUPE_KEY,
        queries.ENQUEUE_EXECUTIONS,
        queries.CLAIM_EXECUTIONS,
        queries.COMPLETE_EXECUTION,
        queries.FAIL_EXECUTION,
        queries.CANCEL_EXECUTION,
        queries.CANCEL_HELD_EXECUTION,
        queries.SELECT_EXECUTION,
        queries.SELECT_EXECUTIONS_PAGE_BY_CHAT,
        queries.SELECT_EXECUTIONS_PAGE_BY_AGENT,
        queries.SELECT_EXECUTIONS_PAGE,
    ):
        assert queries.EXECUTION_COLUMNS in statement


# enqueue_execution ------------------------------------------------------------------------


async def test_enqueue_execution_stores_a_queued_row_with_its_defaults(conn: Conn) -> None:
    execution = await agents.enqueue_execution(
        conn, agent_name="summarizer", input={"text": "hello", "n": [1, 2]}
    )
    assert execution.status == "queued"
    assert execution.input == {"text": "hello", "n": [1, 2]}
    assert (execution.attempt, execution.max_attempts, execution.priority) == (0, 3, 0)
    assert execution.run_after == execution.created_at
    assert execution.started_at is None and execution.finished_at is None
    assert execution.created_at.tzinfo is not None
    assert await agents.get_execution(conn, execution.id) == execution


async def test_enqueue_execution_links_chat_message_and_todo(conn: Conn) -> None:
    chat = await messaging.create_chat(conn, owner_id=uuid4())
    message = await messaging.add_message(conn, chat.id, role="user", content="summarize")
    cursor = await conn.execute(
        "INSERT INTO tasks.todos (owner_id, title) VALUES (%s, 'x') RETURNING id", [uuid4()]
    )
    todo_row = await cursor.fetchone()
    assert todo_row is not None
    execution = await agents.enqueue_execution(
        conn, agent_name="summarizer", chat_id=chat.id, message_id=message.id, todo_id=todo_row[0]
    )
    assert (execution.chat_id, execution.message_id, execution.todo_id) == (
        chat.id,
        message.id,
        todo_row[0],
    )


@pytest.mark.parametrize("reference", ["chat_id", "message_id", "todo_id"])
async def test_enqueue_execution_with_a_missing_reference_raises_foreign_key_error(
    conn: Conn, reference: str
) -> None:
    missing: dict[str, Any] = {reference: uuid4()}
    with pytest.raises(ForeignKeyError) as raised:
        await agents.enqueue_execution(conn, agent_name="summarizer", **missing)
    assert raised.value.constraint is not None and raised.value.constraint.startswith(
        "fk_executions_"
    )
    assert await count_executions(conn) == 0


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"agent_name": ""}, "agent_name"),
        ({"agent_name": "   "}, "agent_name"),
        ({"agent_name": "a" * 201}, "agent_name"),
        ({"agent_name": "bad\x00name"}, "agent_name"),
        ({"input": {"text": "nul \x00 inside"}}, "input"),
        ({"input": {"nested": [{"deep": "\x00"}]}}, "input"),
        ({"input": {"x": float("nan")}}, "input"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 2**31}, "max_attempts"),
        ({"priority": 2**31}, "priority"),
        ({"run_after": datetime(2030, 1, 1)}, "run_after"),
        ({"dedupe_key": ""}, "dedupe_key"),
        ({"dedupe_key": "k" * 201}, "dedupe_key"),
        ({"chat_id": "not-a-uuid"}, "chat_id"),
    ],
)
async def test_enqueue_execution_refuses_invalid_input_and_writes_nothing(
    conn: Conn, arguments: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInputError) as raised:
        await agents.enqueue_execution(conn, **{"agent_name": "summarizer", **arguments})
    assert str(raised.value).startswith(field)
    assert await count_executions(conn) == 0


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"max_attempts": True}, "max_attempts"),
        ({"max_attempts": 3.0}, "max_attempts"),
        ({"priority": True}, "priority"),
        ({"priority": "5"}, "priority"),
        ({"run_after": 1_900_000_000}, "run_after"),
        ({"run_after": "2030-01-01T00:00:00+00:00"}, "run_after"),
        ({"chat_id": UUID_AS_BYTES}, "chat_id"),
        ({"message_id": UUID_AS_BYTES}, "message_id"),
        ({"todo_id": UUID_AS_BYTES}, "todo_id"),
    ],
    ids=repr,
)
async def test_enqueue_execution_refuses_a_value_of_the_wrong_type_even_if_it_could_be_converted(
    conn: Conn, arguments: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInputError, match=f"^{field}") as raised:
        await agents.enqueue_execution(conn, agent_name="summarizer", **arguments)
    assert raised.value.field == field
    assert await count_executions(conn) == 0


@pytest.mark.parametrize("given", [[], 0, "", False], ids=repr)
async def test_enqueue_execution_refuses_a_falsy_input_that_is_not_an_object(
    conn: Conn, given: Any
) -> None:
    with pytest.raises(InvalidInputError, match=r"^input") as raised:
        await agents.enqueue_execution(conn, agent_name="summarizer", input=given)
    assert raised.value.field == "input"
    assert await count_executions(conn) == 0


async def test_enqueue_execution_with_a_live_dedupe_key_returns_the_existing_execution(
    conn: Conn,
) -> None:
    first = await agents.enqueue_execution(conn, agent_name="summarizer", dedupe_key="msg-1")
    again = await agents.enqueue_execution(
        conn, agent_name="summarizer", dedupe_key="msg-1", input={"ignored": True}
    )
    assert again == first
    assert await count_executions(conn) == 1


async def test_enqueue_execution_dedupes_a_running_execution_too(conn: Conn) -> None:
    first = await running(conn, dedupe_key="msg-1")
    again = await agents.enqueue_execution(conn, agent_name="summarizer", dedupe_key="msg-1")
    assert again.id == first.id and again.status == "running"


async def test_enqueue_execution_dedupe_key_is_per_agent_name(conn: Conn) -> None:
    first = await agents.enqueue_execution(conn, agent_name="summarizer", dedupe_key="k")
    other = await agents.enqueue_execution(conn, agent_name="translator", dedupe_key="k")
    assert other.id != first.id


async def test_enqueue_execution_allows_the_dedupe_key_again_once_the_first_finished(
    conn: Conn,
) -> None:
    first = await running(conn, dedupe_key="msg-1")
    await agents.complete_execution(conn, first.id)
    second = await agents.enqueue_execution(conn, agent_name="summarizer", dedupe_key="msg-1")
    assert second.id != first.id and second.status == "queued"


async def test_enqueue_execution_dedupes_against_a_concurrent_uncommitted_enqueue(
    db: DatabaseManager,
) -> None:
    async with db.session() as first_conn:
        first = await agents.enqueue_execution(first_conn, agent_name="summarizer", dedupe_key="k")

        async def enqueue_again() -> agents.Execution:
            async with db.session() as second_conn:
                return await agents.enqueue_execution(
                    second_conn, agent_name="summarizer", dedupe_key="k"
                )

        second = asyncio.create_task(enqueue_again())
        await asyncio.sleep(0.2)
        assert not second.done()  # waits on the first producer's uncommitted row
    assert (await second).id == first.id
    async with db.connection() as conn:
        assert await count_executions(conn) == 1


async def test_enqueue_execution_notifies_workers_with_the_agent_name_at_commit(
    db: DatabaseManager, database_url: str
) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute("LISTEN agentdb_executions")
        async with db.session() as conn:
            await agents.enqueue_execution(conn, agent_name="summarizer")
        notices = [notice async for notice in listener.notifies(timeout=5.0, stop_after=1)]
    assert [(n.channel, n.payload) for n in notices] == [(agents.NOTIFY_CHANNEL, "summarizer")]


async def test_enqueue_execution_does_not_notify_when_it_dedupes(
    conn: Conn, database_url: str
) -> None:
    await agents.enqueue_execution(conn, agent_name="summarizer", dedupe_key="k")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute("LISTEN agentdb_executions")
        await agents.enqueue_execution(conn, agent_name="summarizer", dedupe_key="k")
        notices = [notice async for notice in listener.notifies(timeout=0.3)]
    assert notices == []


# claim_next_execution ---------------------------------------------------------------------


async def test_claim_next_execution_moves_the_head_to_running_for_the_worker(conn: Conn) -> None:
    queued = await agents.enqueue_execution(conn, agent_name="summarizer")
    claimed = await agents.claim_next_execution(conn, worker_id="host:42")
    assert claimed is not None and claimed.id == queued.id
    assert claimed.status == "running"
    assert claimed.attempt == 1
    assert claimed.worker_id == "host:42"
    assert claimed.started_at is not None and claimed.heartbeat_at == claimed.started_at
    assert claimed.finished_at is None


async def test_claim_next_execution_returns_none_on_an_empty_queue(conn: Conn) -> None:
    assert await agents.claim_next_execution(conn, worker_id="w1") is None


async def test_claim_next_execution_takes_the_highest_priority_first(conn: Conn) -> None:
    await agents.enqueue_execution(conn, agent_name="a", priority=0)
    urgent = await agents.enqueue_execution(conn, agent_name="a", priority=10)
    await agents.enqueue_execution(conn, agent_name="a", priority=-5)
    claimed = await agents.claim_next_execution(conn, worker_id="w1")
    assert claimed is not None and claimed.id == urgent.id


async def test_claim_next_execution_takes_equal_priorities_in_enqueue_order(conn: Conn) -> None:
    first = await agents.enqueue_execution(conn, agent_name="a")
    second = await agents.enqueue_execution(conn, agent_name="a")
    claims = [await agents.claim_next_execution(conn, worker_id="w1") for _ in range(2)]
    assert [claim.id for claim in claims if claim] == [first.id, second.id]


async def test_claim_next_execution_skips_executions_scheduled_in_the_future(conn: Conn) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    await agents.enqueue_execution(conn, agent_name="a", run_after=later, priority=10)
    assert await agents.claim_next_execution(conn, worker_id="w1") is None


async def test_claim_next_execution_claims_only_the_agent_names_asked_for(conn: Conn) -> None:
    await agents.enqueue_execution(conn, agent_name="translator", priority=10)
    wanted = await agents.enqueue_execution(conn, agent_name="summarizer")
    claimed = await agents.claim_next_execution(
        conn, worker_id="w1", agent_names=["summarizer", "coder"]
    )
    assert claimed is not None and claimed.id == wanted.id
    assert await agents.claim_next_execution(conn, worker_id="w1", agent_names=["coder"]) is None


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"worker_id": ""}, "worker_id"),
        ({"worker_id": "w" * 201}, "worker_id"),
        ({"worker_id": "w1", "agent_names": []}, "agent_names"),
        ({"worker_id": "w1", "agent_names": ["ok", " "]}, "agent_names.1"),
    ],
)
async def test_claim_next_execution_refuses_invalid_input_and_claims_nothing(
    conn: Conn, arguments: dict[str, Any], field: str
) -> None:
    queued = await agents.enqueue_execution(conn, agent_name="ok")
    with pytest.raises(InvalidInputError) as raised:
        await agents.claim_next_execution(conn, **arguments)
    assert str(raised.value).startswith(field)
    assert await agents.get_execution(conn, queued.id) == queued


@pytest.mark.parametrize("agent_names", ["summarizer", b"summarizer", 3, {"summarizer": 1}])
async def test_claim_next_execution_refuses_agent_names_that_are_not_a_sequence_of_names(
    conn: Conn, agent_names: Any
) -> None:
    queued = await agents.enqueue_execution(conn, agent_name="summarizer")
    with pytest.raises(InvalidInputError, match=r"^agent_names"):
        await agents.claim_next_execution(conn, worker_id="w1", agent_names=agent_names)
    assert await agents.get_execution(conn, queued.id) == queued


async def test_concurrent_workers_drain_the_queue_claiming_each_execution_exactly_once(
    db: DatabaseManager,
) -> None:
    async with db.session() as conn:
        enqueued = {
            (await agents.enqueue_execution(conn, agent_name="a", input={"n": n})).id
            for n in range(50)
        }

    async def worker(name: str) -> list[UUID]:
        claimed: list[UUID] = []
        while True:
            async with db.session() as conn:
                execution = await agents.claim_next_execution(conn, worker_id=name)
                if execution is None:
                    return claimed
                claimed.append(execution.id)
                await asyncio.sleep(0)
                await agents.complete_execution(conn, execution.id, output={"by": name})

    per_worker = await asyncio.gather(*(worker(f"w{i}") for i in range(5)))
    all_claims = [execution_id for claims in per_worker for execution_id in claims]
    assert len(all_claims) == len(set(all_claims)) == 50
    assert set(all_claims) == enqueued
    async with db.connection() as conn:
        stats = await agents.execution_stats(conn)
    assert stats.counts["succeeded"] == 50 and stats.total == 50


# complete_execution -----------------------------------------------------------------------


async def test_complete_execution_stores_output_and_usage_and_finishes(conn: Conn) -> None:
    execution = await running(conn)
    done = await agents.complete_execution(
        conn,
        execution.id,
        output=["any", {"json": 1}],
        model="gpt-4o-mini",
        prompt_tokens=120,
        completion_tokens=30,
        cost_usd=Decimal("0.001234"),
    )
    assert done.status == "succeeded"
    assert done.output == ["any", {"json": 1}]
    assert (done.model, done.prompt_tokens, done.completion_tokens) == ("gpt-4o-mini", 120, 30)
    assert done.cost_usd == Decimal("0.001234") and isinstance(done.cost_usd, Decimal)
    assert done.finished_at is not None and done.started_at is not None
    assert done.finished_at >= done.started_at
    assert await agents.get_execution(conn, execution.id) == done


async def test_complete_execution_of_a_queued_execution_raises_conflict_naming_it(
    conn: Conn,
) -> None:
    queued = await agents.enqueue_execution(conn, agent_name="a")
    with pytest.raises(ConflictError, match="queued"):
        await agents.complete_execution(conn, queued.id)
    assert await agents.get_execution(conn, queued.id) == queued


async def test_complete_execution_of_a_missing_execution_raises_not_found(conn: Conn) -> None:
    with pytest.raises(NotFoundError):
        await agents.complete_execution(conn, uuid4())


async def test_complete_execution_twice_raises_conflict_naming_succeeded(conn: Conn) -> None:
    execution = await running(conn)
    await agents.complete_execution(conn, execution.id)
    with pytest.raises(ConflictError, match="succeeded"):
        await agents.complete_execution(conn, execution.id)


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"output": {"text": "\x00"}}, "output"),
        ({"model": ""}, "model"),
        ({"model": "m" * 201}, "model"),
        ({"prompt_tokens": -1}, "prompt_tokens"),
        ({"completion_tokens": -1}, "completion_tokens"),
        ({"prompt_tokens": 2**31}, "prompt_tokens"),
        ({"cost_usd": Decimal("-0.01")}, "cost_usd"),
        ({"cost_usd": Decimal("1000000")}, "cost_usd"),
        ({"cost_usd": Decimal("999999.9999996")}, "cost_usd"),  # rounds to a million
        ({"cost_usd": float("nan")}, "cost_usd"),
    ],
)
async def test_complete_execution_refuses_invalid_input_and_leaves_it_running(
    conn: Conn, arguments: dict[str, Any], field: str
) -> None:
    execution = await running(conn)
    with pytest.raises(InvalidInputError) as raised:
        await agents.complete_execution(conn, execution.id, **arguments)
    assert str(raised.value).startswith(field)
    assert await agents.get_execution(conn, execution.id) == execution


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"prompt_tokens": True}, "prompt_tokens"),
        ({"prompt_tokens": 12.0}, "prompt_tokens"),
        ({"completion_tokens": "3"}, "completion_tokens"),
        ({"completion_tokens": 2**31}, "completion_tokens"),
        ({"cost_usd": True}, "cost_usd"),
    ],
    ids=repr,
)
async def test_complete_execution_refuses_a_count_that_is_not_an_int32_and_leaves_it_running(
    conn: Conn, arguments: dict[str, Any], field: str
) -> None:
    execution = await running(conn)
    with pytest.raises(InvalidInputError, match=f"^{field}") as raised:
        await agents.complete_execution(conn, execution.id, **arguments)
    assert raised.value.field == field
    assert await agents.get_execution(conn, execution.id) == execution


# fail_execution ---------------------------------------------------------------------------


async def test_fail_execution_with_attempts_left_requeues_it_and_keeps_the_error(
    conn: Conn,
) -> None:
    execution = await running(conn, max_attempts=3)
    failed = await agents.fail_execution(conn, execution.id, error="TimeoutError: provider")
    assert failed.status == "queued"
    assert failed.error == "TimeoutError: provider"
    assert failed.attempt == 1 and failed.finished_at is None


async def test_fail_execution_backs_off_exponentially_with_jitter(conn: Conn) -> None:
    execution = await running(conn, max_attempts=3)
    first = await agents.fail_execution(conn, execution.id, error="boom")
    # attempt 1: 2^1 s times a factor in [0.5, 1); updated_at is the failing transaction's now()
    assert timedelta(seconds=1) <= first.run_after - first.updated_at < timedelta(seconds=2)
    assert await agents.claim_next_execution(conn, worker_id="w1") is None

    await make_due(conn, execution.id)
    await agents.claim_next_execution(conn, worker_id="w1")
    second = await agents.fail_execution(conn, execution.id, error="boom")
    assert timedelta(seconds=2) <= second.run_after - second.updated_at < timedelta(seconds=4)


async def test_fail_execution_retry_in_overrides_the_backoff(conn: Conn) -> None:
    execution = await running(conn)
    failed = await agents.fail_execution(
        conn, execution.id, error="429", retry_in=timedelta(minutes=5)
    )
    assert failed.run_after - failed.updated_at == timedelta(minutes=5)


async def test_fail_execution_retries_until_max_attempts_then_fails(conn: Conn) -> None:
    execution = await agents.enqueue_execution(conn, agent_name="a", max_attempts=2)
    statuses = []
    for _ in range(2):
        claimed = await agents.claim_next_execution(conn, worker_id="w1")
        assert claimed is not None and claimed.id == execution.id
        failed = await agents.fail_execution(
            conn, execution.id, error="boom", retry_in=timedelta(0)
        )
        statuses.append((failed.status, failed.attempt))
    assert statuses == [("queued", 1), ("failed", 2)]
    assert failed.finished_at is not None
    assert await agents.claim_next_execution(conn, worker_id="w1") is None


async def test_fail_execution_without_retry_fails_even_with_attempts_left(conn: Conn) -> None:
    execution = await running(conn, max_attempts=5)
    failed = await agents.fail_execution(conn, execution.id, error="bad input", retry=False)
    assert failed.status == "failed" and failed.finished_at is not None
    assert failed.error == "bad input"


async def test_fail_execution_of_a_succeeded_execution_raises_conflict_naming_it(
    conn: Conn,
) -> None:
    execution = await running(conn)
    done = await agents.complete_execution(conn, execution.id)
    with pytest.raises(ConflictError, match="succeeded"):
        await agents.fail_execution(conn, execution.id, error="late")
    assert await agents.get_execution(conn, execution.id) == done


async def test_fail_execution_of_a_missing_execution_raises_not_found(conn: Conn) -> None:
    with pytest.raises(NotFoundError):
        await agents.fail_execution(conn, uuid4(), error="boom")


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"error": "traceback \x00"}, "error"),
        ({"error": ""}, "error"),
        ({"error": " \n"}, "error"),
        ({"error": "boom", "retry_in": timedelta(seconds=-1)}, "retry_in"),
    ],
)
async def test_fail_execution_refuses_invalid_input_and_leaves_it_running(
    conn: Conn, arguments: dict[str, Any], field: str
) -> None:
    execution = await running(conn)
    with pytest.raises(InvalidInputError) as raised:
        await agents.fail_execution(conn, execution.id, **arguments)
    assert str(raised.value).startswith(field)
    assert await agents.get_execution(conn, execution.id) == execution


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"retry": 1}, "retry"),
        ({"retry": "no"}, "retry"),
        ({"retry": None}, "retry"),
        ({"retry_in": 30}, "retry_in"),
        ({"retry_in": 1.5}, "retry_in"),
        ({"retry_in": "PT5M"}, "retry_in"),
        ({"retry_in": timedelta(days=10**6)}, "retry_in"),
    ],
    ids=repr,
)
async def test_fail_execution_refuses_a_retry_that_is_not_a_bool_or_a_retry_in_not_a_timedelta(
    conn: Conn, arguments: dict[str, Any], field: str
) -> None:
    execution = await running(conn)
    with pytest.raises(InvalidInputError, match=f"^{field}") as raised:
        await agents.fail_execution(conn, execution.id, error="boom", **arguments)
    assert raised.value.field == field
    assert await agents.get_execution(conn, execution.id) == execution


# cancel_execution -------------------------------------------------------------------------


async def test_cancel_execution_of_a_queued_execution_cancels_it_directly(conn: Conn) -> None:
    queued = await agents.enqueue_execution(conn, agent_name="a")
    cancelled = await agents.cancel_execution(conn, queued.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert cancelled.is_cancel_requested is False
    assert await agents.claim_next_execution(conn, worker_id="w1") is None


async def test_cancel_execution_of_a_running_execution_asks_its_worker_to_stop(
    conn: Conn,
) -> None:
    execution = await running(conn)
    requested = await agents.cancel_execution(conn, execution.id)
    assert requested.status == "running" and requested.is_cancel_requested is True
    assert requested.finished_at is None and requested.attempt == execution.attempt
    assert await agents.cancel_execution(conn, execution.id) == requested  # asking again

    assert await agents.heartbeat_execution(conn, execution.id, worker_id="w1") is False
    cancelled = await agents.cancel_execution(
        conn, execution.id, worker_id="w1", attempt=execution.attempt
    )
    assert cancelled.status == "cancelled" and cancelled.is_cancel_requested is True
    assert cancelled.finished_at is not None and cancelled.started_at is not None
    assert cancelled.finished_at >= cancelled.started_at


async def test_complete_execution_after_the_worker_ended_a_cancel_raises_conflict(
    conn: Conn,
) -> None:
    execution = await running(conn)
    await agents.cancel_execution(conn, execution.id)
    await agents.cancel_execution(conn, execution.id, worker_id="w1")
    with pytest.raises(ConflictError, match="cancelled"):
        await agents.complete_execution(conn, execution.id, output={"late": True})


@pytest.mark.parametrize("finish", ["complete", "fail", "cancel"])
async def test_cancel_execution_of_a_finished_execution_raises_conflict(
    conn: Conn, finish: str
) -> None:
    execution = await running(conn)
    if finish == "complete":
        finished = await agents.complete_execution(conn, execution.id)
    elif finish == "fail":
        finished = await agents.fail_execution(conn, execution.id, error="x", retry=False)
    else:
        await agents.cancel_execution(conn, execution.id)
        finished = await agents.cancel_execution(conn, execution.id, worker_id="w1")
    with pytest.raises(ConflictError, match=finished.status):
        await agents.cancel_execution(conn, execution.id)
    assert await agents.get_execution(conn, execution.id) == finished


async def test_cancel_execution_begun_before_the_claim_never_finishes_before_the_start(
    db: DatabaseManager,
) -> None:
    async with db.connection() as conn:
        queued = await agents.enqueue_execution(conn, agent_name="a")
    async with db.session() as canceller:  # now() is fixed when this transaction begins
        await agents.get_execution(canceller, queued.id)
        await asyncio.sleep(0.01)
        async with db.session() as worker:
            claimed = await agents.claim_next_execution(worker, worker_id="w1")
            assert claimed is not None
        cancelled = await agents.cancel_execution(canceller, queued.id, worker_id="w1")
    assert cancelled.started_at is not None and cancelled.finished_at == cancelled.started_at


async def test_cancel_execution_of_a_missing_execution_raises_not_found(conn: Conn) -> None:
    with pytest.raises(NotFoundError):
        await agents.cancel_execution(conn, uuid4())


# get_execution ----------------------------------------------------------------------------


async def test_get_execution_of_a_missing_id_returns_none(conn: Conn) -> None:
    assert await agents.get_execution(conn, uuid4()) is None


async def test_get_execution_refuses_a_malformed_id(conn: Conn) -> None:
    with pytest.raises(InvalidInputError, match=r"^execution_id"):
        await agents.get_execution(conn, "nope")  # type: ignore[arg-type]


# list_executions --------------------------------------------------------------------------


async def test_list_executions_never_repeats_or_drops_a_row_across_pages_with_equal_timestamps(
    db: DatabaseManager,
) -> None:
    async with db.session() as conn:
        enqueued = [await agents.enqueue_execution(conn, agent_name="a") for _ in range(7)]
    assert len({execution.created_at for execution in enqueued}) == 1

    async with db.connection() as conn:
        seen: list[UUID] = []
        sizes: list[int] = []
        cursor = None
        while True:
            page = await agents.list_executions(conn, limit=3, cursor=cursor)
            seen += [execution.id for execution in page.items]
            sizes.append(len(page.items))
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    assert sizes == [3, 3, 1]
    assert len(seen) == len(set(seen))
    assert set(seen) == {execution.id for execution in enqueued}


async def test_list_executions_pages_each_filter_across_equal_timestamps(
    db: DatabaseManager,
) -> None:
    async with db.connection() as conn:
        chat = await messaging.create_chat(conn, owner_id=uuid4())
    async with db.session() as conn:
        in_chat = {
            (await agents.enqueue_execution(conn, agent_name="a", chat_id=chat.id)).id
            for _ in range(5)
        }
        of_agent = {(await agents.enqueue_execution(conn, agent_name="b")).id for _ in range(5)}
    async with db.connection() as conn:
        cases: list[tuple[dict[str, Any], set[UUID]]] = [
            ({"chat_id": chat.id}, in_chat),
            ({"agent_name": "b"}, of_agent),
        ]
        for filters, expected in cases:
            seen: list[UUID] = []
            cursor = None
            while True:
                page = await agents.list_executions(conn, limit=2, cursor=cursor, **filters)
                seen += [execution.id for execution in page.items]
                if (cursor := page.next_cursor) is None:
                    break
            assert sorted(seen) == sorted(expected)


async def test_list_executions_returns_newest_first(conn: Conn) -> None:
    first = await agents.enqueue_execution(conn, agent_name="a")
    second = await agents.enqueue_execution(conn, agent_name="a")
    page = await agents.list_executions(conn)
    assert [execution.id for execution in page.items] == [second.id, first.id]
    assert page.next_cursor is None


async def test_list_executions_applies_every_filter_given(conn: Conn) -> None:
    chat = await messaging.create_chat(conn, owner_id=uuid4())
    started = await running(conn, agent_name="a", chat_id=chat.id)
    match = await agents.enqueue_execution(conn, agent_name="a", chat_id=chat.id)
    await agents.enqueue_execution(conn, agent_name="b", chat_id=chat.id)
    await agents.enqueue_execution(conn, agent_name="a")

    def ids(page: Any) -> set[UUID]:
        return {execution.id for execution in page.items}

    assert ids(await agents.list_executions(conn, chat_id=chat.id, agent_name="a")) == {
        match.id,
        started.id,
    }
    assert ids(
        await agents.list_executions(conn, chat_id=chat.id, agent_name="a", status="queued")
    ) == {match.id}
    assert ids(await agents.list_executions(conn, agent_name="a", status="running")) == {started.id}
    assert ids(await agents.list_executions(conn, status="running")) == {started.id}


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"status": "done"}, "status"),
        ({"agent_name": ""}, "agent_name"),
        ({"chat_id": "x"}, "chat_id"),
        ({"chat_id": UUID_AS_BYTES}, "chat_id"),
        ({"limit": 0}, "limit"),
        ({"limit": True}, "limit"),
        ({"cursor": "garbage"}, "cursor"),
    ],
)
async def test_list_executions_refuses_invalid_arguments(
    conn: Conn, arguments: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInputError, match=f"^{field}"):
        await agents.list_executions(conn, **arguments)


async def test_list_executions_refuses_a_cursor_of_another_chats_list(conn: Conn) -> None:
    chat = await messaging.create_chat(conn, owner_id=uuid4())
    other_chat = await messaging.create_chat(conn, owner_id=uuid4())
    for _ in range(2):
        await agents.enqueue_execution(conn, agent_name="a", chat_id=other_chat.id)
    page = await agents.list_executions(conn, chat_id=other_chat.id, limit=1)
    assert page.next_cursor is not None
    with pytest.raises(InvalidInputError, match=r"^cursor") as raised:
        await agents.list_executions(conn, chat_id=chat.id, cursor=page.next_cursor)
    assert raised.value.field == "cursor"


@pytest.mark.parametrize(
    ("made_with", "given_to"),
    [
        ({}, {"chat_id": "chat"}),
        ({"chat_id": "chat"}, {}),
        ({"agent_name": "a"}, {"agent_name": "b"}),
        ({"agent_name": "a"}, {}),
    ],
)
async def test_list_executions_refuses_a_cursor_made_with_other_filters(
    conn: Conn, made_with: dict[str, Any], given_to: dict[str, Any]
) -> None:
    chat = await messaging.create_chat(conn, owner_id=uuid4())

    def filters(given: dict[str, Any]) -> dict[str, Any]:
        return {name: chat.id if value == "chat" else value for name, value in given.items()}

    for _ in range(2):
        await agents.enqueue_execution(conn, agent_name="a", chat_id=chat.id)
    page = await agents.list_executions(conn, limit=1, **filters(made_with))
    assert page.next_cursor is not None
    with pytest.raises(InvalidInputError, match=r"^cursor"):
        await agents.list_executions(conn, cursor=page.next_cursor, **filters(given_to))


# requeue_stale_executions -----------------------------------------------------------------


async def test_requeue_stale_executions_requeues_a_silent_run_with_attempts_left(
    conn: Conn,
) -> None:
    execution = await running(conn, max_attempts=2)
    await asyncio.sleep(0.02)
    assert await agents.requeue_stale_executions(conn, older_than=timedelta(milliseconds=10)) == 1
    requeued = await agents.get_execution(conn, execution.id)
    assert requeued is not None and requeued.status == "queued"
    assert requeued.error is not None and requeued.error.startswith("stale: no heartbeat")
    again = await agents.claim_next_execution(conn, worker_id="w2")
    assert again is not None and again.id == execution.id and again.attempt == 2


async def test_requeue_stale_executions_fails_a_silent_run_without_attempts_left(
    conn: Conn,
) -> None:
    execution = await running(conn, max_attempts=1)
    await asyncio.sleep(0.02)
    assert await agents.requeue_stale_executions(conn, older_than=timedelta(milliseconds=10)) == 1
    failed = await agents.get_execution(conn, execution.id)
    assert failed is not None and failed.status == "failed" and failed.finished_at is not None
    assert failed.error is not None and failed.error.startswith("stale: no heartbeat")
    assert "w1" in failed.error


async def test_requeue_stale_executions_leaves_fresh_and_queued_runs_alone(conn: Conn) -> None:
    fresh = await running(conn)
    queued = await agents.enqueue_execution(conn, agent_name="a")
    assert await agents.requeue_stale_executions(conn, older_than=timedelta(hours=1)) == 0
    assert await agents.get_execution(conn, fresh.id) == fresh
    assert await agents.get_execution(conn, queued.id) == queued


@pytest.mark.parametrize("older_than", [60, 60.0, "PT1M", timedelta(days=10**6)], ids=repr)
async def test_requeue_stale_executions_refuses_an_age_that_is_not_a_bounded_timedelta(
    conn: Conn, older_than: Any
) -> None:
    execution = await running(conn)
    with pytest.raises(InvalidInputError, match=r"^older_than"):
        await agents.requeue_stale_executions(conn, older_than=older_than)
    assert await agents.get_execution(conn, execution.id) == execution


@pytest.mark.parametrize("older_than", [timedelta(0), timedelta(seconds=-5)])
async def test_requeue_stale_executions_refuses_a_non_positive_age(
    conn: Conn, older_than: timedelta
) -> None:
    execution = await running(conn)
    with pytest.raises(InvalidInputError, match=r"^older_than"):
        await agents.requeue_stale_executions(conn, older_than=older_than)
    assert await agents.get_execution(conn, execution.id) == execution


# execution_stats --------------------------------------------------------------------------


async def set_duration(conn: Conn, execution_id: UUID, seconds: float) -> None:
    """Arrange: the finished execution ran for exactly `seconds`."""
    await conn.execute(
        "UPDATE agents.executions SET started_at = finished_at - make_interval(secs => %s) "
        "WHERE id = %s",
        [seconds, execution_id],
    )


async def test_execution_stats_of_a_known_data_set(conn: Conn) -> None:
    for seconds, tokens, cost in [(1, 10, "0.10"), (2, 20, "0.20"), (3, 30, "0.30")]:
        execution = await running(conn, agent_name="a")
        await agents.complete_execution(
            conn,
            execution.id,
            prompt_tokens=tokens,
            completion_tokens=tokens // 10,
            cost_usd=Decimal(cost),
        )
        await set_duration(conn, execution.id, seconds)
    failed = await running(conn, agent_name="a")
    await agents.fail_execution(conn, failed.id, error="x", retry=False)
    await set_duration(conn, failed.id, 4)
    await agents.cancel_execution(conn, (await running(conn, agent_name="a")).id, worker_id="w1")
    await running(conn, agent_name="a")
    await agents.enqueue_execution(conn, agent_name="a")
    await agents.enqueue_execution(conn, agent_name="a")

    stats = await agents.execution_stats(conn)

    assert stats.counts == {
        "queued": 2,
        "running": 1,
        "succeeded": 3,
        "failed": 1,
        "cancelled": 1,
    }
    assert stats.total == 8
    assert stats.success_rate == 0.75
    # percentile_cont over 1, 2, 3, 4 s: interpolated at 1.5 and 2.85 positions
    assert stats.p50_duration == timedelta(seconds=2.5)
    assert stats.p95_duration == timedelta(seconds=3.85)
    assert (stats.prompt_tokens, stats.completion_tokens) == (60, 6)
    assert stats.cost_usd == Decimal("0.60")


async def test_execution_stats_of_nothing_has_every_status_and_no_rates(conn: Conn) -> None:
    stats = await agents.execution_stats(conn)
    assert stats.counts == dict.fromkeys(agents.EXECUTION_STATUSES, 0)
    assert stats.total == 0
    assert stats.success_rate is None
    assert stats.p50_duration is None and stats.p95_duration is None
    assert (stats.prompt_tokens, stats.completion_tokens, stats.cost_usd) == (0, 0, Decimal(0))


async def test_execution_stats_counts_only_the_agent_name_asked_for(conn: Conn) -> None:
    await agents.enqueue_execution(conn, agent_name="a")
    await agents.complete_execution(conn, (await running(conn, agent_name="b")).id)
    stats = await agents.execution_stats(conn, agent_name="b")
    assert stats.counts["succeeded"] == 1 and stats.total == 1
    assert stats.success_rate == 1.0


async def test_execution_stats_counts_only_executions_created_since(conn: Conn) -> None:
    await agents.enqueue_execution(conn, agent_name="a")
    later = await agents.enqueue_execution(conn, agent_name="a")
    assert (await agents.execution_stats(conn, since=later.created_at)).total == 1
    assert (await agents.execution_stats(conn, agent_name="a", since=later.created_at)).total == 1


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"agent_name": ""}, "agent_name"),
        ({"since": datetime(2024, 1, 1)}, "since"),
        ({"since": 1_700_000_000}, "since"),
        ({"since": "2024-01-01T00:00:00+00:00"}, "since"),
    ],
)
async def test_execution_stats_refuses_invalid_arguments(
    conn: Conn, arguments: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInputError, match=f"^{field}"):
        await agents.execution_stats(conn, **arguments)
