"""Query functions of schema `agents`: the execution queue and its history.

SQL constants first, then the functions in the order of the public API. Every function takes
the caller's connection and never commits.

Fencing: a worker holds an execution from its claim until it completes, fails, cancels or
releases it, or until the execution is taken away (requeued as stale, then perhaps claimed
again, which raises `attempt`). The worker's calls name the worker and the attempt it
claimed; a call from a worker that no longer holds the execution matches no row and raises
ConflictError, so a run that lost its claim can never overwrite the run that replaced it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NoReturn
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import RowMaker
from psycopg.types.json import Jsonb
from pydantic import TypeAdapter

from app.agents.models import (
    EXECUTION_STATUSES,
    MAX_CLAIM,
    ClaimInput,
    Execution,
    ExecutionCreate,
    ExecutionCreateDict,
    ExecutionResult,
    ExecutionStats,
    ExecutionStatus,
    FailureInput,
    FenceInput,
    ListFilterInput,
    PurgeFinishedInput,
    StaleCheckInput,
    StatsFilterInput,
)
from app.audit.queries import purge_in_batches
from app.database.errors import ConflictError, InvalidInputError, NotFoundError, database_errors
from app.database.pagination import Page, check_limit, encode_cursor, newest_first_start, page_of
from app.database.rows import column_list, column_names, model_rows, row_maker
from app.database.transactions import execute
from app.database.validation import (
    INT32_MAX,
    as_int,
    as_sequence,
    as_uuid,
    validated,
    validated_batch,
)

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

# INSERT_EXECUTION for a batch, in one statement: the items arrive as one array per column
# (the inputs as one JSON array; ROWS FROM pads a NULL array, of a field no item sets, with
# NULLs) and are numbered (ordinal). Each gets its id here, so that the inserted rows can be matched
# back to their items. The result has a row per item, in item order: the inserted execution,
# or for a live dedupe_key the execution holding it, whether it was inserted by an earlier
# item of this batch or existed before (the table as this statement's snapshot shows it).
# An item of neither kind lost a race with a producer that committed its key after this
# statement began; the caller looks that one up again. One notification per agent name
# (the CTE is referenced by the final SELECT, or PostgreSQL would not run it).
ENQUEUE_EXECUTIONS = (
    """
WITH items AS (
    SELECT gen_random_uuid() AS id, item.*
    FROM ROWS FROM (
        unnest(%(agent_names)b::varchar[]),
        jsonb_array_elements(%(inputs)b::jsonb),
        unnest(%(chat_ids)b::uuid[]),
        unnest(%(message_ids)b::uuid[]),
        unnest(%(todo_ids)b::uuid[]),
        unnest(%(max_attempts)b::integer[]),
        unnest(%(priorities)b::integer[]),
        unnest(%(run_afters)b::timestamptz[]),
        unnest(%(dedupe_keys)b::varchar[]),
        unnest(%(owner_ids)b::uuid[])
    ) WITH ORDINALITY
        AS item(agent_name, input, chat_id, message_id, todo_id, max_attempts, priority,
                run_after, dedupe_key, owner_id, ordinal)
),
inserted AS (
    INSERT INTO agents.executions
        (id, agent_name, input, chat_id, message_id, todo_id, max_attempts, priority,
         run_after, dedupe_key, owner_id)
    SELECT id, agent_name, input, chat_id, message_id, todo_id, max_attempts, priority,
           COALESCE(run_after, now()), dedupe_key,
           COALESCE(
               items.owner_id,
               (SELECT owner_id FROM messaging.chats WHERE id = items.chat_id),
               (SELECT owner_id FROM tasks.todos WHERE id = items.todo_id),
               (SELECT owner_id FROM messaging.messages WHERE id = items.message_id),
               NULLIF(pg_catalog.current_setting('agentdb.owner_id', true), '')::uuid
           )
    FROM items
    -- In key order, not item order: two batches holding the same keys in different orders
    -- would otherwise each wait on the other's uncommitted index entries (a deadlock).
    ORDER BY agent_name, dedupe_key, ordinal
    ON CONFLICT (agent_name, dedupe_key)
        WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running')
        DO NOTHING
    RETURNING *
),
notified AS (
    SELECT count(pg_notify('agentdb_executions', agent_name)) AS notifications
    FROM (SELECT DISTINCT agent_name FROM inserted) AS agent_names
),
result AS (
    SELECT items.ordinal, inserted.*
    FROM items
    JOIN inserted ON inserted.id = items.id
    UNION ALL
    SELECT items.ordinal, live.*
    FROM items
    JOIN inserted AS live
      ON live.agent_name = items.agent_name AND live.dedupe_key = items.dedupe_key
    WHERE NOT EXISTS (SELECT FROM inserted WHERE inserted.id = items.id)
    UNION ALL
    SELECT items.ordinal, live.*
    FROM items
    JOIN agents.executions AS live
      ON live.agent_name = items.agent_name
     AND live.dedupe_key = items.dedupe_key
     AND live.status IN ('queued', 'running')
    WHERE NOT EXISTS (SELECT FROM inserted WHERE inserted.id = items.id)
)
SELECT """
    + EXECUTION_COLUMNS
    + """, result.ordinal
