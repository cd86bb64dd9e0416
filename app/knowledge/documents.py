"""Documents for retrieval: a user's files, cut into chunks that are found by meaning
(pgvector HNSW, or an exact scan for a small owner) and by words (PostgreSQL full text).

SQL constants first, then the functions in the order of the public API. Every function takes
the caller's connection and never commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from pydantic import TypeAdapter

from app.database.errors import ConflictError, InvalidInputError, NotFoundError, database_errors
from app.database.pagination import Page, check_limit, encode_cursor, newest_first_start, page_of
from app.database.rows import column_list, model_rows
from app.database.validation import as_uuid, validated, validated_batch
from app.database.vectors import plan_choice_params, run_vector_search
from app.knowledge.models import (
    Chunk,
    ChunkCreate,
    ChunkCreateDict,
    ChunkHit,
    ChunkSearchInput,
    Document,
    DocumentCreate,
)
from app.knowledge.search import candidates_for, hit_rows

RRF_K = 60
"""Reciprocal rank fusion constant (Cormack et al. 2009), as for messages."""


class DuplicateDocumentError(ConflictError):
    """add_document: the owner already has a live document with this content_hash. Its id is
    `existing_id` (None only if that document was deleted in the meantime)."""

    def __init__(self, message: str, *, existing_id: UUID | None) -> None:
        super().__init__(message, constraint="uq_documents_owner_id_content_hash")
        self.existing_id = existing_id


# SQL --------------------------------------------------------------------------------------

DOCUMENT_COLUMNS = column_list(
    Document,
    "id, owner_id, title, source_uri, content_type, content_hash, metadata, created_at, "
    "updated_at, deleted_at",
)

CHUNK_COLUMNS = column_list(
    Chunk,
    "id, document_id, owner_id, chunk_index, content, embedding, token_count, metadata, "
    "created_at, updated_at, deleted_at",
)

# A hit carries its chunk without the embedding (6 KB a row that the caller did not ask for).
CHUNK_HIT_COLUMNS = CHUNK_COLUMNS.replace("embedding", "NULL::public.vector AS embedding")

# A second live document with the same content hash is not inserted (the ON CONFLICT target
# is the partial unique index); add_document then looks up the one that exists, in a
# statement of its own, which sees a concurrent insert that this one waited for.
INSERT_DOCUMENT = (
    """
INSERT INTO knowledge.documents (owner_id, title, source_uri, content_type, content_hash,
                                 metadata)
VALUES (%(owner_id)s, %(title)s, %(source_uri)s, %(content_type)s, %(content_hash)s,
        %(metadata)s)
ON CONFLICT (owner_id, content_hash) WHERE deleted_at IS NULL DO NOTHING
RETURNING """
    + DOCUMENT_COLUMNS
)

SELECT_DOCUMENT_ID_BY_HASH = """
SELECT id
FROM knowledge.documents
WHERE owner_id = %s
  AND content_hash = %s
  AND deleted_at IS NULL
"""

# Before a bulk insert: the document's owner (chunks copy it), under the row lock that
# delete_document's UPDATE conflicts with (FOR NO KEY UPDATE; the foreign key's own FOR KEY
# SHARE would not), so that a delete waits for the chunks being added and then hides them
# too. And whether row-level security applies (COPY FROM is refused under it), with whether
# this session has its staging table yet.
LOCK_DOCUMENT_FOR_CHUNKS = """
SELECT owner_id,
       pg_catalog.row_security_active('knowledge.chunks'),
       pg_catalog.to_regclass('pg_temp.agentdb_staged_chunks') IS NOT NULL
FROM knowledge.documents
WHERE id = %s
  AND deleted_at IS NULL
FOR NO KEY UPDATE
"""

COPY_CHUNKS = """
COPY knowledge.chunks
    (document_id, owner_id, chunk_index, content, embedding, token_count, metadata)
