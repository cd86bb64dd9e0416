-- 0003_create_schemas.sql
--
-- Creates the four domain schemas. agentdb keeps one schema per domain, and each schema
-- maps to one family of migrations and one module of app/:
--   messaging  chats and their messages              (app/messaging.py)
--   tasks      todos                                 (app/tasks.py)
--   agents     executions of agent runs, a job queue (app/agents.py)
--   telegram   Telegram bot sessions, aiogram FSM    (app/telegram.py)
--
-- Re-runnable: CREATE SCHEMA IF NOT EXISTS; COMMENT ON is an assignment.

CREATE SCHEMA IF NOT EXISTS messaging;

COMMENT ON SCHEMA messaging IS
'agentdb: conversations between a user and the assistant (chats) and their messages, '
'with embeddings and full-text vectors for search. Queried by app/messaging.py.';

CREATE SCHEMA IF NOT EXISTS tasks;

COMMENT ON SCHEMA tasks IS
'agentdb: the todos that users and agents keep, optionally tied to a chat. '
'Queried by app/tasks.py.';

CREATE SCHEMA IF NOT EXISTS agents;

COMMENT ON SCHEMA agents IS
'agentdb: executions of agent runs; the table doubles as a job queue that workers claim '
'from. Queried by app/agents.py and app/worker.py.';

CREATE SCHEMA IF NOT EXISTS telegram;

COMMENT ON SCHEMA telegram IS
'agentdb: Telegram bot sessions, one row per aiogram FSM storage key, holding the FSM '
'state and data. Queried by app/telegram.py and app/integrations/aiogram.py.';
