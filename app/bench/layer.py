"""`agentdb bench layer`: one workload through five data layers, side by side.

(a) raw psycopg: the same SQL statements as agentdb (the constants are imported from its
    modules), on the same kind of pool, with the same wire options (binary results where
    agentdb asks for them, the same prepare threshold), returning tuples. No validation, no
    models: the floor.
(b) agentdb: the project's query functions, each unit of work in `DatabaseManager.session()`.
(c) SQLAlchemy 2.0 async ORM on asyncpg (`app.bench.orm`), each unit of work in an
    `AsyncSession`.
(d) agentdb as production runs it: the same calls as (b), through a login role that is a
    member of agentdb_app (so row-level security applies), each unit of work in
    `db.session(owner_id=…)` with the owner of the rows it touches (a Telegram session, not
    owner-scoped, with the owner of its chat or any owner). Executions are enqueued in the
    owner's session and claimed and completed through a login of agentdb_worker, as a
    worker runs (claiming spans owners).
(e) (a) as production would run it: through (d)'s logins, each transaction begun for its
    owner as agentdb begins one, and the bulk insert staged as agentdb stages it (COPY is
    refused under RLS). The floor for (d), as (a) is for (b).

(a), (b) and (c) log in as the superuser that owns the tables, to whom RLS does not apply.
Every operation runs in its own transaction(s) in all five. The data set is loaded once on
a throwaway server: owners with a long-tailed number of chats, chats with a long-tailed
number of messages (no embeddings: add_message is measured without one, as messages usually
arrive before their embedding), todos, mostly finished executions with a short queue,
Telegram sessions, and MCP tools: one owner's server whose tools `sync_tools` syncs (each
call offers the stored list with one description changed, so it updates one tool and finds
the rest unchanged; all five layers sync that server, under RLS in its owner's session),
and shared servers of embedded tools (clustered 1536-d unit vectors) that `select_tools`
picks the 8 nearest of to a task embedding, for any owner. Every input carries its owner,
so that (d) and (e) look nothing up while they are timed. Each operation then runs several
rounds; in every round the five layers run the same inputs one after the other, in an order
that rotates, so that drift of the machine hits all alike (a round of sync_tools changes a
tool and changes it back, so every layer's turn starts from the same stored list).
Reported: median ops/s per layer; the medians of the per-round time ratios b/a, d/a and
d/e against the issue's cost target, e/a (what row-level security and owner-scoped
transactions cost the driver itself, the server's share of d/a) and c/b against its speed
target; and each layer's client CPU per operation (what b adds to a on the Python side, d
to e and to b). A layer that cannot run an operation at all (say, a
statement RLS refuses) is reported as failing it, and the others are measured without it.
Writes bench-results/layer.md and layer.png.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import platform
import random
import statistics
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, LiteralString, Protocol
from uuid import UUID

import numpy as np
import psycopg
import psycopg_pool
from pgvector.psycopg import register_vector_async
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb

from app import agents, messaging, tasks, telegram
from app.agents import tools as agent_tools
from app.agents.models import ToolSpec
from app.bench.common import markdown_table, results_dir
from app.bench.search import clustered_vectors
from app.database import AgentDBError, DatabaseConfig, DatabaseManager, embedded
from app.database.migrations import Migrator
from app.database.pagination import FIRST_PAGE_AT, LAST_UUID
from app.database.vectors import SET_GENERIC_SEARCH_SETTINGS
from app.messaging import queries as message_sql
from app.seed import AGENTS, LANGUAGES, MODELS, TOPICS, long_tail

BOT_ID = 7_000_000_001
BULK_ROWS = 10_000
TOOL_QUERIES = 256  # task embeddings select_tools is asked about, drawn like the tools'


@dataclass(frozen=True)
class LayerSize:
    owners: int
    chats: int
    messages: int
    todos: int
    executions: int
    queued: int
    sessions: int
    synced_tools: int
    """Tools of the owner's server that sync_tools syncs (one of them changed per call)."""
    tool_servers: int
    """Shared MCP servers of embedded tools that select_tools selects from…"""
    tools_per_server: int
    """… and the tools of each."""
    rounds: int
    ops_per_round: int
    tool_ops_per_round: int
    """Calls per round of sync_tools and select_tools, which take milliseconds each (tens,
    some layers): their rounds are as many as the others', and shorter."""
    bulk_rounds: int
    bulk_rows: int = BULK_ROWS


FULL = LayerSize(
    owners=100,
    chats=1_000,
    messages=100_000,
    todos=5_000,
    executions=20_000,
    queued=200,
    sessions=2_000,
    synced_tools=500,
    tool_servers=10,
    tools_per_server=500,
    rounds=60,  # rounds are a multiple of the four layers: each runs first, second, … alike
    ops_per_round=25,
    tool_ops_per_round=4,
    bulk_rounds=20,
)
QUICK = LayerSize(
    owners=20,
    chats=100,
    messages=10_000,
    todos=500,
    executions=2_000,
    queued=50,
    sessions=200,
    synced_tools=100,
    tool_servers=10,
    tools_per_server=100,
    rounds=12,
    ops_per_round=10,
    tool_ops_per_round=4,
    bulk_rounds=4,
)


# The data set -----------------------------------------------------------------------------


@dataclass
class Dataset:
    owners: list[UUID]
    chats: list[tuple[UUID, UUID]]  # (chat_id, owner_id)
    todos: list[tuple[UUID, UUID]]  # (todo_id, owner_id)
    sessions: list[tuple[dict[str, Any], UUID]]  # (key, owner of its chat, else any owner)
    sync_server: tuple[UUID, UUID]  # (server_id, owner_id): the server sync_tools syncs
    synced_tools: list[dict[str, Any]]  # its tools as stored, what each sync starts from
    tool_queries: np.ndarray[Any, Any]  # task embeddings for select_tools
    messages: int = 0
    selectable_tools: int = 0


INSERT_CHATS = """
INSERT INTO messaging.chats (owner_id, title, metadata, created_at)
SELECT owner_id, title, '{"source": "web"}'::jsonb, created_at
FROM unnest(%s::uuid[], %s::text[], %s::timestamptz[]) AS chat (owner_id, title, created_at)
RETURNING id, owner_id
"""

INSERT_TODOS = """
INSERT INTO tasks.todos (owner_id, chat_id, title, priority, status, completed_at, due_at)
SELECT owner_id, chat_id, title, priority, status,
       CASE WHEN status = 'done' THEN now() END,
       CASE WHEN priority < 3 THEN now() + interval '3 days' END
FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::int[], %s::text[])
    AS todo (owner_id, chat_id, title, priority, status)
RETURNING id, owner_id
"""

# Executions already worked off (succeeded), plus a short queue that workers claim from;
# each carries its chat's owner, as enqueue_execution gives it.
INSERT_FINISHED_EXECUTIONS = """
INSERT INTO agents.executions
    (chat_id, owner_id, agent_name, status, input, output, model, prompt_tokens,
     completion_tokens, cost_usd, attempt, worker_id, started_at, finished_at, created_at)
SELECT chat_id, owner_id, agent_name, 'succeeded', '{"prompt": "continue"}'::jsonb,
       '{"text": "done"}'::jsonb, 'gpt-4o-mini', 900, 120, 0.000207, 1, 'seed-worker',
       created_at + interval '1 second', created_at + interval '5 seconds', created_at
FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::timestamptz[])
    AS run (chat_id, owner_id, agent_name, created_at)
"""

