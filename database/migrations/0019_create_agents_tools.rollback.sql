-- Rollback of 0019_create_agents_tools.sql (its index of 0021 goes with it).

DROP TABLE IF EXISTS agents.tools;
