-- transactional: false
--
-- 0035_index_queued_executions_by_owner.sql
--
-- Creates idx_executions_owner_id_queued: queued executions by owner, in claim order
-- (owner_id, priority DESC, run_after, created_at), WHERE status = 'queued'. It serves the
-- claim under row-level security: for a login of agentdb_app the policy adds
-- owner_id = <the transaction's owner> to the claim, which the claim index
-- (idx_executions_priority_run_after_created_at, the whole queue in claim order) can only
-- check row by row, so the planner read the whole queue's index and an owner index, sorted,
-- and, not trusting that plan for a generic one, planned every claim again (0 generic and
-- 395 custom plans in 400 claims of a benchmark: a tenth more per unit of work than the
-- same claim of the schema owner). With this index the owner's queue head is the first
-- entry under owner_id: an index condition, no sort, and the generic plan again.
--
-- The workers (agentdb_worker, the schema owner) are not restricted and keep the claim
-- index: nothing else orders the whole queue. What this index costs them: an enqueue, a
-- retry and the stale sweep's requeue write one index entry more (a queued row version); a
-- claim and a finish write none (a running or finished row is not in it), and a heartbeat
-- stays a HOT update. It holds queued rows only, as few as the queue is long.
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
        WHERE c.oid = to_regclass('agents.idx_executions_owner_id_queued')
          AND NOT i.indisvalid
    ) THEN
        DROP INDEX agents.idx_executions_owner_id_queued;
    END IF;
END
$$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_executions_owner_id_queued
    ON agents.executions (owner_id, priority DESC, run_after, created_at)
    WHERE status = 'queued';

COMMENT ON INDEX agents.idx_executions_owner_id_queued IS
'Queued executions by owner in claim order: the claim of a login of agentdb_app, which '
'row-level security limits to the transaction''s owner, reads its queue head here.';
