-- transactional: false
--
-- 0024_index_running_executions_by_worker.sql
--
-- Replaces idx_executions_heartbeat_at (heartbeat_at, WHERE status = 'running') with
-- idx_executions_worker_id (worker_id, WHERE status = 'running'). Both hold running rows
-- only, as many as runs in flight, and serve the sweep for stale runs
-- (agents.requeue_stale_executions, which reads every running row and tests heartbeat_at);
-- the new one also finds a worker's runs. The difference is the heartbeat: a worker renews
-- heartbeat_at every few seconds for every run, and while an index holds that column each
-- renewal writes a new index entry. With no index on heartbeat_at (nor on updated_at), a
-- heartbeat is a HOT update (see 0023's fillfactor): the row's page only.
--
-- Non-transactional (see 0009): on a table holding millions of finished runs, CREATE INDEX
-- CONCURRENTLY does not block the producers and workers while it scans the table.
--
-- Re-runnable: CREATE INDEX CONCURRENTLY IF NOT EXISTS, DROP INDEX CONCURRENTLY IF EXISTS;
-- a concurrent build that failed half way leaves an INVALID index, which the guarded DO
-- block drops first.

DO $$
BEGIN
    IF EXISTS (
        SELECT 1
        FROM pg_catalog.pg_index AS i
        JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'agents'
          AND c.relname = 'idx_executions_worker_id'
          AND NOT i.indisvalid
    ) THEN
        DROP INDEX agents.idx_executions_worker_id;
    END IF;
END
$$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_worker_id
    ON agents.executions (worker_id)
    WHERE status = 'running';

COMMENT ON INDEX agents.idx_executions_worker_id IS
'Running executions by worker: serves the sweep for stale runs '
'(agents.requeue_stale_executions) and a worker''s runs. Holds no heartbeat_at, so that '
'heartbeats are HOT updates.';

DROP INDEX CONCURRENTLY IF EXISTS agents.idx_executions_heartbeat_at;
