-- Rollback of 0021_create_tools_search_index.sql: drops the index without blocking writers
-- (this file, like its forward file, runs in autocommit).

DROP INDEX CONCURRENTLY IF EXISTS agents.idx_tools_embedding;
