"""Query functions of schema `agents`: the execution queue and its history.

SQL constants first, then the functions in the order of the public API. Every function takes
the caller's connection and never commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NoReturn
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from app.agents.models import (
    EXECUTION_STATUSES,
    ClaimInput,
    CompletionInput,
    Execution,
    ExecutionCreate,
    ExecutionStats,
    ExecutionStatus,
    FailureInput,
    ListFilterInput,
    StaleCheckInput,
    StatsFilterInput,
)
from app.database.errors import ConflictError, NotFoundError, database_errors
from app.database.pagination import Page, check_limit, encode_cursor, newest_first_start, page_of
from app.database.rows import column_list, model_rows
from app.database.validation import as_uuid, validated

# SQL --------------------------------------------------------------------------------------

EXECUTION_COLUMNS = column_list(
    Execution,
    "id, chat_id, message_id, todo_id, agent_name, status, priority, run_after, dedupe_key, "
    "input, output, error, model, prompt_tokens, completion_tokens, cost_usd, attempt, "
    "max_attempts, worker_id, heartbeat_at, is_cancel_requested, started_at, finished_at, "
    "created_at, updated_at, owner_id",
)

# The partial unique index uq_executions_agent_name_dedupe_key is the arbiter: a live
# duplicate makes this insert nothing (the caller then reads the live row). ON CONFLICT waits
# for a concurrent inserter of the same key to commit, so two producers never both insert.
# The notification is sent only for a row really inserted, and delivered at commit.
# owner_id: the one given, else the owner of the chat, todo or message, else the session's
# (db.session(owner_id=…)); row-level security refuses any other for an application login.
INSERT_EXECUTION = (
    """
WITH inserted AS (
    INSERT INTO agents.executions
        (agent_name, input, chat_id, message_id, todo_id, max_attempts, priority, run_after,
         dedupe_key, owner_id)
    VALUES (%(agent_name)s, %(input)s, %(chat_id)s, %(message_id)s, %(todo_id)s,
            %(max_attempts)s, %(priority)s, COALESCE(%(run_after)s, now()), %(dedupe_key)s,
            COALESCE(
                %(owner_id)s::uuid,
                (SELECT owner_id FROM messaging.chats WHERE id = %(chat_id)s),
                (SELECT owner_id FROM tasks.todos WHERE id = %(todo_id)s),
                (SELECT owner_id FROM messaging.messages WHERE id = %(message_id)s),
                NULLIF(pg_catalog.current_setting('agentdb.owner_id', true), '')::uuid
            ))
    ON CONFLICT (agent_name, dedupe_key)
        WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running')
        DO NOTHING
    RETURNING """
    + EXECUTION_COLUMNS
    + """
)
SELECT inserted.*
FROM inserted
CROSS JOIN LATERAL pg_notify('agentdb_executions', inserted.agent_name)
"""
)

# The live execution that made INSERT_EXECUTION insert nothing (found through
# uq_executions_agent_name_dedupe_key). A separate statement, so it sees the row a
# concurrent producer committed after this transaction's INSERT began.
SELECT_LIVE_EXECUTION_BY_DEDUPE_KEY = (
    "SELECT "
    + EXECUTION_COLUMNS
    + """
FROM agents.executions
WHERE agent_name = %s
  AND dedupe_key = %s
  AND status IN ('queued', 'running')
"""
)

# The queue head in idx_executions_priority_run_after_created_at order. SKIP LOCKED: a row
# another worker is claiming right now is passed over instead of waited for, so concurrent
# workers each take a different row and none blocks. The agent_names filter is a plain
# predicate on the index scan (the index, not the filter, serves the ORDER BY … LIMIT 1).
CLAIM_NEXT_EXECUTION = (
    """
UPDATE agents.executions
SET status = 'running',
    attempt = attempt + 1,
    worker_id = %(worker_id)s,
    started_at = now(),
    heartbeat_at = now(),
    finished_at = NULL
