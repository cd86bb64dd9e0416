"""Embeddings: the one dimension constant, input validation, and the binary adapters.

Vectors travel in pgvector's binary format both ways: pgvector's dumpers send `list[float]`
and numpy arrays, and our loader turns a column back into `list[float]`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any
from uuid import UUID

import numpy as np
from pgvector import Vector
from pgvector.psycopg.vector import VectorBinaryLoader, VectorLoader, register_vector_info
from psycopg import AsyncConnection, AsyncCursor
from psycopg.abc import Buffer
from psycopg.pq import TransactionStatus
from psycopg.types import TypeInfo
from pydantic import PlainSerializer, PlainValidator

from app.database.errors import InvalidInputError
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


# Vector search settings ---------------------------------------------------------------------
#
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

# Inside a caller's transaction the local settings would last to its end: the values they
# replace are kept (in agentdb.* placeholders, local too) and put back right after the
# search. An empty saved value means the setting did not exist yet: NULL resets it.
SAVE_AND_SET_SEARCH_SETTINGS = """
SELECT pg_catalog.set_config('agentdb.saved_ef_search', saved.ef_search, true),
       pg_catalog.set_config('agentdb.saved_iterative_scan', saved.iterative_scan, true),
       pg_catalog.set_config('agentdb.saved_plan_cache_mode', saved.plan_cache_mode, true),
       pg_catalog.set_config('hnsw.ef_search', %s, true),
       pg_catalog.set_config('hnsw.iterative_scan', 'strict_order', true),
       pg_catalog.set_config('plan_cache_mode', 'force_custom_plan', true)
FROM (
    SELECT COALESCE(pg_catalog.current_setting('hnsw.ef_search', true), '') AS ef_search,
           COALESCE(pg_catalog.current_setting('hnsw.iterative_scan', true), '')
               AS iterative_scan,
           pg_catalog.current_setting('plan_cache_mode') AS plan_cache_mode
) AS saved
"""

RESTORE_SEARCH_SETTINGS = """
SELECT pg_catalog.set_config('hnsw.ef_search',
           NULLIF(pg_catalog.current_setting('agentdb.saved_ef_search'), ''), true),
       pg_catalog.set_config('hnsw.iterative_scan',
           NULLIF(pg_catalog.current_setting('agentdb.saved_iterative_scan'), ''), true),
       pg_catalog.set_config('plan_cache_mode',
           pg_catalog.current_setting('agentdb.saved_plan_cache_mode'), true)
"""

_IDLE = TransactionStatus.IDLE


async def run_vector_search(
    conn: AsyncConnection[Any],
    cursor: AsyncCursor[Any],
    statement: Any,
    params: dict[str, Any],
    *,
    ef_search: int,
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
    """
    if conn.autocommit and conn.pgconn.transaction_status == _IDLE:
        async with conn.pipeline():
            await conn.execute(SET_SEARCH_SETTINGS, [str(ef_search)])
            await cursor.execute(statement, params, binary=True)
    else:
        async with conn.pipeline():
            await conn.execute(SAVE_AND_SET_SEARCH_SETTINGS, [str(ef_search)])
            await cursor.execute(statement, params, binary=True)
            await conn.execute(RESTORE_SEARCH_SETTINGS)
