"""Semantic and hybrid search over messages (pgvector HNSW + PostgreSQL full text)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from app.database.errors import database_errors
from app.database.validation import validated
from app.messaging.models import MAX_EF_SEARCH, Message, MessageHit, SearchInput

DEFAULT_EF_SEARCH = 100
"""HNSW candidate list size for searches unless the caller asks for another (pgvector: 40)."""

RRF_K = 60
"""Reciprocal rank fusion constant (Cormack et al. 2009): damps the weight of the top ranks."""

# Local to the transaction (is_local = true), so a pooled connection never carries them
# into another request. strict_order: iterative index scans keep going past the first
# ef_search candidates until `limit` rows pass the owner/chat filter, and stay in exact
# distance order. force_custom_plan: "chat_id = %(chat_id)s OR %(chat_id)s IS NULL" is
# planned with the actual value, so a chat search can use the chat index instead of HNSW.
SET_SEARCH_SETTINGS = """
SELECT pg_catalog.set_config('hnsw.ef_search', %s, true),
       pg_catalog.set_config('hnsw.iterative_scan', 'strict_order', true),
       pg_catalog.set_config('plan_cache_mode', 'force_custom_plan', true)
"""

# Nearest live messages of one owner on idx_messages_embedding (a partial index: the
# deleted_at IS NULL predicate must stay for the planner to use it).
SEARCH_MESSAGES = """
SELECT id, chat_id, owner_id, role, content, NULL::public.vector AS embedding, token_count,
       metadata, created_at, updated_at, deleted_at,
       1 - (embedding <=> %(embedding)s) AS similarity
FROM messaging.messages
WHERE owner_id = %(owner_id)s
  AND (chat_id = %(chat_id)s OR %(chat_id)s::uuid IS NULL)
  AND deleted_at IS NULL
  AND embedding IS NOT NULL
ORDER BY embedding <=> %(embedding)s
LIMIT %(limit)s
"""

# Reciprocal rank fusion in one statement: the `candidates` nearest by embedding
# (idx_messages_embedding) and the `candidates` best by full text (idx_messages_content_tsv,
# websearch syntax, ranked by ts_rank_cd), joined on id; score = Σ 1 / (k + rank).
HYBRID_SEARCH_MESSAGES = """
WITH semantic AS (
    SELECT id, distance, row_number() OVER (ORDER BY distance, id) AS rank
    FROM (
        SELECT id, embedding <=> %(embedding)s AS distance
        FROM messaging.messages
        WHERE owner_id = %(owner_id)s
          AND (chat_id = %(chat_id)s OR %(chat_id)s::uuid IS NULL)
          AND deleted_at IS NULL
          AND embedding IS NOT NULL
        ORDER BY embedding <=> %(embedding)s
        LIMIT %(candidates)s
    ) AS nearest
), keyword AS (
    SELECT id, row_number() OVER (ORDER BY relevance DESC, id) AS rank
    FROM (
        SELECT id, ts_rank_cd(content_tsv, query) AS relevance
        FROM messaging.messages,
             websearch_to_tsquery('english'::regconfig, %(query)s) AS query
        WHERE owner_id = %(owner_id)s
          AND (chat_id = %(chat_id)s OR %(chat_id)s::uuid IS NULL)
          AND deleted_at IS NULL
          AND content_tsv @@ query
        ORDER BY relevance DESC
        LIMIT %(candidates)s
    ) AS matching
)
SELECT m.id, m.chat_id, m.owner_id, m.role, m.content, NULL::public.vector AS embedding,
       m.token_count, m.metadata, m.created_at, m.updated_at, m.deleted_at,
       1 - semantic.distance AS similarity,
       COALESCE(1.0 / (%(k)s + semantic.rank), 0)
           + COALESCE(1.0 / (%(k)s + keyword.rank), 0) AS score
FROM semantic
FULL JOIN keyword ON keyword.id = semantic.id
JOIN messaging.messages AS m ON m.id = COALESCE(semantic.id, keyword.id)
ORDER BY score DESC, m.id
LIMIT %(limit)s
"""


@database_errors
async def search_messages(
    conn: AsyncConnection[Any],
    *,
    owner_id: UUID,
    embedding: Any,
    limit: int = 10,
    chat_id: UUID | None = None,
    ef_search: int = DEFAULT_EF_SEARCH,
) -> list[MessageHit]:
    """The owner's live messages nearest to `embedding` (cosine), best first."""
    data = validated(
        SearchInput,
        owner_id=owner_id,
        embedding=embedding,
        chat_id=chat_id,
        limit=limit,
        ef_search=ef_search,
    )
    params = {
        "owner_id": data.owner_id,
        "embedding": data.embedding,
        "chat_id": data.chat_id,
        "limit": data.limit,
    }
    return await _search(conn, SEARCH_MESSAGES, params, ef_search=max(data.ef_search, data.limit))


@database_errors
async def hybrid_search_messages(
    conn: AsyncConnection[Any],
    *,
    owner_id: UUID,
    embedding: Any,
    query: str,
    limit: int = 10,
    chat_id: UUID | None = None,
    ef_search: int = DEFAULT_EF_SEARCH,
) -> list[MessageHit]:
    """The owner's live messages ranked by meaning and by words together (reciprocal rank
    fusion of the vector and the full-text ranking), best first."""
    data = validated(
        SearchInput,
        owner_id=owner_id,
        embedding=embedding,
        query=query,
        chat_id=chat_id,
        limit=limit,
        ef_search=ef_search,
    )
    candidates = min(max(2 * data.limit, 40), MAX_EF_SEARCH)
    params = {
        "owner_id": data.owner_id,
        "embedding": data.embedding,
        "query": data.query,
        "chat_id": data.chat_id,
        "candidates": candidates,
        "k": RRF_K,
        "limit": data.limit,
    }
    return await _search(
        conn, HYBRID_SEARCH_MESSAGES, params, ef_search=max(data.ef_search, candidates)
    )


async def _search(
    conn: AsyncConnection[Any], query: Any, params: dict[str, Any], *, ef_search: int
) -> list[MessageHit]:
    # ef_search is never below the number of rows the statement asks the index for. The
    # settings and the search go out in one pipeline, with no Sync between them: the extended
    # protocol runs everything up to a Sync as one implicit transaction, so the local settings
    # apply to this search and end with it (inside a caller's transaction: with that). No
    # BEGIN and COMMIT of our own: one round trip, two statements.
    cursor = conn.cursor(row_factory=_hit_rows)
    async with conn.pipeline():
        await conn.execute(SET_SEARCH_SETTINGS, [str(ef_search)])
        await cursor.execute(query, params, binary=True)
    return await cursor.fetchall()


def _hit_rows(cursor: Any) -> Any:
    """Row factory for search statements: Message columns, then similarity (and score)."""
    names = [column.name for column in cursor.description or ()]
    message_names = names[: len(Message.model_fields)]
    construct = Message.model_construct

    def make_row(values: Sequence[Any]) -> MessageHit:
        message = construct(**dict(zip(message_names, values, strict=False)))
        extra = dict(zip(names[len(message_names) :], values[len(message_names) :], strict=True))
        return MessageHit.model_construct(message=message, **extra)

    return make_row
