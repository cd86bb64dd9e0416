"""Agent tools: MCP servers, the tools they offer, semantic tool selection, and the log of
every tool call.

An agent backend connects to MCP servers (`upsert_mcp_server`), keeps each server's tool
list in step with what its tools/list reports (`sync_tools`, which also says which tools
need a new embedding: `set_tool_embeddings`), gives an agent the few tools nearest to its
task (`select_tools`, cosine similarity over the HNSW index) and logs each call the agent
makes (`start_tool_call`, `finish_tool_call`; `list_tool_calls`, `tool_call_stats`).

Every function takes the caller's connection and never commits; `sync_tools` runs in the
caller's transaction, or in one of its own on a connection in autocommit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import RowMaker
from psycopg.types.json import Jsonb
from pydantic import TypeAdapter, ValidationError

from app.agents.models import (
    DEFAULT_TOOL_SCHEMA,
    MAX_TOOL_PAYLOAD_BYTES,
    McpServer,
    McpServerInput,
    PurgeFinishedInput,
    Tool,
    ToolCall,
    ToolCallFinish,
    ToolCallInput,
    ToolCallStats,
    ToolHit,
    ToolSpec,
    ToolSpecDict,
    ToolStatsInput,
    ToolSync,
)
from app.audit.queries import purge_in_batches
from app.database.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    database_errors,
)
from app.database.rows import column_list, column_names, model_rows, returned, row_maker
from app.database.transactions import in_transaction
from app.database.validation import as_int, as_sequence, as_uuid, validated
from app.database.vectors import as_embedding, embedding_pairs, run_vector_search

__all__ = [
    "McpServer",
    "Tool",
    "ToolCall",
    "ToolCallStats",
    "ToolHit",
    "ToolSpec",
    "ToolSync",
    "content_hash",
    "delete_mcp_server",
    "finish_tool_call",
    "list_mcp_servers",
    "list_tool_calls",
    "list_tools",
    "purge_finished_tool_calls",
    "select_tools",
    "set_tool_embeddings",
    "start_tool_call",
    "sync_tools",
    "tool_call_stats",
    "upsert_mcp_server",
]

TOOL_FIELDS = frozenset(ToolSpec.model_fields)

MAX_SELECT_LIMIT = 1000
"""The most tools select_tools returns at once."""

DEFAULT_TOOL_EF_SEARCH = 100
"""HNSW candidate list size of select_tools (at least its limit): tool sets are small, and a
wrong tool costs an agent more than a millisecond."""

# SQL --------------------------------------------------------------------------------------

MCP_SERVER_COLUMNS = column_list(
    McpServer,
    "id, owner_id, name, transport, endpoint, config, is_enabled, created_at, updated_at, "
    "deleted_at",
)

# The embedding stays on the server (6 KB a row); whether there is one is what callers need.
TOOL_COLUMNS = column_list(
    Tool,
    "id, mcp_server_id, name, description, input_schema, "
    "embedding IS NOT NULL AS has_embedding, content_hash, is_enabled, created_at, updated_at",
)

TOOL_CALL_COLUMNS = column_list(
    ToolCall,
    "id, execution_id, tool_id, owner_id, tool_name, arguments, result, error, status, "
    "started_at, finished_at, created_at, updated_at",
)

# A server of that name and owner is updated in place (and live again if it was deleted);
# whether it is enabled is the operator's to say, not the upsert's.
UPSERT_MCP_SERVER = (
    """
INSERT INTO agents.mcp_servers (owner_id, name, transport, endpoint, config)
VALUES (%(owner_id)s, %(name)s, %(transport)s, %(endpoint)s, %(config)s)
ON CONFLICT ON CONSTRAINT uq_mcp_servers_owner_id_name DO UPDATE
SET transport = EXCLUDED.transport,
    endpoint = EXCLUDED.endpoint,
    config = EXCLUDED.config,
    deleted_at = NULL
RETURNING """
    + MCP_SERVER_COLUMNS
)

# The shared servers and the owner's, by name (with no owner: the shared ones).
SELECT_MCP_SERVERS = (
    "SELECT "
    + MCP_SERVER_COLUMNS
    + """
