-- Rollback of 0002_create_updated_at_function.sql: removes the updated_at trigger function.
--
-- No CASCADE: fails while a table trigger still uses it (a later migration was not rolled
-- back) instead of silently dropping those triggers.

DROP FUNCTION IF EXISTS public.agentdb_set_updated_at();
