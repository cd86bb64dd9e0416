-- transactional: false
--
-- 0021_create_tools_search_index.sql
--
-- Adds the HNSW index (cosine distance, m = 16, ef_construction = 64) of agents.tools'
-- embeddings for semantic tool selection, over the tools that can be selected: enabled and
-- embedded. Built CONCURRENTLY (no transaction, see 0009) so that a backend syncing tools
-- is not blocked while it builds.
--
-- Re-runnable: CREATE INDEX CONCURRENTLY IF NOT EXISTS; a build that failed half way leaves
-- an INVALID index, which the guarded DO block drops first.

DO $$
BEGIN
    IF EXISTS (
        SELECT 1
        FROM pg_catalog.pg_index AS i
        JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'agents'
          AND c.relname = 'idx_tools_embedding'
          AND NOT i.indisvalid
    ) THEN
        DROP INDEX agents.idx_tools_embedding;
    END IF;
END
$$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_tools_embedding
    ON agents.tools
    USING hnsw (embedding public.vector_cosine_ops)
    WITH (m = 16, ef_construction = 64)
    WHERE is_enabled;

COMMENT ON INDEX agents.idx_tools_embedding IS
'HNSW (pgvector) over enabled tools'' embeddings, cosine distance (<=>); m = 16, '
'ef_construction = 64. Serves agents.tools.select_tools, which sets hnsw.ef_search and '
'hnsw.iterative_scan locally.';
