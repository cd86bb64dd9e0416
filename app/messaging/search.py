"""Semantic and hybrid search over messages (pgvector HNSW + PostgreSQL full text)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import RowMaker

from app.database.errors import database_errors
from app.database.rows import StatementColumnsError, column_names, row_maker
from app.database.validation import as_int, as_uuid, validated
from app.database.vectors import (
    RESTORE_SEARCH_SETTINGS,
    SAVE_AND_SET_SEARCH_SETTINGS,
    SET_SEARCH_SETTINGS,
    as_embedding,
    plan_choice_params,
    run_vector_search,
)
from app.messaging.models import (
    MAX_EF_SEARCH,
    MAX_SEARCH_LIMIT,
    Message,
    MessageHit,
    SearchInput,
)
from app.messaging.queries import MESSAGE_COLUMNS

DEFAULT_EF_SEARCH = 200
"""HNSW candidate list size for searches unless the caller asks for another (pgvector: 40).

Picked from `./scripts/bench search` (shared 2-core VM, 1536-d clustered vectors, limit 10):
one owner of 20,000 messages reached recall@10 0.962-0.973 at 40 (two runs), 0.995-1.000 at
100 and 1.000 at 200;
but a search filtered to an owner holding 10% of 100,000 messages (`--owners`, the HNSW plan)
reached only 0.798 at 40 and 0.940 at 100, and 1.000 at 200 (p50 2.5 ms at 100, 3.1 ms at
200; 7.6 ms at 400 buys nothing). 200 is the smallest value that stays above 0.95 in both.
Smaller owners do not depend on it: their rows are ranked exactly (see _NEAREST)."""

RRF_K = 60
"""Reciprocal rank fusion constant (Cormack et al. 2009): damps the weight of the top ranks."""

_AUTO_PLAN = plan_choice_params()  # the plan chosen by the filter's size (app.database.vectors)

__all__ = [  # the search settings live with the vectors; named here as before
    "RESTORE_SEARCH_SETTINGS",
    "SAVE_AND_SET_SEARCH_SETTINGS",
    "SET_SEARCH_SETTINGS",
    "hybrid_search_messages",
    "search_messages",
]

# A hit carries its message without the embedding (6 KB a row that the caller did not ask for).
HIT_COLUMNS = MESSAGE_COLUMNS.replace("embedding", "NULL::public.vector AS embedding")

# The owner's (or the chat's) live, embedded messages: the filter every vector search here
# ranks. A message of a deleted chat is skipped whatever its own flag says: a primary-key
# probe per row, written as a scalar subquery so that it stays a filter on the index scan (an
# EXISTS would be planned as a join, which leads the planner away from the HNSW order).
_FILTER = """owner_id = %(owner_id)s
      AND (chat_id = %(chat_id)s OR %(chat_id)s::uuid IS NULL)
      AND embedding IS NOT NULL
      AND deleted_at IS NULL
      AND (SELECT chats.deleted_at IS NULL
           FROM messaging.chats
           WHERE chats.id = messages.chat_id)"""

# The `candidates` nearest messages, as (id, distance), by the plan that suits the filter's
# size (app.database.vectors: "plan choice"): when the owner (or the chat) has at most
# `threshold` such messages, all of them ranked exactly (`exact`, read through
# idx_messages_owner_id_chat_id); otherwise the HNSW index idx_messages_embedding (`hnsw`, a
# partial index: the deleted_at IS NULL predicate must stay for the planner to use it) with
# an iterative scan that goes on until `candidates` rows pass. Only the chosen branch runs.
_NEAREST = (
    """threshold AS (
    SELECT GREATEST(%(exact_min_rows)s, %(exact_scale)s
                    * pg_catalog.sqrt(%(candidates)s * GREATEST(reltuples, 0)))::bigint AS rows
    FROM pg_catalog.pg_class
    WHERE oid = 'messaging.idx_messages_embedding'::pg_catalog.regclass
), owned AS (
    SELECT count(*) <= (SELECT rows FROM threshold) AS is_small
    FROM (
        SELECT
        FROM messaging.messages
        WHERE owner_id = %(owner_id)s
          AND (chat_id = %(chat_id)s OR %(chat_id)s::uuid IS NULL)
          AND embedding IS NOT NULL
          AND deleted_at IS NULL
        LIMIT (SELECT rows FROM threshold) + 1
    ) AS capped
), exact AS MATERIALIZED (
    SELECT id, embedding <=> %(embedding)s AS distance
    FROM messaging.messages
    WHERE """
    + _FILTER
    + """
      AND (SELECT is_small FROM owned)
), hnsw AS (
    SELECT id, embedding <=> %(embedding)s AS distance
    FROM messaging.messages
    WHERE """
    + _FILTER
    + """
      AND NOT (SELECT is_small FROM owned)
    ORDER BY embedding <=> %(embedding)s
    LIMIT %(candidates)s
), nearest AS (
    (SELECT id, distance FROM exact ORDER BY distance LIMIT %(candidates)s)
    UNION ALL
    SELECT id, distance FROM hnsw
)"""
)

# The nearest live messages of one owner (or chat), best first.
SEARCH_MESSAGES = (
    "WITH "
    + _NEAREST
    + """
