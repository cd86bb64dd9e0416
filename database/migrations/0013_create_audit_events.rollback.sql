-- Rollback of 0013_create_audit_events.sql: drops the schema's objects, then the schema.
-- (The trail goes with it: roll back only what you mean to forget.)

DROP TABLE IF EXISTS audit.events;
DROP FUNCTION IF EXISTS audit.refuse_update();
DROP FUNCTION IF EXISTS audit.record_event(text, text, text, uuid, jsonb);
DROP FUNCTION IF EXISTS audit.acting_role();
REVOKE ALL ON SCHEMA audit FROM agentdb_app, agentdb_worker, agentdb_readonly;
DROP SCHEMA IF EXISTS audit;
