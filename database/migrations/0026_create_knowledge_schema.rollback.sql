-- Rollback of 0026_create_knowledge_schema.sql: drops the schema (its tables are dropped by
-- the rollbacks of 0027-0029 first; no CASCADE, so a table left behind makes this fail).

DROP SCHEMA IF EXISTS knowledge;
