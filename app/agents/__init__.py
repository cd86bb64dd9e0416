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
    running --release-->  queued                  (a worker shutting down; attempt not counted)
    queued  --cancel-->  cancelled
    running --cancel-->  running, is_cancel_requested; the worker hears it on its next
                         heartbeat and ends the run: --cancel (worker_id=…)-->  cancelled

A worker's calls (heartbeat, complete, fail, cancel, release) name the worker and the attempt
it claimed: when the execution was taken from it meanwhile (requeued as stale, claimed
again), they raise ConflictError and change nothing. `app.worker` runs all of this.
"""

from app.agents.models import (
    EXECUTION_STATUSES,
    NOTIFY_CHANNEL,
    Execution,
    ExecutionCreate,
    ExecutionCreateDict,
    ExecutionResult,
    ExecutionStats,
    ExecutionStatus,
)
from app.agents.queries import (
    cancel_execution,
    claim_executions,
    claim_next_execution,
    complete_and_claim_executions,
    complete_execution,
    complete_executions,
    enqueue_execution,
    enqueue_executions,
    execution_stats,
    fail_execution,
    get_execution,
    heartbeat_execution,
    heartbeat_executions,
    list_executions,
    purge_finished_executions,
    release_executions,
    requeue_stale_executions,
)

__all__ = [
    "EXECUTION_STATUSES",
    "NOTIFY_CHANNEL",
    "Execution",
    "ExecutionCreate",
    "ExecutionCreateDict",
    "ExecutionResult",
    "ExecutionStats",
    "ExecutionStatus",
    "cancel_execution",
    "claim_executions",
    "claim_next_execution",
    "complete_and_claim_executions",
    "complete_execution",
    "complete_executions",
    "enqueue_execution",
    "enqueue_executions",
    "execution_stats",
    "fail_execution",
    "get_execution",
    "heartbeat_execution",
    "heartbeat_executions",
    "list_executions",
    "purge_finished_executions",
    "release_executions",
    "requeue_stale_executions",
]
