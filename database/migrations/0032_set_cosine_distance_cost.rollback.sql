-- Rollback of 0032_set_cosine_distance_cost.sql: pgvector's own cost (the default, 1), where
-- the migrating role may change it.

DO $$
BEGIN
    IF EXISTS (
        SELECT FROM pg_catalog.pg_proc AS p
        WHERE p.oid = 'public.cosine_distance(public.vector, public.vector)'::regprocedure
          AND pg_catalog.pg_has_role(p.proowner, 'USAGE')
    ) THEN
        ALTER FUNCTION public.cosine_distance(public.vector, public.vector) COST 1;
    END IF;
END
$$;
