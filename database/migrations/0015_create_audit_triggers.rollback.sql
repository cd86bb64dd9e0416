-- Rollback of 0015_create_audit_triggers.sql: drops the triggers and their function.

DROP TRIGGER IF EXISTS trg_todos_audit ON tasks.todos;
DROP TRIGGER IF EXISTS trg_messages_audit ON messaging.messages;
DROP TRIGGER IF EXISTS trg_chats_audit ON messaging.chats;
DROP FUNCTION IF EXISTS audit.record_change();