FROM result
CROSS JOIN notified
ORDER BY result.ordinal
"""
)

# ENQUEUE_EXECUTIONS for a batch without dedupe keys, which nothing can make conflict: a
# plain INSERT, and a result of only what the server decides for each item (its id, owner,
# run_after and the transaction's now(), its created_at and updated_at), in item order; the
# caller knows the rest. The owner is resolved in `items`, which the INSERT and the result
# both read (so it is materialized once, each id drawn once). A data-modifying CTE runs to
# completion whether or not the result reads it; `notified` must be read to run.
INSERT_EXECUTIONS = """
WITH items AS (
    SELECT gen_random_uuid() AS id,
           item.agent_name, item.input, item.chat_id, item.message_id, item.todo_id,
           item.max_attempts, item.priority, COALESCE(item.run_after, now()) AS run_after,
           COALESCE(
               item.owner_id,
               (SELECT owner_id FROM messaging.chats WHERE id = item.chat_id),
               (SELECT owner_id FROM tasks.todos WHERE id = item.todo_id),
               (SELECT owner_id FROM messaging.messages WHERE id = item.message_id),
               NULLIF(pg_catalog.current_setting('agentdb.owner_id', true), '')::uuid
           ) AS owner_id,
           item.ordinal
    FROM ROWS FROM (
        unnest(%(agent_names)b::varchar[]),
        jsonb_array_elements(%(inputs)b::jsonb),
        unnest(%(chat_ids)b::uuid[]),
        unnest(%(message_ids)b::uuid[]),
        unnest(%(todo_ids)b::uuid[]),
        unnest(%(max_attempts)b::integer[]),
        unnest(%(priorities)b::integer[]),
        unnest(%(run_afters)b::timestamptz[]),
        unnest(%(owner_ids)b::uuid[])
    ) WITH ORDINALITY
        AS item(agent_name, input, chat_id, message_id, todo_id, max_attempts, priority,
                run_after, owner_id, ordinal)
),
inserted AS (
    INSERT INTO agents.executions
        (id, agent_name, input, chat_id, message_id, todo_id, max_attempts, priority,
         run_after, owner_id)
    SELECT id, agent_name, input, chat_id, message_id, todo_id, max_attempts, priority,
           run_after, owner_id
    FROM items
    ORDER BY ordinal
),
notified AS (
    SELECT count(pg_notify('agentdb_executions', agent_name)) AS notifications
    FROM (SELECT DISTINCT agent_name FROM items) AS agent_names
)
SELECT items.id, items.owner_id, items.run_after, now()
FROM items
CROSS JOIN notified
ORDER BY items.ordinal
"""

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

# Up to `limit` rows of the queue head, in the order of the partial index
# idx_executions_priority_run_after_created_at (WHERE status = 'queued'): the index scan
# stops after the rows asked for that pass the filters, so finished rows, which the index
# does not hold, cost nothing. SKIP LOCKED: a row another worker is claiming right now is
# passed over instead of waited for, so concurrent workers each take different rows and none
# blocks. The agent_names filter is a plain predicate on the rows the index returns. The
# claimed rows come back in claim order.
#
# Shaped for the plan cache. The worker's statements are prepared, and the server plans one
# once only if its generic plan (made without the parameters' values) looks no dearer than
# planning each call; else it plans every call. So the plan must cost the same whether or
# not the server sees the values:
# - `next` has the constant LIMIT of the largest claim (MAX_CLAIM), and the UPDATE takes
#   `limit` rows of it (`next` runs lazily: it locks only the rows read from it). A generic
#   plan cannot see a LIMIT parameter and guesses a tenth of its input, the whole queue.
# - the UPDATE finds those rows by primary key, `id = ANY(ARRAY(…))`, costed alike however
#   many rows the array is guessed to hold (joined with `next`, they were costed as a hash
#   over the whole table).
# - agent_names is read through a sub-select, unknown to either plan (a custom plan would
#   fold it into a constant array, costed per element, and win by a hair).
# Before, a queue of 2,000 drained one at a time was re-planned at every claim (409 jobs/s);
# only a table of many finished rows tipped the server to the generic plan.
CLAIM_CTES = """
next AS (
    SELECT id
    FROM agents.executions
    WHERE status = 'queued'
      AND run_after <= now()
      AND ((SELECT %(agent_names)s::varchar[]) IS NULL
           OR agent_name = ANY((SELECT %(agent_names)s::varchar[])::varchar[]))
    ORDER BY priority DESC, run_after, created_at
    LIMIT 1000
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE agents.executions AS execution
    SET status = 'running',
        attempt = execution.attempt + 1,
        worker_id = %(worker_id)s,
        started_at = now(),
        heartbeat_at = now(),
        finished_at = NULL
    WHERE execution.id = ANY(ARRAY(SELECT id FROM next LIMIT %(limit)s))
    RETURNING execution.*
)
"""
assert MAX_CLAIM == 1000  # the constant LIMIT of `next`
CLAIM_EXECUTIONS = (
    "WITH"
    + CLAIM_CTES
    + "SELECT "
    + EXECUTION_COLUMNS
    + """
FROM claimed
ORDER BY priority DESC, run_after, created_at
"""
)

# The fence of a worker's call: the execution is running, under this worker (when named)
# and in this attempt (when given). Appended to a WHERE that has already picked the row.
FENCE = """
  AND status = 'running'
  AND (%(worker_id)s::varchar IS NULL OR worker_id = %(worker_id)s)
  AND (%(attempt)s::integer IS NULL OR attempt = %(attempt)s)
