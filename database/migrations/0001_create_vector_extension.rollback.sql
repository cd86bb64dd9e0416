-- Rollback of 0001_create_vector_extension.sql: removes pgvector if the migrations installed it.
--
-- This file was changed after 0001 was released (the forward file never was). It used to be
-- `DROP EXTENSION IF EXISTS vector`, which dropped an extension a superuser had installed
-- before the migrations ran, and failed ("must be owner of extension vector") when the role
-- rolling back, the owner of the schemas, is not a superuser: yoyo runs exactly this file
-- for 0001, and nothing a migration can do beforehand makes that DROP succeed without
-- removing the extension. Now it drops vector only when 0000_record_preinstalled_extensions
-- recorded that the migrations installed it; on a database without that record, only when
-- the rolling-back role owns it. agentdb accepts the old file's checksum for this migration.
--
-- No CASCADE: if a column still uses the vector type (a later migration was not rolled
-- back), this fails instead of silently dropping that column and its data.
--
-- Re-runnable: nothing to drop the second time.

DO $$
DECLARE
    is_preinstalled boolean;
BEGIN
    IF pg_catalog.to_regclass('public.agentdb_extensions') IS NOT NULL THEN
        SELECT e.is_preinstalled INTO is_preinstalled
        FROM public.agentdb_extensions AS e
        WHERE e.extname = 'vector';
    END IF;
    IF is_preinstalled IS NULL THEN
        is_preinstalled := NOT EXISTS (
            SELECT FROM pg_catalog.pg_extension AS e
            JOIN pg_catalog.pg_roles AS r ON r.oid = e.extowner
            WHERE e.extname = 'vector' AND r.rolname = current_user
        );
    END IF;
    IF NOT is_preinstalled THEN
        DROP EXTENSION IF EXISTS vector;
    END IF;
END
$$;
