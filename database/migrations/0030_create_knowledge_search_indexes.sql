-- transactional: false
--
-- 0030_create_knowledge_search_indexes.sql
--
-- Adds the search indexes of schema knowledge, all partial on live rows (deleted_at IS
-- NULL), which is what every search filters:
--   idx_memories_embedding   HNSW, cosine distance: recall, and remember's search for the
--                            memory to reinforce
--   idx_chunks_embedding     HNSW, cosine distance: search_chunks and the vector half of
--                            hybrid_search_chunks
--   idx_chunks_content_tsv   GIN over the full-text vectors: the keyword half of
--                            hybrid_search_chunks
--   idx_memories_owner_id_kind_chat_id, idx_chunks_owner_id_document_id
--                            b-trees over what the searches filter on: each search counts
--                            the rows that pass its filter through one (an index-only scan
--                            that stops after a threshold) and, when they are few, ranks
--                            exactly those rows instead of walking the HNSW graph (the plan
--                            choice of app.database.vectors, as 0025 does for messages)
-- HNSW with m = 16, ef_construction = 64, as the messages' index (0009).
--
-- Non-transactional (the header above), so that each index is built CONCURRENTLY without
-- blocking writers of a table that already holds rows (see 0009).
--
-- Re-runnable: CREATE INDEX CONCURRENTLY IF NOT EXISTS skips an index that exists; a
-- concurrent build that failed half way leaves an INVALID index under the same name, which
-- the guarded DO block before each build drops first.

DO $$
BEGIN
    IF EXISTS (
        SELECT 1
        FROM pg_catalog.pg_index AS i
        JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'knowledge'
          AND c.relname = 'idx_memories_embedding'
          AND NOT i.indisvalid
    ) THEN
        DROP INDEX knowledge.idx_memories_embedding;
    END IF;
END
$$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_memories_embedding
    ON knowledge.memories
    USING hnsw (embedding public.vector_cosine_ops)
    WITH (m = 16, ef_construction = 64)
    WHERE deleted_at IS NULL;

COMMENT ON INDEX knowledge.idx_memories_embedding IS
'HNSW (pgvector) over live memories'' embeddings, cosine distance (<=>); m = 16, '
'ef_construction = 64. Serves recall and remember for an owner with many memories (a small '
'owner''s are scanned exactly); queries set the hnsw.* settings locally.';

DO $$
BEGIN
    IF EXISTS (
        SELECT 1
        FROM pg_catalog.pg_index AS i
        JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'knowledge'
          AND c.relname = 'idx_chunks_embedding'
          AND NOT i.indisvalid
    ) THEN
        DROP INDEX knowledge.idx_chunks_embedding;
    END IF;
END
$$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_chunks_embedding
    ON knowledge.chunks
    USING hnsw (embedding public.vector_cosine_ops)
    WITH (m = 16, ef_construction = 64)
    WHERE deleted_at IS NULL;

COMMENT ON INDEX knowledge.idx_chunks_embedding IS
'HNSW (pgvector) over live chunks'' embeddings, cosine distance (<=>); m = 16, '
'ef_construction = 64. Serves search_chunks and the vector half of hybrid_search_chunks for '
'an owner with many chunks; queries set the hnsw.* settings locally.';

DO $$
BEGIN
    IF EXISTS (
        SELECT 1
        FROM pg_catalog.pg_index AS i
        JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'knowledge'
          AND c.relname = 'idx_chunks_content_tsv'
          AND NOT i.indisvalid
    ) THEN
        DROP INDEX knowledge.idx_chunks_content_tsv;
    END IF;
END
$$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_chunks_content_tsv
    ON knowledge.chunks
    USING gin (content_tsv)
    WHERE deleted_at IS NULL;

COMMENT ON INDEX knowledge.idx_chunks_content_tsv IS
'GIN over live chunks'' full-text vectors (content_tsv @@ tsquery). Serves the keyword half '
'of hybrid_search_chunks.';

DO $$
BEGIN
    IF EXISTS (
        SELECT 1
        FROM pg_catalog.pg_index AS i
        JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'knowledge'
          AND c.relname = 'idx_memories_owner_id_kind_chat_id'
          AND NOT i.indisvalid
    ) THEN
        DROP INDEX knowledge.idx_memories_owner_id_kind_chat_id;
    END IF;
END
$$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_memories_owner_id_kind_chat_id
    ON knowledge.memories (owner_id, kind, chat_id)
    INCLUDE (expires_at)
    WHERE deleted_at IS NULL;

COMMENT ON INDEX knowledge.idx_memories_owner_id_kind_chat_id IS
'Live memories by owner, kind and chat (with their expiry): recall and remember count the '
'memories that pass their filter through it, and rank a small set exactly, read through it, '
'instead of walking idx_memories_embedding (see app.database.vectors).';

DO $$
BEGIN
    IF EXISTS (
        SELECT 1
        FROM pg_catalog.pg_index AS i
        JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'knowledge'
          AND c.relname = 'idx_chunks_owner_id_document_id'
          AND NOT i.indisvalid
    ) THEN
        DROP INDEX knowledge.idx_chunks_owner_id_document_id;
    END IF;
END
$$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_chunks_owner_id_document_id
    ON knowledge.chunks (owner_id, document_id)
    WHERE embedding IS NOT NULL AND deleted_at IS NULL;

COMMENT ON INDEX knowledge.idx_chunks_owner_id_document_id IS
'Live, embedded chunks by owner and document: the chunk searches count the chunks that pass '
'their filter through it, and rank a small set exactly, read through it, instead of walking '
'idx_chunks_embedding (see app.database.vectors).';
