-- Rollback of 0009_create_messages_search_indexes.sql: drops both search indexes without
-- blocking writers (this file, like its forward file, runs in autocommit).

DROP INDEX CONCURRENTLY IF EXISTS messaging.idx_messages_content_tsv;

DROP INDEX CONCURRENTLY IF EXISTS messaging.idx_messages_embedding;
