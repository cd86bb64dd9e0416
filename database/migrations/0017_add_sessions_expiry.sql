-- 0017_add_sessions_expiry.sql
--
-- FSM state and data that expire, as aiogram's Redis storage lets them (its state_ttl and
-- data_ttl): each gets the moment it stops being readable, set when it is written (NULL:
-- never). An expired state reads as none and expired data as {}; the row itself stays until
-- telegram.purge_inactive_sessions removes sessions nobody has touched for a while.
--
-- No index on updated_at for that purge: every FSM write moves updated_at, and an index on
-- it would turn those writes from HOT updates into index updates; a periodic purge can
-- afford its sequential scan.
--
-- Re-runnable: ADD COLUMN IF NOT EXISTS; COMMENT ON is an assignment.

ALTER TABLE telegram.sessions ADD COLUMN IF NOT EXISTS state_expires_at timestamptz NULL;
ALTER TABLE telegram.sessions ADD COLUMN IF NOT EXISTS data_expires_at timestamptz NULL;

COMMENT ON COLUMN telegram.sessions.state_expires_at IS
'When the FSM state stops being readable (set with it from the storage''s state_ttl); NULL: '
'never. An expired state reads as no state.';
COMMENT ON COLUMN telegram.sessions.data_expires_at IS
'When the FSM data stops being readable (set with it from the storage''s data_ttl); NULL: '
'never. Expired data reads as {}, and update_data merges into {}.';
