-- Rollback of 0029_create_knowledge_chunks.sql: drops knowledge.chunks with its indexes,
-- constraints, trigger and comments.

DROP TABLE IF EXISTS knowledge.chunks;
