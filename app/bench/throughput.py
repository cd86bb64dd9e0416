"""`agentdb bench throughput`: units of work against the server's own limit, pgbench.

Five units of work, each at 1, 8 and 32 concurrent clients, three ways:

(a) pgbench, the C client shipped with PostgreSQL (from the embedded binaries), running the
    very statements agentdb sends: its SQL constants, imported from its modules, with every
    parameter pgbench can bind bound as a parameter (`:name`; `-M prepared`, as psycopg
    prepares a statement it has run a few times) and the ones that are NULL in these calls
    written as NULL. Ids are drawn with `\\set` from a seeded sample of the data set's rows
    (a UUID cannot be computed by pgbench: each client reads the sample once into variables,
    and `\\if` picks the statement bound to the drawn one; the claimed run's id and attempt
    come back with `\\gset`). One transaction per transaction of the layer (BEGIN /
    statement / COMMIT). `-c N -j min(N, 2) -T seconds`.
(b) raw psycopg async: the same statements with the same parameters, on a psycopg_pool pool
    of N connections with agentdb's wire options, N tasks in one process, each unit of work
    in `conn.transaction()`; tuples out, nothing validated.
(c) agentdb: its query functions, N tasks in one process on a DatabaseManager of N
    connections, each unit of work in `db.session()`.

The units: add_message (to a chat of the sample), get_chat, list_messages (a page of 50),
enqueue + claim + complete (three transactions: a run queued for a chat, the queue head
claimed, the claimed run completed with its fencing token; the queue is pre-filled so that a
claim always finds a run), and update_data (the Telegram FSM data merge aiogram's storage
sends on every update). Each (unit, clients) pair runs a few rounds; in a round the three
run one after the other for the same number of seconds, in an order that turns round every
round (a b c, then c b a, …), after an untimed warm-up each, and every turn starts on
freshly vacuumed tables (VACUUM_TOUCHED). Reported: median ops/s over
rounds, the medians of the per-round ratios c/a and c/b, and client CPU per unit of work
(pgbench's own from its child rusage; process_time for b and c, which share one process
with nothing else). Writes bench-results/throughput.md and throughput.png.
"""

from __future__ import annotations

import asyncio
import gc
import os
import platform
import random
import re
import resource
import statistics
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import psycopg_pool
from pgvector.psycopg import register_vector_async
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from app import agents, messaging, telegram
from app.bench.common import markdown_table, results_dir
from app.database import DatabaseConfig, DatabaseManager, embedded
from app.database.migrations import Migrator
from app.database.pagination import FIRST_PAGE_AT, LAST_UUID
from app.messaging import queries as message_sql

BOT_ID = 7_000_000_001
FIRST_USER_ID = 100_000_000
CONTENT = (
    "Can you book a table for four on Friday evening? Somewhere quiet, near the office, "
    "and not too expensive."
)
AGENT_NAME = "planner"
RUN_INPUT = {"prompt": "continue"}
RUN_OUTPUT = {"text": "done"}
MODEL = "gpt-4o-mini"
COST = Decimal("0.000207")
PATCH = {"step": 2, "city": "Lisbon"}
CLIENTS = (1, 8, 32)


@dataclass(frozen=True)
class ThroughputSize:
    owners: int
    chats: int
    messages_per_chat: int
    sessions: int
    queued: int
    """Runs queued before the measurements, so that every claim finds one."""
    sample: int
    """Chats of the seeded sample the calls draw from (pgbench binds each as a variable)."""
    seconds: int
    """Each layer's turn in a round (pgbench -T takes whole seconds)."""
    rounds: int
    """Many short rounds rather than a few long ones: the machine's speed drifts over
    minutes, and the ratios are taken within a round, where all three ran close together."""
    warmup: float


