-- Rollback of 0027_create_knowledge_memories.sql: drops knowledge.memories with its
-- indexes, constraints, trigger and comments.

DROP TABLE IF EXISTS knowledge.memories;
