-- Rollback of 0016_tune_row_level_security.sql: the messages policy of 0014, no dependency
-- statistics, no explicit TEMPORARY grant (what PUBLIC holds is untouched).

ALTER POLICY pol_messages_app_owner ON messaging.messages
    USING (owner_id = NULLIF(current_setting('agentdb.owner_id', true), '')::uuid)
    WITH CHECK (owner_id = NULLIF(current_setting('agentdb.owner_id', true), '')::uuid);

COMMENT ON POLICY pol_messages_app_owner ON messaging.messages IS
'agentdb_app reads and writes only rows whose owner_id is the transaction''s '
'agentdb.owner_id; none without one.';

DROP STATISTICS IF EXISTS messaging.st_messages_chat_id_owner_id;
DROP STATISTICS IF EXISTS agents.st_executions_chat_id_owner_id;

DO $$
BEGIN
    EXECUTE pg_catalog.format('REVOKE TEMPORARY ON DATABASE %I FROM agentdb_app',
                              pg_catalog.current_database());
END
$$;