"""

# clock_timestamp(), not now(): a heartbeat is the time it is sent, also from inside a long
# transaction. The row keeps its heartbeat while a cancel is requested (the handler is
# stopping, not dead); the caller reads is_cancel_requested.
HEARTBEAT_EXECUTION = (
    """
UPDATE agents.executions
SET heartbeat_at = clock_timestamp()
WHERE id = %(execution_id)s"""
    + FENCE
    + "RETURNING is_cancel_requested\n"
)

# The rows of a worker's (execution id, attempt) claims that it still holds, locked in id
# order: two statements of one worker that lock some of the same rows (a heartbeat, a batch
# of acknowledgements) take them in the same order, so they cannot deadlock.
HELD_CLAIMS = """
WITH held AS (
    SELECT execution.id
    FROM agents.executions AS execution
    JOIN unnest(%(ids)s::uuid[], %(attempts)s::integer[]) AS claim(id, attempt)
      ON execution.id = claim.id AND execution.attempt = claim.attempt
    WHERE execution.status = 'running'
      AND execution.worker_id = %(worker_id)s
    ORDER BY execution.id
    FOR UPDATE OF execution
)
"""

# One heartbeat for all of a worker's runs (HELD_CLAIMS).
HEARTBEAT_EXECUTIONS = (
    HELD_CLAIMS
    + """UPDATE agents.executions AS execution
SET heartbeat_at = clock_timestamp()
FROM held
WHERE execution.id = held.id
RETURNING execution.id, execution.is_cancel_requested
"""
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
WHERE id = %(execution_id)s"""
    + FENCE
    + "RETURNING "
    + EXECUTION_COLUMNS
)

# COMPLETE_EXECUTION for many runs of one worker (a worker's batched acknowledgements), each
# fenced by its attempt, as CTEs ending in `acked`: the ids it completed; the others were no
# longer held.
ACK_CTES = """
WITH done AS (
    SELECT *
    FROM unnest(%(ids)s::uuid[], %(attempts)s::integer[], %(outputs)s::jsonb[],
                %(models)s::varchar[], %(prompt_tokens)s::integer[],
                %(completion_tokens)s::integer[], %(costs)s::numeric[])
        AS done(id, attempt, output, model, prompt_tokens, completion_tokens, cost_usd)
),
held AS (
    SELECT execution.id
    FROM agents.executions AS execution
    JOIN done ON execution.id = done.id AND execution.attempt = done.attempt
    WHERE execution.status = 'running'
      AND execution.worker_id = %(worker_id)s
    ORDER BY execution.id
    FOR UPDATE OF execution
),
acked AS (
    UPDATE agents.executions AS execution
    SET status = 'succeeded',
        output = done.output,
        model = done.model,
        prompt_tokens = done.prompt_tokens,
        completion_tokens = done.completion_tokens,
        cost_usd = done.cost_usd,
        finished_at = GREATEST(now(), execution.started_at)
    FROM held
    JOIN done ON done.id = held.id
    WHERE execution.id = held.id
    RETURNING execution.id
)
"""
COMPLETE_EXECUTIONS = ACK_CTES + "SELECT id FROM acked\n"

# A worker's acknowledgements and its next claim in one statement, one round trip: the
# acked rows are running and the claimed ones queued, so the two updates never touch the
# same row. Every row carries the acked ids (an array, the last column); with nothing to
# claim, the one row has only them and NULL for every execution column.
COMPLETE_AND_CLAIM_EXECUTIONS = (
    ACK_CTES
    + ","
    + CLAIM_CTES
    + "SELECT "
    + EXECUTION_COLUMNS
    + """, acks.ids AS acked_ids
FROM (SELECT array_agg(id) AS ids FROM acked) AS acks
LEFT JOIN claimed ON true
ORDER BY priority DESC, run_after, created_at
"""
)

# Requeued while attempts remain, after retry_in or else an exponential backoff with jitter:
# 2^attempt seconds (the exponent capped so power() cannot overflow, the delay at an hour),
# times a random factor in [0.5, 1) so runs that failed together do not retry together.
# A run whose cancel was requested ends cancelled instead: it is not retried.
FAIL_EXECUTION = (
    """
UPDATE agents.executions
SET status = CASE
        WHEN is_cancel_requested THEN 'cancelled'
        WHEN %(retry)s AND attempt < max_attempts THEN 'queued'
        ELSE 'failed'
    END,
    error = %(error)s,
    run_after = CASE
        WHEN NOT is_cancel_requested AND %(retry)s AND attempt < max_attempts THEN now() + COALESCE(
            %(retry_in)s::interval,
            make_interval(secs => LEAST(3600, power(2, LEAST(attempt, 12)))
                                  * (0.5 + random() * 0.5)))
        ELSE run_after
    END,
    finished_at = CASE
        WHEN NOT is_cancel_requested AND %(retry)s AND attempt < max_attempts THEN NULL
        ELSE GREATEST(now(), started_at)
    END
WHERE id = %(execution_id)s"""
    + FENCE
    + "RETURNING "
    + EXECUTION_COLUMNS
)

