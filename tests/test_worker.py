"""app.worker against a real server: draining with concurrent workers, crash recovery of a
worker killed with SIGKILL, fencing of a worker that was frozen (SIGSTOP) while its run was
taken over, graceful shutdown, cancels reaching the handler, retries, unknown agents, and
wake-ups that survive the listener's connection being killed."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from app import agents
from app.agents import Execution
from app.database import DatabaseManager, InvalidInputError
from app.worker import ExecutionContext, ExecutionResult, run_worker

Conn = psycopg.AsyncConnection[Any]
FAST: dict[str, Any] = {"poll_interval": 0.2, "heartbeat_interval": 0.1, "stale_after": 1.0}


@asynccontextmanager
async def worker(
    db: DatabaseManager, handlers: dict[str, Any], **options: Any
) -> AsyncIterator[asyncio.Event]:
    """A running worker; leaving the block stops it and waits for its shutdown."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(db, handlers, stop=stop, **{**FAST, **options}))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def wait_until(check: Callable[[], Any], timeout: float = 20.0) -> None:
    """Poll `check` (sync or async) until it is truthy; fail after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        await asyncio.sleep(0.02)


async def status_of(db: DatabaseManager, execution_id: UUID) -> Execution:
    async with db.connection() as conn:
        execution = await agents.get_execution(conn, execution_id)
    assert execution is not None
    return execution


# Draining ---------------------------------------------------------------------------------


async def test_eight_concurrent_workers_drain_2000_executions_each_exactly_once(
    database_url: str,
) -> None:
    from app.database import DatabaseConfig

    calls: collections.Counter[UUID] = collections.Counter()
    by_worker: collections.Counter[str] = collections.Counter()

    async def noop(execution: Execution, context: ExecutionContext) -> dict[str, Any]:
        calls[execution.id] += 1
        by_worker[context.worker_id] += 1
        await asyncio.sleep(0)
        return {"n": execution.input["n"]}

    managers = [
        DatabaseManager(DatabaseConfig(url=database_url, max_pool_size=4)) for _ in range(8)
    ]
    for manager in managers:
        await manager.open()
    try:
        async with managers[0].connection() as conn:
            await agents.enqueue_executions(
                conn, [{"agent_name": "noop", "input": {"n": n}} for n in range(2000)]
            )
        stops = [asyncio.Event() for _ in managers]
        workers = [
            asyncio.create_task(
                run_worker(m, {"noop": noop}, concurrency=4, worker_id=f"w{i}", stop=s, **FAST)
            )
            for i, (m, s) in enumerate(zip(managers, stops, strict=True))
        ]

        async def drained() -> bool:
            async with managers[0].connection() as conn:
                cursor = await conn.execute(
                    "SELECT count(*) FROM agents.executions WHERE status = 'succeeded'"
                )
                row = await cursor.fetchone()
            return row is not None and row[0] == 2000

        await wait_until(drained, timeout=120)
        for stop in stops:
            stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), 30)
    finally:
        for manager in managers:
            await manager.close()
    assert len(calls) == 2000 and set(calls.values()) == {1}
    assert len(by_worker) >= 2  # the work was shared, not taken by one worker
    async with DatabaseManager(DatabaseConfig(url=database_url)) as db, db.connection() as conn:
        cursor = await conn.execute(
            "SELECT count(*), count(DISTINCT worker_id), max(attempt), "
            "bool_and(output = jsonb_build_object('n', input -> 'n')) FROM agents.executions"
        )
        count, _, max_attempt, outputs_match = await cursor.fetchone() or (0, 0, 0, False)
    assert (count, max_attempt, outputs_match) == (2000, 1, True)


# Crash recovery and fencing across processes ----------------------------------------------

WORKER_MODULE = """
import asyncio, os, pathlib

MARKS = pathlib.Path(os.environ["MARKS"])


async def slow(execution, context):
    (MARKS / f"{execution.id}-{execution.attempt}-started").touch()
    await asyncio.sleep(float(execution.input.get("seconds", 3600)))
    return {"by": "process", "attempt": execution.attempt}


