-- 0010_update_schema_and_stamp_comments.sql
--
-- Re-states two sets of comments, because an applied migration is never edited:
-- - the four schema comments of 0003, which named Python files that are now packages (or
--   never existed): each schema now names the package that queries it (app.messaging,
--   app.tasks, app.agents, app.telegram), one package per schema;
-- - the comments of messaging.messages.created_at (0005) and messaging.chats.last_message_at
--   (0004), which now say how the stamps are made: under the chat's row lock, so the
--   messages of one chat are stamped in commit order.
--
-- Changes comments only: no data, no lock beyond the brief one COMMENT takes.
--
-- Re-runnable: COMMENT ON is an assignment.

COMMENT ON SCHEMA messaging IS
'agentdb: conversations between a user and the assistant (chats) and their messages, '
'with embeddings and full-text vectors for search. Queried by the Python package '
'app.messaging.';

COMMENT ON SCHEMA tasks IS
'agentdb: the todos that users and agents keep, optionally tied to a chat. '
'Queried by the Python package app.tasks.';

COMMENT ON SCHEMA agents IS
'agentdb: executions of agent runs; the table doubles as a job queue that workers claim '
'from. Queried by the Python package app.agents.';

COMMENT ON SCHEMA telegram IS
'agentdb: Telegram bot sessions, one row per aiogram FSM storage key, holding the FSM '
'state and data. Queried by the Python package app.telegram.';

COMMENT ON COLUMN messaging.messages.created_at IS
'When the message was added. messaging.add_message stamps clock_timestamp() taken after it '
'holds the chat''s row lock, so the messages of one chat are stamped in commit order (and '
'those added in one transaction keep their order); add_messages takes the same lock (FOR '
'NO KEY UPDATE, which a soft delete of the chat conflicts with) and stamps its batch a '
'microsecond apart per row. A plain INSERT gets now(). Orders a chat''s history (ties '
'broken by id).';

COMMENT ON COLUMN messaging.chats.last_message_at IS
'When the newest message was added: its created_at, set in the same transaction by '
'messaging.add_message and add_messages while they hold the chat''s row lock (FOR NO KEY '
'UPDATE, which a soft delete of the chat conflicts with); it never goes back. NULL = the '
'chat has no messages yet. Lists order chats by COALESCE(last_message_at, created_at).';