FROM STDIN (FORMAT BINARY)
"""

COPY_CHUNKS_TYPES = ["uuid", "uuid", "int4", "text", "vector", "int4", "jsonb"]

# Under row-level security, as add_messages does: COPY into a temporary table of the session
# (created on its first batch), then one INSERT … SELECT, so that every row passes the
# policy's WITH CHECK, the constraints and the triggers, then TRUNCATE (a temporary table is
# never vacuumed: deleted rows would stay for the life of the connection).
CREATE_STAGED_CHUNKS = """
CREATE TEMPORARY TABLE IF NOT EXISTS agentdb_staged_chunks (
    document_id  uuid,
    owner_id     uuid,
    chunk_index  integer,
    content      text,
    embedding    public.vector(1536),
    token_count  integer,
    metadata     jsonb
)
"""

COPY_STAGED_CHUNKS = """
COPY pg_temp.agentdb_staged_chunks
    (document_id, owner_id, chunk_index, content, embedding, token_count, metadata)
FROM STDIN (FORMAT BINARY)
"""

MOVE_STAGED_CHUNKS = """
INSERT INTO knowledge.chunks
    (document_id, owner_id, chunk_index, content, embedding, token_count, metadata)
SELECT document_id, owner_id, chunk_index, content, embedding, token_count, metadata
FROM pg_temp.agentdb_staged_chunks
"""

EMPTY_STAGED_CHUNKS = "TRUNCATE pg_temp.agentdb_staged_chunks"

SELECT_DOCUMENT = (
    "SELECT "
    + DOCUMENT_COLUMNS
    + """
FROM knowledge.documents
WHERE id = %s
  AND deleted_at IS NULL
"""
)

# Keyset page, newest first, on idx_documents_owner_id_created_at_id (scanned backwards).
SELECT_DOCUMENTS_PAGE = (
    "SELECT "
    + DOCUMENT_COLUMNS
    + """
FROM knowledge.documents
WHERE owner_id = %(owner_id)s
  AND deleted_at IS NULL
  AND (created_at, id) < (%(before_created_at)s, %(before_id)s)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
"""
)

# A live document's chunks in order, on uq_chunks_document_id_chunk_index.
SELECT_CHUNKS = (
    "SELECT "
    + CHUNK_COLUMNS
    + """
FROM knowledge.chunks
WHERE document_id = %s
  AND deleted_at IS NULL
ORDER BY chunk_index
"""
)

# The soft delete takes the document's row lock, which add_chunks takes too; its chunks go
# in a second statement, whose snapshot is taken after that lock is held, so that it also
# hides the chunks of an add_chunks it waited for. One pipeline: one round trip.
SOFT_DELETE_DOCUMENT = """
UPDATE knowledge.documents
SET deleted_at = now()
WHERE id = %s
  AND deleted_at IS NULL
RETURNING id
"""

SOFT_DELETE_DOCUMENT_CHUNKS = """
UPDATE knowledge.chunks
SET deleted_at = now()
WHERE document_id = %s
  AND deleted_at IS NULL
"""

# The chunks a vector search may return: the owner's, live, embedded, of the documents asked
# for (NULL: any).
SEARCHABLE = """
owner_id = %(owner_id)s
  AND deleted_at IS NULL
  AND embedding IS NOT NULL
  AND (%(document_ids)s::uuid[] IS NULL OR document_id = ANY(%(document_ids)s::uuid[]))