INSERT_QUEUED_EXECUTIONS = """
INSERT INTO agents.executions (chat_id, owner_id, agent_name, input)
SELECT chat_id, owner_id, agent_name, '{"prompt": "continue"}'::jsonb
FROM unnest(%s::uuid[], %s::uuid[], %s::text[]) AS run (chat_id, owner_id, agent_name)
"""

INSERT_SESSIONS = """
INSERT INTO telegram.sessions
    (bot_id, telegram_chat_id, telegram_user_id, username, language_code, data, chat_id)
SELECT %s, user_id, user_id, 'user' || user_id, language_code, '{"step": 0}'::jsonb, chat_id
FROM unnest(%s::bigint[], %s::text[], %s::uuid[]) AS session (user_id, language_code, chat_id)
"""


# The shared tools' embeddings, sent in binary (%b): set_tool_embeddings sends a vector[]
# in text, a millisecond or more per vector on each side, too slow for a load of thousands.
SET_TOOL_EMBEDDINGS = """
UPDATE agents.tools AS tool
SET embedding = item.embedding
FROM unnest(%b::uuid[], %b::public.vector[]) AS item (id, embedding)
WHERE tool.id = item.id
"""
# The tools' HNSW index is built after the load, as `bench search` builds its own: one build
# takes a fraction of the time of thousands of inserts into it.
SELECT_TOOLS_INDEX_DEFINITION = (
    "SELECT pg_catalog.pg_get_indexdef('agents.idx_tools_embedding'::regclass)"
)
DROP_TOOLS_INDEX = "DROP INDEX agents.idx_tools_embedding"


# The full-text GIN index collects new entries in a pending list and merges it into the index
# when it outgrows gin_pending_list_limit (4 MB): a merge of several batches that one unlucky
# insert pays for, whichever layer made it. Autovacuum merges it in the background in
# production (it is off on the throwaway server), so the benchmark merges it, untimed, before
# each layer's bulk insert: each then pays for its own rows only.
CLEAN_GIN_PENDING_LIST = (
    "SELECT pg_catalog.gin_clean_pending_list('messaging.idx_messages_content_tsv'::regclass)"
)
# Room in the pending list for a whole bulk insert, so that no timed insert merges the list
# half-way. Set on the benchmark's throwaway database only.
RAISE_GIN_PENDING_LIST_LIMIT = (
    "ALTER INDEX messaging.idx_messages_content_tsv SET (gin_pending_list_limit = 32768)"
)


def message_text(rng: random.Random, topic: int, role: str) -> str:
    title, verb, things = TOPICS[topic]
    thing = rng.choice(things)
    if role == "user":
        return f"Can you {verb} {thing} for the {title.lower()}? I need it done by Friday."
    return (
        f"Done: I will {verb} {thing}. I also checked what else the {title.lower()} needs "
        "and added it to your list. Anything else?"
    )


def tool_spec(rng: random.Random, number: int) -> dict[str, Any]:
    """A tool as an MCP server's tools/list reports it: a name, a sentence of description,
    and a small JSON Schema of its arguments."""
    title, verb, things = TOPICS[number % len(TOPICS)]
    thing = rng.choice(things)
    return {
        "name": f"{verb}_{title.lower().replace(' ', '_')}_{number:04d}",
        "description": (
            f"{verb.capitalize()} {thing} or anything else the {title.lower()} needs. Give"
            " what to act on and, optionally, when; returns what was done."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "target": {"type": "string", "description": f"What to {verb}, e.g. {thing}"},
                "when": {"type": "string", "format": "date-time"},
                "quantity": {"type": "integer", "minimum": 1},
                "notes": {"type": "string", "maxLength": 2000},
            },
            "required": ["target"],
        },
    }