WHERE id = (
    SELECT id
    FROM agents.executions
    WHERE status = 'queued'
      AND run_after <= now()
      AND (%(agent_names)s::varchar[] IS NULL OR agent_name = ANY(%(agent_names)s::varchar[]))
    ORDER BY priority DESC, run_after, created_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING """
    + EXECUTION_COLUMNS
)

# Transitions are conditional updates: the status test and the write are one atomic step.
# finished_at is never before started_at, even when this transaction began before the
# claim it waited for (now() is the transaction's start; ck_executions_started_before_finished).
COMPLETE_EXECUTION = (
    """
UPDATE agents.executions
SET status = 'succeeded',
    output = %(output)s,
    model = %(model)s,
    prompt_tokens = %(prompt_tokens)s,
    completion_tokens = %(completion_tokens)s,
    cost_usd = %(cost_usd)s,
    finished_at = GREATEST(now(), started_at)
WHERE id = %(execution_id)s
  AND status = 'running'
RETURNING """
    + EXECUTION_COLUMNS
)

# Requeued while attempts remain, after retry_in or else an exponential backoff with jitter:
# 2^attempt seconds (the exponent capped so power() cannot overflow, the delay at an hour),
# times a random factor in [0.5, 1) so runs that failed together do not retry together.
FAIL_EXECUTION = (
    """
UPDATE agents.executions
SET status = CASE WHEN %(retry)s AND attempt < max_attempts THEN 'queued' ELSE 'failed' END,
    error = %(error)s,
    run_after = CASE
        WHEN %(retry)s AND attempt < max_attempts THEN now() + COALESCE(
            %(retry_in)s::interval,
            make_interval(secs => LEAST(3600, power(2, LEAST(attempt, 12)))
                                  * (0.5 + random() * 0.5)))
        ELSE run_after
    END,
    finished_at = CASE
        WHEN %(retry)s AND attempt < max_attempts THEN NULL
        ELSE GREATEST(now(), started_at)
    END
WHERE id = %(execution_id)s
  AND status = 'running'
RETURNING """
    + EXECUTION_COLUMNS
)

# SET reads the row as it was: a running execution keeps is_cancel_requested = true so its
# worker learns on its next heartbeat that it should stop.
CANCEL_EXECUTION = (
    """
UPDATE agents.executions
SET status = 'cancelled',
    is_cancel_requested = is_cancel_requested OR status = 'running',
    finished_at = GREATEST(now(), started_at)
WHERE id = %s
  AND status IN ('queued', 'running')
RETURNING """
    + EXECUTION_COLUMNS
)

# After a conditional update matched nothing: tells a missing row from one in another state.
SELECT_EXECUTION_STATUS = """
SELECT status
FROM agents.executions
WHERE id = %s
"""

SELECT_EXECUTION = (
    "SELECT "
    + EXECUTION_COLUMNS
    + """
FROM agents.executions
WHERE id = %s
"""
)

# Three keyset pages, newest first, one per leading filter, so that even a generic plan of a
# prepared statement walks the right index: chat_id → idx_executions_chat_id_created_at,
# agent_name → idx_executions_agent_name_created_at, neither → idx_executions_created_at.
# The filters that do not pick the index are plain predicates on the rows it returns. The
# cursor is the last row's (created_at, id); the first page starts at ('infinity', max uuid).
SELECT_EXECUTIONS_PAGE_BY_CHAT = (
    "SELECT "
    + EXECUTION_COLUMNS
    + """
FROM agents.executions
WHERE chat_id = %(chat_id)s
  AND (%(agent_name)s::varchar IS NULL OR agent_name = %(agent_name)s)
  AND (%(status)s::varchar IS NULL OR status = %(status)s)
  AND (created_at, id) < (%(before_created_at)s, %(before_id)s)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
"""
)

SELECT_EXECUTIONS_PAGE_BY_AGENT = (
    "SELECT "
    + EXECUTION_COLUMNS
    + """
FROM agents.executions
WHERE agent_name = %(agent_name)s
  AND (%(status)s::varchar IS NULL OR status = %(status)s)
  AND (created_at, id) < (%(before_created_at)s, %(before_id)s)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
"""
)

SELECT_EXECUTIONS_PAGE = (
    "SELECT "
    + EXECUTION_COLUMNS
    + """
FROM agents.executions
WHERE (%(status)s::varchar IS NULL OR status = %(status)s)
  AND (created_at, id) < (%(before_created_at)s, %(before_id)s)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
"""
)

# Scans the partial index idx_executions_heartbeat_at, which holds running rows only and so
# stays as small as the number of runs in flight. started_at stands in for a heartbeat never
# written. A worker's concurrent heartbeat wins: the UPDATE re-checks the condition on the
# row version it waited for.
REQUEUE_STALE_EXECUTIONS = """
UPDATE agents.executions
SET status = CASE WHEN attempt < max_attempts THEN 'queued' ELSE 'failed' END,
    error = 'stale: no heartbeat since '
            || COALESCE(heartbeat_at, started_at)::text
            || ' from worker ' || COALESCE(worker_id, 'unknown'),
    run_after = CASE WHEN attempt < max_attempts THEN now() ELSE run_after END,
    finished_at = CASE WHEN attempt < max_attempts THEN NULL ELSE GREATEST(now(), started_at) END
WHERE status = 'running'
  AND (heartbeat_at < now() - %(older_than)s::interval
       OR (heartbeat_at IS NULL AND started_at < now() - %(older_than)s::interval))
"""

# One pass over the selected rows. With an agent_name the range scan is on
# idx_executions_agent_name_created_at; without, on idx_executions_created_at (or a
# sequential scan when `since` selects most of the table). `since` defaults to '-infinity'.
EXECUTION_STATS_FROM = """
SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
       count(*) FILTER (WHERE status = 'running') AS running,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY finished_at - started_at)
           FILTER (WHERE status IN ('succeeded', 'failed')) AS p50_duration,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY finished_at - started_at)
           FILTER (WHERE status IN ('succeeded', 'failed')) AS p95_duration,
       COALESCE(sum(prompt_tokens), 0) AS prompt_tokens,
       COALESCE(sum(completion_tokens), 0) AS completion_tokens,
       COALESCE(sum(cost_usd), 0) AS cost_usd