"""

# The `candidates` nearest chunks, as (id, distance), by the plan that suits the filter's
# size (app.database.vectors, "plan choice"): `owned` counts the searchable chunks through
# idx_chunks_owner_id_document_id (index-only, up to the threshold + 1); a small set is
# ranked exactly (`exact`, read through that index), a large one on idx_chunks_embedding
# (`hnsw`, an iterative scan that goes on until `candidates` rows pass). Only one runs.
NEAREST_CHUNKS = (
    """threshold AS (
    SELECT GREATEST(%(exact_min_rows)s, %(exact_scale)s
                    * pg_catalog.sqrt(%(candidates)s * GREATEST(reltuples, 0)))::bigint AS rows
    FROM pg_catalog.pg_class
    WHERE oid = 'knowledge.idx_chunks_embedding'::pg_catalog.regclass
), owned AS (
    SELECT count(*) <= (SELECT rows FROM threshold) AS is_small
    FROM (
        SELECT
        FROM knowledge.chunks
        WHERE """
    + SEARCHABLE
    + """
        LIMIT (SELECT rows FROM threshold) + 1
    ) AS capped
), exact AS MATERIALIZED (
    SELECT id, embedding <=> %(embedding)s AS distance
    FROM knowledge.chunks
    WHERE """
    + SEARCHABLE
    + """
      AND (SELECT is_small FROM owned)
), hnsw AS (
    SELECT id, embedding <=> %(embedding)s AS distance
    FROM knowledge.chunks
    WHERE """
    + SEARCHABLE
    + """
      AND NOT (SELECT is_small FROM owned)
    ORDER BY embedding <=> %(embedding)s
    LIMIT %(candidates)s
), nearest AS (
    (SELECT id, distance FROM exact ORDER BY distance, id LIMIT %(candidates)s)
    UNION ALL
    SELECT id, distance FROM hnsw
)"""
)

SEARCH_CHUNKS = (
    "WITH "
    + NEAREST_CHUNKS
    + """
SELECT """
    + CHUNK_HIT_COLUMNS
    + """,
       1 - nearest.distance AS similarity
FROM nearest
JOIN knowledge.chunks USING (id)
ORDER BY nearest.distance, id
"""
)

# Reciprocal rank fusion in one statement, as hybrid_search_messages: the `candidates`
# nearest by embedding and the `candidates` best by full text (idx_chunks_content_tsv,
# websearch syntax, ranked by ts_rank_cd), joined on id; score = sum of 1 / (k + rank).
# Only the best `limit` are joined back to their rows (`best`): a join of every candidate
# is planned as a hash join over the owner's whole table.
HYBRID_SEARCH_CHUNKS = (
    "WITH "
    + NEAREST_CHUNKS
    + """, semantic AS (
    SELECT id, distance, row_number() OVER (ORDER BY distance, id) AS rank
    FROM nearest
), keyword AS (
    SELECT id, row_number() OVER (ORDER BY relevance DESC, id) AS rank
    FROM (
        SELECT id, ts_rank_cd(content_tsv, query) AS relevance
        FROM knowledge.chunks,
             websearch_to_tsquery('english'::regconfig, %(query)s) AS query
        WHERE owner_id = %(owner_id)s
          AND deleted_at IS NULL
          AND (%(document_ids)s::uuid[] IS NULL OR document_id = ANY(%(document_ids)s::uuid[]))
          AND content_tsv @@ query
        ORDER BY relevance DESC, id
        LIMIT %(candidates)s
    ) AS matching_words
), fused AS (
    SELECT COALESCE(semantic.id, keyword.id) AS id,
           1 - semantic.distance AS similarity,
           COALESCE(1.0 / (%(k)s + semantic.rank), 0)
               + COALESCE(1.0 / (%(k)s + keyword.rank), 0) AS score
    FROM semantic
    FULL JOIN keyword ON keyword.id = semantic.id
), best AS (
    SELECT id, similarity, score
    FROM fused
    ORDER BY score DESC, id
    LIMIT %(limit)s
)
SELECT """
    + CHUNK_HIT_COLUMNS
    + """,
       similarity, score::float8 AS score
