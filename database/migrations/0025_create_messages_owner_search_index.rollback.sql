-- Rollback of 0025_create_messages_owner_search_index.sql: drops the index without blocking
-- writers (this file, like its forward file, runs in autocommit).

DROP INDEX CONCURRENTLY IF EXISTS messaging.idx_messages_owner_id_chat_id;
