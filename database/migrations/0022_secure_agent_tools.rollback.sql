-- Rollback of 0022_secure_agent_tools.sql: the audit triggers and the policies go, row-level
-- security is disabled on the three tables (the grants stay with the tables, which the
-- earlier rollbacks drop).

DROP TRIGGER IF EXISTS trg_tool_calls_audit ON agents.tool_calls;
DROP TRIGGER IF EXISTS trg_mcp_servers_audit ON agents.mcp_servers;

DROP POLICY IF EXISTS pol_tool_calls_readonly_all ON agents.tool_calls;
DROP POLICY IF EXISTS pol_tool_calls_worker_all ON agents.tool_calls;
DROP POLICY IF EXISTS pol_tool_calls_app_owner ON agents.tool_calls;
DROP POLICY IF EXISTS pol_tools_readonly_all ON agents.tools;
DROP POLICY IF EXISTS pol_tools_worker_all ON agents.tools;
DROP POLICY IF EXISTS pol_tools_app_owner ON agents.tools;
DROP POLICY IF EXISTS pol_tools_app_read ON agents.tools;
DROP POLICY IF EXISTS pol_mcp_servers_readonly_all ON agents.mcp_servers;
DROP POLICY IF EXISTS pol_mcp_servers_worker_all ON agents.mcp_servers;
DROP POLICY IF EXISTS pol_mcp_servers_app_owner ON agents.mcp_servers;
DROP POLICY IF EXISTS pol_mcp_servers_app_read ON agents.mcp_servers;

ALTER TABLE agents.tool_calls DISABLE ROW LEVEL SECURITY;
ALTER TABLE agents.tools DISABLE ROW LEVEL SECURITY;
ALTER TABLE agents.mcp_servers DISABLE ROW LEVEL SECURITY;
