"""Embeddings: the one dimension constant, input validation, and the binary adapters.

Vectors travel in pgvector's binary format both ways: pgvector's dumpers send `list[float]`
and numpy arrays, and our loader turns a column back into `list[float]`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal
from uuid import UUID

import numpy as np
from pgvector import Vector
from pgvector.psycopg.vector import VectorBinaryLoader, VectorLoader, register_vector_info
from psycopg import AsyncConnection, AsyncCursor
from psycopg.abc import Buffer
from psycopg.types import TypeInfo
from pydantic import PlainSerializer, PlainValidator

from app.database.errors import InvalidInputError
from app.database.transactions import in_transaction
from app.database.validation import as_sequence, as_uuid

EMBEDDING_DIMENSIONS = 1536
"""Dimension of every embedding column (OpenAI text-embedding-3-small)."""


# What a vector may be made of: real numbers. numpy would turn strings ("1.5"), bools, complex
# numbers (dropping the imaginary part), datetimes and objects into floats without a word.
_NUMBER_TYPES = frozenset({float, int, np.float16, np.float32, np.float64, np.int32, np.int64})
_NUMBER_KINDS = frozenset("fiu")


def _embedding(value: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
    if isinstance(value, Vector):
        value = value.to_numpy()
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _NUMBER_KINDS:
            raise ValueError(f"must hold real numbers, not a numpy array of {value.dtype}")
    elif isinstance(value, list | tuple):
        kinds = set(map(type, value))
        if not kinds <= _NUMBER_TYPES:
            odd = sorted(kind.__name__ for kind in kinds - _NUMBER_TYPES)
            raise ValueError(f"must contain only real numbers, not {', '.join(odd)}")
    else:
        raise ValueError(
            f"must be a list of floats or a 1-d numpy array, not {type(value).__name__}"
        )
    # A value beyond float32's range becomes inf (refused below), not a RuntimeWarning.
    with np.errstate(over="ignore"):
        array = np.asarray(value, dtype=np.float32)
    if array.ndim != 1 or array.shape[0] != EMBEDDING_DIMENSIONS:
        raise ValueError(f"must have {EMBEDDING_DIMENSIONS} dimensions, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("must not contain NaN or infinity (or values beyond float32 range)")
    if not array.any():
        raise ValueError("must not be the zero vector (its cosine distance is undefined)")
    return array


def as_embedding(value: Any, field: str) -> np.ndarray[Any, np.dtype[np.float32]]:
    """`value` as an embedding (see `Embedding`), or InvalidInputError naming `field`: the
    check of `Embedding` without building a model around it, for a hot path that takes one
    vector (a search)."""
    try:
        return _embedding(value)
    except ValueError as error:
        raise InvalidInputError(f"{field}: {error}", field=field) from None


def embedding_pairs(
    items: Any, field: str, id_name: str
) -> tuple[list[UUID], list[np.ndarray[Any, np.dtype[np.float32]]]]:
    """The ids and vectors of a batch of embeddings to store (`id → vector`, a mapping or
    (id, vector) pairs), every one checked first: InvalidInputError naming the item and its
    part, `field[index].id_name` or `field[index].embedding`, before anything is written."""
    pairs = list(items.items()) if isinstance(items, Mapping) else as_sequence(items, field)
    ids, vectors = [], []
    for index, pair in enumerate(pairs):
        item = f"{field}[{index}]"
        if isinstance(pair, str | bytes | Mapping) or not isinstance(pair, Sequence):
            raise InvalidInputError(
                f"{item}: must be a ({id_name}, embedding) pair, not {type(pair).__name__}",
                field=item,
            )
        if len(pair) != 2:
            raise InvalidInputError(
                f"{item}: must be a ({id_name}, embedding) pair, not {len(pair)} values",
                field=item,
            )
        ids.append(as_uuid(pair[0], f"{item}.{id_name}"))
        vectors.append(as_embedding(pair[1], f"{item}.embedding"))
    return ids, vectors


Embedding = Annotated[
    np.ndarray[Any, np.dtype[np.float32]],
    PlainValidator(_embedding),
    PlainSerializer(lambda array: array.tolist()),
]
"""An embedding as input: `EMBEDDING_DIMENSIONS` finite float32 values (list or numpy array)."""


class EmbeddingTextLoader(VectorLoader):
    def load(self, data: Buffer) -> list[float] | None:  # type: ignore[override]
        vector = super().load(data)
        return vector.to_list() if vector is not None else None


class EmbeddingBinaryLoader(VectorBinaryLoader):
    def load(self, data: Buffer) -> list[float] | None:  # type: ignore[override]
        vector = super().load(data)
        return vector.to_list() if vector is not None else None


async def register_vector_types(conn: AsyncConnection[Any]) -> bool:
    """Register pgvector's dumpers and our list-returning loaders; False if no vector type."""
    info = await TypeInfo.fetch(conn, "vector")
    if info is None:  # a database not migrated yet
        return False
    register_vector_info(conn, info)
    conn.adapters.register_loader(info.oid, EmbeddingTextLoader)
    conn.adapters.register_loader(info.oid, EmbeddingBinaryLoader)
    return True


