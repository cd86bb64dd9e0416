-- Rollback of 0024_index_running_executions_by_worker.sql: restores 0007's index on
-- heartbeat_at and drops the one on worker_id, without blocking writers (autocommit, like
-- the forward file).

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_heartbeat_at
    ON agents.executions (heartbeat_at)
    WHERE status = 'running';

COMMENT ON INDEX agents.idx_executions_heartbeat_at IS
'Finds running executions whose heartbeat is stale (agents.requeue_stale_executions).';

DROP INDEX CONCURRENTLY IF EXISTS agents.idx_executions_worker_id;
