-- transactional: false
--
-- 0025_create_messages_owner_search_index.sql
--
-- Adds idx_messages_owner_id_chat_id: the live, embedded messages of an owner (and of one of
-- its chats), the rows search_messages and hybrid_search_messages rank. Searches use it to
-- choose their plan (app.database.vectors): they count the owner's (or the chat's) rows
-- through it, an index-only scan that stops after the threshold, and when there are few they
-- rank exactly those rows (read through it) instead of walking the HNSW graph, whose
-- filtered scan would have to pass over a large share of other owners' rows first, and gives
-- up after hnsw.max_scan_tuples of them with fewer rows than asked for.
--
-- Non-transactional (see 0009): on a table that already holds millions of messages, CREATE
-- INDEX CONCURRENTLY does not block writers while it scans the table.
--
-- Re-runnable: CREATE INDEX CONCURRENTLY IF NOT EXISTS; a concurrent build that failed half
-- way leaves an INVALID index, which the guarded DO block drops first.

DO $$
BEGIN
    IF EXISTS (
        SELECT 1
        FROM pg_catalog.pg_index AS i
        JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'messaging'
          AND c.relname = 'idx_messages_owner_id_chat_id'
          AND NOT i.indisvalid
    ) THEN
        DROP INDEX messaging.idx_messages_owner_id_chat_id;
    END IF;
END
$$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_messages_owner_id_chat_id
    ON messaging.messages (owner_id, chat_id)
    WHERE embedding IS NOT NULL AND deleted_at IS NULL;

COMMENT ON INDEX messaging.idx_messages_owner_id_chat_id IS
'Live, embedded messages by owner and chat: the searches count an owner''s (or a chat''s) '
'rows through it to choose between an exact ranking of those rows, read through it, and '
'the HNSW index idx_messages_embedding (see app.database.vectors).';
