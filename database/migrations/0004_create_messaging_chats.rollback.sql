-- Rollback of 0004_create_messaging_chats.sql: drops messaging.chats with its indexes,
-- constraints, trigger and comments.
--
-- No CASCADE: fails while a table from a later migration still references it.

DROP TABLE IF EXISTS messaging.chats;
