-- 0011_create_roles.sql
--
-- The three group roles the application, the workers and people at psql log in through
-- (membership: `agentdb grant LOGIN_ROLE --app|--worker|--readonly`). All NOLOGIN; the
-- migrations themselves run as the owner of the schemas, which nothing here restricts.
--   agentdb_app       DML on the domain schemas, no DDL, no TRUNCATE; row-level security
--                     (0014) limits it to the rows of the transaction's agentdb.owner_id
--   agentdb_worker    the same DML on every owner's rows: the queue, erasure, retention
--   agentdb_readonly  SELECT on everything, for inspection; no writes
-- Default privileges cover the tables later migrations create in these schemas (when they
-- are created by the role that runs this file, the usual migration owner).
--
-- Roles belong to the whole server, not to one database: creating them is guarded, and the
-- rollback drops them only when no other database still grants them anything.
--
-- Re-runnable: roles are created only when missing; GRANT and ALTER DEFAULT PRIVILEGES of a
-- privilege already held change nothing.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'agentdb_app') THEN
        CREATE ROLE agentdb_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'agentdb_worker') THEN
        CREATE ROLE agentdb_worker NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'agentdb_readonly') THEN
        CREATE ROLE agentdb_readonly NOLOGIN;
    END IF;
END
$$;

COMMENT ON ROLE agentdb_app IS
'agentdb: group role of the application''s logins. DML on the domain schemas (no DDL, no '
'TRUNCATE); row-level security shows it only the rows of the transaction''s agentdb.owner_id.';
COMMENT ON ROLE agentdb_worker IS
'agentdb: group role of worker logins. DML on every owner''s rows (the execution queue, '
'erasure, retention purge); no DDL, no TRUNCATE.';
COMMENT ON ROLE agentdb_readonly IS
'agentdb: group role for inspection (psql): SELECT on every table, no writes.';

GRANT USAGE ON SCHEMA messaging, tasks, agents, telegram
    TO agentdb_app, agentdb_worker, agentdb_readonly;

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA messaging, tasks, agents, telegram
    TO agentdb_app, agentdb_worker;
GRANT SELECT ON ALL TABLES IN SCHEMA messaging, tasks, agents, telegram TO agentdb_readonly;

ALTER DEFAULT PRIVILEGES IN SCHEMA messaging, tasks, agents, telegram
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO agentdb_app, agentdb_worker;
ALTER DEFAULT PRIVILEGES IN SCHEMA messaging, tasks, agents, telegram
    GRANT SELECT ON TABLES TO agentdb_readonly;
