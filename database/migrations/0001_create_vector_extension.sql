-- 0001_create_vector_extension.sql
--
-- Installs pgvector, which provides the vector type behind messaging.messages.embedding
-- (a later migration adds an HNSW index on it for similarity search).
--
-- The extension is pinned to schema public so that every later file can name its type as
-- public.vector without relying on search_path. On a server where vector is already
-- installed (in any schema) this statement is a no-op; the migrations expect it in public.
--
-- Re-runnable: IF NOT EXISTS.

CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public;
