-- Rollback of 0020_create_agents_tool_calls.sql.

DROP TABLE IF EXISTS agents.tool_calls;
