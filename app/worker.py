"""The execution worker: claims executions, runs their agents' handlers, heartbeats, and
shuts down without losing or doubling a run.

    async def summarize(execution: Execution, context: ExecutionContext) -> dict[str, Any]:
        ...
        return {"summary": text}          # or ExecutionResult(output, model=…, …), or None

    await run_worker(db, {"summarizer": summarize}, concurrency=8, stop=stop_event)

How it works, one asyncio task each:
- the claim loop takes up to the free concurrency with one `claim_executions` when it is
  woken: by a NOTIFY on enqueue, by a handler finishing while the queue had more, or every
  `poll_interval` in any case, so no execution waits longer than that even when no
  notification arrives. Each tick it also takes back the runs of dead workers
  (`requeue_stale_executions` with `stale_after`); any worker does it.
- the listener holds its own connection, LISTENing on NOTIFY_CHANNEL; when the connection
  drops it reconnects (and the loop polls meanwhile). LISTEN is session state, which cannot
  pass through a transaction pooler (PgBouncer): the listener connects to
  `DatabaseConfig.direct_url` (the server itself) when one is given; without one, when the
  database URL turns out to be a pooler, there is no listener and the loop polls.
- the heartbeat renews all running executions in one statement every
  `heartbeat_interval`. A run whose cancel was requested has its context flagged and its
  handler task cancelled (asyncio.CancelledError at its next await), then ends cancelled;
  a run the worker no longer holds (it was requeued as stale) is cancelled likewise and
  not written to again (fencing: the database refuses it anyway).
- the acknowledger writes completions in batches (`complete_executions`: whatever finished
  while the previous batch was written) and failures one by one (`fail_execution`, with the
  exception's text, retried with backoff while attempts remain).

Shutdown (`stop` set, or SIGTERM/SIGINT under `agentdb worker`): no more claims; running
handlers get `shutdown_grace` seconds to finish; the rest are cancelled and given back
(`release_executions`: queued again, the attempt not counted). Pending acknowledgements are
written before run_worker returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg

from app.agents import (
    NOTIFY_CHANNEL,
    Execution,
    ExecutionResult,
    cancel_execution,
    claim_executions,
    complete_and_claim_executions,
    complete_executions,
    fail_execution,
    heartbeat_execution,
    heartbeat_executions,
    release_executions,
    requeue_stale_executions,
)
from app.agents.models import MAX_CLAIM
from app.database import AgentDBError, ConflictError, DatabaseManager, InvalidInputError
from app.database.manager import is_through_pooler

__all__ = ["ExecutionContext", "ExecutionResult", "Handler", "run_worker"]

logger = logging.getLogger("agentdb.worker")

Handler = Callable[[Execution, "ExecutionContext"], Awaitable[Any]]
"""`async def handler(execution, context)`: returns the output (a JSON value, usually a dict),
an ExecutionResult, or None."""

LISTEN = "LISTEN agentdb_executions"
assert LISTEN == "LISTEN " + NOTIFY_CHANNEL

MAX_ACK_BATCH = 500
RETRY_PAUSE = 0.5  # after a failed statement of the worker's own loops, before the next try


@dataclass(eq=False)
class ExecutionContext:
    """What a handler can ask of the worker about the run it is given."""

    execution: Execution
    worker_id: str
    _db: DatabaseManager = field(repr=False)
    _cancel_requested: bool = field(default=False, repr=False)
    _lost: bool = field(default=False, repr=False)
    _releasing: bool = field(default=False, repr=False)

    @property
    def attempt(self) -> int:
        """The attempt this run is (1 for the first): the fencing token of its claim."""
        return self.execution.attempt

    def is_cancel_requested(self) -> bool:
        """Whether someone asked to cancel this run (learnt from the latest heartbeat)."""
        return self._cancel_requested

    async def heartbeat(self) -> bool:
        """Renew the heartbeat now; False when the run should stop. The worker also renews
        it every heartbeat_interval; the run should stop when a cancel was requested, or
        when it is no longer this worker's."""
        try:
            async with self._db.connection() as conn:
                going_on = await heartbeat_execution(
                    conn, self.execution.id, worker_id=self.worker_id, attempt=self.attempt
                )
        except ConflictError:
            self._lost = True
            return False
        if not going_on:
            self._cancel_requested = True
        return going_on


