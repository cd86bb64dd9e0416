-- Rollback of 0003_create_schemas.sql: removes the four domain schemas.
--
-- No CASCADE: a schema that still holds objects (a later migration was not rolled back, or
-- someone added objects by hand) makes this fail rather than lose them.

DROP SCHEMA IF EXISTS telegram;

DROP SCHEMA IF EXISTS agents;

DROP SCHEMA IF EXISTS tasks;

DROP SCHEMA IF EXISTS messaging;
