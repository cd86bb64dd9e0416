"""`agentdb bench queue`: agentdb's execution queue against pgqueuer and procrastinate, side
by side in one run on one server, all three doing the same no-op work.

One throwaway server holds each system twice: on a database as installed and on one with
finished jobs (below). agentdb's are migrated by `Migrator`, as the project ships it (the
second is a copy of the first); pgqueuer's are installed as its docs say (`pgq install`,
the durable default, then `pgq autovac`, its recommended autovacuum settings; here through
the same calls on `pgqueuer.Queries`), procrastinate's likewise (`procrastinate schema
--apply`, here `app.schema_manager.apply_schema_async()`). The server is the benchmark's
own: durability is off (fsync, synchronous_commit), as for every throwaway server of the
project, but autovacuum is switched back on, with PostgreSQL's defaults and each system's
own table settings, because a queue lives off it.

The same process runs the producer and the worker of each system, over the Unix socket:

- agentdb: `enqueue_execution` / `enqueue_executions` in `db.session()` on a producer's
  `DatabaseManager`, and `app.worker.run_worker` on a worker's manager, handlers
  `{"noop": handler}`, LISTEN on `agentdb_executions`.
- pgqueuer: `Queries.enqueue` on an asyncpg connection (its docs' driver), and a
  `QueueManager` on a fresh asyncpg connection per worker (dequeue, acks, heartbeats and
  LISTEN all on it, as its docs set it up), entrypoint `noop`.
- procrastinate: `task.defer_async()` / `task.batch_defer_async(…)` and
  `app.run_worker_async(concurrency=…)` (its default worker) on one `PsycopgConnector`
  whose pool holds enough connections for the worker's concurrency, its listener and the
  producer.

Measured for each, on its database as installed and on the one with 100,000 finished
jobs in its tables (agentdb: succeeded executions in agents.executions; pgqueuer: what
its finished jobs leave, three rows each in pgqueuer_log — queued, picked, successful —
the queue table itself keeps none; procrastinate: succeeded jobs in procrastinate_jobs, with
their three procrastinate_events each), inserted with generate_series, then VACUUM ANALYZE:

- enqueue rate, one job per call (and per transaction), and in batches of 1,000 per call;
- drain rate at concurrency 1, 4 and 8: N no-op jobs are queued (untimed), a worker of
  that concurrency starts, and the rate is (N - 1) / (time from the first handler start
  to the N-th): the worker's start-up and its last acknowledgements are left out alike.
  Every handler call is counted; after the worker stops, the count must be exactly N and
  the database must hold the N jobs as finished (nothing run twice, nothing lost);
- enqueue→start latency, p50 and p95: an idle worker of concurrency 4 waits (its LISTEN
  is up: a first job has run); jobs are enqueued one at a time, each after the previous one
  started and a small gap; latency = handler start - the moment the enqueue call returned
  (committed);
- CPU per job: this process's (time.process_time) over the same window, and the server's:
  user + system time of the postmaster and its children from /proc (children that exited
  are in the postmaster's cutime), where /proc exists.

pgqueuer runs at its best configuration per concurrency c, picked in the same run: its
dequeue batch size (which also sizes its batched acknowledgements: a flush every
`batch_size` completions or 0.1 s) combined with either limit it offers —
`entrypoint(concurrency_limit=c)` (counted in SQL across workers) or
`run(max_concurrent_tasks=c)` (this worker's picked jobs; it must be at least twice the batch
size) — every combination is measured, and the best median is reported against agentdb;
its defaults (batch 10, no limit: every queued job in flight at once) are measured too, for
reference. The latency test runs pgqueuer with its defaults. procrastinate runs its default
worker with `concurrency=c`; agentdb `run_worker(concurrency=c)`, its other settings at
their defaults.

Rounds interleave the six instances (agentdb without and with finished jobs, pgqueuer
without and with, procrastinate without and with, then the reverse, …), and pgqueuer's
configurations alternate their order the same way, so that drift of the machine (which is
shared) hits all systems and both table states alike; reported are medians over rounds
(latency: percentiles over all jobs of all rounds). Between runs each system's new rows are
deleted (untimed), so every run starts from the table state of its database. Writes
bench-results/queue.md and queue.png.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import platform
import statistics
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, LiteralString, Protocol

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from app.agents import Execution, enqueue_execution, enqueue_executions
from app.bench.common import markdown_table, percentile, results_dir
from app.database import DatabaseConfig, DatabaseManager, embedded
from app.database.migrations import Migrator
from app.worker import ExecutionContext, run_worker

SYSTEMS = ("agentdb", "pgqueuer", "procrastinate")
CONCURRENCIES = (1, 4, 8)
BATCH = 1_000
LATENCY_CONCURRENCY = 4
AGENT = "noop"


@dataclass(frozen=True)
class QueueSize:
    rounds: int  # per measurement and phase; even: each system runs first and last alike
    single_enqueues: int  # enqueue calls of one job, per round
    batches: int  # enqueue calls of BATCH jobs, per round
    drain_jobs: int  # N, queued before each drain
    latency_jobs: int  # jobs enqueued one at a time, per round
    latency_gap: float  # seconds between a job's start and the next enqueue
    finished_rows: int = 100_000
    all_pgqueuer_configs: bool = True  # else one batch size per limit


FULL = QueueSize(
    rounds=4,
    single_enqueues=1_000,
    batches=10,
    drain_jobs=2_000,
    latency_jobs=100,
    latency_gap=0.01,
)
QUICK = QueueSize(
    rounds=2,
    single_enqueues=200,
    batches=3,
    drain_jobs=400,
    latency_jobs=30,
    latency_gap=0.01,
    all_pgqueuer_configs=False,
)


# CPU of the server -------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (which may hold spaces): field 3 onwards."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


class ServerCpu:
    """User + system CPU seconds of the postmaster and all its children, read from /proc:
    live children's own times, plus the postmaster's cutime/cstime (children it reaped)."""

    def __init__(self, postmaster: int | None) -> None:
        self.ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.postmaster = postmaster

    @staticmethod
    def postmaster_of(backend_pid: int) -> int | None:
        """The parent of a live backend (None without /proc)."""
        try:
            return int(_stat_fields(backend_pid)[1])
        except (OSError, ValueError, IndexError):
            return None

    def read(self) -> float | None:
        if self.postmaster is None:
            return None
        try:
            fields = _stat_fields(self.postmaster)
            total = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
            children = Path(f"/proc/{self.postmaster}/task/{self.postmaster}/children")
            for pid in children.read_text().split():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    child = _stat_fields(int(pid))
                    total += int(child[11]) + int(child[12])
        except (OSError, ValueError, IndexError):
            return None
        return total / self.ticks


# The handlers' probe ------------------------------------------------------------------------


class Probe:
    """What every system's no-op handler calls: it counts the calls and notes when the
    first and the `target`-th started, with the CPU of both sides at those moments."""

    def __init__(self, server: ServerCpu) -> None:
        self.server = server
        self.arm(0)

    def arm(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.done = asyncio.Event()
        self.first = self.last = 0.0
        self.first_cpu = self.last_cpu = 0.0
        self.first_server: float | None = None
        self.last_server: float | None = None

    def hit(self) -> None:
        now = time.perf_counter()
        self.count += 1
        if self.count == 1:
            self.first, self.first_cpu = now, time.process_time()
            self.first_server = self.server.read()
        if self.count == self.target:
            self.last, self.last_cpu = now, time.process_time()
            self.last_server = self.server.read()
            self.done.set()


# The three systems --------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerConfig:
    label: str
    concurrency: int  # 0: unbounded (pgqueuer's default)
    batch_size: int = 10  # pgqueuer only
    limit: str = ""  # pgqueuer only: "entrypoint", "worker" or "" (none)


class System(Protocol):
    name: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def enqueue_one(self) -> None: ...
    async def enqueue_batch(self, count: int) -> None: ...
    def worker(self, config: WorkerConfig) -> contextlib.AbstractAsyncContextManager[None]: ...
    def drain_configs(self, concurrency: int, size: QueueSize) -> list[WorkerConfig]: ...
    async def reset(self, finished: int) -> None: ...
    async def cleanup(self) -> None: ...
    async def finished_since_reset(self) -> tuple[int, int]: ...  # (finished, unfinished)


class Admin:
    """An autocommit psycopg connection to one system's database, for the untimed work:
    seeding, VACUUM, deleting what a run left, checking what it did."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.conn: psycopg.AsyncConnection[Any] | None = None

    async def open(self) -> None:
        self.conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def execute(self, query: LiteralString, params: Sequence[Any] = ()) -> None:
        assert self.conn is not None
        await self.conn.execute(query, params)

    async def one(self, query: LiteralString, params: Sequence[Any] = ()) -> tuple[Any, ...]:
        assert self.conn is not None
        row = await (await self.conn.execute(query, params)).fetchone()
        assert row is not None
        return tuple(row)