FULL = ThroughputSize(
    owners=100,
    chats=1_000,
    messages_per_chat=100,
    sessions=2_000,
    queued=5_000,
    sample=64,
    seconds=2,
    rounds=7,
    warmup=1.0,
)
QUICK = ThroughputSize(
    owners=20,
    chats=200,
    messages_per_chat=60,
    sessions=200,
    queued=2_000,
    sample=16,
    seconds=1,
    rounds=2,
    warmup=0.3,
)

LAYERS = ("a", "b", "c")
LAYER_NAMES = {"a": "pgbench", "b": "psycopg", "c": "agentdb"}


# The data set -----------------------------------------------------------------------------

INSERT_CHATS = """
INSERT INTO messaging.chats (owner_id, title, metadata)
SELECT (SELECT owners.id FROM unnest(%(owners)s::uuid[]) WITH ORDINALITY AS owners (id, n)
        WHERE owners.n = 1 + (chat %% cardinality(%(owners)s::uuid[]))),
       'Chat ' || chat, '{"source": "web"}'::jsonb
FROM generate_series(1, %(chats)s) AS chat
"""

# Each chat's messages, a few seconds apart, alternating user and assistant.
INSERT_MESSAGES = """
INSERT INTO messaging.messages
    (chat_id, owner_id, role, content, token_count, metadata, created_at, updated_at)
SELECT chat.id, chat.owner_id,
       CASE WHEN turn %% 2 = 0 THEN 'user' ELSE 'assistant' END,
       %(content)s, 30, '{}'::jsonb,
       now() - interval '30 days' + turn * interval '7 seconds',
       now() - interval '30 days' + turn * interval '7 seconds'
FROM messaging.chats AS chat
CROSS JOIN generate_series(1, %(per_chat)s) AS turn
"""

STAMP_LAST_MESSAGE_AT = """
UPDATE messaging.chats AS chat
SET last_message_at = last.at
FROM (SELECT chat_id, max(created_at) AS at FROM messaging.messages GROUP BY chat_id) AS last
WHERE chat.id = last.chat_id
"""

INSERT_QUEUED_RUNS = """
INSERT INTO agents.executions (chat_id, owner_id, agent_name, input, created_at, run_after)
SELECT chat.id, chat.owner_id, %(agent_name)s, '{"prompt": "continue"}'::jsonb,
       now() - interval '1 hour', now() - interval '1 hour'
FROM generate_series(1, %(queued)s) AS run
JOIN LATERAL (
    SELECT id, owner_id FROM messaging.chats ORDER BY id OFFSET run %% 50 LIMIT 1
) AS chat ON true
"""

INSERT_SESSIONS = """
INSERT INTO telegram.sessions (bot_id, telegram_chat_id, telegram_user_id, username, data)
SELECT %(bot_id)s, user_id, user_id, 'user' || user_id, '{"step": 1}'::jsonb
FROM generate_series(%(first)s, %(first)s + %(sessions)s - 1) AS user_id
"""

SELECT_CHAT_IDS = "SELECT id FROM messaging.chats ORDER BY id"

# Run before every turn (untimed): the throwaway server runs no autovacuum, and without it
# each turn would find the dead rows and index entries of the turns before it (update_data
# rewrites 2,000 sessions a dozen times a turn), so whichever layer ran later would pay for
# the others. Each turn starts from the same vacuumed tables instead.
VACUUM_TOUCHED = "VACUUM messaging.chats, messaging.messages, agents.executions, telegram.sessions"


def load(conninfo: str, size: ThroughputSize, rng: random.Random) -> list[UUID]:
    """Fill the database in a few set-based statements; return the seeded sample of chats."""
    owners = [UUID(int=rng.getrandbits(128), version=4) for _ in range(size.owners)]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(INSERT_CHATS, {"owners": owners, "chats": size.chats})
        conn.execute(INSERT_MESSAGES, {"content": CONTENT, "per_chat": size.messages_per_chat})
        conn.execute(STAMP_LAST_MESSAGE_AT)
        conn.execute(INSERT_QUEUED_RUNS, {"agent_name": AGENT_NAME, "queued": size.queued})
        conn.execute(
            INSERT_SESSIONS,
            {"bot_id": BOT_ID, "first": FIRST_USER_ID, "sessions": size.sessions},
        )
        conn.execute("VACUUM ANALYZE")
        chats = [row[0] for row in conn.execute(SELECT_CHAT_IDS)]
    return rng.sample(chats, size.sample)


