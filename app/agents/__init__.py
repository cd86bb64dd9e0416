"""Schema `agents`: executions, the runs of agents and the job queue they wait in.

Producers enqueue executions; workers claim the queue head (FOR UPDATE SKIP LOCKED), then
complete, fail (retried with exponential backoff while attempts remain) or see them
cancelled. `models` holds the row and input models, `queries` the SQL and the functions;
everything is importable from `app.agents` directly. Every function takes the caller's
connection and never commits.

State machine (every other transition raises ConflictError naming the current status):

    queued  --claim-->  running  --complete-->  succeeded
    running --fail, attempts left-->  queued      (run_after pushed into the future)
    running --fail, none left / retry=False-->  failed
    running --no heartbeat--> queued / failed     (requeue_stale_executions)
    queued | running  --cancel-->  cancelled      (running: is_cancel_requested is set too)
"""

from app.agents.models import (
    EXECUTION_STATUSES,
    NOTIFY_CHANNEL,
    Execution,
    ExecutionCreate,
    ExecutionStats,
    ExecutionStatus,
)
from app.agents.queries import (
    cancel_execution,
    claim_next_execution,
    complete_execution,
    enqueue_execution,
    execution_stats,
    fail_execution,
    get_execution,
    list_executions,
    requeue_stale_executions,
)

__all__ = [
    "EXECUTION_STATUSES",
    "NOTIFY_CHANNEL",
    "Execution",
    "ExecutionCreate",
    "ExecutionStats",
    "ExecutionStatus",
    "cancel_execution",
    "claim_next_execution",
    "complete_execution",
    "enqueue_execution",
    "execution_stats",
    "fail_execution",
    "get_execution",
    "list_executions",
    "requeue_stale_executions",
]
