-- Rollback of 0030_create_knowledge_search_indexes.sql: drops the search indexes without
-- blocking writers (this file, like its forward file, runs in autocommit).

DROP INDEX CONCURRENTLY IF EXISTS knowledge.idx_chunks_owner_id_document_id;

DROP INDEX CONCURRENTLY IF EXISTS knowledge.idx_memories_owner_id_kind_chat_id;

DROP INDEX CONCURRENTLY IF EXISTS knowledge.idx_chunks_content_tsv;

DROP INDEX CONCURRENTLY IF EXISTS knowledge.idx_chunks_embedding;

DROP INDEX CONCURRENTLY IF EXISTS knowledge.idx_memories_embedding;
