-- Rollback of 0007_create_agents_executions.sql: drops agents.executions with its
-- indexes, constraints, trigger and comments.
--
-- No CASCADE: fails while a table from a later migration still references it.

DROP TABLE IF EXISTS agents.executions;
