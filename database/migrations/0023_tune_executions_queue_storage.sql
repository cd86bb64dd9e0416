-- 0023_tune_executions_queue_storage.sql
--
-- Storage settings for agents.executions as a queue. Each execution is written about four
-- times (enqueue, claim, heartbeats, finish) and then kept as history, so the table is
-- mostly finished rows and a small, fast-moving set of queued and running ones.
--
-- fillfactor = 80: pages keep a fifth free, so the new version of a row updated by a
-- heartbeat (heartbeat_at, updated_at: columns no index holds, see 0024) fits on its own
-- page as a HOT update, which writes no index entry at all, and the versions written by a
-- claim or a finish stay on the row's page.
--
-- Autovacuum by count, not by share: the default vacuums a table once dead rows reach 20 %
-- of it, and for a queue that keeps its history that share keeps growing, while the dead
-- entries that slow the claim are in the small partial claim index
-- (idx_executions_priority_run_after_created_at, WHERE status = 'queued'). A vacuum after
-- every 1,000 dead rows plus 1 % keeps that index dense; pages of finished rows are
-- all-visible and skipped, so these vacuums stay cheap however long the history. Analyze
-- as often, so that the planner's estimate of queued rows (and so its choice of the claim
-- index) follows the queue.
--
-- Re-runnable: ALTER TABLE … SET (…) assigns the same values again.

ALTER TABLE agents.executions SET (
    fillfactor = 80,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01
);
