-- transactional: false
--
-- 0033_index_only_linked_executions.sql
--
-- Makes the four indexes of agents.executions on columns that are often NULL partial,
-- WHERE the column IS NOT NULL: idx_executions_chat_id_created_at, idx_executions_message_id,
-- idx_executions_todo_id (0007) and idx_executions_owner_id_created_at (0012). Every query
-- they serve tests the column for equality (a chat's, a todo's or an owner's runs, the
-- foreign keys' ON DELETE SET NULL lookups, row-level security's owner_id = the session's
-- owner, erasure), which implies IS NOT NULL, so the planner still uses them; none looks
-- for the NULLs. A system run (no chat, message, todo or owner) then writes 4 index entries
-- fewer: the queue's producers insert in batches of thousands, and half of an insert's index
-- work was these NULL keys.
--
-- Non-transactional (see 0009): each new index is built with CREATE INDEX CONCURRENTLY
-- under a temporary name, the old one dropped CONCURRENTLY, and the new one renamed to the
-- old name, so producers and workers are never blocked while a large table is scanned.
--
-- Re-runnable: a build that failed half way leaves an INVALID index, which the DO block
-- drops first; IF NOT EXISTS / IF EXISTS make each step a no-op once done. (Run again after
-- it succeeded, it builds the four partial indexes once more and ends as it was.)

DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_catalog.pg_index AS i
        JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
        WHERE c.oid = to_regclass('agents.idx_executions_chat_id_created_at_partial')
          AND NOT i.indisvalid
    ) THEN
        DROP INDEX agents.idx_executions_chat_id_created_at_partial;
    END IF;
    IF EXISTS (
        SELECT 1 FROM pg_catalog.pg_index AS i
        JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
        WHERE c.oid = to_regclass('agents.idx_executions_message_id_partial')
          AND NOT i.indisvalid
    ) THEN
        DROP INDEX agents.idx_executions_message_id_partial;
    END IF;
    IF EXISTS (
        SELECT 1 FROM pg_catalog.pg_index AS i
        JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
        WHERE c.oid = to_regclass('agents.idx_executions_todo_id_partial')
          AND NOT i.indisvalid
    ) THEN
        DROP INDEX agents.idx_executions_todo_id_partial;
    END IF;
    IF EXISTS (
        SELECT 1 FROM pg_catalog.pg_index AS i
        JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
        WHERE c.oid = to_regclass('agents.idx_executions_owner_id_created_at_partial')
          AND NOT i.indisvalid
    ) THEN
        DROP INDEX agents.idx_executions_owner_id_created_at_partial;
    END IF;
END
$$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_chat_id_created_at_partial
    ON agents.executions (chat_id, created_at DESC, id DESC)
    WHERE chat_id IS NOT NULL;
DROP INDEX CONCURRENTLY IF EXISTS agents.idx_executions_chat_id_created_at;
ALTER INDEX IF EXISTS agents.idx_executions_chat_id_created_at_partial
    RENAME TO idx_executions_chat_id_created_at;
COMMENT ON INDEX agents.idx_executions_chat_id_created_at IS
'Serves a chat''s executions, newest first (agents.list_executions with chat_id), and the '
'foreign key fk_executions_chats. Partial: runs without a chat are never looked up by it.';

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_message_id_partial
    ON agents.executions (message_id)
    WHERE message_id IS NOT NULL;
DROP INDEX CONCURRENTLY IF EXISTS agents.idx_executions_message_id;
ALTER INDEX IF EXISTS agents.idx_executions_message_id_partial
    RENAME TO idx_executions_message_id;
COMMENT ON INDEX agents.idx_executions_message_id IS
'Serves the foreign key fk_executions_messages (clearing message_id when a message is '
'deleted). Partial: runs without a message are never looked up by it.';

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_todo_id_partial
    ON agents.executions (todo_id)
    WHERE todo_id IS NOT NULL;
DROP INDEX CONCURRENTLY IF EXISTS agents.idx_executions_todo_id;
ALTER INDEX IF EXISTS agents.idx_executions_todo_id_partial
    RENAME TO idx_executions_todo_id;
COMMENT ON INDEX agents.idx_executions_todo_id IS
'Serves the foreign key fk_executions_todos (clearing todo_id when a todo is deleted) and '
'"executions of this todo". Partial: runs without a todo are never looked up by it.';

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_owner_id_created_at_partial
    ON agents.executions (owner_id, created_at)
    WHERE owner_id IS NOT NULL;
DROP INDEX CONCURRENTLY IF EXISTS agents.idx_executions_owner_id_created_at;
ALTER INDEX IF EXISTS agents.idx_executions_owner_id_created_at_partial
    RENAME TO idx_executions_owner_id_created_at;
COMMENT ON INDEX agents.idx_executions_owner_id_created_at IS
'An owner''s executions, newest first: their list under row-level security, their '
'erasure. Partial: system runs (no owner) are never looked up by owner.';