# Vector search: settings and plan choice ---------------------------------------------------
#
# A filtered HNSW search (the owner's rows, one chat's) walks the graph in distance order and
# drops every row of someone else; pgvector's iterative scan keeps walking until `limit` rows
# pass, but gives up after hnsw.max_scan_tuples rows (20,000 by default) and then returns
# fewer, without a word. An owner holding a share s of the table needs about limit / s rows
# walked: 10,000 for 0.1% and a limit of 10. So every search over an owner's rows chooses its
# plan by the size of what it filters to, in the statement itself (one round trip):
#
# - **exact** when the filter keeps at most `threshold` rows: those rows, read through a
#   b-tree on the filter's columns (partial: live, embedded rows), sorted by distance. Exact,
#   and complete whatever the rest of the table holds.
# - **HNSW** otherwise, with hnsw.max_scan_tuples raised to SEARCH_MAX_SCAN_TUPLES.
#
# threshold = max(exact_min_rows, sqrt(limit * N)), N the HNSW index's row count
# (pg_class.reltuples, kept by VACUUM and ANALYZE). Why the square root: ranking n rows
# exactly costs about n row reads; the HNSW scan reads about limit * N / n; the two meet at
# n = sqrt(limit * N), and measured per row they cost about the same (exact ~7 us a row,
# HNSW ~9 us a walked row, 1536-d, see `./scripts/bench search --owners`). Below the threshold
# exact is the cheaper plan, above it the HNSW scan walks fewer than sqrt(limit * N) rows on
# average, far inside SEARCH_MAX_SCAN_TUPLES for any table this layer will meet (1e8 rows,
# limit 200: 141,000). The count that decides stops at threshold + 1 rows of an index-only
# scan, so a large owner pays for threshold index entries, not for all of theirs.
#
# The pattern, for a table with an HNSW index `idx_t_embedding` over live rows and a b-tree
# `idx_t_owner_id` on (owner_id, ...) WHERE embedding IS NOT NULL AND deleted_at IS NULL
# (messaging.messages: app/messaging/search.py, whose shape to copy for another table;
# `candidates` is how many rows the statement wants from its vector half):
#
#   WITH threshold AS (
#       SELECT GREATEST(%(exact_min_rows)s, %(exact_scale)s
#                       * pg_catalog.sqrt(%(candidates)s * GREATEST(reltuples, 0)))::bigint AS rows
#       FROM pg_catalog.pg_class WHERE oid = 'schema.idx_t_embedding'::pg_catalog.regclass
#   ), owned AS (
#       SELECT count(*) <= (SELECT rows FROM threshold) AS is_small
#       FROM (SELECT FROM schema.t WHERE <filter> LIMIT (SELECT rows FROM threshold) + 1) AS capped
#   ), exact AS MATERIALIZED (      -- the fence: the planner cannot hand this to the HNSW index
#       SELECT id, embedding <=> %(embedding)s AS distance FROM schema.t
#       WHERE <filter> AND (SELECT is_small FROM owned)
#   ), hnsw AS (
#       SELECT id, embedding <=> %(embedding)s AS distance FROM schema.t
#       WHERE <filter> AND NOT (SELECT is_small FROM owned)
#       ORDER BY embedding <=> %(embedding)s LIMIT %(candidates)s
#   ), nearest AS (
#       (SELECT id, distance FROM exact ORDER BY distance LIMIT %(candidates)s)
#       UNION ALL
#       SELECT id, distance FROM hnsw
#   )
#   SELECT ... FROM nearest JOIN schema.t USING (id) ORDER BY nearest.distance, id
#
# where <filter> is the same everywhere (the count's may leave out checks on other tables)
# and includes `embedding IS NOT NULL AND deleted_at IS NULL`, the predicate of both partial
# indexes. The gates on is_small are one-time filters: the branch not chosen never runs.
# Execute it with `run_vector_search(..., ef_search=...)`, with `plan_choice_params()` among
# its parameters.

