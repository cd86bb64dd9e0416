-- 0026_create_knowledge_schema.sql
--
-- Creates schema knowledge: what an assistant knows about its user beyond the chat history,
-- queried by the Python package app.knowledge:
--   memories   facts, preferences, episodes and instructions the assistant keeps
--              (remembered, reinforced, recalled by a weighted score, forgotten)
--   documents  the user's own files, each cut into chunks
--   chunks     the pieces of a document that retrieval finds (by embedding and by words)
-- The group roles of 0011 may use the schema; the tables grant their own privileges (0031).
--
-- Re-runnable: CREATE SCHEMA IF NOT EXISTS; COMMENT ON and GRANT are assignments.

CREATE SCHEMA IF NOT EXISTS knowledge;

COMMENT ON SCHEMA knowledge IS
'agentdb: long-term memory of the assistant (memories) and the user''s documents cut into '
'chunks for retrieval. Queried by the Python package app.knowledge.';

GRANT USAGE ON SCHEMA knowledge TO agentdb_app, agentdb_worker, agentdb_readonly;