@dataclass(eq=False)
class _Run:
    execution: Execution
    context: ExecutionContext
    task: asyncio.Task[None] | None = None


class _Worker:
    def __init__(
        self,
        db: DatabaseManager,
        handlers: Mapping[str, Handler],
        *,
        concurrency: int,
        agent_names: Sequence[str] | None,
        worker_id: str,
        poll_interval: float,
        heartbeat_interval: float,
        stale_after: float,
        shutdown_grace: float,
        stop: asyncio.Event,
    ) -> None:
        self.db = db
        self.handlers = dict(handlers)
        self.concurrency = concurrency
        self.agent_names = list(agent_names) if agent_names else sorted(self.handlers)
        self.worker_id = worker_id
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.stale_after = stale_after
        self.shutdown_grace = shutdown_grace
        self.stop = stop
        self.runs: dict[UUID, _Run] = {}
        self.wakeup = asyncio.Event()
        self.queue_may_hold_more = True
        self.completions: list[tuple[UUID, int, ExecutionResult]] = []
        self.acks_pending = asyncio.Event()
        self.ack_batches_in_flight = 0
        self.listener_pid: int | None = None

    # The loops -----------------------------------------------------------------------------

    async def run(self) -> None:
        logger.info(
            "worker %s started: agents %s, concurrency %d",
            self.worker_id,
            ",".join(self.agent_names),
            self.concurrency,
        )
        helpers = [
            asyncio.create_task(self._listen(), name="agentdb-worker-listener"),
            asyncio.create_task(self._heartbeat(), name="agentdb-worker-heartbeat"),
            asyncio.create_task(self._wake_on_stop(), name="agentdb-worker-stop"),
        ]
        acknowledger = asyncio.create_task(self._acknowledge(), name="agentdb-worker-acks")
        try:
            await self._claim_loop()
            await self._shut_down()
        finally:
            for task in helpers:
                task.cancel()
            # Bounded: a listener cancelled inside psycopg's notifies() can take a while to
            # close its connection on a loaded machine; the worker does not wait on it.
            await asyncio.wait(helpers, timeout=5.0)
            await self._drain_acks()
            acknowledger.cancel()
            await asyncio.gather(acknowledger, return_exceptions=True)
            logger.info("worker %s stopped", self.worker_id)

    async def _claim_loop(self) -> None:
        next_sweep = 0.0
        while not self.stop.is_set():
            self.wakeup.clear()  # before looking: a wake-up from now on is not lost
            now = time.monotonic()
            try:
                if now >= next_sweep:
                    next_sweep = now + self.poll_interval
                    await self._sweep()
                    self.queue_may_hold_more = True  # a poll tick: look whatever was heard
                free = self.concurrency - len(self.runs)
                if free > 0 and self.queue_may_hold_more:
                    await self._claim(min(free, MAX_CLAIM))
            except AgentDBError as error:
                logger.warning("worker %s: claiming failed, retrying: %s", self.worker_id, error)
                await self._pause(RETRY_PAUSE)
                continue
            if self.queue_may_hold_more and len(self.runs) < self.concurrency:
                continue  # the batch was full: there may be more right away
            if self.completions:
                self.acks_pending.set()  # no claim to carry them: the acknowledger writes them
            timeout = max(0.0, next_sweep - time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.wakeup.wait()

    async def _wake_on_stop(self) -> None:
        """`stop` wakes the claim loop too, so that it waits on one event (no tasks made per
        wait: at concurrency 1 that is a wait per job)."""
        await self.stop.wait()
        self.wakeup.set()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def _sweep(self) -> None:
        async with self.db.connection() as conn:
            taken = await requeue_stale_executions(
                conn, older_than=timedelta(seconds=self.stale_after)
            )
        if taken:
            logger.info(
                "worker %s took back %d stale execution(s) (no heartbeat for %ss)",
                self.worker_id,
                taken,
                self.stale_after,
            )

    async def _claim(self, limit: int) -> None:
        """Claim up to `limit`; the acknowledgements waiting to be written go with the claim,
        in the same statement (one round trip for both)."""
        acks = self.completions[:MAX_ACK_BATCH]
        del self.completions[:MAX_ACK_BATCH]
        self.ack_batches_in_flight += bool(acks)
        try:
            async with self.db.connection() as conn:
                if acks:
                    done, claimed = await complete_and_claim_executions(
                        conn,
                        acks,
                        worker_id=self.worker_id,
                        agent_names=self.agent_names,
                        limit=limit,
                    )
                else:
                    claimed = await claim_executions(
                        conn, worker_id=self.worker_id, agent_names=self.agent_names, limit=limit
                    )
        except AgentDBError:
            self.completions[:0] = acks  # written by the next claim or the acknowledger
            raise
        finally:
            self.ack_batches_in_flight -= bool(acks)
        if acks:
            self._log_acks(acks, done)
        self.queue_may_hold_more = len(claimed) == limit
        for execution in claimed:
            logger.info(
                "execution %s (%s) claimed: attempt %d",
                execution.id,
                execution.agent_name,
                execution.attempt,
            )
            context = ExecutionContext(execution, self.worker_id, self.db)
            run = self.runs[execution.id] = _Run(execution, context)
            run.task = asyncio.create_task(self._execute(run), name=f"agentdb-{execution.id}")

    async def _listen(self) -> None:
        """Wake the claim loop on every notification for our agents; reconnect when the
        connection drops (the claim loop polls meanwhile). On the direct URL when there is
        one; through a pooler without one, not at all (the claim loop polls)."""
        direct = self.db.config.direct_conninfo()
        conninfo = direct or self.db.config.conninfo()
        pause = min(self.poll_interval, 1.0)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    conninfo,
                    autocommit=True,
                    application_name=f"agentdb-worker-listener {self.worker_id}"[:63],
                ) as conn:
                    if direct is None and await is_through_pooler(conn):
                        logger.info(
                            "worker %s: the database URL is a transaction pooler, which cannot "
                            "pass LISTEN on, and no direct URL is given (AGENTDB_DIRECT_URL): "
                            "polling every %ss",
                            self.worker_id,
                            self.poll_interval,
                        )
                        return
                    await conn.execute(LISTEN)
                    self.listener_pid = conn.info.backend_pid
                    pause = min(self.poll_interval, 1.0)
                    self._wake()  # anything enqueued while we were not listening
                    wanted = set(self.agent_names)
                    async for notify in conn.notifies():
                        if notify.payload in wanted:
                            self._wake()
            except psycopg.Error as error:
                logger.warning(
                    "worker %s: listener connection lost (%s); reconnecting in %.1fs, "
                    "polling every %ss meanwhile",
                    self.worker_id,
                    str(error).strip().splitlines()[0] if str(error).strip() else error,
                    pause,
                    self.poll_interval,
                )
            self.listener_pid = None
            await asyncio.sleep(pause)
            pause = min(pause * 2, 30.0)

    def _wake(self) -> None:
        self.queue_may_hold_more = True
        self.wakeup.set()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            runs = [run for run in self.runs.values() if not run.context._lost]
            if not runs:
                continue
            claims = [(run.execution.id, run.execution.attempt) for run in runs]
            try:
                async with self.db.connection() as conn:
                    beats = await heartbeat_executions(conn, claims, worker_id=self.worker_id)
            except AgentDBError as error:
                logger.warning("worker %s: heartbeat failed: %s", self.worker_id, error)
                continue
            for run in runs:
                going_on = beats.get(run.execution.id)
                if going_on is None and run.execution.id in self.runs:
                    logger.warning(
                        "execution %s lost: it is no longer held by worker %s (attempt %d); "
                        "stopping its handler",
                        run.execution.id,
                        self.worker_id,
                        run.execution.attempt,
                    )
                    run.context._lost = True
                    self._interrupt(run)
                elif going_on is False and not run.context._cancel_requested:
                    logger.info("execution %s: cancel requested", run.execution.id)
                    run.context._cancel_requested = True
                    self._interrupt(run)

    @staticmethod
    def _interrupt(run: _Run) -> None:
        if run.task is not None and not run.task.done():
            run.task.cancel()

    # One run -----------------------------------------------------------------------------

    async def _execute(self, run: _Run) -> None:
        execution, context = run.execution, run.context
        try:
            handler = self.handlers.get(execution.agent_name)
            if handler is None:
                await self._fail(
                    run,
                    f"no handler for agent {execution.agent_name!r} in worker {self.worker_id} "
                    f"(it handles: {', '.join(sorted(self.handlers)) or 'nothing'})",
                    retry=False,
                )
                return
            try:
                returned = await handler(execution, context)
            except asyncio.CancelledError:
                await self._interrupted(run)
                return
            except Exception as error:
                if context._cancel_requested or context._lost:
                    await self._interrupted(run)
                    return
                text = "".join(traceback.format_exception(error)).strip()
                await self._fail(run, text or type(error).__name__, retry=True)
                return
            try:
                result = (
                    returned if isinstance(returned, ExecutionResult) else ExecutionResult(returned)
                )
            except InvalidInputError as error:
                await self._fail(run, f"the handler returned an invalid result: {error}", False)
                return
            if context._lost:
                return
            self.completions.append((execution.id, execution.attempt, result))
            if not self.queue_may_hold_more or self.stop.is_set():
                self.acks_pending.set()  # else the next claim, about to go, carries it
        finally:
            self.runs.pop(execution.id, None)
            self._wake_for_a_free_slot()

    def _wake_for_a_free_slot(self) -> None:
        if self.queue_may_hold_more:
            self.wakeup.set()

    async def _interrupted(self, run: _Run) -> None:
        """The handler stopped on a cancel: of the run (cancel requested), of its lost claim,
        or of the shutdown."""
        execution, context = run.execution, run.context
        if context._lost:
            return
        try:
            async with self.db.connection() as conn:
                if context._cancel_requested:
                    await cancel_execution(
                        conn, execution.id, worker_id=self.worker_id, attempt=execution.attempt
                    )
                    logger.info("execution %s cancelled", execution.id)
                else:
                    await release_executions(
                        conn, [(execution.id, execution.attempt)], worker_id=self.worker_id
                    )
                    logger.info("execution %s released (worker shutting down)", execution.id)
        except ConflictError:
            logger.warning("execution %s was no longer held when it stopped", execution.id)
        except AgentDBError as error:
            logger.warning("execution %s: could not record its stop: %s", execution.id, error)

    async def _fail(self, run: _Run, error: str, retry: bool) -> None:
        execution = run.execution
        try:
            async with self.db.connection() as conn:
                failed = await fail_execution(
                    conn,
                    execution.id,
                    error=error,
                    retry=retry,
                    worker_id=self.worker_id,
                    attempt=execution.attempt,
                )
        except ConflictError:
            logger.warning("execution %s failed after it was no longer held", execution.id)
            return
        except AgentDBError as db_error:
            logger.warning("execution %s: could not record its failure: %s", execution.id, db_error)
            return
        if failed.status == "queued":
            logger.info(
                "execution %s failed (attempt %d of %d), retried after %s: %s",
                execution.id,
                failed.attempt,
                failed.max_attempts,
                failed.run_after.isoformat(),
                error.splitlines()[-1][:200],
            )
        else:
            logger.info(
                "execution %s %s: %s", execution.id, failed.status, error.splitlines()[-1][:200]
            )

    # Acknowledgements --------------------------------------------------------------------

    async def _acknowledge(self) -> None:
        while True:
            await self.acks_pending.wait()
            await self._flush_acks()

    async def _flush_acks(self) -> None:
        while self.completions:
            batch = self.completions[:MAX_ACK_BATCH]
            del self.completions[:MAX_ACK_BATCH]
            self.ack_batches_in_flight += 1
            try:
                async with self.db.connection() as conn:
                    done = await complete_executions(conn, batch, worker_id=self.worker_id)
            except AgentDBError as error:
                logger.warning(
                    "worker %s: writing %d completion(s) failed, retrying: %s",
                    self.worker_id,
                    len(batch),
                    error,
                )
                self.completions[:0] = batch
                await asyncio.sleep(RETRY_PAUSE)
                continue
            finally:
                self.ack_batches_in_flight -= 1
            self._log_acks(batch, done)
        self.acks_pending.clear()

    def _log_acks(self, batch: list[tuple[UUID, int, ExecutionResult]], done: set[UUID]) -> None:
        for execution_id, attempt, _ in batch:
            if execution_id in done:
                logger.info("execution %s succeeded (attempt %d)", execution_id, attempt)
            else:
                logger.warning(
                    "execution %s finished after it was no longer held (attempt %d): "
                    "its result was not written",
                    execution_id,
                    attempt,
                )

    async def _drain_acks(self) -> None:
        deadline = time.monotonic() + max(self.shutdown_grace, 5.0)
        while (self.completions or self.ack_batches_in_flight) and time.monotonic() < deadline:
            if self.ack_batches_in_flight:
                await asyncio.sleep(0.01)
                continue
            await self._flush_acks()

    # Shutdown ----------------------------------------------------------------------------

    async def _shut_down(self) -> None:
        tasks = [run.task for run in self.runs.values() if run.task is not None]
        logger.info(
            "worker %s stopping: %d run(s) in flight, %ss to finish",
            self.worker_id,
            len(tasks),
            self.shutdown_grace,
        )
        if tasks:
            await asyncio.wait(tasks, timeout=self.shutdown_grace)
        left = [run for run in self.runs.values() if run.task is not None and not run.task.done()]
        for run in left:
            run.context._releasing = True
            run.task.cancel()  # type: ignore[union-attr]
        if left:
            stuck = [run.task for run in left if run.task is not None]
            _, pending = await asyncio.wait(stuck, timeout=max(1.0, self.heartbeat_interval))
            if pending:
                logger.warning(
                    "worker %s: %d handler(s) ignored cancellation; their runs go stale and "
                    "are taken back after %ss",
                    self.worker_id,
                    len(pending),
                    self.stale_after,
                )


