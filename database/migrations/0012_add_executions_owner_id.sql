-- 0012_add_executions_owner_id.sql
--
-- agents.executions gets the owner_id every owner-scoped table carries itself, so row-level
-- security (0014), erasure and a later distribution by owner need no join. It is the owner
-- of the execution's chat or todo, or the one enqueue_execution is given; NULL for system
-- runs (visible to workers, never to an application session). Existing rows take the owner
-- of their chat, else of their todo.
--
-- Re-runnable: ADD COLUMN / CREATE INDEX IF NOT EXISTS; the backfill touches only rows whose
-- owner_id is still NULL.

ALTER TABLE agents.executions ADD COLUMN IF NOT EXISTS owner_id uuid;

UPDATE agents.executions AS execution
SET owner_id = COALESCE(
    (SELECT chat.owner_id FROM messaging.chats AS chat WHERE chat.id = execution.chat_id),
    (SELECT todo.owner_id FROM tasks.todos AS todo WHERE todo.id = execution.todo_id)
)
WHERE execution.owner_id IS NULL
  AND (execution.chat_id IS NOT NULL OR execution.todo_id IS NOT NULL);

-- An owner's executions, newest first: their list, their erasure.
CREATE INDEX IF NOT EXISTS idx_executions_owner_id_created_at
    ON agents.executions (owner_id, created_at);

COMMENT ON COLUMN agents.executions.owner_id IS
'The user the run is for: its chat''s or todo''s owner, or given at enqueue; NULL for a '
'system run. Row-level security shows an application session only its owner''s runs.';