FROM agents.executions
"""

EXECUTION_STATS = EXECUTION_STATS_FROM + "WHERE created_at >= %(since)s\n"

EXECUTION_STATS_FOR_AGENT = (
    EXECUTION_STATS_FROM
    + """WHERE agent_name = %(agent_name)s
  AND created_at >= %(since)s
"""
)

ALL_TIME = "-infinity"

# A dedupe_key's live execution can finish between our INSERT and SELECT; then we insert
# again. Each round needs another producer to finish a run in that gap: a few suffice.
ENQUEUE_ROUNDS = 5

EXECUTION_ROW = model_rows(Execution)


# Query functions --------------------------------------------------------------------------


@database_errors
async def enqueue_execution(
    conn: AsyncConnection[Any],
    *,
    agent_name: str,
    input: Mapping[str, Any] | None = None,
    chat_id: UUID | None = None,
    message_id: UUID | None = None,
    todo_id: UUID | None = None,
    max_attempts: int = 3,
    priority: int = 0,
    run_after: datetime | None = None,
    dedupe_key: str | None = None,
    owner_id: UUID | None = None,
) -> Execution:
    """Queue a run of `agent_name`; with a `dedupe_key`, return its live execution if any.

    Its owner is `owner_id`, else that of its chat, todo or message, else the session's."""
    data = validated(
        ExecutionCreate,
        agent_name=agent_name,
        input={} if input is None else input,
        chat_id=chat_id,
        message_id=message_id,
        todo_id=todo_id,
        max_attempts=max_attempts,
        priority=priority,
        run_after=run_after,
        dedupe_key=dedupe_key,
        owner_id=owner_id,
    )
    params = {
        "agent_name": data.agent_name,
        "input": Jsonb(data.input),
        "chat_id": data.chat_id,
        "message_id": data.message_id,
        "todo_id": data.todo_id,
        "max_attempts": data.max_attempts,
        "priority": data.priority,
        "run_after": data.run_after,
        "dedupe_key": data.dedupe_key,
        "owner_id": data.owner_id,
    }
    async with conn.cursor(row_factory=EXECUTION_ROW) as cursor:
        for _ in range(ENQUEUE_ROUNDS):
            await cursor.execute(INSERT_EXECUTION, params)
            execution = await cursor.fetchone()
            if execution is not None:
                return execution
            await cursor.execute(
                SELECT_LIVE_EXECUTION_BY_DEDUPE_KEY, [data.agent_name, data.dedupe_key]
            )
            execution = await cursor.fetchone()
            if execution is not None:
                return execution
    raise ConflictError(
        f"dedupe_key: the live execution of {data.agent_name!r} with key {data.dedupe_key!r} "
        "kept changing; retry",
        field="dedupe_key",
    )


