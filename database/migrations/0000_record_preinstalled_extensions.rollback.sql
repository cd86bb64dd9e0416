-- Rollback of 0000_record_preinstalled_extensions.sql: drops the record. It runs after the
-- rollback of 0001_create_vector_extension, which reads it.
--
-- Re-runnable: DROP ... IF EXISTS.

DROP TABLE IF EXISTS public.agentdb_extensions;