# pgbench scripts --------------------------------------------------------------------------

PARAMETER = re.compile(r"%\((\w+)\)s|%s")


def pgbench_statement(statement: str, binds: dict[str, str], positional: Sequence[str] = ()) -> str:
    """`statement` (a psycopg SQL constant) as pgbench runs it: each `%(name)s` replaced by
    `binds[name]` (a pgbench variable `:var`, or NULL for a parameter these calls leave
    NULL), each `%s` by the next of `positional`; on one logical command ending in `;`."""
    values = iter(positional)

    def replace(match: re.Match[str]) -> str:
        return binds[match.group(1)] if match.group(1) else next(values)

    return PARAMETER.sub(replace, statement).strip()


def chat_branches(sample: Sequence[UUID], render: Callable[[str], str]) -> str:
    """The statement `render(variable)` for each chat of the sample, in an `\\if` chain
    that runs the one bound to the chat drawn into :k (the variable c<k> holds its id)."""
    lines = [f"\\set k random(0, {len(sample) - 1})"]
    for k in range(len(sample)):
        lines.append(("\\if" if k == 0 else "\\elif") + f" :k = {k}")
        lines.append(render(f":c{k}"))
    lines.append("\\endif")
    return "\n".join(lines)


def load_sample(sample: Sequence[UUID]) -> str:
    """Read the sample into each client's variables c0, c1, … on its first transaction
    (pgbench cannot make a UUID; variables persist from one transaction to the next)."""
    columns = ", ".join(f"'{chat}'::uuid AS c{k}" for k, chat in enumerate(sample))
    return f"\\if :loaded = 0\nSELECT 1 AS loaded, {columns} \\gset\n\\endif"


def transaction(*commands: str) -> str:
    return "\n".join(["BEGIN;", *commands, "COMMIT;"])


ADD_MESSAGE_BINDS = {
    "chat_id": "",
    "role": ":role",
    "content": ":content",
    "embedding": "NULL",
    "token_count": ":token_count",
    "metadata": ":metadata",
}
MESSAGES_PAGE_BINDS = {
    "chat_id": "",
    "before_created_at": ":before_created_at",
    "before_id": ":before_id",
    "limit": ":limit",
}
ENQUEUE_BINDS = {
    "agent_name": ":agent_name",
    "input": ":input",
    "chat_id": "",
    "message_id": "NULL",
    "todo_id": "NULL",
    "max_attempts": ":max_attempts",
    "priority": ":priority",
    "run_after": "NULL",
    "dedupe_key": "NULL",
    "owner_id": "NULL",
}
CLAIM_BINDS = {"worker_id": ":worker_id", "agent_names": "NULL", "limit": ":claim_limit"}
COMPLETE_BINDS = {
    "execution_id": ":claimed_id",
    "output": ":output",
    "model": ":model",
    "prompt_tokens": ":prompt_tokens",
    "completion_tokens": ":completion_tokens",
    "cost_usd": ":cost_usd",
    "worker_id": ":worker_id",
    "attempt": ":claimed_attempt",
}
UPDATE_DATA_BINDS = {
    "bot_id": ":bot_id",
    "telegram_chat_id": ":user_id",
    "telegram_user_id": ":user_id",
    "thread_id": "NULL",
    "business_connection_id": "NULL",
    "destiny": ":destiny",
    "patch": ":patch",
    "ttl": "NULL",
}


def with_chat(binds: dict[str, str], variable: str) -> dict[str, str]:
    return binds | {"chat_id": variable}