FROM agents.mcp_servers
WHERE deleted_at IS NULL
  AND (owner_id IS NULL OR owner_id = %(owner_id)s)
ORDER BY name, owner_id NULLS FIRST
"""
)

SOFT_DELETE_MCP_SERVER = """
UPDATE agents.mcp_servers
SET deleted_at = now()
WHERE id = %s
  AND deleted_at IS NULL
RETURNING id
"""

# sync_tools, first: the server's row lock, so that two syncs of one server run one after
# the other (the second, in READ COMMITTED, then sees what the first committed) and the
# server must be live (and, under row-level security, the owner's own).
LOCK_MCP_SERVER = """
SELECT id
FROM agents.mcp_servers
WHERE id = %s
  AND deleted_at IS NULL
FOR NO KEY UPDATE
"""

# Then what is stored, to compare with what is offered: a tool whose content hash matches
# an enabled stored tool's is unchanged, and is neither validated again (what is stored
# passed validation when it was written) nor sent, nor written (its updated_at stays).
SELECT_TOOL_HASHES = """
SELECT name, content_hash, is_enabled
FROM agents.tools
WHERE mcp_server_id = %s
"""

# Then, if anything changed, one statement: the new, changed and re-offered tools (one JSON
# array, encoded in one pass) inserted or updated, a changed hash clearing the embedding;
# the enabled tools no longer offered disabled. Under the server's lock nothing else
# changes the server's tools between the reading and the writing.
SYNC_TOOLS = """
WITH changed AS (
    SELECT name, description, input_schema, content_hash
    FROM jsonb_to_recordset(%(changed)s::jsonb)
        AS tool (name text, description text, input_schema jsonb, content_hash text)
), written AS (
    INSERT INTO agents.tools (mcp_server_id, name, description, input_schema, content_hash)
    SELECT %(server_id)s, name, description, input_schema, content_hash
    FROM changed
    ON CONFLICT ON CONSTRAINT uq_tools_mcp_server_id_name DO UPDATE
    SET description = EXCLUDED.description,
        input_schema = EXCLUDED.input_schema,
        content_hash = EXCLUDED.content_hash,
        embedding = CASE WHEN tools.content_hash = EXCLUDED.content_hash
                         THEN tools.embedding END,
        is_enabled = true
    RETURNING xmax = 0 AS inserted
), disabled AS (
    UPDATE agents.tools
    SET is_enabled = false
    WHERE mcp_server_id = %(server_id)s
      AND is_enabled
      AND name IN (SELECT jsonb_array_elements_text(%(withdrawn)s::jsonb))
    RETURNING id
)
SELECT (SELECT count(*) FROM written WHERE inserted),
       (SELECT count(*) FROM written WHERE NOT inserted),
       (SELECT count(*) FROM disabled)
"""

SELECT_TOOLS_OF_SERVER = (
    "SELECT "
    + TOOL_COLUMNS
    + """
FROM agents.tools
WHERE mcp_server_id = %s
ORDER BY name
"""
)

# The vectors go as one binary array (%b): psycopg would otherwise send a list of them as
# text, formatting 1536 floats apiece in Python.
UPDATE_TOOL_EMBEDDINGS = """
UPDATE agents.tools AS tool
SET embedding = item.embedding
FROM unnest(%s::uuid[], %b::public.vector[]) AS item (id, embedding)
WHERE tool.id = item.id
"""

# Nearest enabled, embedded tools on idx_tools_embedding (partial on is_enabled: the
# predicate must stay for the planner to use it), whose server is enabled, live, and shared
# or the owner's: a primary-key probe per candidate, as a scalar subquery so that it stays a
# filter on the index scan; iterative scans go on until `limit` tools pass.
# Run with its generic plan (select_tools without server_ids): the inner LIMIT, a constant
# (MAX_SELECT_LIMIT), is what the generic plan is priced for, so that plan walks the HNSW
# index at any table size; the outer LIMIT stops the walk after `limit` rows.
SELECT_NEAREST_TOOLS = (
    "SELECT * FROM (SELECT "
    + TOOL_COLUMNS
    + """,
       1 - (embedding <=> %(embedding)s) AS similarity
