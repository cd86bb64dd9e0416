-- 0015_create_audit_triggers.sql
--
-- Every update, soft delete and delete of a chat, message or todo leaves an audit.events row:
-- the acting role, the session's actor, the owner, the row id, and for an update the names of
-- the columns it changed (never their values). Updates of bookkeeping columns alone
-- (updated_at, last_message_at, which every new message moves) are not events.
--
-- The trigger function is SECURITY DEFINER (the application cannot insert into audit.events
-- itself). Erasure and the retention purge record one event with their counts instead of one
-- per row: they set agentdb.bulk_operation for their transaction, which the trigger honours
-- only for a role that is not a member of agentdb_app (so the application cannot hide its
-- own changes behind it).
--
-- Re-runnable: CREATE OR REPLACE FUNCTION / TRIGGER; COMMENT ON is an assignment.

CREATE OR REPLACE FUNCTION audit.record_change()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    old_row jsonb := to_jsonb(OLD);
    new_row jsonb;
    changed text[];
    kind text;
    acting text := audit.acting_role();
BEGIN
    IF current_setting('agentdb.bulk_operation', true) = 'on'
       AND NOT EXISTS (
           SELECT FROM pg_catalog.pg_auth_members AS m
           WHERE m.roleid = 'agentdb_app'::regrole
             AND m.member = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = acting)
       ) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        kind := 'delete';
    ELSE
        new_row := to_jsonb(NEW);
        SELECT array_agg(after.key ORDER BY after.key) INTO changed
        FROM jsonb_each(new_row) AS after
        WHERE after.value IS DISTINCT FROM old_row -> after.key
          AND after.key NOT IN ('updated_at', 'last_message_at');
        IF changed IS NULL THEN
            RETURN NULL;
        END IF;
        kind := CASE WHEN old_row ->> 'deleted_at' IS NULL AND new_row ->> 'deleted_at' IS NOT NULL
                     THEN 'soft_delete' ELSE 'update' END;
    END IF;
    INSERT INTO audit.events (db_role, actor, owner_id, schema_name, table_name, row_id,
                              operation, changed_columns)
    VALUES (acting, NULLIF(current_setting('agentdb.actor', true), ''),
            (old_row ->> 'owner_id')::uuid, TG_TABLE_SCHEMA, TG_TABLE_NAME,
            (old_row ->> 'id')::uuid, kind, changed);
    RETURN NULL;
END
$function$;

COMMENT ON FUNCTION audit.record_change() IS
'Trigger function (AFTER UPDATE OR DELETE, FOR EACH ROW): appends the change to audit.events, '
'naming changed columns but never their values.';

CREATE OR REPLACE TRIGGER trg_chats_audit
    AFTER UPDATE OR DELETE ON messaging.chats
    FOR EACH ROW EXECUTE FUNCTION audit.record_change();
CREATE OR REPLACE TRIGGER trg_messages_audit
    AFTER UPDATE OR DELETE ON messaging.messages
    FOR EACH ROW EXECUTE FUNCTION audit.record_change();
CREATE OR REPLACE TRIGGER trg_todos_audit
    AFTER UPDATE OR DELETE ON tasks.todos
    FOR EACH ROW EXECUTE FUNCTION audit.record_change();

REVOKE ALL ON FUNCTION audit.record_change() FROM PUBLIC;