FROM best
JOIN knowledge.chunks USING (id)
ORDER BY score DESC, id
"""
)

DOCUMENT_ROW = model_rows(Document)
CHUNK_ROW = model_rows(Chunk)
CHUNK_HIT_ROWS = hit_rows(Chunk, ChunkHit, "chunk")
CHUNK_DICTS = TypeAdapter(list[ChunkCreateDict])


# Query functions --------------------------------------------------------------------------


@database_errors
async def add_document(
    conn: AsyncConnection[Any],
    *,
    owner_id: UUID,
    title: str,
    source_uri: str | None = None,
    content_type: str = "text/plain",
    content_hash: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Document:
    """Add a document for `owner_id` (its text goes in with `add_chunks`). A live document
    of the owner with the same `content_hash` raises DuplicateDocumentError, a ConflictError
    whose `existing_id` is that document's id."""
    data = validated(
        DocumentCreate,
        owner_id=owner_id,
        title=title,
        source_uri=source_uri,
        content_type=content_type,
        content_hash=content_hash,
        metadata={} if metadata is None else metadata,
    )
    params = {
        "owner_id": data.owner_id,
        "title": data.title,
        "source_uri": data.source_uri,
        "content_type": data.content_type,
        "content_hash": data.content_hash,
        "metadata": Jsonb(data.metadata),
    }
    async with conn.cursor(row_factory=DOCUMENT_ROW) as cursor:
        await cursor.execute(INSERT_DOCUMENT, params)
        document = await cursor.fetchone()
    if document is not None:
        return document
    found = await conn.execute(SELECT_DOCUMENT_ID_BY_HASH, [data.owner_id, data.content_hash])
    row = await found.fetchone()
    existing_id = row[0] if row else None
    raise DuplicateDocumentError(
        f"content_hash: the owner already has document {existing_id} with this content hash",
        existing_id=existing_id,
    )


@database_errors
async def add_chunks(
    conn: AsyncConnection[Any],
    document_id: UUID,
    chunks: Sequence[ChunkCreate | Mapping[str, Any]],
) -> int:
    """Add chunks (ChunkCreate, or dicts of its fields) to a live document with one binary
    COPY; return how many. Under row-level security, where COPY is refused, it is a COPY
    into a temporary table and one INSERT from it. All or nothing: a chunk_index the
    document already has raises ConflictError."""
    document_id = as_uuid(document_id, "document_id")
    rows = validated_batch(chunks, CHUNK_DICTS, ChunkCreate, "chunks")
    if not rows:
        return 0
    async with conn.transaction():
        cursor = await conn.execute(LOCK_DOCUMENT_FOR_CHUNKS, [document_id])
        found = await cursor.fetchone()
        if found is None:
            raise NotFoundError(f"document {document_id} not found", field="document_id")
        owner_id, under_row_security, has_staging_table = found
        if under_row_security and not has_staging_table:
            await conn.execute(CREATE_STAGED_CHUNKS)
        statement = COPY_STAGED_CHUNKS if under_row_security else COPY_CHUNKS
        async with conn.cursor().copy(statement) as copy:
            copy.set_types(COPY_CHUNKS_TYPES)
            for row in rows:
                chunk = row if isinstance(row, Mapping) else dict(row)
                await copy.write_row(
                    (
                        document_id,
                        owner_id,
                        chunk["chunk_index"],
                        chunk["content"],
                        chunk.get("embedding"),
                        chunk.get("token_count"),
                        Jsonb(chunk.get("metadata", {})),
                    )
                )
        if under_row_security:
            await conn.execute(MOVE_STAGED_CHUNKS)
            await conn.execute(EMPTY_STAGED_CHUNKS)
    return len(rows)


@database_errors
async def get_document(conn: AsyncConnection[Any], document_id: UUID) -> Document | None:
    """The document, or None if it does not exist or is deleted."""
    async with conn.cursor(row_factory=DOCUMENT_ROW) as cursor:
        await cursor.execute(SELECT_DOCUMENT, [as_uuid(document_id, "document_id")])
        return await cursor.fetchone()


@database_errors
async def list_documents(
    conn: AsyncConnection[Any],
    *,
    owner_id: UUID,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Document]:
    """The owner's live documents, newest first."""
    check_limit(limit)
    owner_id = as_uuid(owner_id, "owner_id")
    scope = f"documents:{owner_id}"
    before_created_at, before_id = newest_first_start(cursor, scope)
    params = {
        "owner_id": owner_id,
        "before_created_at": before_created_at,
        "before_id": before_id,
        "limit": limit + 1,
    }
    async with conn.cursor(row_factory=DOCUMENT_ROW) as db_cursor:
        await db_cursor.execute(SELECT_DOCUMENTS_PAGE, params)
        rows = await db_cursor.fetchall()
    return page_of(
        rows,
        limit,
        lambda document: encode_cursor(scope, document.created_at.isoformat(), document.id),
    )