# A queued execution is cancelled at once. A running one is only asked to stop: SET reads
# the row as it was, so it stays running with is_cancel_requested = true, which its worker
# reads on its next heartbeat; the worker then ends it (CANCEL_HELD_EXECUTION). Asking again
# changes nothing.
CANCEL_EXECUTION = (
    """
UPDATE agents.executions
SET status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
    is_cancel_requested = status = 'running',
    finished_at = CASE WHEN status = 'queued' THEN GREATEST(now(), started_at) END
WHERE id = %s
  AND status IN ('queued', 'running')
RETURNING """
    + EXECUTION_COLUMNS
)

# The worker ending its run as cancelled: after a requested cancel reached the handler, or
# because the handler gave up on its own.
CANCEL_HELD_EXECUTION = (
    """
UPDATE agents.executions
SET status = 'cancelled',
    finished_at = GREATEST(now(), started_at)
WHERE id = %(execution_id)s"""
    + FENCE
    + "RETURNING "
    + EXECUTION_COLUMNS
)

# A worker shutting down gives back the runs it could not finish: queued again in their
# place (run_after is kept: they were due), and the interrupted attempt not counted (a
# shutdown is not the run's failure). A run whose cancel was requested ends cancelled
# instead (HELD_CLAIMS).
RELEASE_EXECUTIONS = (
    HELD_CLAIMS
    + """UPDATE agents.executions AS execution
SET status = CASE WHEN execution.is_cancel_requested THEN 'cancelled' ELSE 'queued' END,
    attempt = CASE
        WHEN execution.is_cancel_requested THEN execution.attempt
        ELSE execution.attempt - 1
    END,
    finished_at = CASE
        WHEN execution.is_cancel_requested THEN GREATEST(now(), execution.started_at)
    END
FROM held
WHERE execution.id = held.id
RETURNING execution.id
"""
)

# After a conditional update matched nothing: tells a missing row from one in another state
# or held by another worker or attempt.
SELECT_EXECUTION_STATUS = """
SELECT status, worker_id, attempt
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

# Staleness is judged by heartbeat_at (started_at stands in for a heartbeat never written).
# The scan reads the partial index idx_executions_worker_id, which holds running rows only
# and so stays as small as the number of runs in flight. SKIP LOCKED: a row being written
# right now (a heartbeat, a completion) is alive and passed over, never waited for; FOR
# UPDATE re-checks the heartbeat on the newest version of the rows it locks. Attempts left:
# queued again, runnable at once; none left: failed; a cancel requested: cancelled.
REQUEUE_STALE_EXECUTIONS = """
WITH stale AS (
    SELECT id
    FROM agents.executions
    WHERE status = 'running'
      AND COALESCE(heartbeat_at, started_at) < now() - %(older_than)s::interval
    ORDER BY id
    FOR UPDATE SKIP LOCKED
)
UPDATE agents.executions AS execution
SET status = CASE
        WHEN execution.is_cancel_requested THEN 'cancelled'
        WHEN execution.attempt < execution.max_attempts THEN 'queued'
        ELSE 'failed'
    END,
    error = 'stale: no heartbeat since '
            || COALESCE(execution.heartbeat_at, execution.started_at)::text
            || ' from worker ' || COALESCE(execution.worker_id, 'unknown'),
    run_after = CASE
        WHEN NOT execution.is_cancel_requested AND execution.attempt < execution.max_attempts
        THEN now()
        ELSE execution.run_after
    END,
    finished_at = CASE
        WHEN NOT execution.is_cancel_requested AND execution.attempt < execution.max_attempts
        THEN NULL
        ELSE GREATEST(now(), execution.started_at)
    END
FROM stale
WHERE execution.id = stale.id
"""

# One batch of the retention purge: up to batch_size finished executions, oldest first from
# `after` (the last batch's largest finished_at), read from idx_executions_finished_at (0034,
# which holds finished rows only). FOR UPDATE SKIP LOCKED: a row another transaction holds
# right now is left for the next purge, never waited for. The batch's tool calls are deleted
# here (their foreign key would cascade to them anyway) so that they are counted; the DELETE
# finds the batch by primary key. One statement, its own short transaction.
PURGE_FINISHED_EXECUTIONS = """
WITH batch AS (
    SELECT id
    FROM agents.executions
    WHERE status IN ('succeeded', 'failed', 'cancelled')
      AND finished_at < %(cutoff)s::timestamptz
      AND finished_at >= %(after)s::timestamptz
    ORDER BY finished_at
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
),
calls AS (
    DELETE FROM agents.tool_calls
    WHERE execution_id = ANY(ARRAY(SELECT id FROM batch))
    RETURNING 1
),
purged AS (
    DELETE FROM agents.executions
    WHERE id = ANY(ARRAY(SELECT id FROM batch))
    RETURNING finished_at
)
SELECT (SELECT max(finished_at) FROM purged),
       (SELECT count(*) FROM purged),
       (SELECT count(*) FROM calls)
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


EXECUTION_CREATE_DICTS = TypeAdapter(list[ExecutionCreateDict])

# What a key left out of an ExecutionCreateDict stands for (input's {} is only ever read).
EXECUTION_DEFAULTS: dict[str, Any] = {
    name: field.get_default(call_default_factory=True)
    for name, field in ExecutionCreate.model_fields.items()
    if not field.is_required()
}

