-- 0016_tune_row_level_security.sql
--
-- Row-level security that costs the application's queries nothing they can measure:
--
-- 1. Messages are read many at a time through indexes that do not lead with owner_id (a
--    chat's history through idx_messages_chat_id_created_at_id), so their owner check is a
--    filter on every row read; and a bulk insert checks every row it writes. In the form of
--    0014 each check reads the setting and parses it as a uuid again; as a sub-SELECT it is
--    computed once per statement (an InitPlan) and each row compares two uuids. Chats, todos
--    and executions keep 0014's form: their queries find rows through owner_id or their
--    primary key, where the check is an index condition evaluated once anyway, and that form
--    lets the planner weigh it against the indexes as it weighs a constant.
-- 2. A message's owner_id is its chat's, and so is an execution's when it has a chat: the
--    planner does not know that, and multiplies the owner check's selectivity into the chat
--    condition's, expecting a chat's page of messages to be a hundredth of what it is (and
--    choosing plans for a handful of rows). Functional-dependency statistics tell it that
--    the chat decides the owner, so a query estimates as many rows under RLS as without.
-- 3. agentdb_app may create temporary tables: add_messages, which cannot COPY into a table
--    under row-level security, COPYs a batch into a temporary table of the session and moves
--    it with one INSERT … SELECT (so every row still passes the policy's WITH CHECK). PUBLIC
--    has this privilege by default; granting it keeps bulk inserts working on a server that
--    revoked it from PUBLIC.
--
-- Re-runnable: ALTER POLICY sets the expressions; CREATE STATISTICS IF NOT EXISTS; ANALYZE
-- and GRANT change nothing when repeated.

ALTER POLICY pol_messages_app_owner ON messaging.messages
    USING (owner_id = (SELECT NULLIF(current_setting('agentdb.owner_id', true), '')::uuid))
    WITH CHECK (owner_id = (SELECT NULLIF(current_setting('agentdb.owner_id', true), '')::uuid));

COMMENT ON POLICY pol_messages_app_owner ON messaging.messages IS
'agentdb_app reads and writes only rows whose owner_id is the transaction''s '
'agentdb.owner_id; none without one. The setting is read once per statement (a sub-SELECT), '
'since messages are read and inserted many at a time.';

CREATE STATISTICS IF NOT EXISTS messaging.st_messages_chat_id_owner_id (dependencies)
    ON chat_id, owner_id FROM messaging.messages;

COMMENT ON STATISTICS messaging.st_messages_chat_id_owner_id IS
'A message''s chat decides its owner: keeps the row estimates of a chat''s messages the same '
'under row-level security (whose owner check would otherwise count as a second, independent '
'filter).';

CREATE STATISTICS IF NOT EXISTS agents.st_executions_chat_id_owner_id (dependencies)
    ON chat_id, owner_id FROM agents.executions;

COMMENT ON STATISTICS agents.st_executions_chat_id_owner_id IS
'An execution''s chat decides its owner: keeps the row estimates of a chat''s executions the '
'same under row-level security.';

ANALYZE messaging.messages, agents.executions;

DO $$
BEGIN
    EXECUTE pg_catalog.format('GRANT TEMPORARY ON DATABASE %I TO agentdb_app',
                              pg_catalog.current_database());
END
$$;
