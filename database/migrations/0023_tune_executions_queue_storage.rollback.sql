-- Rollback of 0023_tune_executions_queue_storage.sql: back to the server's defaults.

ALTER TABLE agents.executions RESET (
    fillfactor,
    autovacuum_vacuum_threshold,
    autovacuum_vacuum_scale_factor,
    autovacuum_analyze_threshold,
    autovacuum_analyze_scale_factor
);