# What an execution holds when it is inserted, besides its item's fields and what
# INSERT_EXECUTIONS returns: the table's defaults (a test compares such executions with the
# rows read back).
QUEUED_EXECUTION: dict[str, Any] = {
    "status": "queued",
    "output": None,
    "error": None,
    "model": None,
    "prompt_tokens": None,
    "completion_tokens": None,
    "cost_usd": None,
    "attempt": 0,
    "worker_id": None,
    "heartbeat_at": None,
    "is_cancel_requested": False,
    "started_at": None,
    "finished_at": None,
}
INSERTED_FIELDS = tuple(Execution.model_fields)
if set(QUEUED_EXECUTION) | set(ExecutionCreate.model_fields) | {
    "id",
    "created_at",
    "updated_at",
} != set(INSERTED_FIELDS):
    raise TypeError("QUEUED_EXECUTION and ExecutionCreate do not make up an Execution")
INSERTED_EXECUTION = row_maker(Execution, INSERTED_FIELDS)

# ENQUEUE_EXECUTIONS's array parameters, each of one ExecutionCreate field.
ENQUEUE_ARRAYS = (
    ("agent_names", "agent_name"),
    ("inputs", "input"),
    ("chat_ids", "chat_id"),
    ("message_ids", "message_id"),
    ("todo_ids", "todo_id"),
    ("max_attempts", "max_attempts"),
    ("priorities", "priority"),
    ("run_afters", "run_after"),
    ("dedupe_keys", "dedupe_key"),
    ("owner_ids", "owner_id"),
)

# The arrays of fields that may be None: sent as one NULL when no item sets the field.
NULLABLE_ARRAYS = ("chat_ids", "message_ids", "todo_ids", "run_afters", "dedupe_keys", "owner_ids")


def _ordinal_execution_rows(cursor: Any) -> RowMaker[tuple[int, Execution]]:
    """Rows of (ordinal, execution): ENQUEUE_EXECUTIONS's result (the ordinal comes last)."""
    make = row_maker(Execution, column_names(cursor)[:-1])

    def make_row(values: Sequence[Any]) -> tuple[int, Execution]:
        return values[-1], make(values[:-1])

    return make_row


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

    Its owner is `owner_id`, else that of its chat, todo or message, else the session's.
    Higher `priority` runs first; `run_after` schedules it for later. Workers listening on
    NOTIFY_CHANNEL hear of it when the transaction commits."""
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
    return await _enqueue_one(conn, data)


@database_errors
async def enqueue_executions(
    conn: AsyncConnection[Any], items: Sequence[ExecutionCreate | Mapping[str, Any]]
) -> list[Execution]:
    """Queue many executions with one statement; return one execution per item, in order.

    Each item is an ExecutionCreate or a dict of its fields (validated all at once, the
    first problem raised naming the item's index and field). Like `enqueue_execution`, an
    item whose dedupe_key is live returns the execution holding it, also when an earlier
    item of the same batch holds it. All or nothing.
    """
    rows = [
        dict(row) if isinstance(row, ExecutionCreate) else {**EXECUTION_DEFAULTS, **row}
        for row in validated_batch(items, EXECUTION_CREATE_DICTS, ExecutionCreate, "items")
    ]
    if not rows:
        return []
    arrays: dict[str, list[Any]] = {param: [] for param, _ in ENQUEUE_ARRAYS}
    for row in rows:
        for param, name in ENQUEUE_ARRAYS:
            arrays[param].append(row[name])
    params: dict[str, Any] = dict(arrays)
    params["inputs"] = Jsonb(arrays["inputs"])  # one JSON array: one dumps, not one per item
    for param in NULLABLE_ARRAYS:
        if all(value is None for value in arrays[param]):
            params[param] = None  # unnest pads a NULL array with NULLs: none to send
    if params["dedupe_keys"] is None:
        return await _insert_executions(conn, rows, params)
    async with conn.transaction():
        async with conn.cursor(row_factory=_ordinal_execution_rows) as cursor:
            await cursor.execute(ENQUEUE_EXECUTIONS, params)
            found = dict(await cursor.fetchall())
        executions = []
        for ordinal, row in enumerate(rows, start=1):
            execution = found.get(ordinal)
            if execution is None:  # its key's live execution committed after we began
                execution = await _enqueue_one(conn, ExecutionCreate.model_construct(**row))
            executions.append(execution)
    return executions


@database_errors
async def claim_executions(
    conn: AsyncConnection[Any],
    *,
    worker_id: str,
    agent_names: Sequence[str] | None = None,
    limit: int = 10,
) -> list[Execution]:
    """Move up to `limit` queued executions to running for `worker_id`, in one statement.
    They come from the queue head (of `agent_names`, else any agent): highest priority
    first, then run_after, then age. Each claim raises the execution's `attempt`: the
    fencing token that the worker passes back to heartbeat, complete, fail and cancel."""
    data = validated(ClaimInput, worker_id=worker_id, agent_names=agent_names, limit=limit)
    params = {"worker_id": data.worker_id, "agent_names": data.agent_names, "limit": data.limit}
    async with conn.cursor(row_factory=EXECUTION_ROW) as cursor:
        await execute(cursor, CLAIM_EXECUTIONS, params)
        return await cursor.fetchall()


@database_errors
async def claim_next_execution(
    conn: AsyncConnection[Any],
    *,
    worker_id: str,
    agent_names: Sequence[str] | None = None,
) -> Execution | None:
    """Move the queue head (of `agent_names`, else any agent) to running for `worker_id`;
    None when nothing is ready."""
    data = validated(ClaimInput, worker_id=worker_id, agent_names=agent_names, limit=1)
    params = {"worker_id": data.worker_id, "agent_names": data.agent_names, "limit": 1}
    async with conn.cursor(row_factory=EXECUTION_ROW) as cursor:
        await execute(cursor, CLAIM_EXECUTIONS, params)
        return await cursor.fetchone()


@database_errors
async def heartbeat_execution(
    conn: AsyncConnection[Any],
    execution_id: UUID,
    *,
    worker_id: str,
    attempt: int | None = None,
) -> bool:
    """Renew the heartbeat of `worker_id`'s running execution; True while the run should go
    on. False: a cancel was requested (the heartbeat is still renewed while the handler
    stops), or, without `attempt`, the execution is no longer this worker's. With `attempt`,
    a worker that lost its claim gets ConflictError instead, and nothing changes."""
    execution_id = as_uuid(execution_id, "execution_id")
    fence = validated(FenceInput, worker_id=worker_id, attempt=attempt)
    params = {"execution_id": execution_id, "worker_id": fence.worker_id, "attempt": attempt}
    cursor = await conn.execute(HEARTBEAT_EXECUTION, params)
    row = await cursor.fetchone()
    if row is None:
        if attempt is None:
            return False
        await _refuse_transition(conn, execution_id, "heartbeat", fence)
    return not row[0]


@database_errors
async def heartbeat_executions(
    conn: AsyncConnection[Any],
    claims: Sequence[tuple[UUID, int]],
    *,
    worker_id: str,
) -> dict[UUID, bool]:
    """One heartbeat for many of `worker_id`'s runs, given as (execution id, attempt) pairs.

    Returns, for each run still held, whether it should go on (False: a cancel was
    requested); a run missing from the result is no longer this worker's."""
    fence = validated(FenceInput, worker_id=worker_id)
    ids, attempts = _claim_arrays(claims)
    if not ids:
        return {}
    params = {"ids": ids, "attempts": attempts, "worker_id": fence.worker_id}
    cursor = await conn.execute(HEARTBEAT_EXECUTIONS, params)
    return {execution_id: not cancel for execution_id, cancel in await cursor.fetchall()}


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
    worker_id: str | None = None,
    attempt: int | None = None,
) -> Execution:
    """Mark a running execution succeeded, with its output and usage.

    A worker names itself and the attempt it claimed: if the execution was taken from it
    meanwhile, ConflictError, and nothing changes."""
    execution_id = as_uuid(execution_id, "execution_id")
    result = ExecutionResult(
        output,
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=cost_usd,
    )
    fence = validated(FenceInput, worker_id=worker_id, attempt=attempt)
    params = {
        "execution_id": execution_id,
        "output": Jsonb(result.output) if result.output is not None else None,
        "model": result.model,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "cost_usd": result.cost_usd,
        "worker_id": fence.worker_id,
        "attempt": fence.attempt,
    }
    async with conn.cursor(row_factory=EXECUTION_ROW) as cursor:
        await execute(cursor, COMPLETE_EXECUTION, params)
        execution = await cursor.fetchone()
    if execution is None:
        await _refuse_transition(conn, execution_id, "complete", fence)
    return execution