SELECT """
    + HIT_COLUMNS
    + """,
       1 - nearest.distance AS similarity
FROM nearest
JOIN messaging.messages USING (id)
ORDER BY nearest.distance, id
"""
)

# Reciprocal rank fusion in one statement: the `candidates` nearest by embedding (as above)
# and the `candidates` best by full text (idx_messages_content_tsv, websearch syntax, ranked
# by ts_rank_cd), joined on id; score = Σ 1 / (k + rank).
HYBRID_SEARCH_MESSAGES = (
    "WITH "
    + _NEAREST
    + """, semantic AS (
    SELECT id, distance, row_number() OVER (ORDER BY distance, id) AS rank
    FROM nearest
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
          AND (SELECT chats.deleted_at IS NULL
               FROM messaging.chats
               WHERE chats.id = messages.chat_id)
        ORDER BY relevance DESC
        LIMIT %(candidates)s
    ) AS matching
), fused AS (
    SELECT COALESCE(semantic.id, keyword.id) AS id,
           1 - semantic.distance AS similarity,
           COALESCE(1.0 / (%(k)s + semantic.rank), 0)
               + COALESCE(1.0 / (%(k)s + keyword.rank), 0) AS score
    FROM semantic
    FULL JOIN keyword ON keyword.id = semantic.id
)
SELECT """
    + HIT_COLUMNS
    + """,
       similarity, score
FROM fused
JOIN messaging.messages USING (id)
ORDER BY score DESC, id
LIMIT %(limit)s
"""
)


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
    """The owner's live messages nearest to `embedding` (cosine), best first. `limit` of
    them, or all there are when fewer (of one chat with `chat_id`), however small a share of
    the table they are."""
    # Checked field by field, without a model around them (SearchInput's rules): a search
    # runs for every user turn, and a model costs more than the checks.
    count = as_int(limit, "limit", minimum=1, maximum=MAX_SEARCH_LIMIT)
    params = {
        "owner_id": as_uuid(owner_id, "owner_id"),
        "embedding": as_embedding(embedding, "embedding"),
        "chat_id": None if chat_id is None else as_uuid(chat_id, "chat_id"),
        "candidates": count,
        **_AUTO_PLAN,
    }
    ef = as_int(ef_search, "ef_search", minimum=1, maximum=MAX_EF_SEARCH)
    return await _search(conn, SEARCH_MESSAGES, params, ef_search=max(ef, count))


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
    """The owner's live messages ranked by meaning and by words together, best first. The
    order is the reciprocal rank fusion of the vector and the full-text ranking."""
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
        **_AUTO_PLAN,
    }
    return await _search(
        conn, HYBRID_SEARCH_MESSAGES, params, ef_search=max(data.ef_search, candidates)
    )


async def _search(
    conn: AsyncConnection[Any], query: Any, params: dict[str, Any], *, ef_search: int
) -> list[MessageHit]:
    cursor = conn.cursor(row_factory=_hit_rows)
    await run_vector_search(conn, cursor, query, params, ef_search=ef_search)
    return await cursor.fetchall()


_MESSAGE_FIELDS = len(Message.model_fields)
_HIT_EXTRAS = ("similarity", "score")  # the columns after the message's, in this order
_make_hit = row_maker(MessageHit, ("message", *_HIT_EXTRAS))
_hit_makers: dict[tuple[str, ...], RowMaker[MessageHit]] = {}


def _hit_rows(cursor: Any) -> RowMaker[MessageHit]:
    """Row factory for search statements: Message columns, then similarity (and score). The
    maker for a statement's columns is built once and kept."""
    names = column_names(cursor)
    maker = _hit_makers.get(names)
    if maker is None:
        maker = _hit_makers[names] = _hit_maker(names)
    return maker


def _hit_maker(names: tuple[str, ...]) -> RowMaker[MessageHit]:
    make_message = row_maker(Message, names[:_MESSAGE_FIELDS])
    extras = names[_MESSAGE_FIELDS:]
    if extras != _HIT_EXTRAS[: len(extras)]:
        raise StatementColumnsError(
            f"a search statement's columns after the message's are {list(extras)}, "
            f"not a prefix of {list(_HIT_EXTRAS)}"
        )
    missing = (None,) * (len(_HIT_EXTRAS) - len(extras))  # search_messages has no score

    def make_row(values: Sequence[Any]) -> MessageHit:
        return _make_hit(
            (make_message(values[:_MESSAGE_FIELDS]), *values[_MESSAGE_FIELDS:], *missing)
        )

    return make_row
