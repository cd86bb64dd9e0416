-- Rollback of 0018_create_agents_mcp_servers.sql (its tools go with it: 0019 rolls back first).

DROP TABLE IF EXISTS agents.mcp_servers;