@database_errors
async def complete_executions(
    conn: AsyncConnection[Any],
    results: Sequence[tuple[UUID, int, ExecutionResult]],
    *,
    worker_id: str,
) -> set[UUID]:
    """Mark many of `worker_id`'s runs succeeded in one statement; return the ids it
    completed. Each is given as (execution id, attempt, ExecutionResult). A run missing from
    the result was no longer this worker's (requeued, claimed again): it was left as it is."""
    params = _ack_params(results, worker_id)
    if not params["ids"]:
        return set()
    cursor = await conn.execute(COMPLETE_EXECUTIONS, params)
    return {row[0] for row in await cursor.fetchall()}


@database_errors
async def complete_and_claim_executions(
    conn: AsyncConnection[Any],
    results: Sequence[tuple[UUID, int, ExecutionResult]],
    *,
    worker_id: str,
    agent_names: Sequence[str] | None = None,
    limit: int = 10,
) -> tuple[set[UUID], list[Execution]]:
    """Complete a worker's runs and claim its next ones in one statement. That is
    `complete_executions(results)` and `claim_executions(limit=limit)` together: a worker's
    acknowledgements ride on its next claim, one round trip for both. Returns the ids
    completed (the others were no longer held) and the executions claimed."""
    claim = validated(ClaimInput, worker_id=worker_id, agent_names=agent_names, limit=limit)
    params = _ack_params(results, worker_id)
    params["agent_names"] = claim.agent_names
    params["limit"] = claim.limit
    async with conn.cursor(row_factory=_acked_and_claimed_rows) as cursor:
        await cursor.execute(COMPLETE_AND_CLAIM_EXECUTIONS, params)
        rows = await cursor.fetchall()
    acked = set(rows[0][0] or ())  # the statement always returns a row
    return acked, [execution for _, execution in rows if execution is not None]