def pgbench_scripts(sample: Sequence[UUID], size: ThroughputSize) -> dict[str, str]:
    """Each unit of work's pgbench script (the statements the layer sends, one transaction
    per transaction of the layer)."""
    add_message = message_sql.INSERT_MESSAGE
    page = message_sql.SELECT_MESSAGES_PAGE
    last_user = FIRST_USER_ID + size.sessions - 1
    return {
        "add_message": "\n".join(
            [
                load_sample(sample),
                "\\set token_count random(1, 500)",
                "BEGIN;",
                chat_branches(
                    sample,
                    lambda chat: (
                        pgbench_statement(add_message, with_chat(ADD_MESSAGE_BINDS, chat)) + ";"
                    ),
                ),
                "COMMIT;",
            ]
        ),
        "get_chat": "\n".join(
            [
                load_sample(sample),
                "BEGIN;",
                chat_branches(
                    sample,
                    lambda chat: pgbench_statement(message_sql.SELECT_CHAT, {}, [chat]) + ";",
                ),
                "COMMIT;",
            ]
        ),
        "list_messages": "\n".join(
            [
                load_sample(sample),
                "BEGIN;",
                chat_branches(
                    sample,
                    lambda chat: (
                        pgbench_statement(page, with_chat(MESSAGES_PAGE_BINDS, chat)) + ";"
                    ),
                ),
                "COMMIT;",
            ]
        ),
        "enqueue + claim + complete": "\n".join(
            [
                load_sample(sample),
                "BEGIN;",
                chat_branches(
                    sample,
                    lambda chat: (
                        pgbench_statement(
                            agents.queries.INSERT_EXECUTION, with_chat(ENQUEUE_BINDS, chat)
                        )
                        + ";"
                    ),
                ),
                "COMMIT;",
                transaction(
                    pgbench_statement(agents.queries.CLAIM_EXECUTIONS, CLAIM_BINDS)
                    + " \\gset claimed_"
                ),
                transaction(
                    pgbench_statement(agents.queries.COMPLETE_EXECUTION, COMPLETE_BINDS) + ";"
                ),
            ]
        ),
        "update_data": "\n".join(
            [
                f"\\set user_id random({FIRST_USER_ID}, {last_user})",
                transaction(pgbench_statement(telegram.MERGE_DATA, UPDATE_DATA_BINDS) + ";"),
            ]
        ),
    }


PGBENCH_VARIABLES = {
    "loaded": "0",
    "role": "user",
    "content": CONTENT,
    "metadata": "{}",
    "before_created_at": FIRST_PAGE_AT,
    "before_id": str(LAST_UUID),
    "limit": "51",
    "agent_name": AGENT_NAME,
    "input": '{"prompt": "continue"}',
    "max_attempts": "3",
    "priority": "0",
    "worker_id": "bench-worker",
    "claim_limit": "1",
    "output": '{"text": "done"}',
    "model": MODEL,
    "prompt_tokens": "900",
    "completion_tokens": "120",
    "cost_usd": str(COST),
    "bot_id": str(BOT_ID),
    "destiny": "default",
    "patch": '{"step": 2, "city": "Lisbon"}',
}


@dataclass
class Sample:
    ops_per_second: float
    cpu_per_op: float


TPS = re.compile(r"^tps = ([0-9.]+)", re.MULTILINE)
PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)
FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)


