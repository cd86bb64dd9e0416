-- transactional: false
--
-- Rollback of 0034_index_finished_executions.sql: drops the index of finished executions
-- without blocking writers (autocommit, like the forward file). The retention purge then
-- reads the table from end to end for each batch.

DROP INDEX CONCURRENTLY IF EXISTS agents.idx_executions_finished_at;
