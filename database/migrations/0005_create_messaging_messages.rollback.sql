-- Rollback of 0005_create_messaging_messages.sql: drops messaging.messages with its
-- indexes, constraints, trigger and comments.
--
-- No CASCADE: fails while a table from a later migration still references it.

DROP TABLE IF EXISTS messaging.messages;