class AgentDB:
    name = "agentdb"

    SEED: LiteralString = """
    INSERT INTO agents.executions
        (agent_name, status, input, attempt, worker_id, started_at, heartbeat_at,
         finished_at, created_at, updated_at)
    SELECT 'noop', 'succeeded', '{}', 1, 'seed', at, at, at + interval '2 ms', at, at
    FROM (SELECT now() - interval '3 days' + i * interval '1 second' AS at
          FROM generate_series(1, %s) AS i) AS seed
    """

    def __init__(self, conninfo: str, probe: Probe) -> None:
        self.probe = probe
        self.admin = Admin(conninfo)
        self.producer = DatabaseManager(DatabaseConfig(url=conninfo, max_pool_size=2))
        self.worker_db = DatabaseManager(
            DatabaseConfig(url=conninfo, min_pool_size=4, max_pool_size=12)
        )
        self.watermark: Any = None

    async def open(self) -> None:
        await self.admin.open()
        await self.producer.open()
        await self.worker_db.open()

    async def close(self) -> None:
        await self.worker_db.close()
        await self.producer.close()
        await self.admin.close()

    async def enqueue_one(self) -> None:
        async with self.producer.session() as conn:
            await enqueue_execution(conn, agent_name=AGENT)

    async def enqueue_batch(self, count: int) -> None:
        async with self.producer.session() as conn:
            await enqueue_executions(conn, [{"agent_name": AGENT}] * count)

    @contextlib.asynccontextmanager
    async def worker(self, config: WorkerConfig) -> AsyncIterator[None]:
        probe = self.probe

        async def noop(execution: Execution, context: ExecutionContext) -> None:
            probe.hit()

        stop = asyncio.Event()
        task = asyncio.create_task(
            run_worker(self.worker_db, {AGENT: noop}, concurrency=config.concurrency, stop=stop)
        )
        try:
            yield
        finally:
            stop.set()
            await task

    def drain_configs(self, concurrency: int, size: QueueSize) -> list[WorkerConfig]:
        return [WorkerConfig(f"concurrency={concurrency}", concurrency)]

    async def reset(self, finished: int) -> None:
        await self.admin.execute("TRUNCATE agents.executions CASCADE")
        if finished:
            await self.admin.execute(self.SEED, [finished])
        await self.admin.execute("VACUUM ANALYZE agents.executions")
        (self.watermark,) = await self.admin.one("SELECT clock_timestamp()")

    async def cleanup(self) -> None:
        await self.admin.execute(
            "DELETE FROM agents.executions WHERE created_at > %s", [self.watermark]
        )

    async def finished_since_reset(self) -> tuple[int, int]:
        finished, unfinished = await self.admin.one(
            """
            SELECT count(*) FILTER (WHERE status = 'succeeded'),
                   count(*) FILTER (WHERE status <> 'succeeded')
            FROM agents.executions WHERE created_at > %s
            """,
            [self.watermark],
        )
        return int(finished), int(unfinished)