@database_errors
async def fail_execution(
    conn: AsyncConnection[Any],
    execution_id: UUID,
    *,
    error: str,
    retry: bool = True,
    retry_in: timedelta | None = None,
    worker_id: str | None = None,
    attempt: int | None = None,
) -> Execution:
    """Record a failed attempt: back to queued while `retry` and attempts remain, else
    failed. An execution whose cancel was requested ends cancelled instead.

    A retry waits `retry_in` (for example a provider's Retry-After), else 2^attempt seconds
    (at most an hour) times a random factor in [0.5, 1). A worker names itself and its
    attempt, as for `complete_execution`.
    """
    execution_id = as_uuid(execution_id, "execution_id")
    data = validated(FailureInput, error=error, retry=retry, retry_in=retry_in)
    fence = validated(FenceInput, worker_id=worker_id, attempt=attempt)
    params = {
        "execution_id": execution_id,
        "error": data.error,
        "retry": data.retry,
        "retry_in": data.retry_in,
        "worker_id": fence.worker_id,
        "attempt": fence.attempt,
    }
    async with conn.cursor(row_factory=EXECUTION_ROW) as cursor:
        await cursor.execute(FAIL_EXECUTION, params)
        execution = await cursor.fetchone()
    if execution is None:
        await _refuse_transition(conn, execution_id, "fail", fence)
    return execution


@database_errors
async def cancel_execution(
    conn: AsyncConnection[Any],
    execution_id: UUID,
    *,
    worker_id: str | None = None,
    attempt: int | None = None,
) -> Execution:
    """Cancel an execution. A queued one is cancelled at once; a running one is asked to
    stop (`is_cancel_requested`; it stays running until its worker hears of it on its next
    heartbeat and ends it).

    With `worker_id` (and `attempt`), the call is that worker ending its running execution
    as cancelled; ConflictError if the execution is no longer its own."""
    execution_id = as_uuid(execution_id, "execution_id")
    fence = validated(FenceInput, worker_id=worker_id, attempt=attempt)
    async with conn.cursor(row_factory=EXECUTION_ROW) as cursor:
        if fence.worker_id is None:
            await cursor.execute(CANCEL_EXECUTION, [execution_id])
        else:
            params = {
                "execution_id": execution_id,
                "worker_id": fence.worker_id,
                "attempt": fence.attempt,
            }
            await cursor.execute(CANCEL_HELD_EXECUTION, params)
        execution = await cursor.fetchone()
    if execution is None:
        await _refuse_transition(conn, execution_id, "cancel", fence)
    return execution


@database_errors
async def release_executions(
    conn: AsyncConnection[Any],
    claims: Sequence[tuple[UUID, int]],
    *,
    worker_id: str,
) -> set[UUID]:
    """Give back runs `worker_id` holds but will not finish (it is shutting down); return
    the ids released. Given as (execution id, attempt) pairs, they are queued again in their
    place, the attempt not counted (a run whose cancel was requested ends cancelled)."""
    fence = validated(FenceInput, worker_id=worker_id)
    ids, attempts = _claim_arrays(claims)
    if not ids:
        return set()
    params = {"ids": ids, "attempts": attempts, "worker_id": fence.worker_id}
    cursor = await conn.execute(RELEASE_EXECUTIONS, params)
    return {row[0] for row in await cursor.fetchall()}


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
    """Take back running executions whose heartbeat is older than `older_than`; return how
    many. Their worker died or hangs.

    Each goes back to queued (runnable at once) if attempts remain, else ends as failed, or
    cancelled if a cancel was requested; `error` says it went stale. The worker that lost it
    can no longer write to it (fencing).
    """
    data = validated(StaleCheckInput, older_than=older_than)
    cursor = await conn.execute(REQUEUE_STALE_EXECUTIONS, {"older_than": data.older_than})
    return cursor.rowcount


@database_errors
async def purge_finished_executions(
    conn: AsyncConnection[Any], *, older_than: timedelta, batch_size: int = 1000
) -> int:
    """Hard-delete executions that finished (succeeded, failed, cancelled) more than
    `older_than` ago; return how many. Queued and running ones are never touched.

    In batches of `batch_size`, each one statement in its own short transaction (so it
    commits as it goes, and takes a connection in autocommit, `db.connection()`), until a
    batch deletes fewer: rows that another transaction holds are skipped, not waited for.
    The tool calls of a purged execution go with it (fk_tool_calls_executions is ON DELETE
    CASCADE; the batch deletes them itself, to count them). One 'purge' event records the
    executions and tool calls deleted and the cutoff, in the last batch's transaction; no
    event per row. For the schema owner or agentdb_worker.
    """
    data = validated(PurgeFinishedInput, older_than=older_than, batch_size=batch_size)
    deleted, _calls = await purge_in_batches(
        conn,
        PURGE_FINISHED_EXECUTIONS,
        older_than=data.older_than,
        batch_size=data.batch_size,
        schema_name="agents",
        table_name="executions",
        counts=("deleted", "tool_calls"),
    )
    return deleted


@database_errors
async def execution_stats(
    conn: AsyncConnection[Any],
    *,
    agent_name: str | None = None,
    since: datetime | None = None,
) -> ExecutionStats:
    """Counts by status, success rate, p50/p95 duration, tokens and cost of executions. They
    are the executions created at or after `since`, of `agent_name` (else of every agent)."""
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


