-- 0013_create_audit_events.sql
--
-- Schema audit and its append-only table audit.events: one row per sensitive change (an
-- update, soft delete or delete of user content, an erasure, a purge, a grant), saying who
-- (the database role and the session's actor), whose data, where, and which columns, never
-- the content itself. The application and worker roles cannot write it directly: rows come
-- from the audit triggers (0015) and from audit.record_event(), both SECURITY DEFINER; no
-- one but the owner may UPDATE, DELETE or TRUNCATE it, and an UPDATE is refused even to the
-- owner (append-only). Application sessions read their own owner's events (row-level
-- security); workers and readonly read all.
--
-- Re-runnable: IF NOT EXISTS, CREATE OR REPLACE, guarded DO blocks; GRANT/REVOKE and
-- COMMENT ON are assignments.

CREATE SCHEMA IF NOT EXISTS audit;

COMMENT ON SCHEMA audit IS
'agentdb: the audit trail (append-only). Queried by the Python package app.audit.';

CREATE TABLE IF NOT EXISTS audit.events (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    occurred_at timestamptz NOT NULL DEFAULT now(),
    db_role text NOT NULL,
    actor text,
    owner_id uuid,
    schema_name text NOT NULL,
    table_name text NOT NULL,
    row_id uuid,
    operation varchar(20) NOT NULL,
    changed_columns text[],
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT pk_events PRIMARY KEY (id),
    CONSTRAINT ck_events_operation_valid CHECK (
        operation IN ('insert', 'update', 'delete', 'soft_delete', 'erase', 'purge', 'grant')
    ),
    CONSTRAINT ck_events_details_is_object CHECK (jsonb_typeof(details) = 'object')
);

-- One owner's trail, newest first (list_audit_events with owner_id; erasure reports).
CREATE INDEX IF NOT EXISTS idx_events_owner_id_occurred_at
    ON audit.events (owner_id, occurred_at);
-- One table's trail, newest first.
CREATE INDEX IF NOT EXISTS idx_events_table_name_occurred_at
    ON audit.events (table_name, occurred_at);
-- Everything, newest first.
CREATE INDEX IF NOT EXISTS idx_events_occurred_at ON audit.events (occurred_at);

COMMENT ON TABLE audit.events IS
'Append-only audit trail: who changed what of whose data, never the content. Written only by '
'the audit triggers and audit.record_event(); nobody may update a row.';
COMMENT ON COLUMN audit.events.id IS 'Primary key.';
COMMENT ON COLUMN audit.events.occurred_at IS 'When the change happened (its transaction''s now()).';
COMMENT ON COLUMN audit.events.db_role IS
'The database role that made the change (the SET ROLE role, else the login).';
COMMENT ON COLUMN audit.events.actor IS
'Who the application says acted (db.session(actor=…), setting agentdb.actor); NULL if unsaid.';
COMMENT ON COLUMN audit.events.owner_id IS 'The user whose data it was; NULL for shared rows.';
COMMENT ON COLUMN audit.events.schema_name IS 'Schema of the changed table.';
COMMENT ON COLUMN audit.events.table_name IS 'The changed table (for erase and purge: the operation''s scope).';
COMMENT ON COLUMN audit.events.row_id IS 'The changed row''s id; NULL for erasures and purges.';
COMMENT ON COLUMN audit.events.operation IS
'insert, update, delete, soft_delete (deleted_at set), erase (one owner''s data removed), '
'purge (soft-deleted rows removed), grant (a login role joined a group role).';
COMMENT ON COLUMN audit.events.changed_columns IS
'Names of the columns an update changed (never their values); NULL for other operations.';
COMMENT ON COLUMN audit.events.details IS
'Counts and names (rows erased per table, the role granted), never user content.';

-- The role that is acting, also inside a SECURITY DEFINER function (where current_user is
-- the definer): the SET ROLE role if one is set, else the login.
CREATE OR REPLACE FUNCTION audit.acting_role()
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $function$
    SELECT CASE WHEN current_setting('role') = 'none' THEN session_user::text
                ELSE current_setting('role') END
$function$;

COMMENT ON FUNCTION audit.acting_role() IS
'The role that is acting: the SET ROLE role if any, else the session''s login.';

-- Events that no trigger sees: erasures, purges, grants. SECURITY DEFINER so that the worker
-- may append through it without INSERT on the table; execute is not granted to the app.
CREATE OR REPLACE FUNCTION audit.record_event(
    p_operation text,
    p_schema_name text,
    p_table_name text,
    p_owner_id uuid,
    p_details jsonb
)
RETURNS uuid
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
    INSERT INTO audit.events (db_role, actor, owner_id, schema_name, table_name, operation,
                              details)
    VALUES (audit.acting_role(), NULLIF(current_setting('agentdb.actor', true), ''),
            p_owner_id, p_schema_name, p_table_name, p_operation, COALESCE(p_details, '{}'))
    RETURNING id
$function$;

COMMENT ON FUNCTION audit.record_event(text, text, text, uuid, jsonb) IS
'Appends an erase, purge or grant event (counts and names only). For the owner and '
'agentdb_worker; the application role may not call it.';

CREATE OR REPLACE FUNCTION audit.refuse_update()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $function$
BEGIN
    RAISE EXCEPTION 'audit.events is append-only: rows are never updated'
        USING ERRCODE = 'insufficient_privilege';
END
$function$;

COMMENT ON FUNCTION audit.refuse_update() IS
'Trigger function: refuses any UPDATE of audit.events, whoever asks.';

CREATE OR REPLACE TRIGGER trg_events_refuse_update
    BEFORE UPDATE ON audit.events
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_update();

REVOKE ALL ON SCHEMA audit FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA audit FROM PUBLIC;
REVOKE ALL ON FUNCTION audit.record_event(text, text, text, uuid, jsonb) FROM PUBLIC;
GRANT USAGE ON SCHEMA audit TO agentdb_app, agentdb_worker, agentdb_readonly;
GRANT SELECT ON audit.events TO agentdb_app, agentdb_worker, agentdb_readonly;
GRANT EXECUTE ON FUNCTION audit.record_event(text, text, text, uuid, jsonb) TO agentdb_worker;

-- Application sessions read only their owner's events; workers and readonly read all.
ALTER TABLE audit.events ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_policies
                   WHERE schemaname = 'audit' AND tablename = 'events'
                     AND policyname = 'pol_events_app_owner') THEN
        CREATE POLICY pol_events_app_owner ON audit.events FOR SELECT TO agentdb_app
            USING (owner_id = NULLIF(current_setting('agentdb.owner_id', true), '')::uuid);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_policies
                   WHERE schemaname = 'audit' AND tablename = 'events'
                     AND policyname = 'pol_events_read_all') THEN
        CREATE POLICY pol_events_read_all ON audit.events FOR SELECT
            TO agentdb_worker, agentdb_readonly
            USING (true);
    END IF;
END
$$;

COMMENT ON POLICY pol_events_app_owner ON audit.events IS
'agentdb_app reads the events of the transaction''s agentdb.owner_id only.';
COMMENT ON POLICY pol_events_read_all ON audit.events IS
'Workers and readonly read every event.';