FROM agents.tools
WHERE is_enabled
  AND embedding IS NOT NULL
  AND (%(server_ids)s::uuid[] IS NULL OR mcp_server_id = ANY (%(server_ids)s::uuid[]))
  AND (SELECT server.is_enabled
              AND server.deleted_at IS NULL
              AND (server.owner_id IS NULL OR server.owner_id = %(owner_id)s)
       FROM agents.mcp_servers AS server
       WHERE server.id = tools.mcp_server_id)
ORDER BY embedding <=> %(embedding)s
LIMIT 1000) AS nearest
LIMIT %(limit)s
"""
)
assert MAX_SELECT_LIMIT == 1000  # the constant LIMIT of SELECT_NEAREST_TOOLS

# The call takes its execution's owner; no row when there is no such execution.
INSERT_TOOL_CALL = (
    """
INSERT INTO agents.tool_calls (execution_id, tool_id, owner_id, tool_name, arguments)
SELECT execution.id, %(tool_id)s, execution.owner_id, %(tool_name)s, %(arguments)s
FROM agents.executions AS execution
WHERE execution.id = %(execution_id)s
RETURNING """
    + TOOL_CALL_COLUMNS
)

FINISH_TOOL_CALL = (
    """
UPDATE agents.tool_calls
SET status = CASE WHEN %(error)s::text IS NULL THEN 'succeeded' ELSE 'failed' END,
    result = %(result)s,
    error = %(error)s,
    finished_at = GREATEST(clock_timestamp(), started_at)
WHERE id = %(tool_call_id)s
  AND status = 'running'
RETURNING """
    + TOOL_CALL_COLUMNS
)

SELECT_TOOL_CALL_STATUS = "SELECT status FROM agents.tool_calls WHERE id = %s"

SELECT_TOOL_CALLS = (
    "SELECT "
    + TOOL_CALL_COLUMNS
    + """
FROM agents.tool_calls
WHERE execution_id = %s
ORDER BY started_at, id
"""
)

# Per tool: all calls since the moment, the failed ones, and percentiles of the finished
# ones' durations (percentile_cont interpolates intervals too).
SELECT_TOOL_CALL_STATS = """
SELECT tool_name,
       count(*) AS calls,
       count(*) FILTER (WHERE status = 'failed') AS failures,
       (count(*) FILTER (WHERE status = 'failed'))::float8 / count(*) AS failure_rate,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY finished_at - started_at)
           FILTER (WHERE finished_at IS NOT NULL) AS p50_duration,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY finished_at - started_at)
           FILTER (WHERE finished_at IS NOT NULL) AS p95_duration
FROM agents.tool_calls
WHERE started_at >= COALESCE(%(since)s::timestamptz, '-infinity')
  AND (%(tool_name)s::text IS NULL OR tool_name = %(tool_name)s)