@database_errors
async def claim_next_execution(
    conn: AsyncConnection[Any],
    *,
    worker_id: str,
    agent_names: Sequence[str] | None = None,
) -> Execution | None:
    """Move the queue head (of `agent_names`, else any agent) to running for `worker_id`."""
    data = validated(ClaimInput, worker_id=worker_id, agent_names=agent_names)
    params = {"worker_id": data.worker_id, "agent_names": data.agent_names}
    async with conn.cursor(row_factory=EXECUTION_ROW) as cursor:
        await cursor.execute(CLAIM_NEXT_EXECUTION, params)
        return await cursor.fetchone()


@database_errors
async def complete_execution(
    conn: AsyncConnection[Any],
    execution_id: UUID,
    *,
    output: Any = None,
    model: str | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    cost_usd: Decimal | float | None = None,
) -> Execution:
    """Mark a running execution succeeded, with its output and usage."""
    execution_id = as_uuid(execution_id, "execution_id")
    data = validated(
        CompletionInput,
        output=output,
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=cost_usd,
    )
    params = {
        "execution_id": execution_id,
        "output": Jsonb(data.output) if data.output is not None else None,
        "model": data.model,
        "prompt_tokens": data.prompt_tokens,
        "completion_tokens": data.completion_tokens,
        "cost_usd": data.cost_usd,
    }
    async with conn.cursor(row_factory=EXECUTION_ROW) as cursor:
        await cursor.execute(COMPLETE_EXECUTION, params)
        execution = await cursor.fetchone()
    if execution is None:
        await _refuse_transition(conn, execution_id, "complete")
    return execution


@database_errors
async def fail_execution(
    conn: AsyncConnection[Any],
    execution_id: UUID,
    *,
    error: str,
    retry: bool = True,
    retry_in: timedelta | None = None,
) -> Execution:
    """Record a failed attempt: back to queued while `retry` and attempts remain, else failed.

    A retry waits `retry_in` (for example a provider's Retry-After), else 2^attempt seconds
    (at most an hour) times a random factor in [0.5, 1).
    """
    execution_id = as_uuid(execution_id, "execution_id")
    data = validated(FailureInput, error=error, retry=retry, retry_in=retry_in)
    params = {
        "execution_id": execution_id,
        "error": data.error,
        "retry": data.retry,
        "retry_in": data.retry_in,
    }
    async with conn.cursor(row_factory=EXECUTION_ROW) as cursor:
        await cursor.execute(FAIL_EXECUTION, params)
        execution = await cursor.fetchone()
    if execution is None:
        await _refuse_transition(conn, execution_id, "fail")
    return execution


@database_errors
async def cancel_execution(conn: AsyncConnection[Any], execution_id: UUID) -> Execution:
    """Cancel a queued or running execution (a running one's worker is asked to stop)."""
    execution_id = as_uuid(execution_id, "execution_id")
    async with conn.cursor(row_factory=EXECUTION_ROW) as cursor:
        await cursor.execute(CANCEL_EXECUTION, [execution_id])
        execution = await cursor.fetchone()
    if execution is None:
        await _refuse_transition(conn, execution_id, "cancel")
    return execution


