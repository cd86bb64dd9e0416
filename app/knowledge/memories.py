"""Long-term memory: remember (reinforcing instead of duplicating), recall by a weighted
score, and the rest of a memory's life (update, forget, expire, list).

SQL constants first, then the functions in the order of the public API. Every function takes
the caller's connection and never commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from app.database.errors import InvalidInputError, NotFoundError, database_errors
from app.database.pagination import Page, check_limit, encode_cursor, newest_first_start, page_of
from app.database.rows import column_list, model_rows
from app.database.validation import as_uuid, check_update_fields, validated
from app.database.vectors import plan_choice_params, run_vector_search
from app.knowledge.models import (
    DEFAULT_HALF_LIFE,
    DEFAULT_WEIGHTS,
    MEMORY_KINDS,
    MEMORY_UPDATE_FIELDS,
    Memory,
    MemoryCreate,
    MemoryFilter,
    MemoryHit,
    MemoryUpdate,
    RecallInput,
    RecallWeights,
)
from app.knowledge.search import candidates_for, hit_rows

# SQL --------------------------------------------------------------------------------------

MEMORY_COLUMNS = column_list(
    Memory,
    "id, owner_id, chat_id, source_message_id, kind, content, embedding, importance, "
    "times_reinforced, last_recalled_at, recall_count, expires_at, metadata, created_at, "
    "updated_at, deleted_at",
)

# What recall returns: the scored row without its embedding, and the bookkeeping as its touch
# left it (the scored values for a row it did not touch).
RECALL_COLUMNS = column_list(
    Memory,
    "id, owner_id, chat_id, source_message_id, kind, content, NULL::public.vector AS embedding, "
    "importance, times_reinforced, "
    "CASE WHEN touched.id IS NULL THEN scored.last_recalled_at "
    "ELSE touched.last_recalled_at END AS last_recalled_at, "
    "CASE WHEN touched.id IS NULL THEN scored.recall_count "
    "ELSE touched.recall_count END AS recall_count, "
    "expires_at, metadata, created_at, "
    "CASE WHEN touched.id IS NULL THEN scored.updated_at "
    "ELSE touched.updated_at END AS updated_at, "
    "deleted_at",
)
# The same for a recall that touches nothing (the scored row as it is).
UNTOUCHED_RECALL_COLUMNS = column_list(
    Memory,
    "id, owner_id, chat_id, source_message_id, kind, content, NULL::public.vector AS embedding, "
    "importance, times_reinforced, last_recalled_at, recall_count, expires_at, metadata, "
    "created_at, updated_at, deleted_at",
)

# The memories a recall may return: the owner's, live, not expired, of the kinds and chat
# asked for (NULL: any).
RECALLABLE = """
owner_id = %(owner_id)s
  AND deleted_at IS NULL
  AND (expires_at IS NULL OR expires_at > now())
  AND (%(kinds)s::varchar[] IS NULL OR kind = ANY(%(kinds)s::varchar[]))
  AND (%(chat_id)s::uuid IS NULL OR chat_id = %(chat_id)s::uuid)
"""

SCORED_COLUMNS = """
id, owner_id, chat_id, source_message_id, kind, content, importance, times_reinforced,
last_recalled_at, recall_count, expires_at, metadata, created_at, updated_at, deleted_at,
1 - (embedding <=> %(embedding)s) AS similarity,
%(similarity_weight)s * (1 - (embedding <=> %(embedding)s))
    + %(importance_weight)s * importance
    + %(recency_weight)s * power(0.5::float8, LEAST(GREATEST(
          extract(epoch FROM now() - COALESCE(last_recalled_at, created_at))::float8
              / %(half_life)s, 0), 1000)) AS score