GROUP BY tool_name
ORDER BY tool_name
"""

# One batch of the retention purge: up to batch_size finished calls, oldest first from
# `after` (the last batch's largest started_at). A call finishes no earlier than it starts
# (ck_tool_calls_finished_after_started), so every call finished before the cutoff started
# before it, and idx_tool_calls_started_at (0020) finds them: no index of its own, so that a
# call's finish stays an update of columns no index holds. The range also holds the calls
# still running and those finished after the cutoff, which the filter leaves; `after` keeps
# each batch from reading them, and the dead entries of earlier batches, again. FOR UPDATE
# SKIP LOCKED: a call being finished right now is left for the next purge, never waited for.
PURGE_FINISHED_TOOL_CALLS = """
WITH batch AS (
    SELECT id
    FROM agents.tool_calls
    WHERE started_at < %(cutoff)s::timestamptz
      AND started_at >= %(after)s::timestamptz
      AND status <> 'running'
      AND finished_at < %(cutoff)s::timestamptz
    ORDER BY started_at
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
),
purged AS (
    DELETE FROM agents.tool_calls
    WHERE id = ANY(ARRAY(SELECT id FROM batch))
    RETURNING started_at
)
SELECT max(started_at), count(*)
FROM purged
"""

TOOL_DICTS = TypeAdapter(list[ToolSpecDict])

MCP_SERVER_ROW = model_rows(McpServer)
TOOL_ROW = model_rows(Tool)
TOOL_CALL_ROW = model_rows(ToolCall)
TOOL_CALL_STATS_ROW = model_rows(ToolCallStats)


# MCP servers ------------------------------------------------------------------------------


@database_errors
async def upsert_mcp_server(
    conn: AsyncConnection[Any],
    *,
    name: str,
    transport: str,
    endpoint: str,
    owner_id: UUID | None = None,
    config: Mapping[str, Any] | None = None,
) -> McpServer:
    """Create the server `name` of `owner_id`, or update its transport, endpoint and config.
    `owner_id` None: shared by every owner; a deleted server comes back."""
    data = validated(
        McpServerInput,
        name=name,
        transport=transport,
        endpoint=endpoint,
        owner_id=owner_id,
        config={} if config is None else config,
    )
    params = data.model_dump()
    params["config"] = Jsonb(data.config)
    async with conn.cursor(row_factory=MCP_SERVER_ROW) as cursor:
        await cursor.execute(UPSERT_MCP_SERVER, params)
        return returned(await cursor.fetchone())


@database_errors
async def list_mcp_servers(
    conn: AsyncConnection[Any], *, owner_id: UUID | None = None
) -> list[McpServer]:
    """The live servers shared by every owner, and `owner_id`'s own, by name."""
    params = {"owner_id": None if owner_id is None else as_uuid(owner_id, "owner_id")}
    async with conn.cursor(row_factory=MCP_SERVER_ROW) as cursor:
        await cursor.execute(SELECT_MCP_SERVERS, params)
        return await cursor.fetchall()


@database_errors
async def delete_mcp_server(conn: AsyncConnection[Any], server_id: UUID) -> None:
    """Soft-delete the server: its tools are no longer selected; its calls stay logged."""
    cursor = await conn.execute(SOFT_DELETE_MCP_SERVER, [as_uuid(server_id, "server_id")])
    if await cursor.fetchone() is None:
        raise NotFoundError(f"MCP server {server_id} not found", field="server_id")


# Tools ------------------------------------------------------------------------------------


def content_hash(tool: ToolSpec) -> str:
    """SHA-256 (hex) of a tool's name, description and input schema, as sync_tools stores
    it. It hashes JSON with sorted keys, so that the same schema always hashes the same."""
    return _hash(tool.name, tool.description, tool.input_schema)