@database_errors
async def get_execution(conn: AsyncConnection[Any], execution_id: UUID) -> Execution | None:
    """The execution, or None if it does not exist."""
    async with conn.cursor(row_factory=EXECUTION_ROW) as cursor:
        await cursor.execute(SELECT_EXECUTION, [as_uuid(execution_id, "execution_id")])
        return await cursor.fetchone()


@database_errors
async def list_executions(
    conn: AsyncConnection[Any],
    *,
    chat_id: UUID | None = None,
    agent_name: str | None = None,
    status: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Execution]:
    """Executions matching every filter given, newest first."""
    data = validated(ListFilterInput, chat_id=chat_id, agent_name=agent_name, status=status)
    check_limit(limit)
    # The filters that pick the statement are part of the list a cursor belongs to.
    scope = f"executions:{data.chat_id or ''}:{data.agent_name or ''}"
    before_created_at, before_id = newest_first_start(cursor, scope)
    params = {
        "chat_id": data.chat_id,
        "agent_name": data.agent_name,
        "status": data.status,
        "before_created_at": before_created_at,
        "before_id": before_id,
        "limit": limit + 1,
    }
    if data.chat_id is not None:
        query = SELECT_EXECUTIONS_PAGE_BY_CHAT
    elif data.agent_name is not None:
        query = SELECT_EXECUTIONS_PAGE_BY_AGENT
    else:
        query = SELECT_EXECUTIONS_PAGE
    async with conn.cursor(row_factory=EXECUTION_ROW) as db_cursor:
        await db_cursor.execute(query, params)
        rows = await db_cursor.fetchall()
    return page_of(
        rows,
        limit,
        lambda execution: encode_cursor(scope, execution.created_at.isoformat(), execution.id),
    )


@database_errors
async def requeue_stale_executions(conn: AsyncConnection[Any], *, older_than: timedelta) -> int:
    """Take back running executions silent for `older_than`; return how many changed.

    Each goes back to queued (runnable at once) if attempts remain, else ends as failed;
    either way `error` says it went stale.
    """
    data = validated(StaleCheckInput, older_than=older_than)
    cursor = await conn.execute(REQUEUE_STALE_EXECUTIONS, {"older_than": data.older_than})
    return cursor.rowcount


@database_errors
async def execution_stats(
    conn: AsyncConnection[Any],
    *,
    agent_name: str | None = None,
    since: datetime | None = None,
) -> ExecutionStats:
    """Counts by status, success rate, p50/p95 duration, tokens and cost of the executions
    created at or after `since` (of `agent_name`, else of every agent)."""
    data = validated(StatsFilterInput, agent_name=agent_name, since=since)
    params = {"agent_name": data.agent_name, "since": data.since or ALL_TIME}
    query = EXECUTION_STATS if data.agent_name is None else EXECUTION_STATS_FOR_AGENT
    cursor = await conn.execute(query, params)
    row = await cursor.fetchone()
    if row is None:
        raise RuntimeError("an aggregate without GROUP BY returned no row")
    counts: dict[ExecutionStatus, int] = dict(zip(EXECUTION_STATUSES, row[:5], strict=True))
    p50, p95, prompt_tokens, completion_tokens, cost_usd = row[5:]
    finished = counts["succeeded"] + counts["failed"]
    return ExecutionStats(
        counts=counts,
        total=sum(counts.values()),
        success_rate=counts["succeeded"] / finished if finished else None,
        p50_duration=p50,
        p95_duration=p95,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=cost_usd,
    )


# Helpers ----------------------------------------------------------------------------------


async def _refuse_transition(
    conn: AsyncConnection[Any], execution_id: UUID, action: str
) -> NoReturn:
    """Raise why a conditional transition matched no row: missing, or in another status."""
    cursor = await conn.execute(SELECT_EXECUTION_STATUS, [execution_id])
    row = await cursor.fetchone()
    if row is None:
        raise NotFoundError(f"execution {execution_id} not found")
    raise ConflictError(
        f"status: cannot {action} execution {execution_id}: it is {row[0]}", field="status"
    )