"""

# How many memories a search may rank exactly (app.database.vectors, "plan choice"): the
# larger of exact_min_rows and sqrt(candidates * N), N the HNSW index's row count.
MEMORY_THRESHOLD = """threshold AS (
    SELECT GREATEST(%(exact_min_rows)s, %(exact_scale)s
                    * pg_catalog.sqrt(%(candidates)s * GREATEST(reltuples, 0)))::bigint AS rows
    FROM pg_catalog.pg_class
    WHERE oid = 'knowledge.idx_memories_embedding'::pg_catalog.regclass
)"""

# Recall in one statement. `owned` counts the recallable memories through
# idx_memories_owner_id_kind_chat_id (index-only, up to the threshold + 1); a small set is
# scored whole (`exact`: the exact top `limit` by score), a large one through its
# `candidates` nearest on idx_memories_embedding (`hnsw`); only one of the two runs. The
# score is the weighted sum of similarity, importance and recency, 0.5 ^ (age / half_life)
# with age since the last recall, else since creation (the exponent kept from 0, for a
# memory newer than this transaction, to 1,000, where float8 would underflow: 0.5 ^ 1000 is
# 1e-301, nothing next to the other terms). `touched` stamps the returned memories; it locks
# them in id order first, so that two recalls sharing memories cannot deadlock, and counts
# from the latest version of each row. Without touch, the statement is READ_MEMORIES: no
# data-modifying CTE, so that it runs in a read-only transaction (a replica's).
SCORE_MEMORIES = (
    "WITH "
    + MEMORY_THRESHOLD
    + """, owned AS (
    SELECT count(*) <= (SELECT rows FROM threshold) AS is_small
    FROM (
        SELECT
        FROM knowledge.memories
        WHERE """
    + RECALLABLE
    + """
        LIMIT (SELECT rows FROM threshold) + 1
    ) AS capped
), exact AS MATERIALIZED (
    SELECT """
    + SCORED_COLUMNS
    + """
    FROM knowledge.memories
    WHERE """
    + RECALLABLE
    + """
      AND (SELECT is_small FROM owned)
), hnsw AS (
    SELECT """
    + SCORED_COLUMNS
    + """
    FROM knowledge.memories
    WHERE """
    + RECALLABLE
    + """
      AND NOT (SELECT is_small FROM owned)
    ORDER BY embedding <=> %(embedding)s
    LIMIT %(candidates)s
), scored AS (
    SELECT *
    FROM (
        SELECT * FROM exact
        UNION ALL
        SELECT * FROM hnsw
    ) AS candidates
    ORDER BY score DESC, similarity DESC, id
    LIMIT %(limit)s
)"""
)
RECALL_MEMORIES = (
    SCORE_MEMORIES
    + """, touched AS (
    UPDATE knowledge.memories AS memory
    SET last_recalled_at = now(),
        recall_count = memory.recall_count + 1
    FROM (
        SELECT id
        FROM knowledge.memories
        WHERE id IN (SELECT id FROM scored)
          AND %(touch)s
        ORDER BY id
        FOR NO KEY UPDATE
    ) AS target
    WHERE memory.id = target.id
    RETURNING memory.id, memory.last_recalled_at, memory.recall_count, memory.updated_at
)
SELECT """
    + RECALL_COLUMNS
    + """,
       similarity, score
FROM scored
LEFT JOIN touched USING (id)
ORDER BY score DESC, similarity DESC, id
"""
)
READ_MEMORIES = (
    SCORE_MEMORIES
    + "\nSELECT "
    + UNTOUCHED_RECALL_COLUMNS
    + """,
       similarity, score
FROM scored
ORDER BY score DESC, similarity DESC, id
"""
)

# The memories a new one may reinforce: the owner's, of its kind, live, not expired.
REINFORCEABLE = """
owner_id = %(owner_id)s
  AND kind = %(kind)s
  AND deleted_at IS NULL
  AND (expires_at IS NULL OR expires_at > now())