async def load_tools(
    db: DatabaseManager, size: LayerSize, rng: random.Random, owners: Sequence[UUID]
) -> tuple[tuple[UUID, UUID], list[dict[str, Any]], np.ndarray[Any, Any], int]:
    """The owner-held server that sync_tools syncs (its tools not embedded), and the shared
    servers of embedded tools that select_tools selects from, made with agentdb's
    upsert_mcp_server and sync_tools (the embeddings stored in binary). Returns the first
    (server, owner), its tools, the query embeddings and how many tools are selectable."""
    owner = rng.choice(owners)
    synced = [tool_spec(rng, number) for number in range(size.synced_tools)]
    async with db.session() as conn:
        server = await agent_tools.upsert_mcp_server(
            conn,
            name="bench-sync",
            transport="http",
            endpoint="https://mcp.example.com/bench-sync",
            owner_id=owner,
        )
        await agent_tools.sync_tools(conn, server.id, synced)
    selectable = size.tool_servers * size.tools_per_server
    async with db.connection() as conn:
        cursor = await conn.execute(SELECT_TOOLS_INDEX_DEFINITION)
        definition = (await cursor.fetchone() or [""])[0]
        await conn.execute(DROP_TOOLS_INDEX)
    vectors = clustered_vectors(
        np.random.default_rng(rng.getrandbits(32)),
        selectable + TOOL_QUERIES,
        clusters=max(selectable // 200, 10),
    )
    for number in range(size.tool_servers):
        specs = [tool_spec(rng, tool) for tool in range(size.tools_per_server)]
        offset = number * size.tools_per_server
        async with db.session() as conn:
            shared = await agent_tools.upsert_mcp_server(
                conn,
                name=f"bench-shared-{number}",
                transport="stdio",
                endpoint=f"bench-mcp-server --profile {number}",
            )
            await agent_tools.sync_tools(conn, shared.id, specs)
            ids = {tool.name: tool.id for tool in await agent_tools.list_tools(conn, shared.id)}
            await conn.execute(
                SET_TOOL_EMBEDDINGS,
                [
                    [ids[spec["name"]] for spec in specs],
                    list(vectors[offset : offset + size.tools_per_server]),
                ],
            )
    async with db.connection() as conn:
        await conn.execute(sql.SQL(definition))  # the migration's own definition, verbatim
    return (server.id, owner), synced, vectors[selectable:], selectable


async def load(conninfo: str, size: LayerSize, rng: random.Random) -> Dataset:
    """Fill the database; messages go through agentdb's COPY (`add_messages`)."""
    owners = [UUID(int=rng.getrandbits(128), version=4) for _ in range(size.owners)]
    start = datetime.now(UTC) - timedelta(days=90)
    chat_owners = [
        owner
        for owner, count in zip(owners, long_tail(rng, size.chats, size.owners), strict=True)
        for _ in range(count)
    ]
    topics = [rng.randrange(len(TOPICS)) for _ in chat_owners]
    async with DatabaseManager(DatabaseConfig(url=conninfo, max_pool_size=2)) as db:
        async with db.session() as conn:
            cursor = await conn.execute(
                INSERT_CHATS,
                [
                    chat_owners,
                    [TOPICS[topic][0] for topic in topics],
                    [start + timedelta(minutes=rng.randrange(60 * 24 * 30)) for _ in topics],
                ],
            )
            chats: list[tuple[UUID, UUID]] = [(row[0], row[1]) for row in await cursor.fetchall()]

        batch: list[dict[str, Any]] = []
        at = start
        for (chat_id, _), topic, count in zip(
            chats, topics, long_tail(rng, size.messages, len(chats)), strict=True
        ):
            at = start + timedelta(minutes=rng.randrange(60 * 24 * 60))
            for turn in range(count):
                role = "user" if turn % 2 == 0 else "assistant"
                content = message_text(rng, topic, role)
                at += timedelta(seconds=rng.randrange(5, 300))
                batch.append(
                    {
                        "chat_id": chat_id,
                        "role": role,
                        "content": content,
                        "token_count": len(content) // 4,
                        "created_at": at,
                    }
                )
                if len(batch) == 5_000:
                    async with db.session() as conn:
                        await messaging.add_messages(conn, batch)
                    batch.clear()
        if batch:
            async with db.session() as conn:
                await messaging.add_messages(conn, batch)

        async with db.session() as conn:
            todo_chats = [rng.choice(chats) for _ in range(size.todos)]
            cursor = await conn.execute(
                INSERT_TODOS,
                [
                    [owner for _, owner in todo_chats],
                    [chat for chat, _ in todo_chats],
                    [f"Todo {i}" for i in range(size.todos)],
                    [rng.choice([1, 2, 3, 3, 3, 4, 5]) for _ in range(size.todos)],
                    [
                        rng.choices(["pending", "in_progress", "done", "cancelled"], [5, 2, 4, 1])[
                            0
                        ]
                        for _ in range(size.todos)
                    ],
                ],
            )
            todos: list[tuple[UUID, UUID]] = [(row[0], row[1]) for row in await cursor.fetchall()]
            finished = size.executions - size.queued
            run_chats = [rng.choice(chats) for _ in range(finished)]
            await conn.execute(
                INSERT_FINISHED_EXECUTIONS,
                [
                    [chat for chat, _ in run_chats],
                    [owner for _, owner in run_chats],
                    [rng.choice(AGENTS) for _ in range(finished)],
                    [start + timedelta(seconds=rng.randrange(90 * 86400)) for _ in range(finished)],
                ],
            )
            run_chats = [rng.choice(chats) for _ in range(size.queued)]
            await conn.execute(
                INSERT_QUEUED_EXECUTIONS,
                [
                    [chat for chat, _ in run_chats],
                    [owner for _, owner in run_chats],
                    [rng.choice(AGENTS) for _ in range(size.queued)],
                ],
            )
            user_ids = [100_000_000 + i for i in range(size.sessions)]
            session_chats = [rng.choice(chats) if rng.random() < 0.5 else None for _ in user_ids]
            await conn.execute(
                INSERT_SESSIONS,
                [
                    BOT_ID,
                    user_ids,
                    [rng.choice(LANGUAGES) for _ in user_ids],
                    [None if chat is None else chat[0] for chat in session_chats],
                ],
            )
        sync_server, synced_tools, tool_queries, selectable = await load_tools(
            db, size, rng, owners
        )
        async with db.connection() as conn:
            await conn.execute(RAISE_GIN_PENDING_LIST_LIMIT)
            await conn.execute("VACUUM ANALYZE")
    sessions = [
        (
            {"bot_id": BOT_ID, "telegram_chat_id": user_id, "telegram_user_id": user_id},
            rng.choice(owners) if chat is None else chat[1],
        )
        for user_id, chat in zip(user_ids, session_chats, strict=True)
    ]
    return Dataset(
        owners=owners,
        chats=chats,
        todos=todos,
        sessions=sessions,
        sync_server=sync_server,
        synced_tools=synced_tools,
        tool_queries=tool_queries,
        messages=size.messages,
        selectable_tools=selectable,
    )


# The four layers --------------------------------------------------------------------------


class Layer(Protocol):
    """Each call gets the owner of the rows it touches first; only (d) uses it."""

    async def add_message(
        self, owner: UUID, chat_id: UUID, role: str, content: str, token_count: int, metadata: Any
    ) -> Any: ...
    async def list_messages(self, owner: UUID, chat_id: UUID) -> Any: ...
    async def get_chat(self, owner: UUID, chat_id: UUID) -> Any: ...
    async def update_todo(self, owner: UUID, todo_id: UUID, updates: dict[str, Any]) -> Any: ...
    async def run_execution(self, owner: UUID, job: Job) -> Any: ...
    async def touch_session(
        self,
        owner: UUID,
        key: dict[str, Any],
        username: str,
        language_code: str,
        patch: dict[str, Any],
    ) -> Any: ...
    async def add_messages(self, owner: UUID, rows: Sequence[dict[str, Any]]) -> Any: ...
    async def sync_tools(
        self, owner: UUID, server_id: UUID, tools: Sequence[dict[str, Any]]
    ) -> Any: ...
    async def select_tools(self, owner: UUID, embedding: Any) -> Any: ...


@dataclass(frozen=True)
class Job:
    agent_name: str
    input: dict[str, Any]
    chat_id: UUID
    worker_id: str
    output: dict[str, Any]
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal


class RawLayer:
    """(a): agentdb's SQL on plain psycopg, tuples out, nothing checked."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    @asynccontextmanager
    async def unit(self, owner: UUID) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection in one transaction (of `owner`'s rows: only (e) uses it)."""
        async with self.pool.connection() as conn, conn.transaction():
            yield conn

    async def add_message(
        self, owner: UUID, chat_id: UUID, role: str, content: str, token_count: int, metadata: Any
    ) -> Any:
        params = {
            "chat_id": chat_id,
            "role": role,
            "content": content,
            "embedding": None,
            "token_count": token_count,
            "metadata": Jsonb(metadata),
        }
        async with self.unit(owner) as conn:
            cursor = await conn.execute(message_sql.INSERT_MESSAGE, params, binary=True)
            return await cursor.fetchone()

    async def list_messages(self, owner: UUID, chat_id: UUID) -> Any:
        params = {
            "chat_id": chat_id,
            "before_created_at": FIRST_PAGE_AT,
            "before_id": LAST_UUID,
            "limit": 51,
        }
        async with self.unit(owner) as conn:
            cursor = await conn.execute(message_sql.SELECT_MESSAGES_PAGE, params, binary=True)
            rows = await cursor.fetchall()
        page = rows[:50]
        page.reverse()
        return page

    async def get_chat(self, owner: UUID, chat_id: UUID) -> Any:
        async with self.unit(owner) as conn:
            cursor = await conn.execute(message_sql.SELECT_CHAT, [chat_id])
            return await cursor.fetchone()

    async def update_todo(self, owner: UUID, todo_id: UUID, updates: dict[str, Any]) -> Any:
        params = {
            "todo_id": todo_id,
            **{f"set_{name}": name in updates for name in tasks.UPDATABLE_FIELDS},
            **dict.fromkeys(tasks.UPDATABLE_FIELDS),
            **updates,
        }
        async with self.unit(owner) as conn:
            cursor = await conn.execute(tasks.UPDATE_TODO, params)
            return await cursor.fetchone()

    async def run_execution(self, owner: UUID, job: Job) -> Any:
        params = {
            "agent_name": job.agent_name,
            "input": Jsonb(job.input),
            "chat_id": job.chat_id,
            "message_id": None,
            "todo_id": None,
            "max_attempts": 3,
            "priority": 0,
            "run_after": None,
            "dedupe_key": None,
            "owner_id": None,
        }
        async with self.unit(owner) as conn:
            await (await conn.execute(agents.queries.INSERT_EXECUTION, params)).fetchone()
        return await self.work_off(owner, job)

    async def work_off(self, owner: UUID, job: Job) -> Any:
        """A worker's part of `run_execution`: claim the next queued run and complete it."""
        async with self.unit(owner) as conn:
            cursor = await conn.execute(
                agents.queries.CLAIM_EXECUTIONS,
                {"worker_id": job.worker_id, "agent_names": None, "limit": 1},
            )
            claimed = await cursor.fetchone()
        assert claimed is not None
        params = {
            "execution_id": claimed[0],
            "output": Jsonb(job.output),
            "model": job.model,
            "prompt_tokens": job.prompt_tokens,
            "completion_tokens": job.completion_tokens,
            "cost_usd": job.cost_usd,
            "worker_id": job.worker_id,
            "attempt": claimed[16],  # EXECUTION_COLUMNS' attempt: the fencing token
        }
        async with self.unit(owner) as conn:
            return await (await conn.execute(agents.queries.COMPLETE_EXECUTION, params)).fetchone()

    async def touch_session(
        self,
        owner: UUID,
        key: dict[str, Any],
        username: str,
        language_code: str,
        patch: dict[str, Any],
    ) -> Any:
        params = {
            "thread_id": None,
            "business_connection_id": None,
            "destiny": "default",
            **key,
        }
        async with self.unit(owner) as conn:
            await (
                await conn.execute(
                    telegram.UPSERT_SESSION,
                    params | {"username": username, "language_code": language_code},
                )
            ).fetchone()
            cursor = await conn.execute(
                telegram.MERGE_DATA, params | {"patch": Jsonb(patch), "ttl": None}
            )
            return await cursor.fetchone()

    async def add_messages(self, owner: UUID, rows: Sequence[dict[str, Any]]) -> Any:
        chat_ids = list({row["chat_id"] for row in rows})
        async with self.unit(owner) as conn:
            cursor = await conn.execute(message_sql.LOCK_CHATS_FOR_MESSAGES, [chat_ids])
            found = await cursor.fetchall()
            owners = {row[0]: row[1] for row in found}
            clock: datetime = max(row[2] for row in found)
            under_rls, staged = found[0][3], found[0][4]
            if under_rls and not staged:
                await conn.execute(message_sql.CREATE_STAGED_MESSAGES)
            # Staged rows have no updated_at: the move sets it to created_at.
            copy_sql = message_sql.COPY_STAGED_MESSAGES if under_rls else message_sql.COPY_MESSAGES
            types = message_sql.COPY_MESSAGES_TYPES[: 8 if under_rls else 9]
            last_at: dict[UUID, datetime] = {}
            async with conn.cursor().copy(copy_sql) as copy:
                copy.set_types(types)
                for offset, row in enumerate(rows):
                    at = clock + timedelta(microseconds=offset)
                    last_at[row["chat_id"]] = at
                    value = (
                        row["chat_id"],
                        owners[row["chat_id"]],
                        row["role"],
                        row["content"],
                        None,
                        row["token_count"],
                        Jsonb(row["metadata"]),
                        at,
                    )
                    await copy.write_row(value if under_rls else (*value, at))
            if under_rls:
                await conn.execute(message_sql.MOVE_STAGED_MESSAGES)
                await conn.execute(message_sql.EMPTY_STAGED_MESSAGES)
            await conn.execute(
                message_sql.UPDATE_CHATS_LAST_MESSAGE_AT, [list(last_at), list(last_at.values())]
            )
        return len(rows)

    async def sync_tools(
        self, owner: UUID, server_id: UUID, tools: Sequence[dict[str, Any]]
    ) -> Any:
        hashed = [
            tool | {"content_hash": agent_tools.content_hash(ToolSpec.model_construct(**tool))}
            for tool in tools
        ]
        async with self.unit(owner) as conn:
            await (await conn.execute(agent_tools.LOCK_MCP_SERVER, [server_id])).fetchone()
            cursor = await conn.execute(agent_tools.SELECT_TOOL_HASHES, [server_id])
            stored = {name: (digest, enabled) for name, digest, enabled in await cursor.fetchall()}
            changed = [t for t in hashed if stored.get(t["name"]) != (t["content_hash"], True)]
            offered = {tool["name"] for tool in tools}
            withdrawn = [n for n, (_, enabled) in stored.items() if enabled and n not in offered]
            if not changed and not withdrawn:
                return (0, 0, 0)
            params = {
                "server_id": server_id,
                "changed": Jsonb(changed),
                "withdrawn": Jsonb(withdrawn),
            }
            cursor = await conn.execute(agent_tools.SYNC_TOOLS, params)
            return await cursor.fetchone()

    async def select_tools(self, owner: UUID, embedding: Any) -> Any:
        params = {"embedding": embedding, "limit": 8, "owner_id": owner, "server_ids": None}
        async with self.unit(owner) as conn:
            cursor = conn.cursor()
            # The settings and the search in one pipeline, as run_vector_search sends them;
            # local to the unit's transaction, which ends right after.
            async with conn.pipeline():
                await conn.execute(
                    SET_GENERIC_SEARCH_SETTINGS, [str(agent_tools.DEFAULT_TOOL_EF_SEARCH)]
                )
                await cursor.execute(agent_tools.SELECT_NEAREST_TOOLS, params, binary=True)
            return await cursor.fetchall()


class ScopedRawLayer(RawLayer):
    """(e): (a) through the logins of (d), so row-level security applies, each transaction
    begun for the owner of its rows the way agentdb begins it (BEGIN and SET LOCAL in one
    round trip, composed once per owner), and the bulk insert staged as agentdb stages it
    (COPY is refused under RLS). Executions are claimed and completed by (a) on
    `worker_pool`, a login of agentdb_worker, as (d) does. The floor for (d), as (a) is
    for (b)."""

    def __init__(
        self,
        pool: psycopg_pool.AsyncConnectionPool[Any],
        worker_pool: psycopg_pool.AsyncConnectionPool[Any],
    ) -> None:
        super().__init__(pool)
        self.begins: dict[UUID, bytes] = {}
        self.worker = RawLayer(worker_pool)

    async def work_off(self, owner: UUID, job: Job) -> Any:
        return await self.worker.work_off(owner, job)

    @asynccontextmanager
    async def unit(self, owner: UUID) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        begin = self.begins.get(owner)
        if begin is None:
            statement = sql.SQL("BEGIN; SET LOCAL agentdb.owner_id = {}").format(
                sql.Literal(str(owner))
            )
            begin = self.begins[owner] = statement.as_bytes(None)
        async with self.pool.connection() as conn:
            await conn.execute(begin, prepare=False)
            try:
                yield conn
            except BaseException:
                await conn.rollback()
                raise
            await conn.commit()


class AgentdbLayer:
    """(b): the project's query functions, each unit of work in `db.session()`."""

    def __init__(self, db: DatabaseManager) -> None:
        self.db = db

    def session(self, owner: UUID) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        return self.db.session()

    def worker_session(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        """Where a worker claims and completes executions: across owners."""
        return self.db.session()

    async def add_message(
        self, owner: UUID, chat_id: UUID, role: str, content: str, token_count: int, metadata: Any
    ) -> Any:
        async with self.session(owner) as conn:
            return await messaging.add_message(
                conn,
                chat_id,
                role=role,
                content=content,
                token_count=token_count,
                metadata=metadata,
            )

    async def list_messages(self, owner: UUID, chat_id: UUID) -> Any:
        async with self.session(owner) as conn:
            return await messaging.list_messages(conn, chat_id, limit=50)

    async def get_chat(self, owner: UUID, chat_id: UUID) -> Any:
        async with self.session(owner) as conn:
            return await messaging.get_chat(conn, chat_id)

    async def update_todo(self, owner: UUID, todo_id: UUID, updates: dict[str, Any]) -> Any:
        async with self.session(owner) as conn:
            return await tasks.update_todo(conn, todo_id, updates)

    async def run_execution(self, owner: UUID, job: Job) -> Any:
        async with self.session(owner) as conn:
            await agents.enqueue_execution(
                conn, agent_name=job.agent_name, input=job.input, chat_id=job.chat_id
            )
        async with self.worker_session() as conn:
            claimed = await agents.claim_next_execution(conn, worker_id=job.worker_id)
        assert claimed is not None
        async with self.worker_session() as conn:
            return await agents.complete_execution(
                conn,
                claimed.id,
                output=job.output,
                model=job.model,
                prompt_tokens=job.prompt_tokens,
                completion_tokens=job.completion_tokens,
                cost_usd=job.cost_usd,
                worker_id=job.worker_id,
                attempt=claimed.attempt,
            )

    async def touch_session(
        self,
        owner: UUID,
        key: dict[str, Any],
        username: str,
        language_code: str,
        patch: dict[str, Any],
    ) -> Any:
        session_key = telegram.SessionKey(**key)
        async with self.session(owner) as conn:
            await telegram.upsert_session(
                conn, session_key, username=username, language_code=language_code
            )
            return await telegram.update_data(conn, session_key, patch)

    async def add_messages(self, owner: UUID, rows: Sequence[dict[str, Any]]) -> Any:
        async with self.session(owner) as conn:
            return await messaging.add_messages(conn, rows)

    async def sync_tools(
        self, owner: UUID, server_id: UUID, tools: Sequence[dict[str, Any]]
    ) -> Any:
        async with self.session(owner) as conn:
            return await agent_tools.sync_tools(conn, server_id, tools)

    async def select_tools(self, owner: UUID, embedding: Any) -> Any:
        async with self.session(owner) as conn:
            return await agent_tools.select_tools(conn, embedding=embedding, owner_id=owner)


class ScopedAgentdbLayer(AgentdbLayer):
    """(d): (b)'s calls through a login of agentdb_app (row-level security applies), each
    unit of work in `db.session(owner_id=owner)`.

    An execution is enqueued in its owner's session and claimed and completed through
    `worker_db`, a login of agentdb_worker, as a real worker runs: claiming spans owners,
    which RLS does not restrict for that role. (Claimed by the application login in the
    owner's session, the claim reads the owners' claim index through a bitmap scan, which
    never marks the entries of finished runs dead as a plain index scan does, so each claim
    re-reads the earlier ones until a VACUUM.)"""

    def __init__(self, db: DatabaseManager, worker_db: DatabaseManager) -> None:
        super().__init__(db)
        self.worker_db = worker_db

    def session(self, owner: UUID) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        return self.db.session(owner_id=owner)

    def worker_session(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        return self.worker_db.session()


class OrmLayerAdapter:
    """(c): `app.bench.orm.OrmLayer` behind the same interface."""

    def __init__(self, orm: Any) -> None:
        self.orm = orm

    async def add_message(
        self, owner: UUID, chat_id: UUID, role: str, content: str, token_count: int, metadata: Any
    ) -> Any:
        return await self.orm.add_message(chat_id, role, content, token_count, metadata)

    async def list_messages(self, owner: UUID, chat_id: UUID) -> Any:
        return await self.orm.list_messages(chat_id)

    async def get_chat(self, owner: UUID, chat_id: UUID) -> Any:
        return await self.orm.get_chat(chat_id)

    async def update_todo(self, owner: UUID, todo_id: UUID, updates: dict[str, Any]) -> Any:
        return await self.orm.update_todo(todo_id, updates)

    async def run_execution(self, owner: UUID, job: Job) -> Any:
        await self.orm.enqueue_execution(job.agent_name, job.input, job.chat_id)
        claimed = await self.orm.claim_next_execution(job.worker_id)
        assert claimed is not None
        return await self.orm.complete_execution(
            claimed.id,
            job.output,
            job.model,
            job.prompt_tokens,
            job.completion_tokens,
            job.cost_usd,
        )

    async def touch_session(
        self,
        owner: UUID,
        key: dict[str, Any],
        username: str,
        language_code: str,
        patch: dict[str, Any],
    ) -> Any:
        full_key = {"thread_id": None, "business_connection_id": None, "destiny": "default", **key}
        return await self.orm.upsert_session_and_update_data(
            full_key, username, language_code, patch
        )

    async def add_messages(self, owner: UUID, rows: Sequence[dict[str, Any]]) -> Any:
        return await self.orm.add_messages(rows)

    async def sync_tools(
        self, owner: UUID, server_id: UUID, tools: Sequence[dict[str, Any]]
    ) -> Any:
        return await self.orm.sync_tools(server_id, tools)

    async def select_tools(self, owner: UUID, embedding: Any) -> Any:
        return await self.orm.select_tools(embedding, owner)


# The operations ---------------------------------------------------------------------------


Call = Callable[[Layer], Awaitable[Any]]


def bind(method: str, *args: Any) -> Call:
    """A call of `layer.<method>(*args)` for whichever layer it is given."""

    async def call(layer: Layer) -> Any:
        return await getattr(layer, method)(*args)

    return call


@dataclass(frozen=True)
class Operation:
    name: str
    kind: str  # "read", "write" or "bulk"
    make_calls: Callable[[random.Random, int], list[Call]]
    """The calls of one round (the same list runs through every layer)."""
    per_call: int = 1
    """Units a call counts for (rows, for the bulk insert)."""
    before_each: tuple[LiteralString, ...] = ()
    """Statements run (untimed) before every layer's turn in a round."""
    calls_per_round: int | None = None
    """Calls in a round, if not the size's ops_per_round (bulk: always 1)."""


def operations(data: Dataset, size: LayerSize) -> list[Operation]:
    """The workload. Every call carries the owner of the rows it touches (known from the
    data set, never looked up while timed), for (d)'s `db.session(owner_id=…)`."""
    chats_of: dict[UUID, list[UUID]] = {}
    for chat_id, owner in data.chats:
        chats_of.setdefault(owner, []).append(chat_id)

    def add_message(rng: random.Random, count: int) -> list[Call]:
        calls: list[Call] = []
        for _ in range(count):
            (chat_id, owner), topic = rng.choice(data.chats), rng.randrange(len(TOPICS))
            role = rng.choice(["user", "assistant"])
            content = message_text(rng, topic, role)
            metadata = {"source": rng.choice(["web", "telegram"]), "client": "bench"}
            calls.append(
                bind("add_message", owner, chat_id, role, content, len(content) // 4, metadata)
            )
        return calls

    def list_messages(rng: random.Random, count: int) -> list[Call]:
        picks = [rng.choice(data.chats) for _ in range(count)]
        return [bind("list_messages", owner, chat_id) for chat_id, owner in picks]

    def get_chat(rng: random.Random, count: int) -> list[Call]:
        picks = [rng.choice(data.chats) for _ in range(count)]
        return [bind("get_chat", owner, chat_id) for chat_id, owner in picks]

    def update_todo(rng: random.Random, count: int) -> list[Call]:
        calls: list[Call] = []
        for _ in range(count):
            todo_id, owner = rng.choice(data.todos)
            updates = {
                "status": rng.choice(["pending", "in_progress", "done"]),
                "priority": rng.randint(1, 5),
            }
            calls.append(bind("update_todo", owner, todo_id, updates))
        return calls

    def run_execution(rng: random.Random, count: int) -> list[Call]:
        calls: list[Call] = []
        for _ in range(count):
            prompt, completion = rng.randrange(200, 8000), rng.randrange(20, 1500)
            chat_id, owner = rng.choice(data.chats)
            job = Job(
                agent_name=rng.choice(AGENTS),
                input={"prompt": "continue the conversation", "temperature": 0.2},
                chat_id=chat_id,
                worker_id="bench-worker-1",
                output={"text": "done", "finish_reason": "stop"},
                model=rng.choice(MODELS),
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost_usd=Decimal(prompt * 15 + completion * 60).scaleb(-8),
            )
            calls.append(bind("run_execution", owner, job))
        return calls

    def touch_session(rng: random.Random, count: int) -> list[Call]:
        calls: list[Call] = []
        for _ in range(count):
            key, owner = rng.choice(data.sessions)
            language = rng.choice([code for code in LANGUAGES if code])
            username = f"user{key['telegram_user_id']}"
            patch = {"step": rng.randrange(10), "cart_items": rng.randrange(1, 6)}
            calls.append(bind("touch_session", owner, key, username, language, patch))
        return calls

    def add_messages(rng: random.Random, count: int) -> list[Call]:
        calls: list[Call] = []
        for _ in range(count):
            # One owner's import: up to 50 of the chats of the owner of a random chat (so
            # owners with many chats import more often).
            owner = rng.choice(data.chats)[1]
            targets = rng.sample(chats_of[owner], min(50, len(chats_of[owner])))
            rows = []
            for i in range(size.bulk_rows):
                role = "user" if i % 2 == 0 else "assistant"
                content = message_text(rng, i % len(TOPICS), role)
                rows.append(
                    {
                        "chat_id": targets[i % len(targets)],
                        "role": role,
                        "content": content,
                        "token_count": len(content) // 4,
                        "metadata": {"source": "import"},
                    }
                )
            calls.append(bind("add_messages", owner, rows))
        return calls

    server_id, server_owner = data.sync_server
    revisions = itertools.count(1)

    def sync_tools(rng: random.Random, count: int) -> list[Call]:
        """Syncs of the owner's server, each offering its stored list with one tool changed
        (its description): 1 update, the rest unchanged. All five layers sync the same
        server with the same lists, so each round is a closed walk: a tool changed, then
        changed back (twice over, then back, when the count is odd), another tool each time;
        every layer's turn starts and ends at the stored list."""
        base = data.synced_tools
        calls: list[Call] = []
        index = rng.randrange(len(base))
        while len(calls) < count:
            left = count - len(calls)
            steps = left if left <= 3 else 2
            index = (index + rng.randrange(1, len(base))) % len(base)  # another one
            for step in range(steps):
                tools = list(base)
                if step < steps - 1 or steps == 1:
                    tool = base[index]
                    revised = f"{tool['description']} (revision {next(revisions)})"
                    tools[index] = {**tool, "description": revised}
                calls.append(bind("sync_tools", server_owner, server_id, tools))
        return calls

    def select_tools(rng: random.Random, count: int) -> list[Call]:
        picks = [rng.randrange(len(data.tool_queries)) for _ in range(count)]
        return [
            bind("select_tools", rng.choice(data.owners), data.tool_queries[pick]) for pick in picks
        ]

    return [
        Operation("add_message", "write", add_message),
        Operation("list_messages (page of 50)", "read", list_messages),
        Operation("get_chat", "read", get_chat),
        Operation("update_todo", "write", update_todo),
        Operation("enqueue + claim + complete", "write", run_execution),
        Operation("upsert_session + update_data", "write", touch_session),
        Operation(
            f"sync_tools ({len(data.synced_tools):,}, 1 changed)",
            "write",
            sync_tools,
            calls_per_round=size.tool_ops_per_round,
        ),
        Operation(
            f"select_tools (8 of {data.selectable_tools:,})",
            "read",
            select_tools,
            calls_per_round=size.tool_ops_per_round,
        ),
        Operation(
            f"bulk insert {size.bulk_rows:,} messages",
            "bulk",
            add_messages,
            size.bulk_rows,
            before_each=(CLEAN_GIN_PENDING_LIST,),
        ),
    ]


# Measuring --------------------------------------------------------------------------------

LAYERS = ("a", "b", "c", "d", "e")
LAYER_NAMES = {
    "a": "raw psycopg",
    "b": "agentdb",
    "c": "SQLAlchemy ORM",
    "d": "agentdb, RLS + owner session",
    "e": "raw psycopg, RLS + owner session",
}
MAY_FAIL = ("d", "e")
"""Layers whose refusal of an operation is a finding, not a broken benchmark: (d) and (e)
run under row-level security, where the server may refuse what the owner may do."""
COST_TARGET = 1.15  # b's (and d's) time at most 1.15 x a's
BULK_TARGET = 0.9  # b's (and d's) bulk throughput at least 0.9 x a's (raw COPY)
SPEED_TARGETS = {"read": 1.2, "write": 1.5, "bulk": 1.5}  # b at least this much faster than c
APP_LOGIN = "bench_app"  # (d)'s and (e)'s login, a member of agentdb_app
WORKER_LOGIN = "bench_worker"  # where (d) and (e) claim executions, in agentdb_worker


@dataclass
class OperationResult:
    operation: Operation
    calls_per_round: int
    seconds: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in LAYERS})
    cpu_seconds: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in LAYERS})
    failed: dict[str, str] = field(default_factory=dict)
    """Layers that could not run the operation (the error); the others ran without them."""

    def ops_per_second(self, layer: str) -> float:
        units = self.calls_per_round * self.operation.per_call
        return statistics.median(units / seconds for seconds in self.seconds[layer])

    def cpu_per_call(self, layer: str) -> float:
        """Median client CPU time (s) of one call: the Python side of the layer, no waiting."""
        return statistics.median(self.cpu_seconds[layer]) / self.calls_per_round

    def ratio(self, numerator: str, denominator: str) -> float | None:
        """Median over rounds of one layer's time / another's (None if either failed)."""
        if numerator in self.failed or denominator in self.failed:
            return None
        return statistics.median(
            n / d for n, d in zip(self.seconds[numerator], self.seconds[denominator], strict=True)
        )

    def cost(self) -> float:
        """b/a: agentdb's overhead over raw psycopg."""
        value = self.ratio("b", "a")
        assert value is not None
        return value

    def speedup(self) -> float:
        """c/b: how much faster agentdb is than the ORM."""
        value = self.ratio("c", "b")
        assert value is not None
        return value

    def rls_cost(self) -> float | None:
        """d/a: agentdb under RLS in owner-scoped sessions over raw psycopg as superuser."""
        return self.ratio("d", "a")

    def isolation_cost(self) -> float | None:
        """e/a: what RLS and owner-scoped transactions cost raw psycopg itself (the
        server's share of d/a, which no layer above the driver can take away)."""
        return self.ratio("e", "a")

    def scoped_cost(self) -> float | None:
        """d/e: agentdb's overhead over raw psycopg when both run under RLS."""
        return self.ratio("d", "e")

    def cost_target(self) -> float:
        return 1 / BULK_TARGET if self.operation.kind == "bulk" else COST_TARGET

    def speed_target(self) -> float:
        return SPEED_TARGETS[self.operation.kind]

    def misses(self) -> list[str]:
        found = [f"({layer}) fails: {error}" for layer, error in self.failed.items()]
        target = self.cost_target()
        for name, value in (
            ("b/a", self.cost()),
            ("d/a", self.rls_cost()),
            ("d/e", self.scoped_cost()),
        ):
            if value is not None and value > target:
                over = (value / target - 1) * 100
                found.append(
                    f"{name} time {value:.2f} > {target:.2f} ({over:.0f}% over)"
                    + (
                        f"; raw psycopg under RLS alone, e/a: {self.isolation_cost():.2f}"
                        if name == "d/a" and self.isolation_cost() is not None
                        else ""
                    )
                )
        if self.speedup() < self.speed_target():
            found.append(
                f"c/b time {self.speedup():.2f} < {self.speed_target():.2f}"
                f" ({(1 - self.speedup() / self.speed_target()) * 100:.0f}% short)"
            )
        return found


