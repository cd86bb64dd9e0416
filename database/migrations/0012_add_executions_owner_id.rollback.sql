-- Rollback of 0012_add_executions_owner_id.sql: drops the index and the column.

DROP INDEX IF EXISTS agents.idx_executions_owner_id_created_at;
ALTER TABLE agents.executions DROP COLUMN IF EXISTS owner_id;
