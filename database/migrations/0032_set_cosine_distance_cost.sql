-- 0032_set_cosine_distance_cost.sql
--
-- Tells the planner what a cosine distance costs. pgvector declares cosine_distance (the
-- function of the <=> operator) with PostgreSQL's default COST 1, one cpu_operator_cost, as
-- if it were an integer comparison; a distance between two 1536-d vectors, one of them read
-- from TOAST, takes about 5 us, about as long as reading a cached page. Priced at 1, a
-- sequential scan that computes a distance for every row of an owner and sorts them looks
-- far cheaper than it is, and for an owner with a few thousand rows the planner takes it
-- over the HNSW index even where the search has already chosen the HNSW plan (the plan
-- choice of app.database.vectors): at 5,000 chunks, 23 ms instead of 9. COST 400 (400 *
-- cpu_operator_cost = 1.0, a page) prices the distance like the page read it is. Index
-- scans are not affected (an index prices its own distance computations), nor are the exact
-- scans of small owners, which compute every distance whatever it costs.
--
-- The function belongs to the extension: only its owner (the role that created the
-- extension, or a superuser) may change it. Where the migrating role may not, the block
-- says so in a NOTICE and leaves the cost as it is (the searches stay correct, only some
-- plans slower). ALTER EXTENSION vector UPDATE may reset the cost; the ALTER FUNCTION below
-- sets it again.
--
-- Re-runnable: ALTER FUNCTION ... COST assigns the same value again.

DO $$
BEGIN
    IF EXISTS (
        SELECT FROM pg_catalog.pg_proc AS p
        WHERE p.oid = 'public.cosine_distance(public.vector, public.vector)'::regprocedure
          AND pg_catalog.pg_has_role(p.proowner, 'USAGE')
    ) THEN
        ALTER FUNCTION public.cosine_distance(public.vector, public.vector) COST 400;
    ELSE
        RAISE NOTICE 'public.cosine_distance keeps its cost: % does not own it',
            current_user;
    END IF;
END
$$;