async def run_round(calls: Sequence[Call], layer: Layer) -> tuple[float, float]:
    """Wall-clock and client CPU seconds of running `calls` through `layer`."""
    cpu, started = time.process_time(), time.perf_counter()
    for call in calls:
        await call(layer)
    return time.perf_counter() - started, time.process_time() - cpu


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:160]}"


async def measure(
    layers: dict[str, Layer],
    operation: Operation,
    rounds: int,
    per_round: int,
    seed: int,
    admin: psycopg_pool.AsyncConnectionPool[Any],
) -> OperationResult:
    """`rounds` rounds; in each, the same `per_round` calls go through every layer in an
    order that rotates from round to round. Rounds are short so that a burst of noise on the
    machine spoils one round of one layer, which the medians then ignore."""
    rng = random.Random(seed)
    result = OperationResult(operation, calls_per_round=per_round)
    # Warm up: prepared statements (psycopg prepares on the 5th run), asyncpg's statement
    # cache, SQLAlchemy's compiled cache, the server's buffers. A layer of MAY_FAIL that the
    # database refuses here is reported as failing and left out of the rounds.
    warm = operation.make_calls(rng, 1 if operation.kind == "bulk" else 12)
    for key in LAYERS:
        try:
            await run_round(warm, layers[key])
        except AgentDBError as error:
            if key not in MAY_FAIL:
                raise
            result.failed[key] = one_line(error)
    running = tuple(key for key in LAYERS if key not in result.failed)
    gc.collect()
    for number in range(rounds):
        calls = operation.make_calls(rng, per_round)
        shift = number % len(running)
        for key in running[shift:] + running[:shift]:
            if operation.before_each:
                async with admin.connection() as conn:
                    for statement in operation.before_each:
                        await conn.execute(statement)
            wall, cpu = await run_round(calls, layers[key])
            result.seconds[key].append(wall)
            result.cpu_seconds[key].append(cpu)
    return result


