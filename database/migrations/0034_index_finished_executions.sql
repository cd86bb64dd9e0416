-- transactional: false
--
-- 0034_index_finished_executions.sql
--
-- Creates idx_executions_finished_at: finished executions (succeeded, failed, cancelled) by
-- finished_at. It serves the retention purge (agents.purge_finished_executions), which takes
-- the oldest finished runs in batches of up to a thousand, oldest first: without it, each
-- batch would read the table from end to end (executions are mostly finished history, and
-- no other index holds finished_at).
--
-- The claim does not get slower:
-- - the claim's statements ask for status = 'queued', which contradicts this index's
--   predicate, so the planner can never choose it for them: they keep
--   idx_executions_priority_run_after_created_at;
-- - a partial index receives an entry only for a row version matching its predicate: an
--   enqueue (queued), a claim (running), a retry (queued again) and the stale sweep's requeue
--   write nothing into it, and heartbeats stay HOT updates (they change neither status nor
--   finished_at);
-- - a finish (complete, fail with no attempts left, cancel) writes one entry more, and that
--   update was not HOT before either (status is in the claim index's predicate).
--
-- Non-transactional (see 0009): on a table holding millions of finished runs, CREATE INDEX
-- CONCURRENTLY does not block the producers and workers while it scans the table.
--
-- Re-runnable: CREATE INDEX CONCURRENTLY IF NOT EXISTS; a concurrent build that failed half
-- way leaves an INVALID index, which the guarded DO block drops first.

DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_catalog.pg_index AS i
        JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
        WHERE c.oid = to_regclass('agents.idx_executions_finished_at')
          AND NOT i.indisvalid
    ) THEN
        DROP INDEX agents.idx_executions_finished_at;
    END IF;
END
$$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_finished_at
    ON agents.executions (finished_at)
    WHERE status IN ('succeeded', 'failed', 'cancelled');

COMMENT ON INDEX agents.idx_executions_finished_at IS
'Finished executions (succeeded, failed, cancelled) by finished_at, oldest first: serves the '
'retention purge (agents.purge_finished_executions). Queued and running rows are not in it, '
'so the claim and heartbeats write nothing to it.';