async def _enqueue_one(conn: AsyncConnection[Any], data: ExecutionCreate) -> Execution:
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
            await execute(cursor, INSERT_EXECUTION, params)
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


async def _insert_executions(
    conn: AsyncConnection[Any], rows: list[dict[str, Any]], params: Mapping[str, Any]
) -> list[Execution]:
    """enqueue_executions of `rows` (validated, none with a dedupe_key) by INSERT_EXECUTIONS:
    one statement, so all or nothing without a transaction of its own."""
    cursor = await conn.execute(INSERT_EXECUTIONS, params)
    executions = []
    for row, (execution_id, owner_id, run_after, now) in zip(
        rows, await cursor.fetchall(), strict=True
    ):
        values = {
            **QUEUED_EXECUTION,
            **row,
            "id": execution_id,
            "owner_id": owner_id,
            "run_after": run_after,
            "created_at": now,
            "updated_at": now,
        }
        executions.append(INSERTED_EXECUTION([values[name] for name in INSERTED_FIELDS]))
    return executions


ACK_NULLABLE_ARRAYS = ("outputs", "models", "prompt_tokens", "completion_tokens", "costs")


def _ack_params(
    results: Sequence[tuple[UUID, int, ExecutionResult]], worker_id: str
) -> dict[str, Any]:
    """The parameters of ACK_CTES: `results`' (execution id, attempt, ExecutionResult)
    triples as arrays, each triple checked."""
    fence = validated(FenceInput, worker_id=worker_id)
    params: dict[str, Any] = {
        "ids": [],
        "attempts": [],
        "outputs": [],
        "models": [],
        "prompt_tokens": [],
        "completion_tokens": [],
        "costs": [],
        "worker_id": fence.worker_id,
    }
    for index, row in enumerate(as_sequence(results, "results")):
        field = f"results[{index}]"
        try:
            execution_id, attempt, result = row
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"{field}: must be an (execution id, attempt, ExecutionResult) triple",
                field=field,
            ) from None
        if not isinstance(result, ExecutionResult):
            raise InvalidInputError(
                f"{field}: must hold an ExecutionResult, not {type(result).__name__}",
                field=field,
            )
        params["ids"].append(as_uuid(execution_id, f"{field}[0]"))
        params["attempts"].append(as_int(attempt, f"{field}[1]", minimum=1, maximum=INT32_MAX))
        params["outputs"].append(None if result.output is None else Jsonb(result.output))
        params["models"].append(result.model)
        params["prompt_tokens"].append(result.prompt_tokens)
        params["completion_tokens"].append(result.completion_tokens)
        params["costs"].append(result.cost_usd)
    for param in ACK_NULLABLE_ARRAYS:
        if all(value is None for value in params[param]):
            params[param] = None  # unnest pads a NULL array with NULLs: none to send
    return params


def _acked_and_claimed_rows(cursor: Any) -> RowMaker[tuple[list[UUID] | None, Execution | None]]:
    """Rows of COMPLETE_AND_CLAIM_EXECUTIONS: (acked ids, claimed execution or None)."""
    make = row_maker(Execution, column_names(cursor)[:-1])

    def make_row(values: Sequence[Any]) -> tuple[list[UUID] | None, Execution | None]:
        return values[-1], None if values[0] is None else make(values[:-1])

    return make_row


def _claim_arrays(claims: Sequence[tuple[UUID, int]]) -> tuple[list[UUID], list[int]]:
    """(execution id, attempt) pairs as two arrays, each pair checked."""
    ids: list[UUID] = []
    attempts: list[int] = []
    for index, claim in enumerate(as_sequence(claims, "claims")):
        try:
            execution_id, attempt = claim
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"claims[{index}]: must be an (execution id, attempt) pair",
                field=f"claims[{index}]",
            ) from None
        ids.append(as_uuid(execution_id, f"claims[{index}][0]"))
        attempts.append(as_int(attempt, f"claims[{index}][1]", minimum=1, maximum=INT32_MAX))
    return ids, attempts


async def _refuse_transition(
    conn: AsyncConnection[Any], execution_id: UUID, action: str, fence: FenceInput
) -> NoReturn:
    """Raise why a conditional transition matched no row: missing, in another status, or
    (for a worker's call) no longer held by that worker in that attempt."""
    cursor = await conn.execute(SELECT_EXECUTION_STATUS, [execution_id])
    row = await cursor.fetchone()
    if row is None:
        raise NotFoundError(f"execution {execution_id} not found")
    status, worker_id, attempt = row
    claimed = fence.worker_id is not None or fence.attempt is not None
    if claimed and (
        status != "running"
        or (fence.worker_id is not None and worker_id != fence.worker_id)
        or (fence.attempt is not None and attempt != fence.attempt)
    ):
        holder = f"attempt {attempt} of worker {worker_id}" if status == "running" else status
        raise ConflictError(
            f"attempt: cannot {action} execution {execution_id}: the claim of worker "
            f"{fence.worker_id or worker_id} (attempt {fence.attempt or attempt}) was taken "
            f"away; it is now {holder}",
            field="attempt",
        )
    raise ConflictError(
        f"status: cannot {action} execution {execution_id}: it is {status}", field="status"
    )