def _socket_kwargs(conninfo: str) -> dict[str, Any]:
    """asyncpg.connect() arguments for a libpq conninfo (the throwaway server's socket)."""
    parts = conninfo_to_dict(conninfo)
    kwargs: dict[str, Any] = {
        "host": parts.get("host"),
        "user": parts.get("user"),
        "database": parts.get("dbname"),
    }
    if parts.get("port"):
        kwargs["port"] = int(str(parts["port"]))
    if parts.get("password"):
        kwargs["password"] = parts["password"]
    return kwargs


class PgQueuer:
    name = "pgqueuer"

    # What one finished job leaves in the log: its queued, picked and successful rows.
    SEED: LiteralString = """
    INSERT INTO pgqueuer_log (created, job_id, status, priority, entrypoint, aggregated)
    SELECT now() - interval '3 days' + i * interval '1 second', i, status::pgqueuer_status,
           0, 'noop', true
    FROM generate_series(1, %s) AS i
    CROSS JOIN (VALUES ('queued'), ('picked'), ('successful')) AS statuses (status)
    """

    def __init__(self, conninfo: str, probe: Probe) -> None:
        self.probe = probe
        self.admin = Admin(conninfo)
        self.connect_kwargs = _socket_kwargs(conninfo)
        self.producer: Any = None
        self.queries: Any = None
        self.watermark = 0

    async def open(self) -> None:
        import asyncpg
        from pgqueuer import AsyncpgDriver, Queries  # type: ignore[import-not-found,unused-ignore]

        await self.admin.open()
        self.producer = await asyncpg.connect(**self.connect_kwargs)
        self.queries = Queries(AsyncpgDriver(self.producer))

    async def install(self) -> None:
        await self.queries.install()
        await self.queries.optimize_autovacuum()

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.close()
        await self.admin.close()

    async def enqueue_one(self) -> None:
        await self.queries.enqueue(AGENT, None)

    async def enqueue_batch(self, count: int) -> None:
        await self.queries.enqueue([AGENT] * count, [None] * count, [0] * count)

    @contextlib.asynccontextmanager
    async def worker(self, config: WorkerConfig) -> AsyncIterator[None]:
        import asyncpg
        from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager  # type: ignore[import-not-found,unused-ignore]

        probe = self.probe

        async def noop(job: Job) -> None:
            probe.hit()

        connection = await asyncpg.connect(**self.connect_kwargs)
        manager = QueueManager(Queries(AsyncpgDriver(connection)))
        manager.entrypoint(
            AGENT,
            concurrency_limit=config.concurrency if config.limit == "entrypoint" else 0,
            accepts_context=False,
        )(noop)
        task = asyncio.create_task(
            manager.run(
                batch_size=config.batch_size,
                max_concurrent_tasks=config.concurrency if config.limit == "worker" else None,
            )
        )
        try:
            yield
        finally:
            manager.shutdown.set()
            try:
                await task
            finally:
                await connection.close()

    def drain_configs(self, concurrency: int, size: QueueSize) -> list[WorkerConfig]:
        """Every batch size that makes sense under either limit (see the module's doc)."""
        c = concurrency
        entrypoint = sorted({c, max(1, c // 2)}, reverse=True)
        worker = sorted({b for b in (c // 2, c // 4) if b >= 1}, reverse=True)
        if not size.all_pgqueuer_configs:
            entrypoint, worker = entrypoint[:1], worker[:1]
        return [
            *(
                WorkerConfig(f"entrypoint limit {c}, batch {b}", c, b, "entrypoint")
                for b in entrypoint
            ),
            *(WorkerConfig(f"max_concurrent_tasks {c}, batch {b}", c, b, "worker") for b in worker),
        ]

    async def reset(self, finished: int) -> None:
        await self.admin.execute("TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics")
        if finished:
            await self.admin.execute(self.SEED, [finished])
        await self.admin.execute("VACUUM ANALYZE pgqueuer")
        await self.admin.execute("VACUUM ANALYZE pgqueuer_log")
        (self.watermark,) = await self.admin.one("SELECT coalesce(max(id), 0) FROM pgqueuer_log")

    async def cleanup(self) -> None:
        await self.admin.execute("DELETE FROM pgqueuer")
        await self.admin.execute("DELETE FROM pgqueuer_log WHERE id > %s", [self.watermark])

    async def finished_since_reset(self) -> tuple[int, int]:
        (finished,) = await self.admin.one(
            "SELECT count(*) FROM pgqueuer_log WHERE id > %s AND status = 'successful'",
            [self.watermark],
        )
        (unfinished,) = await self.admin.one("SELECT count(*) FROM pgqueuer")
        return int(finished), int(unfinished)


class Procrastinate:
    name = "procrastinate"

    SEED: LiteralString = """
    WITH jobs AS (
        INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, attempts)
        SELECT 'default', 'noop', '{}', 'succeeded', 1 FROM generate_series(1, %s)
        RETURNING id
    )
    INSERT INTO procrastinate_events (job_id, type, at)
    SELECT jobs.id, events.type::procrastinate_job_event_type, now() - interval '3 days'
    FROM jobs
    CROSS JOIN (VALUES ('deferred'), ('started'), ('succeeded')) AS events (type)
    """

    def __init__(self, conninfo: str, probe: Probe) -> None:
        import procrastinate  # type: ignore[import-not-found,unused-ignore]

        self.probe = probe
        self.admin = Admin(conninfo)
        # The worker's concurrency, its listener and the producer each hold a connection.
        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(
                conninfo=conninfo, min_size=4, max_size=max(CONCURRENCIES) + 4
            )
        )

        async def noop() -> None:
            probe.hit()

        self.task: Any = self.app.task(name=AGENT)(noop)
        self.watermark = 0

    async def open(self) -> None:
        await self.admin.open()
        await self.app.open_async()

    async def install(self) -> None:
        await self.app.schema_manager.apply_schema_async()

    async def close(self) -> None:
        await self.app.close_async()
        await self.admin.close()

    async def enqueue_one(self) -> None:
        await self.task.defer_async()

    async def enqueue_batch(self, count: int) -> None:
        await self.task.batch_defer_async(*([{}] * count))

    @contextlib.asynccontextmanager
    async def worker(self, config: WorkerConfig) -> AsyncIterator[None]:
        task = asyncio.create_task(
            self.app.run_worker_async(concurrency=config.concurrency, install_signal_handlers=False)
        )
        try:
            yield
        finally:
            task.cancel()  # how procrastinate's docs stop a worker run as a task: gracefully
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def drain_configs(self, concurrency: int, size: QueueSize) -> list[WorkerConfig]:
        return [WorkerConfig(f"concurrency={concurrency}", concurrency)]

    async def reset(self, finished: int) -> None:
        await self.admin.execute(
            "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers,"
            " procrastinate_workers CASCADE"
        )
        if finished:
            await self.admin.execute(self.SEED, [finished])
        await self.admin.execute("VACUUM ANALYZE procrastinate_jobs")
        await self.admin.execute("VACUUM ANALYZE procrastinate_events")
        (self.watermark,) = await self.admin.one(
            "SELECT coalesce(max(id), 0) FROM procrastinate_jobs"
        )

    async def cleanup(self) -> None:
        await self.admin.execute("DELETE FROM procrastinate_jobs WHERE id > %s", [self.watermark])

    async def finished_since_reset(self) -> tuple[int, int]:
        finished, unfinished = await self.admin.one(
            """
            SELECT count(*) FILTER (WHERE status = 'succeeded'),
                   count(*) FILTER (WHERE status <> 'succeeded')
            FROM procrastinate_jobs WHERE id > %s
            """,
            [self.watermark],
        )
        return int(finished), int(unfinished)


# Measuring ---------------------------------------------------------------------------------


@dataclass
class Sample:
    seconds: float
    jobs: int
    client_cpu: float
    server_cpu: float | None

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


MEASUREMENTS = (
    "enqueue, 1 job per call",
    f"enqueue, batches of {BATCH:,}",
    *(f"drain, concurrency {c}" for c in CONCURRENCIES),
)
PHASES = ("empty", "finished")


@dataclass
class Results:
    size: QueueSize
    # (phase, measurement, system, config label) -> samples
    samples: dict[tuple[str, str, str, str], list[Sample]] = field(default_factory=dict)
    # (phase, system) -> seconds
    latencies: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add(self, phase: str, measurement: str, system: str, label: str, sample: Sample) -> None:
        self.samples.setdefault((phase, measurement, system, label), []).append(sample)

    def configs(self, phase: str, measurement: str, system: str) -> dict[str, list[Sample]]:
        return {
            label: samples
            for (p, m, s, label), samples in self.samples.items()
            if (p, m, s) == (phase, measurement, system)
        }

    def best(self, phase: str, measurement: str, system: str) -> tuple[str, list[Sample]] | None:
        """The configuration with the highest median rate (the only one, but for pgqueuer).
        pgqueuer's unbounded defaults are reference only, never its "best"."""
        configs = {
            label: samples
            for label, samples in self.configs(phase, measurement, system).items()
            if not label.startswith(DEFAULTS_LABEL)
        }
        if not configs:
            return None
        return max(configs.items(), key=lambda item: median_rate(item[1]))


DEFAULTS_LABEL = "defaults"


def median_rate(samples: Sequence[Sample]) -> float:
    return statistics.median(sample.rate for sample in samples)


def cpu_per_job(samples: Sequence[Sample], side: str) -> float | None:
    values = [(s.client_cpu if side == "client" else s.server_cpu) for s in samples if s.jobs > 0]
    if any(value is None for value in values) or not values:
        return None
    return statistics.median(
        float(value) / s.jobs for value, s in zip(values, samples, strict=True) if value is not None
    )


def _server(probe: Probe) -> float | None:
    return probe.server.read()


async def time_enqueues(system: System, probe: Probe, calls: int, per_call: int) -> Sample:
    """`calls` enqueue calls of `per_call` jobs one after the other."""
    gc.collect()
    server = _server(probe)
    cpu, started = time.process_time(), time.perf_counter()
    if per_call == 1:
        for _ in range(calls):
            await system.enqueue_one()
    else:
        for _ in range(calls):
            await system.enqueue_batch(per_call)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    after = _server(probe)
    jobs = calls * per_call
    _, unfinished = await system.finished_since_reset()
    if unfinished != jobs:
        raise RuntimeError(f"{system.name}: {unfinished} jobs queued, {jobs} enqueued")
    await system.cleanup()
    return Sample(seconds, jobs, cpu, None if server is None or after is None else after - server)


async def time_drain(system: System, probe: Probe, config: WorkerConfig, jobs: int) -> Sample:
    """Queue `jobs`, then time a worker of `config` running them (see the module's doc)."""
    for start in range(0, jobs, BATCH):
        await system.enqueue_batch(min(BATCH, jobs - start))
    gc.collect()
    probe.arm(jobs)
    async with system.worker(config):
        try:
            async with asyncio.timeout(max(60.0, jobs / 20)):
                await probe.done.wait()
        except TimeoutError:
            raise RuntimeError(
                f"{system.name} ({config.label}): {probe.count} of {jobs} jobs ran in time"
            ) from None
    finished, unfinished = await system.finished_since_reset()
    if probe.count != jobs or finished != jobs or unfinished:
        raise RuntimeError(
            f"{system.name} ({config.label}): {probe.count} handler calls for {jobs} jobs;"
            f" {finished} finished, {unfinished} not"
        )
    await system.cleanup()
    server = (
        None
        if probe.first_server is None or probe.last_server is None
        else probe.last_server - probe.first_server
    )
    return Sample(probe.last - probe.first, jobs - 1, probe.last_cpu - probe.first_cpu, server)


async def time_latencies(
    system: System, probe: Probe, config: WorkerConfig, jobs: int, gap: float
) -> list[float]:
    """Seconds from each enqueue call's return to its handler's start, an idle worker
    waiting; one job at a time."""
    latencies = []
    async with system.worker(config):
        for number in range(jobs + 1):
            probe.arm(1)
            await system.enqueue_one()
            sent = time.perf_counter()
            try:
                async with asyncio.timeout(10.0):
                    await probe.done.wait()
            except TimeoutError:
                raise RuntimeError(f"{system.name}: a job did not start within 10 s") from None
            if number:  # the first one shows the worker listening
                latencies.append(probe.first - sent)
            await asyncio.sleep(gap)
    await system.cleanup()
    return latencies


def latency_config(system: System) -> WorkerConfig:
    if system.name == "pgqueuer":
        return WorkerConfig(DEFAULTS_LABEL, 0)
    return WorkerConfig(f"concurrency={LATENCY_CONCURRENCY}", LATENCY_CONCURRENCY)


def ordered(items: Sequence[Any], number: int) -> list[Any]:
    """`items` in order on even rounds, reversed on odd ones."""
    return list(items) if number % 2 == 0 else list(reversed(items))


Instance = tuple[str, System]  # (phase, the system on that phase's database)


async def measure_all(
    conninfos: dict[tuple[str, str], str], postmaster: int | None, size: QueueSize
) -> Results:
    """Every measurement on all six instances (three systems, each on a database without
    and one with finished jobs), rounds interleaved: a system's two instances run one after
    the other, the systems in turn, the order reversed every other round."""
    probe = Probe(ServerCpu(postmaster))
    makers: dict[str, Callable[[str, Probe], System]] = {
        "agentdb": AgentDB,
        "pgqueuer": PgQueuer,
        "procrastinate": Procrastinate,
    }
    instances: list[Instance] = [
        (phase, makers[name](conninfos[(name, phase)], probe))
        for name in SYSTEMS
        for phase in PHASES
    ]
    results = Results(size)
    opened: list[System] = []
    try:
        started = time.perf_counter()
        for phase, system in instances:
            await system.open()
            opened.append(system)
            if isinstance(system, PgQueuer | Procrastinate):
                await system.install()
            await system.reset(size.finished_rows if phase == "finished" else 0)
        print(
            f"  three systems, each on a database with 0 and one with {size.finished_rows:,}"
            f" finished jobs ({time.perf_counter() - started:.1f} s)",
            flush=True,
        )
        # Warm up: connections, prepared statements, the server's buffers.
        for _, system in instances:
            await time_enqueues(system, probe, 20, 1)
            await time_enqueues(system, probe, 2, BATCH)
            for config in system.drain_configs(max(CONCURRENCIES), size)[:1]:
                await time_drain(system, probe, config, 200)
        for measurement in MEASUREMENTS:
            started = time.perf_counter()
            for number in range(size.rounds):
                for phase, system in ordered(instances, number):
                    await measure_once(system, phase, measurement, number, probe, results)
            for phase in PHASES:
                print(
                    f"  {summary_line(results, phase, measurement)}"
                    f" ({time.perf_counter() - started:.1f} s)",
                    flush=True,
                )
        started = time.perf_counter()
        for number in range(size.rounds):
            for phase, system in ordered(instances, number):
                latencies = await time_latencies(
                    system, probe, latency_config(system), size.latency_jobs, size.latency_gap
                )
                results.latencies.setdefault((phase, system.name), []).extend(latencies)
        for phase in PHASES:
            print(
                f"  enqueue→start p50{phase_title(phase, size)}: "
                + ", ".join(
                    f"{name} {percentile(results.latencies[(phase, name)], 0.5) * 1e3:.2f} ms"
                    for name in SYSTEMS
                )
                + f" ({time.perf_counter() - started:.1f} s)",
                flush=True,
            )
    finally:
        for system in reversed(opened):
            await system.close()
    return results


async def measure_once(
    system: System, phase: str, measurement: str, number: int, probe: Probe, results: Results
) -> None:
    """One round of `measurement` on one instance (every configuration of pgqueuer's)."""
    size = results.size
    if measurement.startswith("enqueue, 1"):
        sample = await time_enqueues(system, probe, size.single_enqueues, 1)
        results.add(phase, measurement, system.name, "", sample)
    elif measurement.startswith("enqueue, batches"):
        sample = await time_enqueues(system, probe, size.batches, BATCH)
        results.add(phase, measurement, system.name, "", sample)
    else:
        concurrency = int(measurement.rsplit(" ", 1)[1])
        configs = system.drain_configs(concurrency, size)
        if system.name == "pgqueuer" and concurrency == max(CONCURRENCIES):
            configs.append(WorkerConfig(f"{DEFAULTS_LABEL} (batch 10, no limit)", 0))
        for config in ordered(configs, number):
            sample = await time_drain(system, probe, config, size.drain_jobs)
            results.add(phase, measurement, system.name, config.label, sample)


def summary_line(results: Results, phase: str, measurement: str) -> str:
    parts = []
    for name in SYSTEMS:
        best = results.best(phase, measurement, name)
        if best is not None:
            parts.append(f"{name} {median_rate(best[1]):,.0f}/s")
    return f"{measurement}{phase_title(phase, results.size)}: " + ", ".join(parts)


# Reporting ---------------------------------------------------------------------------------


def fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def phase_title(phase: str, size: QueueSize) -> str:
    return "" if phase == "empty" else f", {size.finished_rows:,} finished"


def report_table(results: Results) -> str:
    size = results.size
    rows: list[list[str]] = []

    def add(name: str, values: dict[str, float | None], fmt: Callable[[float | None], str]) -> None:
        a, p, r = (values.get(s) for s in SYSTEMS)
        rows.append([name, fmt(a), fmt(p), fmt(r), fmt_ratio(ratio(a, p)), fmt_ratio(ratio(a, r))])

    for phase in PHASES:
        for measurement in MEASUREMENTS:
            values: dict[str, float | None] = {}
            for name in SYSTEMS:
                best = results.best(phase, measurement, name)
                values[name] = None if best is None else median_rate(best[1])
            add(f"{measurement} (jobs/s){phase_title(phase, size)}", values, fmt_rate)
        for fraction in (0.5, 0.95):
            lat = {
                name: percentile(results.latencies[(phase, name)], fraction) * 1e3
                for name in SYSTEMS
                if results.latencies.get((phase, name))
            }
            add(
                f"enqueue→start p{round(fraction * 100)} (ms){phase_title(phase, size)}",
                dict(lat),
                lambda v: "n/a" if v is None else f"{v:.2f}",
            )
    for side in ("client", "server"):
        for measurement in MEASUREMENTS:
            values = {}
            for name in SYSTEMS:
                best = results.best("empty", measurement, name)
                cpu = None if best is None else cpu_per_job(best[1], side)
                values[name] = None if cpu is None else cpu * 1e6
            add(
                f"{side} CPU µs/job, {measurement}",
                values,
                lambda v: "n/a" if v is None else f"{v:,.1f}",
            )
    return markdown_table(
        [
            "measurement",
            "agentdb",
            "pgqueuer (best)",
            "procrastinate",
            "agentdb/pgqueuer",
            "agentdb/procrastinate",
        ],
        rows,
    )


def pgqueuer_table(results: Results) -> str:
    rows = []
    for measurement in MEASUREMENTS[2:]:
        for phase in PHASES:
            best = results.best(phase, measurement, "pgqueuer")
            for label, samples in results.configs(phase, measurement, "pgqueuer").items():
                rows.append(
                    [
                        f"{measurement}{phase_title(phase, results.size)}",
                        label + (" (best)" if best is not None and best[0] == label else ""),
                        fmt_rate(median_rate(samples)),
                        ", ".join(f"{s.rate:,.0f}" for s in samples),
                    ]
                )
    return markdown_table(["drain", "pgqueuer configuration", "median jobs/s", "rounds"], rows)


def change_table(results: Results) -> str:
    rows = []
    for measurement in MEASUREMENTS:
        cells = [measurement + " rate"]
        for name in SYSTEMS:
            empty = results.best("empty", measurement, name)
            full = results.best("finished", measurement, name)
            if empty is None or full is None:
                cells.append("n/a")
                continue
            change = median_rate(full[1]) / median_rate(empty[1]) - 1
            cells.append(f"{change * 100:+.1f}%")
        rows.append(cells)
    for fraction in (0.5, 0.95):
        cells = [f"enqueue→start p{round(fraction * 100)}"]
        for name in SYSTEMS:
            empty_lat = percentile(results.latencies[("empty", name)], fraction)
            full_lat = percentile(results.latencies[("finished", name)], fraction)
            cells.append(f"{(full_lat / empty_lat - 1) * 100:+.1f}%")
        rows.append(cells)
    return markdown_table(["with finished rows vs. without", *SYSTEMS], rows)


def plot(results: Results, title: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    colors = {"agentdb": "tab:blue", "pgqueuer": "tab:orange", "procrastinate": "tab:green"}
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [2.2, 1]}
    )
    width = 0.13
    positions = range(len(MEASUREMENTS))
    for number, (name, phase) in enumerate((name, phase) for name in SYSTEMS for phase in PHASES):
        offset = (number - 2.5) * width
        values = []
        for measurement in MEASUREMENTS:
            best = results.best(phase, measurement, name)
            values.append(float("nan") if best is None else median_rate(best[1]))
        left.bar(
            [i + offset for i in positions],
            values,
            width,
            color=colors[name],
            hatch="//" if phase == "finished" else None,
            edgecolor="white" if phase == "finished" else None,
            label=name
            + ("" if phase == "empty" else f" ({results.size.finished_rows:,} finished)"),
        )
    left.set_yscale("log")
    left.set_xticks(list(positions), [m.replace(", ", ",\n") for m in MEASUREMENTS], fontsize=8)
    left.set_title("jobs/s (median over rounds; log scale; higher is better)")
    left.legend(fontsize=7, ncols=3, loc="upper right")
    left.grid(axis="y", alpha=0.3)
    labels = [
        f"p{q}\n{phase_title(p, results.size)[2:] or 'no finished'}"
        for p in PHASES
        for q in (50, 95)
    ]
    width = 0.27
    for number, name in enumerate(SYSTEMS):
        values = [
            percentile(results.latencies[(phase, name)], q / 100) * 1e3
            for phase in PHASES
            for q in (50, 95)
        ]
        right.bar(
            [i + (number - 1) * width for i in range(len(labels))],
            values,
            width,
            color=colors[name],
            label=name,
        )
    right.set_xticks(list(range(len(labels))), labels, fontsize=8)
    right.set_title("enqueue→start latency, ms (lower is better)")
    right.legend(fontsize=7)
    right.grid(axis="y", alpha=0.3)
    for axes in (left, right):
        axes.title.set_fontsize(9)
    figure.suptitle("\n".join(textwrap.wrap(title, 160)), fontsize=10)
    figure.tight_layout()
    path = results_dir() / "queue.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return str(path)


def versions(server_version: int) -> str:
    major, minor = divmod(server_version, 10_000)
    packages = ("psycopg", "asyncpg", "pgqueuer", "procrastinate")
    return (
        f"PostgreSQL {major}.{minor} (embedded, Unix socket), Python {platform.python_version()}, "
        + ", ".join(f"{name} {version(name)}" for name in packages)
    )


# Entry point -------------------------------------------------------------------------------


def run(size: QueueSize = FULL) -> str:
    """Run the whole benchmark; return the Markdown report (also written to bench-results/)."""
    started = time.perf_counter()
    with embedded.throwaway_server(prefix="agentdb-bench-") as server_url:
        names = {(name, phase): f"bench_{name}_{phase}" for name in SYSTEMS for phase in PHASES}
        with psycopg.connect(server_url, autocommit=True) as conn:
            # A queue lives off autovacuum; the throwaway server turns it off (for clones).
            conn.execute("ALTER SYSTEM SET autovacuum = on")
            conn.execute("SELECT pg_catalog.pg_reload_conf()")
            for (name, phase), database in names.items():
                if name == "agentdb" and phase != PHASES[0]:
                    continue
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            server_version = conn.info.server_version
            postmaster = ServerCpu.postmaster_of(conn.info.backend_pid)
        conninfos = {key: make_conninfo(server_url, dbname=db) for key, db in names.items()}
        Migrator(conninfos[("agentdb", PHASES[0])]).apply()
        with psycopg.connect(server_url, autocommit=True) as conn:
            for phase in PHASES[1:]:  # agentdb's other database: a copy of the migrated one
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(names[("agentdb", phase)]),
                        sql.Identifier(names[("agentdb", PHASES[0])]),
                    )
                )
        results = asyncio.run(measure_all(conninfos, postmaster, size))
    elapsed = time.perf_counter() - started
    summary = (
        f"{size.rounds} rounds; {size.single_enqueues:,} single enqueues and"
        f" {size.batches} batches of {BATCH:,} per round; drains of {size.drain_jobs:,} jobs;"
        f" {size.latency_jobs} latency jobs per round; with 0 and {size.finished_rows:,}"
        " finished jobs in the tables"
    )
    report = (
        f"Queue benchmark: agentdb vs. pgqueuer vs. procrastinate, {summary}\n"
        f"{versions(server_version)}; {elapsed:.0f} s in all\n\n"
        + report_table(results)
        + "\n\nRates: median over rounds; pgqueuer (best): its fastest configuration for that"
        " row (below). Ratios: agentdb's value / the other's (rates: above 1 is agentdb"
        " faster; latency and CPU: below 1 is agentdb better). Drain: (N - 1) / time from the"
        " first handler start to the N-th, N jobs queued beforehand. Latency: an idle worker"
        f" (concurrency {LATENCY_CONCURRENCY}; pgqueuer's defaults), one job at a time,"
        " handler start - the enqueue call's return; percentiles over all rounds. CPU per"
        " job: median over rounds of this process's (client) and the server's (postmaster"
        " and children, /proc) CPU over the timed window, for the runs without finished"
        " rows. agentdb enqueues in db.session() (BEGIN, INSERT, COMMIT); pgqueuer on an"
        " autocommit connection; procrastinate through its pool (autocommit).\n\n"
        "pgqueuer's configurations (batch size with either limit; 'defaults' = batch 10, no"
        " limit at all: every queued job in flight at once, shown for reference)\n\n"
        + pgqueuer_table(results)
        + f"\n\nWith {size.finished_rows:,} finished jobs in the tables, change of the median\n\n"
        + change_table(results)
        + "\n"
        + (
            "\n(--quick: a smoke test with few rounds; judge the numbers on a full run.)\n"
            if size == QUICK
            else ""
        )
    )
    (results_dir() / "queue.md").write_text(report)
    png = plot(results, f"agentdb vs. pgqueuer vs. procrastinate, no-op jobs ({summary})")
    return report + (
        f"\nplot: {png}\n" if png else "\n(no plot: install the bench extra for matplotlib)\n"
    )
