-- Rollback of 0001_create_vector_extension.sql: removes pgvector.
--
-- No CASCADE: if a column still uses the vector type (a later migration was not rolled
-- back), this fails instead of silently dropping that column and its data.

DROP EXTENSION IF EXISTS vector;