def create_login(conninfo: str, name: str, group: str) -> str:
    """A LOGIN role `name` in the group role `group` (unless it exists), made as the
    superuser of `conninfo`; returns the conninfo that logs in as it."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        found = conn.execute(
            "SELECT FROM pg_catalog.pg_roles WHERE rolname = %s", [name]
        ).fetchone()
        if found is None:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                    sql.Identifier(name), sql.Identifier(group)
                )
            )
    return make_conninfo(conninfo, user=name)


async def measure_all(
    conninfo: str,
    app_conninfo: str,
    worker_conninfo: str,
    asyncpg_url: str,
    data: Dataset,
    size: LayerSize,
) -> list[OperationResult]:
    from app.bench.orm import OrmLayer, make_engine

    config = DatabaseConfig(url=conninfo, min_pool_size=1, max_pool_size=2)
    app_config = DatabaseConfig(url=app_conninfo, min_pool_size=1, max_pool_size=2)
    worker_config = DatabaseConfig(url=worker_conninfo, min_pool_size=1, max_pool_size=2)
    raw_pool, scoped_raw_pool, worker_raw_pool = (
        psycopg_pool.AsyncConnectionPool(
            url,
            min_size=1,
            max_size=2,
            kwargs={"autocommit": True, "prepare_threshold": config.prepare_threshold},
            configure=register_vector_async,
            open=False,
        )
        for url in (conninfo, app_conninfo, worker_conninfo)
    )
    engine = make_engine(asyncpg_url)
    results = []
    try:
        await raw_pool.open(wait=True)
        await scoped_raw_pool.open(wait=True)
        await worker_raw_pool.open(wait=True)
        async with (
            DatabaseManager(config) as db,
            DatabaseManager(app_config) as app_db,
            DatabaseManager(worker_config) as worker_db,
        ):
            layers: dict[str, Layer] = {
                "a": RawLayer(raw_pool),
                "b": AgentdbLayer(db),
                "c": OrmLayerAdapter(OrmLayer(engine)),
                "d": ScopedAgentdbLayer(app_db, worker_db),
                "e": ScopedRawLayer(scoped_raw_pool, worker_raw_pool),
            }
            for index, operation in enumerate(operations(data, size)):
                bulk = operation.kind == "bulk"
                started = time.perf_counter()
                result = await measure(
                    layers,
                    operation,
                    size.bulk_rounds if bulk else size.rounds,
                    1 if bulk else operation.calls_per_round or size.ops_per_round,
                    seed=1000 + index,
                    admin=raw_pool,
                )
                print(
                    f"  {operation.name}: "
                    + ", ".join(
                        f"{k} fails ({result.failed[k]})"
                        if k in result.failed
                        else f"{k} {result.ops_per_second(k):,.0f}/s"
                        for k in LAYERS
                    )
                    + f" ({time.perf_counter() - started:.1f} s)",
                    flush=True,
                )
                results.append(result)
    finally:
        await raw_pool.close()
        await scoped_raw_pool.close()
        await worker_raw_pool.close()
        await engine.dispose()
    return results


# Reporting --------------------------------------------------------------------------------


def ratio_cell(value: float | None, target: float | None = None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" + (f" (≤ {target:.2f})" if target is not None else "")


def report_table(results: Sequence[OperationResult]) -> str:
    rows = []
    for r in results:
        unit = " rows/s" if r.operation.kind == "bulk" else ""
        misses = r.misses()
        rows.append(
            [
                r.operation.name,
                r.operation.kind,
                *(
                    "fails" if k in r.failed else f"{r.ops_per_second(k):,.0f}{unit}"
                    for k in LAYERS
                ),
                ratio_cell(r.cost(), r.cost_target()),
                ratio_cell(r.rls_cost(), r.cost_target()),
                ratio_cell(r.isolation_cost()),
                ratio_cell(r.scoped_cost(), r.cost_target()),
                f"{r.speedup():.2f}x (≥ {r.speed_target():.1f})",
                "yes" if not misses else "**no**",
            ]
        )
    return markdown_table(
        [
            "operation",
            "kind",
            *(f"({k}) {LAYER_NAMES[k]} ops/s" for k in LAYERS),
            "b/a time",
            "d/a time",
            "e/a time",
            "d/e time",
            "b faster than c",
            "targets met",
        ],
        rows,
    )


def cpu_difference(cpu: dict[str, float | None], high: str, low: str) -> str:
    left, right = cpu[high], cpu[low]
    return "—" if left is None or right is None else f"{left - right:+,.0f}"


def cpu_table(results: Sequence[OperationResult]) -> str:
    """Client CPU per call: the Python work of each layer, without the waits on the server."""
    rows = []
    for r in results:
        cpu = {k: None if k in r.failed else r.cpu_per_call(k) * 1e6 for k in LAYERS}
        rows.append(
            [
                r.operation.name,
                *("—" if cpu[k] is None else f"{cpu[k]:,.0f}" for k in LAYERS),
                *(
                    cpu_difference(cpu, high, low)
                    for high, low in (("b", "a"), ("d", "e"), ("d", "b"))
                ),
            ]
        )
    return markdown_table(
        [
            "operation",
            *(f"({k}) CPU µs/op" for k in LAYERS),
            "b - a µs",
            "d - e µs",
            "d - b µs",
        ],
        rows,
    )


def plot(results: Sequence[OperationResult], title: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = [r.operation.name.replace(" (page of 50)", "").replace(" + ", "+\n") for r in results]
    positions = range(len(results))
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.27
    series: list[tuple[str, str, list[float | None]]] = [
        ("b/a: agentdb", "tab:blue", [r.cost() for r in results]),
        (
            "d/a: agentdb, RLS login + session(owner_id)",
            "tab:orange",
            [r.rls_cost() for r in results],
        ),
        (
            "e/a: raw psycopg, RLS login + owner transaction",
            "tab:purple",
            [r.isolation_cost() for r in results],
        ),
    ]
    for number, (label, color, values) in enumerate(series):
        offset = (number - 1) * width
        left.bar(
            [i + offset for i in positions],
            [float("nan") if value is None else value for value in values],
            width,
            color=color,
            label=label,
        )
        for i, value in enumerate(values):
            if value is None:
                left.text(i + offset, 0.05, "fails", rotation=90, ha="center", fontsize=7)
    for i, r in enumerate(results):
        left.hlines(r.cost_target(), i - 0.45, i + 0.45, colors="tab:red", linestyles="--")
    left.axhline(1.0, color="grey", linewidth=0.8)
    left.set_title("time / raw psycopg time (lower is better; red: target)")
    tallest = max(value for _, _, values in series for value in values if value is not None)
    left.set_ylim(0, max(tallest, *(r.cost_target() for r in results)) * 1.22)
    left.legend(fontsize=7, loc="upper left", ncols=2)
    right.bar(positions, [r.speedup() for r in results], color="tab:green")
    for i, r in enumerate(results):
        right.hlines(r.speed_target(), i - 0.4, i + 0.4, colors="tab:red", linestyles="--")
    right.axhline(1.0, color="grey", linewidth=0.8)
    right.set_title("c/b: SQLAlchemy ORM time / agentdb time (higher is better)")
    for axes in (left, right):
        axes.set_xticks(list(positions), names, rotation=35, ha="right", fontsize=8)
        axes.grid(axis="y", alpha=0.3)
        axes.title.set_fontsize(9)
    figure.suptitle("\n".join(textwrap.wrap(title, 150)), fontsize=10)
    figure.tight_layout()
    path = results_dir() / "layer.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return str(path)


def versions() -> str:
    from importlib.metadata import version

    packages = ("psycopg", "pydantic", "sqlalchemy", "asyncpg")
    return f"Python {platform.python_version()}, " + ", ".join(
        f"{name} {version(name)}" for name in packages
    )


# Entry point ------------------------------------------------------------------------------


def run(size: LayerSize = FULL) -> str:
    """Run the whole benchmark; return the Markdown report (also written to bench-results/)."""
    from app.bench.orm import asyncpg_url

    rng = random.Random(42)
    started = time.perf_counter()
    with embedded.throwaway_server(prefix="agentdb-bench-") as server_url:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench_layer")
            server_version = conn.info.server_version
        conninfo = make_conninfo(server_url, dbname="bench_layer")
        Migrator(conninfo).apply()
        app_conninfo = create_login(conninfo, APP_LOGIN, "agentdb_app")
        worker_conninfo = create_login(conninfo, WORKER_LOGIN, "agentdb_worker")
        data = asyncio.run(load(conninfo, size, rng))
        gc.collect()
        gc.freeze()  # the data set's objects are never garbage: keep them out of every collection
        print(
            f"loaded {len(data.chats):,} chats of {size.owners} owners, {size.messages:,} messages,"
            f" {size.todos:,} todos, {size.executions:,} executions, {size.sessions:,} sessions,"
            f" {size.synced_tools + data.selectable_tools:,} tools"
            f" in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        parts = conninfo_to_dict(server_url)
        port = int(str(parts["port"])) if parts.get("port") else None
        orm_url = asyncpg_url(str(parts["host"]), port, "bench_layer")
        results = asyncio.run(
            measure_all(conninfo, app_conninfo, worker_conninfo, orm_url, data, size)
        )
    elapsed = time.perf_counter() - started
    major, minor = divmod(server_version, 10_000)
    summary = (
        f"{len(data.chats):,} chats / {size.owners} owners, {size.messages:,} messages,"
        f" {size.todos:,} todos, {size.executions:,} executions, {size.sessions:,} sessions,"
        f" {size.synced_tools:,} tools synced, {data.selectable_tools:,} embedded tools on"
        f" {size.tool_servers} shared MCP servers;"
        f" {size.rounds} rounds x {size.ops_per_round} ops"
        f" ({size.tool_ops_per_round} of sync_tools and select_tools;"
        f" {size.bulk_rounds} rounds of the bulk insert)"
    )
    misses = [f"- {r.operation.name}: {'; '.join(r.misses())}" for r in results if r.misses()]
    report = (
        f"agentdb layer benchmark: {summary}\n"
        f"PostgreSQL {major}.{minor} (embedded, Unix socket), {versions()};"
        f" {elapsed:.0f} s in all\n\n"
        + report_table(results)
        + "\n\nops/s: median over rounds. Time ratios and c/b (b faster than c): medians of the"
        " per-round ratios (each round runs the same inputs through every layer)."
        f" (d) and (e) log in as {APP_LOGIN}, a member of agentdb_app, so row-level security"
        " applies, and run each unit of work in a transaction scoped to the rows' owner (d:"
        " db.session(owner_id=…)); their executions are claimed and completed as"
        f" {WORKER_LOGIN}, a member of agentdb_worker, as a worker runs; a, b and c log in"
        " as the superuser. d/a and d/e have b/a's"
        " target; e/a (no target) is what RLS and the scoped transaction cost raw psycopg, the"
        " part of d/a that is the server's.\n\n"
        "Where the time goes: client CPU per operation (median; the rest is waiting on the"
        " server)\n\n"
        + cpu_table(results)
        + "\n"
        + ("\nTargets missed:\n" + "\n".join(misses) + "\n" if misses else "\nAll targets met.\n")
        + (
            "\n(--quick: a smoke test with few rounds; judge the targets on a full run.)\n"
            if size == QUICK
            else ""
        )
    )
    (results_dir() / "layer.md").write_text(report)
    png = plot(results, f"agentdb layer benchmark ({summary})")
    return report + (
        f"\nplot: {png}\n" if png else "\n(no plot: install the bench extra for matplotlib)\n"
    )
