-- Rollback of 0010_update_schema_and_stamp_comments.sql: puts back, verbatim, the comments
-- that 0003 (schemas), 0004 (messaging.chats.last_message_at) and 0005
-- (messaging.messages.created_at) set.
--
-- Re-runnable: COMMENT ON is an assignment.

COMMENT ON COLUMN messaging.chats.last_message_at IS
'When the newest message was added; set by the application (messaging.add_message) in the '
'same transaction. NULL = the chat has no messages yet. Lists order chats by '
'COALESCE(last_message_at, created_at).';

COMMENT ON COLUMN messaging.messages.created_at IS
'When the message was added. messaging.add_message stamps clock_timestamp() (so messages '
'added in one transaction keep their order) and add_messages a microsecond apart per row; '
'a plain INSERT gets now(). Orders a chat''s history (ties broken by id).';

COMMENT ON SCHEMA telegram IS
'agentdb: Telegram bot sessions, one row per aiogram FSM storage key, holding the FSM '
'state and data. Queried by app/telegram.py and app/integrations/aiogram.py.';

COMMENT ON SCHEMA agents IS
'agentdb: executions of agent runs; the table doubles as a job queue that workers claim '
'from. Queried by app/agents.py and app/worker.py.';

COMMENT ON SCHEMA tasks IS
'agentdb: the todos that users and agents keep, optionally tied to a chat. '
'Queried by app/tasks.py.';

COMMENT ON SCHEMA messaging IS
'agentdb: conversations between a user and the assistant (chats) and their messages, '
'with embeddings and full-text vectors for search. Queried by app/messaging.py.';