"""

# remember, first: one remember at a time per owner and kind, to the end of the transaction
# (a transaction-scoped advisory lock; remember runs in a transaction of its own, or in a
# savepoint of the caller's, whose end releases nothing: the lock is held to the commit).
# The next one waits here, and its statement, which starts after the wait, sees what the
# first committed: concurrent remembers of one fact leave one row.
LOCK_OWNER_KIND = """
SELECT pg_catalog.pg_advisory_xact_lock(
    pg_catalog.hashtextextended('knowledge.remember:' || %(owner_id)s::text || ':' || %(kind)s, 0)
)
"""

# Then, in one statement: the nearest reinforceable memory (exactly among a small set, on
# idx_memories_embedding for a large one, as recall chooses), reinforced when it is within
# merge_threshold (content and embedding replaced, importance the higher one, metadata
# merged, the later expiry, NULL counting as never), else a new memory. A memory forgotten
# meanwhile is not reinforced, and then nothing is inserted either: the caller gets
# NotFoundError and may try again.
REMEMBER_MEMORY = (
    "WITH "
    + MEMORY_THRESHOLD
    + """, owned AS (
    SELECT count(*) <= (SELECT rows FROM threshold) AS is_small
    FROM (
        SELECT
        FROM knowledge.memories
        WHERE """
    + REINFORCEABLE
    + """
        LIMIT (SELECT rows FROM threshold) + 1
    ) AS capped
), exact AS MATERIALIZED (
    SELECT id, embedding <=> %(embedding)s AS distance
    FROM knowledge.memories
    WHERE """
    + REINFORCEABLE
    + """
      AND (SELECT is_small FROM owned)
), hnsw AS (
    SELECT id, embedding <=> %(embedding)s AS distance
    FROM knowledge.memories
    WHERE """
    + REINFORCEABLE
    + """
      AND NOT (SELECT is_small FROM owned)
    ORDER BY embedding <=> %(embedding)s
    LIMIT 1
), nearest AS (
    SELECT id AS nearest_id
    FROM (
        (SELECT id, distance FROM exact ORDER BY distance LIMIT 1)
        UNION ALL
        SELECT id, distance FROM hnsw
    ) AS found
    WHERE distance <= 1 - %(merge_threshold)s
), reinforced AS (
    UPDATE knowledge.memories AS memory
    SET content = %(content)s,
        embedding = %(embedding)s,
        importance = GREATEST(memory.importance, %(importance)s::real),
        times_reinforced = memory.times_reinforced + 1,
        metadata = memory.metadata || %(metadata)s,
        expires_at = CASE WHEN memory.expires_at IS NULL OR %(expires_at)s::timestamptz IS NULL
                          THEN NULL
                          ELSE GREATEST(memory.expires_at, %(expires_at)s::timestamptz) END,
        chat_id = COALESCE(%(chat_id)s::uuid, memory.chat_id),
        source_message_id = COALESCE(%(source_message_id)s::uuid, memory.source_message_id)
    FROM nearest
    WHERE memory.id = nearest.nearest_id
      AND memory.deleted_at IS NULL
    RETURNING """
    + MEMORY_COLUMNS
    + """
), inserted AS (
    INSERT INTO knowledge.memories
        (owner_id, chat_id, source_message_id, kind, content, embedding, importance,
         metadata, expires_at)
    SELECT %(owner_id)s::uuid, %(chat_id)s::uuid, %(source_message_id)s::uuid,
           %(kind)s::varchar, %(content)s::text, %(embedding)s, %(importance)s::real,
           %(metadata)s::jsonb, %(expires_at)s::timestamptz
    WHERE NOT EXISTS (SELECT FROM nearest)
    RETURNING """
    + MEMORY_COLUMNS
    + """
)
SELECT """
    + MEMORY_COLUMNS
    + """
FROM reinforced
UNION ALL
SELECT """
    + MEMORY_COLUMNS
    + """
FROM inserted
"""
)

SELECT_MEMORY = (
    "SELECT "
    + MEMORY_COLUMNS
    + """
FROM knowledge.memories
WHERE id = %s
  AND deleted_at IS NULL
  AND (expires_at IS NULL OR expires_at > now())
"""
)

# One statement for any combination of fields: a flag per field says whether to set it.
UPDATE_MEMORY = (
    """
UPDATE knowledge.memories
SET content = CASE WHEN %(set_content)s THEN %(content)s ELSE content END,
    embedding = CASE WHEN %(set_embedding)s THEN %(embedding)s ELSE embedding END,
    kind = CASE WHEN %(set_kind)s THEN %(kind)s::varchar ELSE kind END,
    importance = CASE WHEN %(set_importance)s THEN %(importance)s::real ELSE importance END,
    expires_at = CASE WHEN %(set_expires_at)s THEN %(expires_at)s ELSE expires_at END,
    metadata = CASE WHEN %(set_metadata)s THEN %(metadata)s ELSE metadata END
WHERE id = %(memory_id)s
  AND deleted_at IS NULL
  AND (expires_at IS NULL OR expires_at > now())
RETURNING """
    + MEMORY_COLUMNS
)

SOFT_DELETE_MEMORY = """
UPDATE knowledge.memories
SET deleted_at = now()
WHERE id = %s
  AND deleted_at IS NULL
RETURNING id
"""

# Keyset page, newest first, on idx_memories_owner_id_created_at_id (scanned backwards).
SELECT_MEMORIES_PAGE = (
    "SELECT "
    + MEMORY_COLUMNS
    + """
FROM knowledge.memories
WHERE owner_id = %(owner_id)s
  AND deleted_at IS NULL
  AND (expires_at IS NULL OR expires_at > now())
  AND (%(kinds)s::varchar[] IS NULL OR kind = ANY(%(kinds)s::varchar[]))
  AND (created_at, id) < (%(before_created_at)s, %(before_id)s)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
