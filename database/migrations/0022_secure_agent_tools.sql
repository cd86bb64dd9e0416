-- 0022_secure_agent_tools.sql
--
-- The tool tables join the least-privilege setup of 0011–0015:
--
-- Row-level security for agentdb_app, keyed on the transaction's agentdb.owner_id like the
-- other owner tables (fail closed without it):
--   mcp_servers  an owner reads the shared servers (owner_id NULL) and their own, and may
--                write only their own: the shared ones are the operator's (owner, worker).
--   tools        follow their server: readable when the server is, writable when the server
--                is the owner's own (the policy's sub-SELECT is itself under the servers'
--                policies).
--   tool_calls   the owner's own, read through the execution index many at a time: the
--                setting is read once per statement (a sub-SELECT), as for messages (0016).
-- agentdb_worker sees and changes every row; agentdb_readonly reads every row.
--
-- Audit (0015's trigger function): updates, soft deletes and deletes of servers (their
-- endpoints and configuration are what an attacker would change), and deletes of tool
-- calls. A tool call's own finish is an update of the log, not a change to audit; tools
-- follow their server's tools/list and carry no owner.
--
-- Grants are explicit (0011's default privileges cover tables created by the role that ran
-- it; these may be created by another).
--
-- Re-runnable: ENABLE ROW LEVEL SECURITY and GRANT are idempotent; each policy is dropped if
-- present and created again; CREATE OR REPLACE TRIGGER; COMMENT ON is an assignment.

GRANT SELECT, INSERT, UPDATE, DELETE ON agents.mcp_servers, agents.tools, agents.tool_calls
    TO agentdb_app, agentdb_worker;
GRANT SELECT ON agents.mcp_servers, agents.tools, agents.tool_calls TO agentdb_readonly;

ALTER TABLE agents.mcp_servers ENABLE ROW LEVEL SECURITY;
ALTER TABLE agents.tools ENABLE ROW LEVEL SECURITY;
ALTER TABLE agents.tool_calls ENABLE ROW LEVEL SECURITY;

-- Servers -----------------------------------------------------------------------------------

DROP POLICY IF EXISTS pol_mcp_servers_app_read ON agents.mcp_servers;
CREATE POLICY pol_mcp_servers_app_read ON agents.mcp_servers
    FOR SELECT TO agentdb_app
    USING (owner_id IS NULL
           OR owner_id = NULLIF(current_setting('agentdb.owner_id', true), '')::uuid);
COMMENT ON POLICY pol_mcp_servers_app_read ON agents.mcp_servers IS
'agentdb_app reads the shared servers and those of the transaction''s agentdb.owner_id.';

DROP POLICY IF EXISTS pol_mcp_servers_app_owner ON agents.mcp_servers;
CREATE POLICY pol_mcp_servers_app_owner ON agents.mcp_servers
    FOR ALL TO agentdb_app
    USING (owner_id = NULLIF(current_setting('agentdb.owner_id', true), '')::uuid)
    WITH CHECK (owner_id = NULLIF(current_setting('agentdb.owner_id', true), '')::uuid);
COMMENT ON POLICY pol_mcp_servers_app_owner ON agents.mcp_servers IS
'agentdb_app writes only the servers of the transaction''s agentdb.owner_id; none without '
'one, and never a shared server.';

DROP POLICY IF EXISTS pol_mcp_servers_worker_all ON agents.mcp_servers;
CREATE POLICY pol_mcp_servers_worker_all ON agents.mcp_servers
    FOR ALL TO agentdb_worker USING (true) WITH CHECK (true);
COMMENT ON POLICY pol_mcp_servers_worker_all ON agents.mcp_servers IS
'agentdb_worker works on every owner''s servers and the shared ones.';

DROP POLICY IF EXISTS pol_mcp_servers_readonly_all ON agents.mcp_servers;
CREATE POLICY pol_mcp_servers_readonly_all ON agents.mcp_servers
    FOR SELECT TO agentdb_readonly USING (true);
COMMENT ON POLICY pol_mcp_servers_readonly_all ON agents.mcp_servers IS
'agentdb_readonly reads every row.';

-- Tools -------------------------------------------------------------------------------------

