-- transactional: false
--
-- Rollback of 0035_index_queued_executions_by_owner.sql: drops the index of queued
-- executions by owner without blocking writers (autocommit, like the forward file). A claim
-- under row-level security then reads the whole queue again.

DROP INDEX CONCURRENTLY IF EXISTS agents.idx_executions_owner_id_queued;
