-- 0000_record_preinstalled_extensions.sql
--
-- Records whether pgvector was installed before the migrations ran, so that the rollback of
-- 0001_create_vector_extension drops the extension only if the migrations installed it. On a
-- server where a superuser ran CREATE EXTENSION vector beforehand and a role that is not one
-- owns the schemas, rolling everything back then leaves the extension as it found it, instead
-- of failing with "must be owner of extension vector".
--
-- Numbered 0000 so that it sorts, and so runs, before 0001 on a fresh database (yoyo applies
-- pending migrations in the order of their ids and records each by its id). On a database
-- migrated before this file existed it runs after 0001: the extension then counts as the
-- migrations' when the migrating role owns it (0001's CREATE EXTENSION made it so), else as
-- installed beforehand.
--
-- Re-runnable: CREATE TABLE IF NOT EXISTS; the row is inserted once (ON CONFLICT DO NOTHING),
-- so running the file again after 0001 installed the extension keeps the first answer.

CREATE TABLE IF NOT EXISTS public.agentdb_extensions (
    extname text NOT NULL,
    is_preinstalled boolean NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_agentdb_extensions PRIMARY KEY (extname)
);

DO $$
DECLARE
    vector_owner oid;
    is_0001_applied boolean := false;
BEGIN
    SELECT e.extowner INTO vector_owner
    FROM pg_catalog.pg_extension AS e
    WHERE e.extname = 'vector';
    -- yoyo's own record, in the schema it keeps its tables in (the first on search_path).
    IF pg_catalog.to_regclass('_yoyo_migration') IS NOT NULL THEN
        EXECUTE 'SELECT EXISTS (SELECT FROM _yoyo_migration WHERE migration_id = $1)'
            INTO is_0001_applied
            USING '0001_create_vector_extension';
    END IF;
    INSERT INTO public.agentdb_extensions (extname, is_preinstalled)
    VALUES (
        'vector',
        CASE
            WHEN vector_owner IS NULL THEN false
            WHEN NOT is_0001_applied THEN true
            ELSE vector_owner <> (
                SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user
            )
        END
    )
    ON CONFLICT (extname) DO NOTHING;
END
$$;

COMMENT ON TABLE public.agentdb_extensions IS
    'The extensions the migrations use, and whether each was installed before they ran: the '
    'rollback of 0001_create_vector_extension drops vector only if the migrations installed it.';
COMMENT ON COLUMN public.agentdb_extensions.extname IS 'The extension (pg_extension.extname).';
COMMENT ON COLUMN public.agentdb_extensions.is_preinstalled IS
    'True when the extension existed before the migrations ran (a superuser created it): '
    'rolling back leaves it.';
COMMENT ON COLUMN public.agentdb_extensions.recorded_at IS 'When this migration looked.';
