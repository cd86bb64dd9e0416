-- transactional: false
--
-- Rollback of 0033_index_only_linked_executions.sql: the four indexes whole again, as 0007
-- and 0012 made them, by the same steps (build under a temporary name CONCURRENTLY, drop
-- the partial one, rename), so writers are never blocked.

DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_catalog.pg_index AS i
        JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
        WHERE c.oid = to_regclass('agents.idx_executions_chat_id_created_at_whole')
          AND NOT i.indisvalid
    ) THEN
        DROP INDEX agents.idx_executions_chat_id_created_at_whole;
    END IF;
    IF EXISTS (
        SELECT 1 FROM pg_catalog.pg_index AS i
        JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
        WHERE c.oid = to_regclass('agents.idx_executions_message_id_whole')
          AND NOT i.indisvalid
    ) THEN
        DROP INDEX agents.idx_executions_message_id_whole;
    END IF;
    IF EXISTS (
        SELECT 1 FROM pg_catalog.pg_index AS i
        JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
        WHERE c.oid = to_regclass('agents.idx_executions_todo_id_whole')
          AND NOT i.indisvalid
    ) THEN
        DROP INDEX agents.idx_executions_todo_id_whole;
    END IF;
    IF EXISTS (
        SELECT 1 FROM pg_catalog.pg_index AS i
        JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
        WHERE c.oid = to_regclass('agents.idx_executions_owner_id_created_at_whole')
          AND NOT i.indisvalid
    ) THEN
        DROP INDEX agents.idx_executions_owner_id_created_at_whole;
    END IF;
END
$$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_chat_id_created_at_whole
    ON agents.executions (chat_id, created_at DESC, id DESC);
DROP INDEX CONCURRENTLY IF EXISTS agents.idx_executions_chat_id_created_at;
ALTER INDEX IF EXISTS agents.idx_executions_chat_id_created_at_whole
    RENAME TO idx_executions_chat_id_created_at;
COMMENT ON INDEX agents.idx_executions_chat_id_created_at IS
'Serves a chat''s executions, newest first (agents.list_executions with chat_id), and the '
'foreign key fk_executions_chats.';

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_message_id_whole
    ON agents.executions (message_id);
DROP INDEX CONCURRENTLY IF EXISTS agents.idx_executions_message_id;
ALTER INDEX IF EXISTS agents.idx_executions_message_id_whole
    RENAME TO idx_executions_message_id;
COMMENT ON INDEX agents.idx_executions_message_id IS
'Serves the foreign key fk_executions_messages (clearing message_id when a message is '
'deleted).';

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_todo_id_whole
    ON agents.executions (todo_id);
DROP INDEX CONCURRENTLY IF EXISTS agents.idx_executions_todo_id;
ALTER INDEX IF EXISTS agents.idx_executions_todo_id_whole
    RENAME TO idx_executions_todo_id;
COMMENT ON INDEX agents.idx_executions_todo_id IS
'Serves the foreign key fk_executions_todos (clearing todo_id when a todo is deleted) and '
'"executions of this todo".';

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_owner_id_created_at_whole
    ON agents.executions (owner_id, created_at);
DROP INDEX CONCURRENTLY IF EXISTS agents.idx_executions_owner_id_created_at;
ALTER INDEX IF EXISTS agents.idx_executions_owner_id_created_at_whole
    RENAME TO idx_executions_owner_id_created_at;