def _hash(name: str, description: str, input_schema: dict[str, Any]) -> str:
    text = json.dumps(
        [name, description, input_schema],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(text.encode()).hexdigest()


@database_errors
async def sync_tools(
    conn: AsyncConnection[Any],
    server_id: UUID,
    tools: Sequence[ToolSpec | Mapping[str, Any]],
) -> ToolSync:
    """Make the server's stored tools what it offers now, in one transaction. New tools are
    inserted, changed ones updated (their embedding cleared when the content hash changed),
    ones no longer offered disabled (never deleted: their calls keep pointing at them). The
    transaction is the caller's, else its own, with at most three statements whatever the
    number of tools; syncs of one server run one after the other.

    Each offered tool is hashed as it is given; one whose hash matches an enabled stored
    tool's is unchanged and is left alone. The others are validated (InvalidInputError
    naming the tool and field, with nothing written) and written."""
    server = as_uuid(server_id, "server_id")
    offered = _offered_tools(tools)
    async with _transaction(conn):
        cursor = await conn.execute(LOCK_MCP_SERVER, [server])
        if await cursor.fetchone() is None:
            raise NotFoundError(f"MCP server {server_id} not found", field="server_id")
        cursor = await conn.execute(SELECT_TOOL_HASHES, [server])
        stored = {name: (digest, enabled) for name, digest, enabled in await cursor.fetchall()}
        positions = [
            index
            for index, (name, digest, _) in enumerate(offered)
            if digest is None or stored.get(name) != (digest, True)
        ]
        changed = _tool_rows([offered[index][2] for index in positions], positions)
        for tool in changed:
            tool["content_hash"] = _hash(tool["name"], tool["description"], tool["input_schema"])
        names = {name for name, _, _ in offered}
        withdrawn = [name for name, (_, enabled) in stored.items() if enabled and name not in names]
        if not changed and not withdrawn:
            return ToolSync(inserted=0, updated=0, disabled=0, unchanged=len(offered))
        params = {"server_id": server, "changed": Jsonb(changed), "withdrawn": Jsonb(withdrawn)}
        cursor = await conn.execute(SYNC_TOOLS, params)
        inserted, updated, disabled = returned(await cursor.fetchone())
    return ToolSync(
        inserted=inserted,
        updated=updated,
        disabled=disabled,
        unchanged=len(offered) - inserted - updated,
    )


@database_errors
async def list_tools(conn: AsyncConnection[Any], server_id: UUID) -> list[Tool]:
    """The server's tools, enabled or not, by name (`has_embedding`: which are embedded)."""
    async with conn.cursor(row_factory=TOOL_ROW) as cursor:
        await cursor.execute(SELECT_TOOLS_OF_SERVER, [as_uuid(server_id, "server_id")])
        return await cursor.fetchall()


@database_errors
async def set_tool_embeddings(
    conn: AsyncConnection[Any], items: Mapping[UUID, Any] | Sequence[tuple[UUID, Any]]
) -> int:
    """Store tools' embeddings (tool id → vector, a mapping or pairs); return how many tools
    were updated. Every vector is validated before anything is written."""
    ids, vectors = embedding_pairs(items, "items", "tool_id")
    if not ids:
        return 0
    cursor = await conn.execute(UPDATE_TOOL_EMBEDDINGS, [ids, vectors], binary=True)
    return cursor.rowcount


@database_errors
async def select_tools(
    conn: AsyncConnection[Any],
    *,
    embedding: Any,
    limit: int = 8,
    owner_id: UUID | None = None,
    server_ids: Sequence[UUID] | None = None,
) -> list[ToolHit]:
    """The `limit` enabled, embedded tools nearest to `embedding` (cosine), best first. They
    are of enabled live servers that are shared or `owner_id`'s (None: shared only),
    optionally only of `server_ids`. Fewer only when fewer such tools exist."""
    # Checked field by field, without a model around them: this runs for every agent step.
    count = as_int(limit, "limit", minimum=1, maximum=MAX_SELECT_LIMIT)
    servers = None
    if server_ids is not None:
        servers = [
            as_uuid(server, f"server_ids.{index}")
            for index, server in enumerate(as_sequence(server_ids, "server_ids"))
        ]
    params = {
        "embedding": as_embedding(embedding, "embedding"),
        "limit": count,
        "owner_id": None if owner_id is None else as_uuid(owner_id, "owner_id"),
        "server_ids": servers,
    }
    cursor = conn.cursor(row_factory=_hit_rows)
    ef_search = max(DEFAULT_TOOL_EF_SEARCH, count)
    # Over every server the best plan is the same for any embedding: planned once. With
    # server_ids, planned for them (a few servers' tools may be fewer than an HNSW walk).
    await run_vector_search(
        conn, cursor, SELECT_NEAREST_TOOLS, params, ef_search=ef_search, generic=servers is None
    )
    return await cursor.fetchall()


# Tool calls -------------------------------------------------------------------------------


@database_errors
async def start_tool_call(
    conn: AsyncConnection[Any],
    execution_id: UUID,
    *,
    tool_name: str,
    arguments: Mapping[str, Any],
    tool_id: UUID | None = None,
) -> ToolCall:
    """Log the start of a call by `execution_id` (its owner is the call's); arguments are a
    JSON object of at most 64 KiB. The clock is the server's."""
    execution = as_uuid(execution_id, "execution_id")
    data = validated(ToolCallInput, tool_name=tool_name, arguments=arguments, tool_id=tool_id)
    _check_size(data.arguments, "arguments")
    params = {
        "execution_id": execution,
        "tool_id": data.tool_id,
        "tool_name": data.tool_name,
        "arguments": Jsonb(data.arguments),
    }
    async with conn.cursor(row_factory=TOOL_CALL_ROW) as cursor:
        await cursor.execute(INSERT_TOOL_CALL, params)
        call = await cursor.fetchone()
    if call is None:
        raise NotFoundError(f"execution {execution_id} not found", field="execution_id")
    return call


@database_errors
async def finish_tool_call(
    conn: AsyncConnection[Any],
    tool_call_id: UUID,
    *,
    result: Any = None,
    error: str | None = None,
) -> ToolCall:
    """Finish a running call: failed with `error` if one is given, else succeeded with
    `result`. `result` is any JSON value of at most 64 KiB. A call finished already →
    ConflictError."""
    call_id = as_uuid(tool_call_id, "tool_call_id")
    data = validated(ToolCallFinish, result=result, error=error)
    if data.error is not None and data.result is not None:
        raise InvalidInputError(
            "result: a failed call has no result (give result or error, not both)",
            field="result",
        )
    _check_size(data.result, "result")
    if data.error is not None and len(data.error.encode()) > MAX_TOOL_PAYLOAD_BYTES:
        raise InvalidInputError(f"error: at most {MAX_TOOL_PAYLOAD_BYTES} bytes", field="error")
    params = {
        "tool_call_id": call_id,
        "result": None if data.result is None else Jsonb(data.result),
        "error": data.error,
    }
    async with conn.cursor(row_factory=TOOL_CALL_ROW) as cursor:
        await cursor.execute(FINISH_TOOL_CALL, params)
        call = await cursor.fetchone()
    if call is not None:
        return call
    status = await (await conn.execute(SELECT_TOOL_CALL_STATUS, [call_id])).fetchone()
    if status is None:
        raise NotFoundError(f"tool call {tool_call_id} not found", field="tool_call_id")
    raise ConflictError(f"tool call {tool_call_id} is {status[0]} already, not running")


@database_errors
async def list_tool_calls(conn: AsyncConnection[Any], execution_id: UUID) -> list[ToolCall]:
    """The execution's tool calls in the order they started."""
    async with conn.cursor(row_factory=TOOL_CALL_ROW) as cursor:
        await cursor.execute(SELECT_TOOL_CALLS, [as_uuid(execution_id, "execution_id")])
        return await cursor.fetchall()


@database_errors
async def tool_call_stats(
    conn: AsyncConnection[Any], *, since: Any = None, tool_name: str | None = None
) -> list[ToolCallStats]:
    """Per tool, the calls started since `since`: how many, failures, failure rate, p50 and
    p95 duration. With `tool_name`, only that tool; the durations are those of finished
    calls."""
    data = validated(ToolStatsInput, since=since, tool_name=tool_name)
    async with conn.cursor(row_factory=TOOL_CALL_STATS_ROW) as cursor:
        await cursor.execute(SELECT_TOOL_CALL_STATS, data.model_dump())
        return await cursor.fetchall()


@database_errors
async def purge_finished_tool_calls(
    conn: AsyncConnection[Any], *, older_than: timedelta, batch_size: int = 1000
) -> int:
    """Hard-delete tool calls that finished (succeeded, failed) more than `older_than` ago;
    return how many. Running calls are never touched.

    In batches of `batch_size`, each one statement in its own short transaction (so it
    commits as it goes, and takes a connection in autocommit, `db.connection()`), until a
    batch deletes fewer: calls that another transaction holds are skipped, not waited for.
    Their executions stay (`purge_finished_executions` purges those, and the calls left with
    them). One 'purge' event records the count and the cutoff, in the last batch's
    transaction; no event per row. For the schema owner or agentdb_worker.
    """
    data = validated(PurgeFinishedInput, older_than=older_than, batch_size=batch_size)
    (deleted,) = await purge_in_batches(
        conn,
        PURGE_FINISHED_TOOL_CALLS,
        older_than=data.older_than,
        batch_size=data.batch_size,
        schema_name="agents",
        table_name="tool_calls",
        counts=("deleted",),
    )
    return deleted


# Helpers ----------------------------------------------------------------------------------


def _transaction(conn: AsyncConnection[Any]) -> AbstractAsyncContextManager[Any]:
    """A transaction for the lock and the statement after it to share: the caller's when
    there is one (a savepoint in it would cost two round trips more, and a failed statement
    leaves the caller's transaction aborted either way), else one of our own."""
    if not in_transaction(conn):
        return conn.transaction()
    return contextlib.nullcontext()


def _offered_tools(tools: Any) -> list[tuple[str, str | None, Any]]:
    """(name, content hash or None, the tool as given) of every offered tool, checked only
    as far as comparing it with what is stored needs: a ToolSpec or a mapping, a name that is
    a string, no name twice. The hash of a mapping is taken as it is given (None if it is not
    JSON); validating it is left for the tools that turn out changed."""
    offered = []
    for index, tool in enumerate(as_sequence(tools, "tools")):
        name: Any
        if isinstance(tool, ToolSpec):
            name, parts = tool.name, (tool.name, tool.description, tool.input_schema)
        elif isinstance(tool, Mapping):
            name = tool.get("name")
            parts = (
                name,
                tool.get("description", ""),
                tool.get("input_schema", DEFAULT_TOOL_SCHEMA),
            )
        else:
            raise InvalidInputError(
                f"tools[{index}]: must be a ToolSpec or a mapping, not {type(tool).__name__}",
                field=f"tools[{index}]",
            )
        if not isinstance(name, str):
            _tool_rows([tool], [index])  # raises, naming the field
        digest: str | None = None
        if isinstance(tool, ToolSpec) or tool.keys() <= TOOL_FIELDS:  # extras: for validation
            # not JSON: no hash, and validation will say what is wrong
            with contextlib.suppress(TypeError, ValueError, RecursionError):
                digest = _hash(*parts)
        offered.append((str(name), digest, tool))
    names = [name for name, _, _ in offered]
    if len(set(names)) != len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise InvalidInputError(f"tools: names offered twice: {', '.join(twice)}", field="tools")
    return offered


def _tool_rows(tools: list[Any], positions: list[int]) -> list[dict[str, Any]]:
    """The given tools (at `positions` of the offered list) as dicts of the three fields with
    ToolSpec's defaults filled in: ToolSpec instances as they are (validated when they were
    made), mappings validated in one call as ToolSpecDict, the first problem raised naming
    the tool's position and field."""
    rows = list(tools)
    unchecked = [index for index, row in enumerate(rows) if not isinstance(row, ToolSpec)]
    if unchecked:
        try:
            checked = TOOL_DICTS.validate_python([rows[index] for index in unchecked])
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            position, *path = first["loc"]
            tool = positions[unchecked[int(position)]]
            field = f"tools[{tool}]" + "".join(f".{part}" for part in path)
            message = first["msg"].removeprefix("Value error, ")
            raise InvalidInputError(f"{field}: {message}", field=field) from None
        for index, row in zip(unchecked, checked, strict=True):
            rows[index] = row
    return [
        row.model_dump()
        if isinstance(row, ToolSpec)
        else {
            "name": row["name"],
            "description": row.get("description", ""),
            "input_schema": row.get("input_schema", DEFAULT_TOOL_SCHEMA),
        }
        for row in rows
    ]


def _check_size(value: Any, field: str) -> None:
    """Refuse a payload larger than the log keeps (counted as jsonb prints it)."""
    if value is None:
        return
    size = len(json.dumps(value, ensure_ascii=False, separators=(", ", ": ")).encode())
    if size > MAX_TOOL_PAYLOAD_BYTES:
        raise InvalidInputError(
            f"{field}: {size} bytes as JSON, more than the {MAX_TOOL_PAYLOAD_BYTES} a tool call"
            " keeps",
            field=field,
        )


_TOOL_FIELDS = len(Tool.model_fields)


def _hit_rows(cursor: Any) -> RowMaker[ToolHit]:
    """Row factory of select_tools: the Tool columns, then similarity. A hit is built as a
    row model is (rows.row_maker): two fields that need no validation. Made once per column
    list, as model_rows does."""
    names = column_names(cursor)
    maker = _HIT_MAKERS.get(names)
    if maker is None:
        make_tool = row_maker(Tool, names[:_TOOL_FIELDS])
        make_hit = row_maker(ToolHit, ["tool", "similarity"])

        def maker(values: Sequence[Any]) -> ToolHit:
            return make_hit((make_tool(values[:_TOOL_FIELDS]), values[_TOOL_FIELDS]))

        _HIT_MAKERS[names] = maker
    return maker


_HIT_MAKERS: dict[tuple[str, ...], RowMaker[ToolHit]] = {}
