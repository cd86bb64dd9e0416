-- 0014_enable_row_level_security.sql
--
-- Owner isolation that holds even against a query that forgets its WHERE owner_id = …:
-- row-level security on every owner-scoped table. agentdb_app sees, changes and inserts
-- only rows whose owner_id is the transaction's setting agentdb.owner_id (set by
-- db.session(owner_id=…) with set_config(…, true)); with no setting it sees nothing (fail
-- closed). Inserting a row for another owner, or moving one to another owner, fails the
-- WITH CHECK (insufficient_privilege). agentdb_worker sees every row, agentdb_readonly reads
-- every row; the table owner (who runs migrations) is not subject to RLS at all.
--
-- The policy's expression compares owner_id with a stable value, so the planner uses it as
-- an index condition where owner_id leads an index (chats, todos, executions, the message
-- search) and as a cheap filter elsewhere: queries keep their plans.
--
-- Re-runnable: ENABLE ROW LEVEL SECURITY is idempotent; each policy is created only when
-- missing (there is no CREATE POLICY IF NOT EXISTS).

ALTER TABLE messaging.chats ENABLE ROW LEVEL SECURITY;
ALTER TABLE messaging.messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE tasks.todos ENABLE ROW LEVEL SECURITY;
ALTER TABLE agents.executions ENABLE ROW LEVEL SECURITY;

-- Three policies per table: (name suffix, the rest of the policy, its comment). Roles,
-- commands and expressions are constants here; only the names vary (quoted by format's %I).
DO $$
DECLARE
    target record;
    policy record;
    policy_name text;
BEGIN
    FOR target IN
        SELECT * FROM (VALUES ('messaging', 'chats'), ('messaging', 'messages'),
                              ('tasks', 'todos'), ('agents', 'executions'))
            AS owner_tables (schema_name, table_name)
    LOOP
        FOR policy IN
            SELECT * FROM (VALUES
                ('_app_owner',
                 'FOR ALL TO agentdb_app '
                 'USING (owner_id = NULLIF(current_setting(''agentdb.owner_id'', true), '''')::uuid) '
                 'WITH CHECK (owner_id = NULLIF(current_setting(''agentdb.owner_id'', true), '''')::uuid)',
                 'agentdb_app reads and writes only rows whose owner_id is the transaction''s '
                 'agentdb.owner_id; none without one.'),
                ('_worker_all',
                 'FOR ALL TO agentdb_worker USING (true) WITH CHECK (true)',
                 'agentdb_worker works on every owner''s rows.'),
                ('_readonly_all',
                 'FOR SELECT TO agentdb_readonly USING (true)',
                 'agentdb_readonly reads every row.')
            ) AS policies (suffix, definition, description)
        LOOP
            policy_name := 'pol_' || target.table_name || policy.suffix;
            IF NOT EXISTS (SELECT FROM pg_catalog.pg_policies
                           WHERE schemaname = target.schema_name
                             AND tablename = target.table_name
                             AND policyname = policy_name) THEN
                EXECUTE pg_catalog.format('CREATE POLICY %I ON %I.%I ', policy_name,
                                          target.schema_name, target.table_name)
                        || policy.definition;
                EXECUTE pg_catalog.format('COMMENT ON POLICY %I ON %I.%I IS %L', policy_name,
                                          target.schema_name, target.table_name,
                                          policy.description);
            END IF;
        END LOOP;
    END LOOP;
END
$$;