EXACT_SEARCH_MIN_ROWS = 1000
"""A filter keeping at most this many rows is always ranked exactly (about 7 ms for 1536-d
rows), whatever the table's size; above it, exactly up to sqrt(limit * N) rows."""

SEARCH_MAX_SCAN_TUPLES = 1_000_000
"""hnsw.max_scan_tuples for searches (pgvector: 20,000), written into SET_SEARCH_SETTINGS: the
HNSW plan is chosen only when the filter keeps more than sqrt(limit * N) rows, so it walks
fewer than that on average; this bound is the margin for an owner whose rows lie far from
the query."""


_PLAN_CHOICES: dict[str, dict[str, int | float]] = {
    "auto": {"exact_min_rows": EXACT_SEARCH_MIN_ROWS, "exact_scale": 1.0},
    "exact": {"exact_min_rows": 1 << 62, "exact_scale": 0.0},  # every filter counts as small
    "hnsw": {"exact_min_rows": 0, "exact_scale": 0.0},  # none does (unless it keeps no rows)
}


def plan_choice_params(plan: Literal["auto", "exact", "hnsw"] = "auto") -> dict[str, int | float]:
    """The parameters a plan-choosing search statement takes besides its own (see the
    pattern above): `exact_min_rows` and `exact_scale`, so that threshold = max(exact_min_rows,
    exact_scale * sqrt(candidates * N)). Searches pass the default, "auto"; a test or a
    benchmark passes "exact" or "hnsw" to run one plan whatever the filter's size."""
    return dict(_PLAN_CHOICES[plan])


# The settings are local to the transaction (is_local = true), so a pooled connection never
# carries them into another request. strict_order: iterative index scans keep going past the
# first ef_search candidates until `limit` rows pass the filter, and stay in exact distance
# order, for up to SEARCH_MAX_SCAN_TUPLES rows. force_custom_plan: "chat_id = %(chat_id)s OR
# %(chat_id)s IS NULL" is planned with the actual value, so a chat's rows are found through
# both columns of the owner index. A search whose plan is the same for any value (the
# nearest tools of every server) is planned once instead: the GENERIC settings force its
# prepared statement's generic plan, which a search would otherwise never get (the
# planner's guess of a `LIMIT $n` as a tenth of the table prices it above every custom
# plan), and planning is most of what such a search costs the server besides the scan
# (under row-level security, with the policies' sub-queries, more than half).
_SEARCH_SETTINGS = """
SELECT pg_catalog.set_config('hnsw.ef_search', %s, true),
       pg_catalog.set_config('hnsw.iterative_scan', 'strict_order', true),
       pg_catalog.set_config('hnsw.max_scan_tuples', '1000000', true),"""
SET_SEARCH_SETTINGS = (
    _SEARCH_SETTINGS
    + "\n       pg_catalog.set_config('plan_cache_mode', 'force_custom_plan', true)\n"
)
SET_GENERIC_SEARCH_SETTINGS = (
    _SEARCH_SETTINGS
    + "\n       pg_catalog.set_config('plan_cache_mode', 'force_generic_plan', true)\n"
)

