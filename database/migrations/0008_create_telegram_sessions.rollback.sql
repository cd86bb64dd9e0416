-- Rollback of 0008_create_telegram_sessions.sql: drops telegram.sessions with its
-- indexes, constraints, trigger and comments.

DROP TABLE IF EXISTS telegram.sessions;