"""
)

# On idx_memories_expires_at. Forgotten memories that expired go too: nobody sees them again.
DELETE_EXPIRED_MEMORIES = """
DELETE FROM knowledge.memories
WHERE expires_at <= now()
"""

MEMORY_ROW = model_rows(Memory)
MEMORY_HIT_ROWS = hit_rows(Memory, MemoryHit, "memory")

REMEMBER_EF_SEARCH = 40
"""HNSW candidate list of remember's search for the one nearest memory (pgvector's default):
a memory to reinforce is a near-duplicate, which any walk of the index finds first."""


# Query functions --------------------------------------------------------------------------


@database_errors
async def remember(
    conn: AsyncConnection[Any],
    *,
    owner_id: UUID,
    content: str,
    embedding: Any,
    kind: str = "fact",
    importance: float = 0.5,
    chat_id: UUID | None = None,
    source_message_id: UUID | None = None,
    metadata: Mapping[str, Any] | None = None,
    expires_at: datetime | None = None,
    merge_threshold: float = 0.92,
) -> Memory:
    """Remember `content` for the owner, or reinforce the live memory of the same kind it
    repeats. It repeats one at cosine similarity ≥ `merge_threshold`: that memory's content
    and embedding are replaced, its importance raised to the higher of both,
    `times_reinforced` + 1. Concurrent remembers of one fact leave one row (they run one
    after the other, per owner and kind)."""
    data = validated(
        MemoryCreate,
        owner_id=owner_id,
        content=content,
        embedding=embedding,
        kind=kind,
        importance=importance,
        chat_id=chat_id,
        source_message_id=source_message_id,
        metadata={} if metadata is None else metadata,
        expires_at=expires_at,
        merge_threshold=merge_threshold,
    )
    params = {
        "owner_id": data.owner_id,
        "kind": data.kind,
        "content": data.content,
        "embedding": data.embedding,
        "importance": data.importance,
        "chat_id": data.chat_id,
        "source_message_id": data.source_message_id,
        "metadata": Jsonb(data.metadata),
        "expires_at": data.expires_at,
        "merge_threshold": data.merge_threshold,
        "candidates": 1,
        **plan_choice_params(),
    }
    cursor = conn.cursor(row_factory=MEMORY_ROW)
    async with conn.transaction():
        await conn.execute(LOCK_OWNER_KIND, {"owner_id": data.owner_id, "kind": data.kind})
        await run_vector_search(conn, cursor, REMEMBER_MEMORY, params, ef_search=REMEMBER_EF_SEARCH)
        memory = await cursor.fetchone()
    if memory is None:
        raise NotFoundError(
            "the memory to reinforce was forgotten meanwhile; remember again", field="content"
        )
    return memory


@database_errors
async def recall(
    conn: AsyncConnection[Any],
    *,
    owner_id: UUID,
    embedding: Any,
    limit: int = 10,
    kinds: Sequence[str] | None = None,
    chat_id: UUID | None = None,
    weights: RecallWeights = DEFAULT_WEIGHTS,
    half_life: timedelta = DEFAULT_HALF_LIFE,
    touch: bool = True,
) -> list[MemoryHit]:
    """The owner's live memories that best fit `embedding`, best first by their score. The
    score is `weights.similarity * similarity + weights.importance * importance +
    weights.recency * 0.5 ^ (age / half_life)` (age since the last recall, else since
    creation). `touch` stamps the returned memories' `last_recalled_at` and `recall_count`
    in the same statement; without it, recall only reads (it runs in `db.read_session()`,
    on a replica). Expired and forgotten memories never appear."""
    data = validated(
        RecallInput,
        owner_id=owner_id,
        embedding=embedding,
        limit=limit,
        kinds=None if kinds is None else _kinds(kinds),
        chat_id=chat_id,
        weights=weights,
        half_life=half_life,
        touch=touch,
    )
    candidates = candidates_for(data.limit)
    params = {
        "owner_id": data.owner_id,
        "embedding": data.embedding,
        "kinds": data.kinds,
        "chat_id": data.chat_id,
        "similarity_weight": data.weights.similarity,
        "importance_weight": data.weights.importance,
        "recency_weight": data.weights.recency,
        "half_life": data.half_life.total_seconds(),
        "candidates": candidates,
        "limit": data.limit,
        "touch": data.touch,
        **plan_choice_params(),
    }
    cursor = conn.cursor(row_factory=MEMORY_HIT_ROWS)
    statement = RECALL_MEMORIES if data.touch else READ_MEMORIES
    await run_vector_search(conn, cursor, statement, params, ef_search=candidates)
    return await cursor.fetchall()


@database_errors
async def get_memory(conn: AsyncConnection[Any], memory_id: UUID) -> Memory | None:
    """The memory, or None if it does not exist, is forgotten or has expired."""
    async with conn.cursor(row_factory=MEMORY_ROW) as cursor:
        await cursor.execute(SELECT_MEMORY, [as_uuid(memory_id, "memory_id")], binary=True)
        return await cursor.fetchone()


@database_errors
async def update_memory(
    conn: AsyncConnection[Any], memory_id: UUID, updates: Mapping[str, Any]
) -> Memory:
    """Set the given fields of a live memory; None clears expires_at, metadata is replaced
    whole. The fields are MEMORY_UPDATE_FIELDS: content, embedding, kind, importance,
    expires_at, metadata."""
    check_update_fields(updates, MEMORY_UPDATE_FIELDS, "update_memory")
    data = validated(MemoryUpdate, **updates)
    memory_id = as_uuid(memory_id, "memory_id")
    if not updates:
        memory = await get_memory(conn, memory_id)
    else:
        params = {
            "memory_id": memory_id,
            **{f"set_{name}": name in updates for name in MEMORY_UPDATE_FIELDS},
            "content": data.content,
            "embedding": data.embedding,
            "kind": data.kind,
            "importance": data.importance,
            "expires_at": data.expires_at,
            "metadata": None if data.metadata is None else Jsonb(data.metadata),
        }
        async with conn.cursor(row_factory=MEMORY_ROW) as cursor:
            await cursor.execute(UPDATE_MEMORY, params, binary=True)
            memory = await cursor.fetchone()
    if memory is None:
        raise NotFoundError(f"memory {memory_id} not found", field="memory_id")
    return memory


@database_errors
async def forget(conn: AsyncConnection[Any], memory_id: UUID) -> None:
    """Forget the memory (a soft delete): it is never recalled, listed or reinforced again."""
    cursor = await conn.execute(SOFT_DELETE_MEMORY, [as_uuid(memory_id, "memory_id")])
    if await cursor.fetchone() is None:
        raise NotFoundError(f"memory {memory_id} not found", field="memory_id")


@database_errors
async def list_memories(
    conn: AsyncConnection[Any],
    *,
    owner_id: UUID,
    kinds: Sequence[str] | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Memory]:
    """The owner's live memories, newest first (`kinds`: only those; None: all). Pass the
    same filters with `next_cursor` to get the next page."""
    data = validated(
        MemoryFilter, owner_id=owner_id, kinds=None if kinds is None else _kinds(kinds)
    )
    check_limit(limit)
    kinds_key = "*" if data.kinds is None else ",".join(sorted(data.kinds))
    scope = f"memories:{data.owner_id}:{kinds_key}"
    before_created_at, before_id = newest_first_start(cursor, scope)
    params = {
        "owner_id": data.owner_id,
        "kinds": data.kinds,
        "before_created_at": before_created_at,
        "before_id": before_id,
        "limit": limit + 1,
    }
    async with conn.cursor(row_factory=MEMORY_ROW) as db_cursor:
        await db_cursor.execute(SELECT_MEMORIES_PAGE, params, binary=True)
        rows = await db_cursor.fetchall()
    return page_of(
        rows, limit, lambda memory: encode_cursor(scope, memory.created_at.isoformat(), memory.id)
    )


@database_errors
async def purge_expired_memories(conn: AsyncConnection[Any]) -> int:
    """Delete every memory whose `expires_at` has passed (under row-level security: the
    owner's); return how many."""
    cursor = await conn.execute(DELETE_EXPIRED_MEMORIES)
    return cursor.rowcount


# Helpers ----------------------------------------------------------------------------------


def _kinds(kinds: Any) -> Any:
    """A list of kinds as given (validated by the input model), refusing a lone string,
    which would otherwise be read as a sequence of letters."""
    if isinstance(kinds, str | bytes) or not isinstance(kinds, Sequence):
        raise InvalidInputError(
            f"kinds: must be a list of kinds ({', '.join(MEMORY_KINDS)}), "
            f"not {type(kinds).__name__}",
            field="kinds",
        )
    return list(kinds)