# Inside a caller's transaction the local settings would last to its end: the values they
# replace are kept (in agentdb.* placeholders, local too) and put back right after the
# search. An empty saved value means the setting did not exist yet: NULL resets it.
_SAVE_AND_SET_SEARCH_SETTINGS = """
SELECT pg_catalog.set_config('agentdb.saved_ef_search', saved.ef_search, true),
       pg_catalog.set_config('agentdb.saved_iterative_scan', saved.iterative_scan, true),
       pg_catalog.set_config('agentdb.saved_max_scan_tuples', saved.max_scan_tuples, true),
       pg_catalog.set_config('agentdb.saved_plan_cache_mode', saved.plan_cache_mode, true),
       pg_catalog.set_config('hnsw.ef_search', %s, true),
       pg_catalog.set_config('hnsw.iterative_scan', 'strict_order', true),
       pg_catalog.set_config('hnsw.max_scan_tuples', '1000000', true),"""
_SAVED_SETTINGS = """
FROM (
    SELECT COALESCE(pg_catalog.current_setting('hnsw.ef_search', true), '') AS ef_search,
           COALESCE(pg_catalog.current_setting('hnsw.iterative_scan', true), '')
               AS iterative_scan,
           COALESCE(pg_catalog.current_setting('hnsw.max_scan_tuples', true), '')
               AS max_scan_tuples,
           pg_catalog.current_setting('plan_cache_mode') AS plan_cache_mode
) AS saved
"""
SAVE_AND_SET_SEARCH_SETTINGS = (
    _SAVE_AND_SET_SEARCH_SETTINGS
    + "\n       pg_catalog.set_config('plan_cache_mode', 'force_custom_plan', true)"
    + _SAVED_SETTINGS
)
SAVE_AND_SET_GENERIC_SEARCH_SETTINGS = (
    _SAVE_AND_SET_SEARCH_SETTINGS
    + "\n       pg_catalog.set_config('plan_cache_mode', 'force_generic_plan', true)"
    + _SAVED_SETTINGS
)

RESTORE_SEARCH_SETTINGS = """
SELECT pg_catalog.set_config('hnsw.ef_search',
           NULLIF(pg_catalog.current_setting('agentdb.saved_ef_search'), ''), true),
       pg_catalog.set_config('hnsw.iterative_scan',
           NULLIF(pg_catalog.current_setting('agentdb.saved_iterative_scan'), ''), true),
       pg_catalog.set_config('hnsw.max_scan_tuples',
           NULLIF(pg_catalog.current_setting('agentdb.saved_max_scan_tuples'), ''), true),
       pg_catalog.set_config('plan_cache_mode',
           pg_catalog.current_setting('agentdb.saved_plan_cache_mode'), true)
"""


async def run_vector_search(
    conn: AsyncConnection[Any],
    cursor: AsyncCursor[Any],
    statement: Any,
    params: dict[str, Any],
    *,
    ef_search: int,
    generic: bool = False,
) -> None:
    """Execute a vector search `statement` on `cursor` under the search settings (fetch its
    rows from the cursor afterwards). `ef_search` is never below the number of rows the
    statement asks the index for.

    The settings and the search go out in one pipeline, with no Sync between them: the
    extended protocol runs everything up to a Sync as one implicit transaction, so the local
    settings apply to this search and end with it. No BEGIN and COMMIT of our own: one round
    trip, two statements. Inside a transaction (the caller's, or one psycopg opens on a
    non-autocommit connection) the settings are put back by a third statement in the same
    pipeline.

    `generic`: the statement runs its generic plan (planned once per connection, once it is
    prepared), for a statement whose best plan does not depend on its parameters' values;
    otherwise it is planned for them on every call.
    """
    settings = [str(ef_search)]
    if not in_transaction(conn):
        async with conn.pipeline():
            await conn.execute(
                SET_GENERIC_SEARCH_SETTINGS if generic else SET_SEARCH_SETTINGS, settings
            )
            await cursor.execute(statement, params, binary=True)
    else:
        async with conn.pipeline():
            await conn.execute(
                SAVE_AND_SET_GENERIC_SEARCH_SETTINGS if generic else SAVE_AND_SET_SEARCH_SETTINGS,
                settings,
            )
            await cursor.execute(statement, params, binary=True)
            await conn.execute(RESTORE_SEARCH_SETTINGS)