def run_pgbench(conninfo: str, script: Path, clients: int, seconds: int, seed: int) -> Sample:
    """One pgbench run; its tps (without connection time) and its own CPU per transaction."""
    command = [
        str(embedded.binary("pgbench")),
        "--no-vacuum",
        "--protocol=prepared",
        f"--client={clients}",
        f"--jobs={min(clients, 2)}",
        f"--time={seconds}",
        f"--random-seed={seed}",
        *(f"--define={name}={value}" for name, value in PGBENCH_VARIABLES.items()),
        f"--file={script}",
        conninfo,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    tps, processed = TPS.search(done.stdout), PROCESSED.search(done.stdout)
    failed = FAILED.search(done.stdout)
    if done.returncode != 0 or tps is None or processed is None or int(processed.group(1)) == 0:
        raise RuntimeError(
            f"pgbench failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-800:]}"
        )
    if failed is not None and int(failed.group(1)) > 0:
        raise RuntimeError(f"pgbench: {failed.group(1)} failed transactions")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Sample(float(tps.group(1)), cpu / int(processed.group(1)))


# (b) and (c) ------------------------------------------------------------------------------

Unit = Callable[[random.Random], Awaitable[object]]


async def drive(clients: int, seconds: float, unit: Unit, seed: int) -> Sample:
    """`clients` tasks running `unit` back to back for `seconds`; ops/s and CPU per op."""
    deadline = time.perf_counter() + seconds

    async def client(number: int) -> int:
        rng = random.Random(seed * 1000 + number)
        done = 0
        while time.perf_counter() < deadline:
            await unit(rng)
            done += 1
        return done

    cpu, started = time.process_time(), time.perf_counter()
    counts = await asyncio.gather(*(client(number) for number in range(clients)))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    ops = sum(counts)
    return Sample(ops / wall, cpu / max(ops, 1))


class RawUnits:
    """(b): the statements on a psycopg_pool pool, tuples out, nothing checked."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool[Any], sample: Sequence[UUID]):
        self.pool = pool
        self.sample = sample
        self.last_user = FIRST_USER_ID

    async def add_message(self, rng: random.Random) -> object:
        params = {
            "chat_id": rng.choice(self.sample),
            "role": "user",
            "content": CONTENT,
            "embedding": None,
            "token_count": rng.randint(1, 500),
            "metadata": Jsonb({}),
        }
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(message_sql.INSERT_MESSAGE, params, binary=True)
            return await cursor.fetchone()

    async def get_chat(self, rng: random.Random) -> object:
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(message_sql.SELECT_CHAT, [rng.choice(self.sample)])
            return await cursor.fetchone()

    async def list_messages(self, rng: random.Random) -> object:
        params = {
            "chat_id": rng.choice(self.sample),
            "before_created_at": FIRST_PAGE_AT,
            "before_id": LAST_UUID,
            "limit": 51,
        }
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(message_sql.SELECT_MESSAGES_PAGE, params, binary=True)
            rows = await cursor.fetchall()
        page = rows[:50]
        page.reverse()
        return page

    async def run_execution(self, rng: random.Random) -> object:
        params = {
            "agent_name": AGENT_NAME,
            "input": Jsonb(RUN_INPUT),
            "chat_id": rng.choice(self.sample),
            "message_id": None,
            "todo_id": None,
            "max_attempts": 3,
            "priority": 0,
            "run_after": None,
            "dedupe_key": None,
            "owner_id": None,
        }
        async with self.pool.connection() as conn, conn.transaction():
            await (await conn.execute(agents.queries.INSERT_EXECUTION, params)).fetchone()
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                agents.queries.CLAIM_EXECUTIONS,
                {"worker_id": "bench-worker", "agent_names": None, "limit": 1},
            )
            claimed = await cursor.fetchone()
        if claimed is None:
            return None
        params = {
            "execution_id": claimed[0],
            "output": Jsonb(RUN_OUTPUT),
            "model": MODEL,
            "prompt_tokens": 900,
            "completion_tokens": 120,
            "cost_usd": COST,
            "worker_id": "bench-worker",
            "attempt": claimed[16],  # EXECUTION_COLUMNS' attempt: the fencing token
        }
        async with self.pool.connection() as conn, conn.transaction():
            return await (await conn.execute(agents.queries.COMPLETE_EXECUTION, params)).fetchone()

    async def update_data(self, rng: random.Random) -> object:
        user = rng.randrange(FIRST_USER_ID, self.last_user + 1)
        params = {
            "bot_id": BOT_ID,
            "telegram_chat_id": user,
            "telegram_user_id": user,
            "thread_id": None,
            "business_connection_id": None,
            "destiny": "default",
            "patch": Jsonb(PATCH),
            "ttl": None,
        }
        async with self.pool.connection() as conn, conn.transaction():
            return await (await conn.execute(telegram.MERGE_DATA, params)).fetchone()


class AgentdbUnits:
    """(c): agentdb's query functions, each unit of work in `db.session()`."""

    def __init__(self, db: DatabaseManager, sample: Sequence[UUID]):
        self.db = db
        self.sample = sample
        self.last_user = FIRST_USER_ID

    async def add_message(self, rng: random.Random) -> object:
        async with self.db.session() as conn:
            return await messaging.add_message(
                conn,
                rng.choice(self.sample),
                role="user",
                content=CONTENT,
                token_count=rng.randint(1, 500),
            )

    async def get_chat(self, rng: random.Random) -> object:
        async with self.db.session() as conn:
            return await messaging.get_chat(conn, rng.choice(self.sample))

    async def list_messages(self, rng: random.Random) -> object:
        async with self.db.session() as conn:
            return await messaging.list_messages(conn, rng.choice(self.sample), limit=50)

    async def run_execution(self, rng: random.Random) -> object:
        async with self.db.session() as conn:
            await agents.enqueue_execution(
                conn, agent_name=AGENT_NAME, input=RUN_INPUT, chat_id=rng.choice(self.sample)
            )
        async with self.db.session() as conn:
            claimed = await agents.claim_next_execution(conn, worker_id="bench-worker")
        if claimed is None:
            return None
        async with self.db.session() as conn:
            return await agents.complete_execution(
                conn,
                claimed.id,
                output=RUN_OUTPUT,
                model=MODEL,
                prompt_tokens=900,
                completion_tokens=120,
                cost_usd=COST,
                worker_id="bench-worker",
                attempt=claimed.attempt,
            )

    async def update_data(self, rng: random.Random) -> object:
        user = rng.randrange(FIRST_USER_ID, self.last_user + 1)
        key = telegram.SessionKey(bot_id=BOT_ID, telegram_chat_id=user, telegram_user_id=user)
        async with self.db.session() as conn:
            return await telegram.update_data(conn, key, PATCH)


OPERATIONS = {
    "add_message": "add_message",
    "get_chat": "get_chat",
    "list_messages": "list_messages",
    "enqueue + claim + complete": "run_execution",
    "update_data": "update_data",
}


# Measuring --------------------------------------------------------------------------------


@dataclass
class Result:
    operation: str
    clients: int
    samples: dict[str, list[Sample]] = field(default_factory=lambda: {k: [] for k in LAYERS})

    def ops(self, layer: str) -> float:
        return statistics.median(s.ops_per_second for s in self.samples[layer])

    def cpu(self, layer: str) -> float:
        return statistics.median(s.cpu_per_op for s in self.samples[layer])

    def ratio(self, high: str, low: str) -> float:
        """The median of the per-round throughput ratios high / low."""
        return statistics.median(
            top.ops_per_second / bottom.ops_per_second
            for top, bottom in zip(self.samples[high], self.samples[low], strict=True)
        )

    def targets(self) -> list[tuple[str, float, float]]:
        """(ratio name, value, target) of each target this row has."""
        found = [("c/b", self.ratio("c", "b"), 0.95)]
        if self.clients == 8 and self.operation in ("add_message", "get_chat"):
            found.append(("c/a", self.ratio("c", "a"), 0.8))
        return found

    def misses(self) -> list[str]:
        return [
            f"{name} {value:.2f} < {target:.2f}"
            for name, value, target in self.targets()
            if value < target
        ]


async def measure_clients(
    conninfo: str,
    clients: int,
    scripts: dict[str, Path],
    sample: Sequence[UUID],
    size: ThroughputSize,
    seed: int,
) -> list[Result]:
    config = DatabaseConfig(url=conninfo, min_pool_size=clients, max_pool_size=clients)
    pool = psycopg_pool.AsyncConnectionPool(
        conninfo,
        min_size=clients,
        max_size=clients,
        kwargs={"autocommit": True, "prepare_threshold": config.prepare_threshold},
        configure=register_vector_async,
        open=False,
    )
    results = []
    await pool.open(wait=True)
    try:
        async with DatabaseManager(config) as db:
            raw, agentdb = RawUnits(pool, sample), AgentdbUnits(db, sample)
            raw.last_user = agentdb.last_user = FIRST_USER_ID + size.sessions - 1
            for number, (operation, method) in enumerate(OPERATIONS.items()):
                result = Result(operation, clients)
                units: dict[str, Unit] = {
                    "b": getattr(raw, method),
                    "c": getattr(agentdb, method),
                }
                started = time.perf_counter()
                for unit in units.values():  # untimed: prepares on every connection
                    await drive(clients, size.warmup, unit, seed)
                gc.collect()
                for round_number in range(size.rounds):
                    order = LAYERS if round_number % 2 == 0 else LAYERS[::-1]
                    round_seed = seed + 100 * number + round_number
                    for key in order:
                        async with pool.connection() as conn:
                            await conn.execute(VACUUM_TOUCHED)
                        if key == "a":
                            sample_a = await asyncio.to_thread(
                                run_pgbench,
                                conninfo,
                                scripts[operation],
                                clients,
                                size.seconds,
                                round_seed,
                            )
                            result.samples["a"].append(sample_a)
                        else:
                            result.samples[key].append(
                                await drive(clients, size.seconds, units[key], round_seed)
                            )
                print(
                    f"  {operation} x {clients}: "
                    + ", ".join(f"{k} {result.ops(k):,.0f}/s" for k in LAYERS)
                    + f"; c/a {result.ratio('c', 'a'):.2f}, c/b {result.ratio('c', 'b'):.2f}"
                    f" ({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
                results.append(result)
    finally:
        await pool.close()
    return results


async def measure_all(
    conninfo: str, scripts: dict[str, Path], sample: Sequence[UUID], size: ThroughputSize
) -> list[Result]:
    results = []
    for clients in CLIENTS:
        results += await measure_clients(conninfo, clients, scripts, sample, size, seed=clients)
    return results


# Reporting --------------------------------------------------------------------------------


def report_table(results: Sequence[Result]) -> str:
    rows = []
    for r in results:
        targets = {name: target for name, _, target in r.targets()}

        def cell(name: str, high: str, low: str, r: Result = r, targets: Any = targets) -> str:
            value = f"{r.ratio(high, low):.2f}"
            return value + (f" (≥ {targets[name]:.2f})" if name in targets else "")

        rows.append(
            [
                r.operation,
                r.clients,
                *(f"{r.ops(k):,.0f}" for k in LAYERS),
                cell("c/a", "c", "a"),
                cell("c/b", "c", "b"),
                *(f"{r.cpu(k) * 1e6:,.0f}" for k in LAYERS),
                "yes" if not r.misses() else "**no**",
            ]
        )
    return markdown_table(
        [
            "operation",
            "clients",
            *(f"({k}) {LAYER_NAMES[k]} ops/s" for k in LAYERS),
            "c/a",
            "c/b",
            *(f"({k}) CPU µs/op" for k in LAYERS),
            "targets met",
        ],
        rows,
    )


def plot(results: Sequence[Result], title: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    operations = list(OPERATIONS)
    figure, axes = plt.subplots(1, len(operations), figsize=(16, 4.4))
    width = 0.27
    colors = {"a": "tab:grey", "b": "tab:blue", "c": "tab:orange"}
    for axis, operation in zip(axes, operations, strict=True):
        rows = [r for r in results if r.operation == operation]
        positions = range(len(rows))
        for number, key in enumerate(LAYERS):
            axis.bar(
                [i + (number - 1) * width for i in positions],
                [r.ops(key) for r in rows],
                width,
                color=colors[key],
                label=f"({key}) {LAYER_NAMES[key]}",
            )
        for i, r in enumerate(rows):
            axis.text(
                i + width,
                r.ops("c"),
                f"{r.ratio('c', 'a'):.2f}",
                ha="center",
                va="bottom",
                fontsize=7,
            )
        axis.set_xticks(list(positions), [f"{r.clients} clients" for r in rows], fontsize=8)
        axis.set_title(operation, fontsize=9)
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("ops/s (labels: c/a)")
    axes[0].legend(fontsize=7)
    figure.suptitle("\n".join(textwrap.wrap(title, 160)), fontsize=10)
    figure.tight_layout()
    path = results_dir() / "throughput.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return str(path)


def versions() -> str:
    from importlib.metadata import version

    return f"Python {platform.python_version()}, " + ", ".join(
        f"{name} {version(name)}" for name in ("psycopg", "psycopg-pool", "pydantic")
    )


def load_average() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


# Entry point ------------------------------------------------------------------------------


def run(size: ThroughputSize = FULL) -> str:
    """Run the whole benchmark; return the Markdown report (also written to bench-results/)."""
    rng = random.Random(16)
    started = time.perf_counter()
    load_before = load_average()
    with (
        embedded.throwaway_server(prefix="agentdb-bench-") as server_url,
        tempfile.TemporaryDirectory(prefix="agentdb-pgbench-") as scripts_dir,
    ):
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench_throughput")
            server_version = conn.info.server_version
        conninfo = make_conninfo(server_url, dbname="bench_throughput")
        Migrator(conninfo).apply()
        sample = load(conninfo, size, rng)
        scripts = {}
        for number, (operation, text) in enumerate(pgbench_scripts(sample, size).items()):
            path = Path(scripts_dir) / f"unit{number}.sql"
            path.write_text(text + "\n")
            scripts[operation] = path
        gc.collect()
        gc.freeze()
        print(
            f"loaded {size.chats:,} chats of {size.owners} owners,"
            f" {size.chats * size.messages_per_chat:,} messages, {size.sessions:,} sessions,"
            f" {size.queued:,} queued runs in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        results = asyncio.run(measure_all(conninfo, scripts, sample, size))
    elapsed = time.perf_counter() - started
    major, minor = divmod(server_version, 10_000)
    summary = (
        f"{size.chats:,} chats / {size.owners} owners, {size.messages_per_chat} messages each;"
        f" {size.sessions:,} Telegram sessions; ids drawn from a seeded sample of"
        f" {size.sample} chats; {size.rounds} rounds of {size.seconds} s per layer"
    )
    misses = [
        f"- {r.operation} x {r.clients}: {'; '.join(r.misses())}" for r in results if r.misses()
    ]
    report = (
        f"agentdb throughput benchmark: {summary}\n"
        f"PostgreSQL {major}.{minor} (embedded, Unix socket), {versions()}, {os.cpu_count()}"
        f" CPUs, load average {load_before} before and {load_average()} after;"
        f" {elapsed:.0f} s in all\n\n"
        + report_table(results)
        + "\n\nops/s: median over rounds; a unit of work is one call (enqueue + claim + complete:"
        " three transactions). c/a, c/b: medians of the per-round throughput ratios (higher is"
        " better for agentdb). CPU: client CPU per unit of work (pgbench's from its rusage;"
        " b and c: process_time of the one Python process running all the clients).\n"
        + ("\nTargets missed:\n" + "\n".join(misses) + "\n" if misses else "\nAll targets met.\n")
        + (
            "\n(--quick: a smoke test with short rounds; judge the targets on a full run.)\n"
            if size == QUICK
            else ""
        )
    )
    (results_dir() / "throughput.md").write_text(report)
    png = plot(results, f"agentdb throughput benchmark ({summary})")
    return report + (
        f"\nplot: {png}\n" if png else "\n(no plot: install the bench extra for matplotlib)\n"
    )
