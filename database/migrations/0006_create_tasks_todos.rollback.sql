-- Rollback of 0006_create_tasks_todos.sql: drops tasks.todos with its indexes,
-- constraints, trigger and comments.
--
-- No CASCADE: fails while a table from a later migration still references it.

DROP TABLE IF EXISTS tasks.todos;