HANDLERS = {"slow": slow}
"""


@pytest.fixture
def worker_process(tmp_path: Path, database_url: str, agentdb_command: list[str]) -> Any:
    (tmp_path / "crashy_agents.py").write_text(textwrap.dedent(WORKER_MODULE))
    marks = tmp_path / "marks"
    marks.mkdir()
    started: list[subprocess.Popen[bytes]] = []

    def start(*options: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [
                *agentdb_command,
                "worker",
                "crashy_agents:HANDLERS",
                "--database",
                database_url,
                "--worker-id",
                "process",
                *options,
            ],
            cwd=tmp_path,
            env={**os.environ, "MARKS": str(marks), "PYTHONPATH": str(tmp_path)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append(process)
        return process

    start.marks = marks  # type: ignore[attr-defined]
    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)


async def test_a_worker_killed_with_sigkill_mid_run_has_its_run_taken_back_and_run_once(
    db: DatabaseManager, worker_process: Any
) -> None:
    async with db.connection() as conn:
        execution = await agents.enqueue_execution(conn, agent_name="slow")
    process = worker_process("--stale-after", "1.5", "--heartbeat-interval", "0.2")
    marks: Path = worker_process.marks
    await wait_until(lambda: (marks / f"{execution.id}-1-started").exists())
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    assert (await status_of(db, execution.id)).status == "running"  # what it left behind

    runs: list[int] = []

    async def rescue(execution: Execution, context: ExecutionContext) -> dict[str, Any]:
        runs.append(execution.attempt)
        return {"by": "rescuer"}

    async with worker(db, {"slow": rescue}, stale_after=1.5, poll_interval=0.2):

        async def finished() -> bool:
            return (await status_of(db, execution.id)).status == "succeeded"

        await wait_until(finished, timeout=20)
    final = await status_of(db, execution.id)
    assert runs == [2]
    assert final.attempt == 2 and final.output == {"by": "rescuer"}
    assert final.error is not None and "stale" in final.error


async def test_a_frozen_worker_whose_run_was_taken_over_never_writes_its_result(
    db: DatabaseManager, worker_process: Any
) -> None:
    """SIGSTOP freezes the worker mid-run (its heartbeats stop), another worker takes the
    run over and finishes it; when the frozen one resumes, its handler finishes too, and
    the database refuses its result."""
    async with db.connection() as conn:
        execution = await agents.enqueue_execution(conn, agent_name="slow", input={"seconds": 2.5})
    process = worker_process(
        "--stale-after", "1", "--heartbeat-interval", "0.2", "--shutdown-grace", "5"
    )
    marks: Path = worker_process.marks
    await wait_until(lambda: (marks / f"{execution.id}-1-started").exists())
    os.kill(process.pid, signal.SIGSTOP)
    try:

        async def rescue(execution: Execution, context: ExecutionContext) -> dict[str, Any]:
            return {"by": "rescuer"}

        async with worker(db, {"slow": rescue}, stale_after=1.0):

            async def finished() -> bool:
                return (await status_of(db, execution.id)).status == "succeeded"

            await wait_until(finished, timeout=20)
    finally:
        os.kill(process.pid, signal.SIGCONT)
    await asyncio.sleep(3.5)  # the resumed handler's sleep ends; it tries to complete
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    final = await status_of(db, execution.id)
    assert final.output == {"by": "rescuer"} and final.attempt == 2
    assert process.returncode == 0
    log = stderr.decode()
    assert "no longer held" in log, log


# Shutdown, cancel, failures ---------------------------------------------------------------


async def test_graceful_shutdown_finishes_quick_runs_and_puts_back_the_rest(
    db: DatabaseManager,
) -> None:
    async with db.connection() as conn:
        quick = await agents.enqueue_execution(conn, agent_name="a", input={"seconds": 0.2})
        slow = await agents.enqueue_execution(conn, agent_name="a", input={"seconds": 60})
        waiting = await agents.enqueue_execution(conn, agent_name="a", input={"seconds": 60})
    started: list[UUID] = []

    async def sleeper(execution: Execution, context: ExecutionContext) -> dict[str, Any]:
        started.append(execution.id)
        await asyncio.sleep(execution.input["seconds"])
        return {"slept": execution.input["seconds"]}

    async with worker(db, {"a": sleeper}, concurrency=2, shutdown_grace=1.0):
        await wait_until(lambda: len(started) == 2)
    assert started == [quick.id, slow.id]
    assert (await status_of(db, quick.id)).status == "succeeded"
    back = await status_of(db, slow.id)
    assert back.status == "queued" and back.attempt == 0
    assert (await status_of(db, waiting.id)).status == "queued"
    async with db.connection() as conn:
        [again] = await agents.claim_executions(conn, worker_id="next", limit=1)
    assert again.id == slow.id and again.attempt == 1


async def test_a_cancel_reaches_the_handler_and_the_run_ends_cancelled(
    db: DatabaseManager,
) -> None:
    async with db.connection() as conn:
        execution = await agents.enqueue_execution(conn, agent_name="a")
    seen: list[str] = []

    async def patient(execution: Execution, context: ExecutionContext) -> None:
        seen.append("started")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append(f"cancelled, requested={context.is_cancel_requested()}")
            raise

    async with worker(db, {"a": patient}):
        await wait_until(lambda: seen == ["started"])
        async with db.connection() as conn:
            requested = await agents.cancel_execution(conn, execution.id)
        assert requested.status == "running"

        async def ended() -> bool:
            return (await status_of(db, execution.id)).status == "cancelled"

        await wait_until(ended, timeout=10)
    assert seen == ["started", "cancelled, requested=True"]


async def test_a_failing_handler_is_retried_with_a_growing_backoff_then_fails(
    db: DatabaseManager,
) -> None:
    async with db.connection() as conn:
        execution = await agents.enqueue_execution(conn, agent_name="a", max_attempts=3)
    attempts: list[int] = []

    async def broken(execution: Execution, context: ExecutionContext) -> None:
        attempts.append(execution.attempt)
        raise RuntimeError(f"provider said no ({execution.attempt})")

    delays = []
    async with worker(db, {"a": broken}):
        for attempt in (1, 2):
            await wait_until(lambda: attempts.count(attempt) == 1)  # noqa: B023 (awaited here)

            async def requeued(attempt: int = attempt) -> bool:
                now = await status_of(db, execution.id)
                return now.status == "queued" and now.attempt == attempt

            await wait_until(requeued)
            now = await status_of(db, execution.id)
            assert (
                now.error is not None and f"RuntimeError: provider said no ({attempt})" in now.error
            )
            assert now.finished_at is None and now.started_at is not None
            delays.append((now.run_after - now.updated_at).total_seconds())
            async with db.connection() as conn:  # skip the wait
                await conn.execute(
                    "UPDATE agents.executions SET run_after = now() WHERE id = %s", [execution.id]
                )

        async def failed() -> bool:
            return (await status_of(db, execution.id)).status == "failed"

        await wait_until(failed)
    assert attempts == [1, 2, 3]
    assert 1.0 <= delays[0] <= 2.0 and 2.0 <= delays[1] <= 4.0  # 2^attempt times [0.5, 1)


async def test_an_execution_of_an_agent_without_a_handler_fails_at_once_without_retry(
    db: DatabaseManager,
) -> None:
    async with db.connection() as conn:
        execution = await agents.enqueue_execution(conn, agent_name="ghost", max_attempts=5)

    async def never(execution: Execution, context: ExecutionContext) -> None:
        raise AssertionError("not this one")

    async with worker(db, {"a": never}, agent_names=["a", "ghost"]):

        async def failed() -> bool:
            return (await status_of(db, execution.id)).status == "failed"

        await wait_until(failed)
    final = await status_of(db, execution.id)
    assert final.attempt == 1 and final.error is not None
    assert "no handler for agent 'ghost'" in final.error


async def test_a_handler_result_is_written_and_an_invalid_one_fails_the_run(
    db: DatabaseManager,
) -> None:
    async with db.connection() as conn:
        good = await agents.enqueue_execution(conn, agent_name="a", input={"ok": True})
        bad = await agents.enqueue_execution(conn, agent_name="a", input={"ok": False})

    async def answer(execution: Execution, context: ExecutionContext) -> Any:
        if execution.input["ok"]:
            return ExecutionResult({"text": "hi"}, model="m", prompt_tokens=5)
        return {"nan": float("nan")}

    async with worker(db, {"a": answer}):

        async def both_done() -> bool:
            statuses = {(await status_of(db, e.id)).status for e in (good, bad)}
            return statuses == {"succeeded", "failed"}

        await wait_until(both_done)
    done = await status_of(db, good.id)
    assert done.output == {"text": "hi"} and done.model == "m" and done.prompt_tokens == 5
    failed = await status_of(db, bad.id)
    assert failed.error is not None and "invalid result" in failed.error


async def test_run_worker_refuses_bad_settings(db: DatabaseManager) -> None:
    async def noop(execution: Execution, context: ExecutionContext) -> None:
        return None

    with pytest.raises(InvalidInputError, match=r"^stale_after"):
        await run_worker(db, {"a": noop}, heartbeat_interval=5, stale_after=5)
    with pytest.raises(InvalidInputError, match=r"^concurrency"):
        await run_worker(db, {"a": noop}, concurrency=0)
    with pytest.raises(InvalidInputError, match=r"^handlers"):
        await run_worker(db, {})


# Wake-ups ---------------------------------------------------------------------------------

LISTENER = """
SELECT pid FROM pg_catalog.pg_stat_activity
WHERE application_name LIKE 'agentdb-worker-listener%%' AND datname = current_database()
"""


async def listener_pid(db: DatabaseManager) -> int | None:
    async with db.connection() as conn:
        cursor = await conn.execute(LISTENER)
        row = await cursor.fetchone()
    return None if row is None else int(row[0])


async def test_executions_start_on_notify_also_after_the_listener_connection_is_killed(
    db: DatabaseManager,
) -> None:
    started: list[UUID] = []

    async def noop(execution: Execution, context: ExecutionContext) -> None:
        started.append(execution.id)

    # A poll interval far longer than the test: only a notification can start a run.
    async with worker(db, {"a": noop}, poll_interval=300, stale_after=600):
        await wait_until(lambda: listener_pid(db))
        first_pid = await listener_pid(db)
        await asyncio.sleep(0.1)  # the worker's first claim at start-up has run
        async with db.connection() as conn:
            one = await agents.enqueue_execution(conn, agent_name="a")
        await wait_until(lambda: one.id in started, timeout=10)

        async with db.connection() as conn:
            await conn.execute("SELECT pg_terminate_backend(%s)", [first_pid])

        async def reconnected() -> bool:
            pid = await listener_pid(db)
            return pid is not None and pid != first_pid

        await wait_until(reconnected, timeout=10)
        await asyncio.sleep(0.1)
        async with db.connection() as conn:
            two = await agents.enqueue_execution(conn, agent_name="a")
        await wait_until(lambda: two.id in started, timeout=10)


async def test_an_execution_nobody_notified_about_starts_on_the_next_poll(
    db: DatabaseManager,
) -> None:
    started: list[UUID] = []

    async def noop(execution: Execution, context: ExecutionContext) -> None:
        started.append(execution.id)

    async with worker(db, {"a": noop}, poll_interval=0.3):
        await wait_until(lambda: listener_pid(db))
        async with db.connection() as conn:  # a row written without pg_notify
            cursor = await conn.execute(
                "INSERT INTO agents.executions (agent_name) VALUES ('a') RETURNING id"
            )
            row = await cursor.fetchone()
        assert row is not None
        await wait_until(lambda: row[0] in started, timeout=5)


async def test_a_worker_login_runs_every_owners_executions(
    db: DatabaseManager, login_as: Any
) -> None:
    """As README says to run it: a login in agentdb_worker, which row-level security lets
    see every owner's executions (an application login sees only its session's owner's)."""
    from uuid import uuid4

    from app.database import DatabaseConfig

    async with db.connection() as conn:
        executions = await agents.enqueue_executions(
            conn, [{"agent_name": "a", "owner_id": uuid4()} for _ in range(3)]
        )
    ran: list[UUID] = []

    async def noop(execution: Execution, context: ExecutionContext) -> None:
        ran.append(execution.id)

    config = DatabaseConfig(url=login_as("agentdb_worker"))
    async with DatabaseManager(config) as worker_db, worker(worker_db, {"a": noop}):
        await wait_until(lambda: len(ran) == 3)

        async def all_done() -> bool:
            done = [(await status_of(db, e.id)).status for e in executions]
            return done == ["succeeded"] * 3

        await wait_until(all_done)
    assert sorted(ran) == sorted(e.id for e in executions)
