-- transactional: false
--
-- 0009_create_messages_search_indexes.sql
--
-- Adds the two search indexes of messaging.messages: HNSW on embedding (cosine distance,
-- m = 16, ef_construction = 64) for semantic search, and GIN on content_tsv for full-text
-- search. Both cover live rows only (deleted_at IS NULL), which is what every search filters.
--
-- Why non-transactional: on a table that already holds millions of rows, a plain CREATE
-- INDEX blocks every writer for the whole build. CREATE INDEX CONCURRENTLY does not, but it
-- cannot run inside a transaction block, so the header above makes yoyo run this file in
-- autocommit, one statement at a time.
--
-- Re-runnable: CREATE INDEX CONCURRENTLY IF NOT EXISTS skips an index that exists. A
-- concurrent build that failed half way leaves an INVALID index under the same name, which
-- IF NOT EXISTS would then keep forever; the guarded DO block before each build drops such a
-- leftover first (a plain DROP INDEX: an invalid index is not used by queries, so the brief
-- lock it takes costs nothing).

DO $$
BEGIN
    IF EXISTS (
        SELECT 1
        FROM pg_catalog.pg_index AS i
        JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'messaging'
          AND c.relname = 'idx_messages_embedding'
          AND NOT i.indisvalid
    ) THEN
        DROP INDEX messaging.idx_messages_embedding;
    END IF;
END
$$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_messages_embedding
    ON messaging.messages
    USING hnsw (embedding public.vector_cosine_ops)
    WITH (m = 16, ef_construction = 64)
    WHERE deleted_at IS NULL;

COMMENT ON INDEX messaging.idx_messages_embedding IS
'HNSW (pgvector) over live messages'' embeddings, cosine distance (<=>); m = 16, '
'ef_construction = 64. Serves search_messages and the vector half of '
'hybrid_search_messages; queries set hnsw.ef_search and hnsw.iterative_scan locally.';

DO $$
BEGIN
    IF EXISTS (
        SELECT 1
        FROM pg_catalog.pg_index AS i
        JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'messaging'
          AND c.relname = 'idx_messages_content_tsv'
          AND NOT i.indisvalid
    ) THEN
        DROP INDEX messaging.idx_messages_content_tsv;
    END IF;
END
$$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_messages_content_tsv
    ON messaging.messages
    USING gin (content_tsv)
    WHERE deleted_at IS NULL;

COMMENT ON INDEX messaging.idx_messages_content_tsv IS
'GIN over live messages'' full-text vectors (content_tsv @@ tsquery). Serves the keyword '
'half of hybrid_search_messages.';