DROP POLICY IF EXISTS pol_tools_app_read ON agents.tools;
CREATE POLICY pol_tools_app_read ON agents.tools
    FOR SELECT TO agentdb_app
    USING (EXISTS (SELECT FROM agents.mcp_servers AS server
                   WHERE server.id = mcp_server_id));
COMMENT ON POLICY pol_tools_app_read ON agents.tools IS
'agentdb_app reads the tools of the servers it may read (shared, or the owner''s).';

DROP POLICY IF EXISTS pol_tools_app_owner ON agents.tools;
CREATE POLICY pol_tools_app_owner ON agents.tools
    FOR ALL TO agentdb_app
    USING (EXISTS (SELECT FROM agents.mcp_servers AS server
                   WHERE server.id = mcp_server_id
                     AND server.owner_id
                         = NULLIF(current_setting('agentdb.owner_id', true), '')::uuid))
    WITH CHECK (EXISTS (SELECT FROM agents.mcp_servers AS server
                        WHERE server.id = mcp_server_id
                          AND server.owner_id
                              = NULLIF(current_setting('agentdb.owner_id', true), '')::uuid));
COMMENT ON POLICY pol_tools_app_owner ON agents.tools IS
'agentdb_app writes only the tools of servers of the transaction''s agentdb.owner_id.';

DROP POLICY IF EXISTS pol_tools_worker_all ON agents.tools;
CREATE POLICY pol_tools_worker_all ON agents.tools
    FOR ALL TO agentdb_worker USING (true) WITH CHECK (true);
COMMENT ON POLICY pol_tools_worker_all ON agents.tools IS
'agentdb_worker works on every server''s tools.';

DROP POLICY IF EXISTS pol_tools_readonly_all ON agents.tools;
CREATE POLICY pol_tools_readonly_all ON agents.tools
    FOR SELECT TO agentdb_readonly USING (true);
COMMENT ON POLICY pol_tools_readonly_all ON agents.tools IS
'agentdb_readonly reads every row.';

-- Tool calls --------------------------------------------------------------------------------

DROP POLICY IF EXISTS pol_tool_calls_app_owner ON agents.tool_calls;
CREATE POLICY pol_tool_calls_app_owner ON agents.tool_calls
    FOR ALL TO agentdb_app
    USING (owner_id = (SELECT NULLIF(current_setting('agentdb.owner_id', true), '')::uuid))
    WITH CHECK (owner_id = (SELECT NULLIF(current_setting('agentdb.owner_id', true), '')::uuid));
COMMENT ON POLICY pol_tool_calls_app_owner ON agents.tool_calls IS
'agentdb_app reads and writes only calls whose owner_id is the transaction''s '
'agentdb.owner_id; none without one. The setting is read once per statement (a sub-SELECT).';

DROP POLICY IF EXISTS pol_tool_calls_worker_all ON agents.tool_calls;
CREATE POLICY pol_tool_calls_worker_all ON agents.tool_calls
    FOR ALL TO agentdb_worker USING (true) WITH CHECK (true);
COMMENT ON POLICY pol_tool_calls_worker_all ON agents.tool_calls IS
'agentdb_worker works on every owner''s calls.';

DROP POLICY IF EXISTS pol_tool_calls_readonly_all ON agents.tool_calls;
CREATE POLICY pol_tool_calls_readonly_all ON agents.tool_calls
    FOR SELECT TO agentdb_readonly USING (true);
COMMENT ON POLICY pol_tool_calls_readonly_all ON agents.tool_calls IS
'agentdb_readonly reads every row.';

-- Audit -------------------------------------------------------------------------------------

CREATE OR REPLACE TRIGGER trg_mcp_servers_audit
    AFTER UPDATE OR DELETE ON agents.mcp_servers
    FOR EACH ROW EXECUTE FUNCTION audit.record_change();
COMMENT ON TRIGGER trg_mcp_servers_audit ON agents.mcp_servers IS
'Records each update, soft delete and delete of a server in audit.events (column names only).';

CREATE OR REPLACE TRIGGER trg_tool_calls_audit
    AFTER DELETE ON agents.tool_calls
    FOR EACH ROW EXECUTE FUNCTION audit.record_change();
COMMENT ON TRIGGER trg_tool_calls_audit ON agents.tool_calls IS
'Records each delete of a tool call in audit.events.';