async def run_worker(
    db: DatabaseManager,
    handlers: Mapping[str, Handler],
    *,
    concurrency: int = 4,
    agent_names: Sequence[str] | None = None,
    worker_id: str | None = None,
    poll_interval: float = 1.0,
    heartbeat_interval: float = 5.0,
    stale_after: float = 30.0,
    shutdown_grace: float = 30.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Run executions with their handlers, at most `concurrency` at once, until `stop` is
    set. It runs those of `agent_names` (default: the agents in `handlers`); once `stop` is
    set, it shuts down cleanly (see the module's docstring) and returns.

    `worker_id` defaults to host:pid. `stale_after` must exceed `heartbeat_interval`
    (several times over: a run is taken back when it has not been heard of for that long).
    """
    if not handlers or not all(callable(handler) for handler in handlers.values()):
        raise InvalidInputError(
            "handlers: must map agent names to async handlers", field="handlers"
        )
    for name, value, low in (
        ("concurrency", concurrency, 1),
        ("poll_interval", poll_interval, 0.01),
        ("heartbeat_interval", heartbeat_interval, 0.01),
        ("stale_after", stale_after, 0.02),
        ("shutdown_grace", shutdown_grace, 0.0),
    ):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= low:
            raise InvalidInputError(f"{name}: must be a number of at least {low}", field=name)
    if stale_after <= heartbeat_interval:
        raise InvalidInputError(
            f"stale_after: must exceed heartbeat_interval ({heartbeat_interval}s), or live "
            "runs would be taken back",
            field="stale_after",
        )
    worker = _Worker(
        db,
        handlers,
        concurrency=int(concurrency),
        agent_names=agent_names,
        worker_id=worker_id or f"{socket.gethostname()}:{os.getpid()}",
        poll_interval=poll_interval,
        heartbeat_interval=heartbeat_interval,
        stale_after=stale_after,
        shutdown_grace=shutdown_grace,
        stop=stop or asyncio.Event(),
    )
    await worker.run()
