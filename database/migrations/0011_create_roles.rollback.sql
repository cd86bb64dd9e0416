-- Rollback of 0011_create_roles.sql: takes back every privilege it gave in this database,
-- then drops the roles unless another database of the server still grants them something
-- (roles are shared by all databases; that one keeps them).

ALTER DEFAULT PRIVILEGES IN SCHEMA messaging, tasks, agents, telegram
    REVOKE SELECT ON TABLES FROM agentdb_readonly;
ALTER DEFAULT PRIVILEGES IN SCHEMA messaging, tasks, agents, telegram
    REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM agentdb_app, agentdb_worker;

REVOKE ALL ON ALL TABLES IN SCHEMA messaging, tasks, agents, telegram
    FROM agentdb_app, agentdb_worker, agentdb_readonly;
REVOKE ALL ON SCHEMA messaging, tasks, agents, telegram
    FROM agentdb_app, agentdb_worker, agentdb_readonly;

DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['agentdb_app', 'agentdb_worker', 'agentdb_readonly'] LOOP
        BEGIN
            EXECUTE pg_catalog.format('DROP ROLE IF EXISTS %I', name);
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE NOTICE 'role % is still used by another database; kept', name;
        END;
    END LOOP;
END
$$;
