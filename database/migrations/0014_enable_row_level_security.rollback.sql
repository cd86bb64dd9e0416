-- Rollback of 0014_enable_row_level_security.sql: drops the policies, disables RLS.

DROP POLICY IF EXISTS pol_chats_app_owner ON messaging.chats;
DROP POLICY IF EXISTS pol_chats_worker_all ON messaging.chats;
DROP POLICY IF EXISTS pol_chats_readonly_all ON messaging.chats;
DROP POLICY IF EXISTS pol_messages_app_owner ON messaging.messages;
DROP POLICY IF EXISTS pol_messages_worker_all ON messaging.messages;
DROP POLICY IF EXISTS pol_messages_readonly_all ON messaging.messages;
DROP POLICY IF EXISTS pol_todos_app_owner ON tasks.todos;
DROP POLICY IF EXISTS pol_todos_worker_all ON tasks.todos;
DROP POLICY IF EXISTS pol_todos_readonly_all ON tasks.todos;
DROP POLICY IF EXISTS pol_executions_app_owner ON agents.executions;
DROP POLICY IF EXISTS pol_executions_worker_all ON agents.executions;
DROP POLICY IF EXISTS pol_executions_readonly_all ON agents.executions;

ALTER TABLE messaging.chats DISABLE ROW LEVEL SECURITY;
ALTER TABLE messaging.messages DISABLE ROW LEVEL SECURITY;
ALTER TABLE tasks.todos DISABLE ROW LEVEL SECURITY;
ALTER TABLE agents.executions DISABLE ROW LEVEL SECURITY;