@database_errors
async def list_chunks(conn: AsyncConnection[Any], document_id: UUID) -> list[Chunk]:
    """The chunks of a live document, in order (none for a deleted one)."""
    async with conn.cursor(row_factory=CHUNK_ROW) as cursor:
        await cursor.execute(SELECT_CHUNKS, [as_uuid(document_id, "document_id")], binary=True)
        return await cursor.fetchall()


@database_errors
async def delete_document(conn: AsyncConnection[Any], document_id: UUID) -> None:
    """Soft-delete the document; its chunks (also those of an add_chunks the delete waited
    for) vanish from every search."""
    document_id = as_uuid(document_id, "document_id")
    document = conn.cursor()
    async with conn.pipeline():
        await document.execute(SOFT_DELETE_DOCUMENT, [document_id])
        await conn.execute(SOFT_DELETE_DOCUMENT_CHUNKS, [document_id])
    if await document.fetchone() is None:
        raise NotFoundError(f"document {document_id} not found", field="document_id")


@database_errors
async def search_chunks(
    conn: AsyncConnection[Any],
    *,
    owner_id: UUID,
    embedding: Any,
    limit: int = 10,
    document_ids: Sequence[UUID] | None = None,
) -> list[ChunkHit]:
    """The owner's live chunks nearest to `embedding` (cosine), best first. `limit` of them
    whenever that many are embedded, however small a share of the table the owner's are."""
    data = validated(
        ChunkSearchInput,
        owner_id=owner_id,
        embedding=embedding,
        limit=limit,
        document_ids=None if document_ids is None else _ids(document_ids),
    )
    params = {
        "owner_id": data.owner_id,
        "embedding": data.embedding,
        "document_ids": data.document_ids,
        "candidates": data.limit,
        **plan_choice_params(),
    }
    cursor = conn.cursor(row_factory=CHUNK_HIT_ROWS)
    await run_vector_search(
        conn, cursor, SEARCH_CHUNKS, params, ef_search=candidates_for(data.limit)
    )
    return await cursor.fetchall()


@database_errors
async def hybrid_search_chunks(
    conn: AsyncConnection[Any],
    *,
    owner_id: UUID,
    embedding: Any,
    query: str,
    limit: int = 10,
    document_ids: Sequence[UUID] | None = None,
) -> list[ChunkHit]:
    """The owner's live chunks ranked by meaning and by words together, best first.
    `hit.score` is the reciprocal rank fusion of the vector and the full-text ranking."""
    data = validated(
        ChunkSearchInput,
        owner_id=owner_id,
        embedding=embedding,
        query=query,
        limit=limit,
        document_ids=None if document_ids is None else _ids(document_ids),
    )
    candidates = candidates_for(data.limit)
    params = {
        "owner_id": data.owner_id,
        "embedding": data.embedding,
        "query": data.query,
        "document_ids": data.document_ids,
        "candidates": candidates,
        "k": RRF_K,
        "limit": data.limit,
        **plan_choice_params(),
    }
    cursor = conn.cursor(row_factory=CHUNK_HIT_ROWS)
    await run_vector_search(conn, cursor, HYBRID_SEARCH_CHUNKS, params, ef_search=candidates)
    return await cursor.fetchall()


# Helpers ----------------------------------------------------------------------------------


def _ids(ids: Any) -> Any:
    """A list of document ids as given (validated by the input model), refusing a lone
    string or UUID, which would otherwise be read as a sequence."""
    if isinstance(ids, str | bytes | UUID) or not isinstance(ids, Sequence):
        raise InvalidInputError(
            f"document_ids: must be a list of document ids, not {type(ids).__name__}",
            field="document_ids",
        )
    return list(ids)
