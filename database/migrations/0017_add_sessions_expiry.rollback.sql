-- Rollback of 0017_add_sessions_expiry.sql: the expiry columns go (state and data then
-- never expire).

ALTER TABLE telegram.sessions DROP COLUMN IF EXISTS data_expires_at;
ALTER TABLE telegram.sessions DROP COLUMN IF EXISTS state_expires_at;
