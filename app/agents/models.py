"""Row and input models of schema `agents`: executions, and the MCP servers, tools and tool
calls of `app.agents.tools`."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, NotRequired, get_args
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictInt, with_config
from typing_extensions import TypedDict  # pydantic reads typing.TypedDict only from 3.12

from app.database.validation import (
    INT32_MAX,
    Count32,
    Duration,
    Flag,
    InputModel,
    Int32,
    JsonObject,
    JsonValue,
    Name,
    NonBlankText,
    Text,
    Timestamp,
    Uuid,
)

ExecutionStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
EXECUTION_STATUSES: tuple[ExecutionStatus, ...] = get_args(ExecutionStatus)

NOTIFY_CHANNEL = "agentdb_executions"
"""The channel every enqueue notifies (payload: the agent_name); workers LISTEN on it."""

MAX_CLAIM = 1_000
"""The most executions one `claim_executions` call takes."""

MAX_PURGE_BATCH = 100_000
"""The largest batch of the retention purge (one batch is one transaction, holding its rows'
locks until it commits)."""

Cost = Annotated[Decimal, Field(ge=0, lt=Decimal("999999.9999995"), allow_inf_nan=False)]
"""US dollars, stored as numeric(12,6): PostgreSQL rounds to the millionth, so the bound is
what still rounds below a million (numeric(12,6) holds at most 999999.999999)."""


ErrorText = NonBlankText  # the shared type; the name says what it holds here


# Row models -------------------------------------------------------------------------------


class Execution(BaseModel):
    """A row of agents.executions."""

    id: UUID
    chat_id: UUID | None
    message_id: UUID | None
    todo_id: UUID | None
    agent_name: str
    status: ExecutionStatus
    priority: int
    run_after: datetime
    dedupe_key: str | None
    input: dict[str, Any]
    output: Any
    error: str | None
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: Decimal | None
    attempt: int
    max_attempts: int
    worker_id: str | None
    heartbeat_at: datetime | None
    is_cancel_requested: bool
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    updated_at: datetime
    owner_id: UUID | None
    """The user the run is for (its chat's or todo's owner, or given); None: a system run."""


class ExecutionStats(BaseModel):
    """Numbers about the executions an `execution_stats` call selected.

    Durations are `timedelta`s of finished_at - started_at over succeeded and failed
    executions (a retried run counts its last attempt); None when there are none.
    """

    counts: dict[ExecutionStatus, int]
    total: int
    success_rate: float | None
    """succeeded / (succeeded + failed); None while neither happened."""
    p50_duration: timedelta | None
    p95_duration: timedelta | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal


# Input models -----------------------------------------------------------------------------


MaxAttempts = Annotated[Count32, Field(ge=1)]


class ExecutionCreate(InputModel):
    """One execution to enqueue (`enqueue_executions` takes these, or dicts of the same
    fields: ExecutionCreateDict)."""

    agent_name: Name
    input: JsonObject = Field(default_factory=dict)
    chat_id: Uuid | None = None
    message_id: Uuid | None = None
    todo_id: Uuid | None = None
    max_attempts: MaxAttempts = 3
    priority: Int32 = 0
    run_after: Timestamp | None = None
    dedupe_key: Name | None = None
    owner_id: Uuid | None = None


@with_config(ConfigDict(extra="forbid"))
class ExecutionCreateDict(TypedDict):
    """The fields of `ExecutionCreate` as a dict, for callers of `enqueue_executions` that
    pass dicts. It validates a batch of these in one call (a test holds the two types
    together); a key left out takes ExecutionCreate's default."""

    agent_name: Name
    input: NotRequired[JsonObject]
    chat_id: NotRequired[Uuid | None]
    message_id: NotRequired[Uuid | None]
    todo_id: NotRequired[Uuid | None]
    max_attempts: NotRequired[MaxAttempts]
    priority: NotRequired[Int32]
    run_after: NotRequired[Timestamp | None]
    dedupe_key: NotRequired[Name | None]
    owner_id: NotRequired[Uuid | None]


class ClaimInput(InputModel):
    worker_id: Name
    agent_names: Annotated[list[Name], Field(min_length=1)] | None = None
    limit: Annotated[StrictInt, Field(ge=1, le=MAX_CLAIM)] = 10


class FenceInput(InputModel):
    """Who claims to hold an execution: its worker, and the attempt it claimed (the fencing
    token: a run requeued and claimed again has a higher attempt)."""

    worker_id: Name | None = None
    attempt: Annotated[StrictInt, Field(ge=1, le=INT32_MAX)] | None = None


class ExecutionResult(InputModel):
    """What a handler returns for a succeeded run: its output (any JSON value) and what it
    used. `ExecutionResult({"summary": text}, model="gpt-4o-mini", prompt_tokens=812)`;
    a handler may also return the output alone (a dict) or None."""

    output: JsonValue | None = None
    model: Name | None = None
    prompt_tokens: Count32 | None = None
    completion_tokens: Count32 | None = None
    cost_usd: Cost | None = None

    def __init__(
        self,
        output: Any = None,
        /,
        model: str | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        cost_usd: Decimal | float | None = None,
        **data: Any,
    ) -> None:
        super().__init__(
            output=data.pop("output", output),
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost_usd,
            **data,
        )


class FailureInput(InputModel):
    error: ErrorText
    retry: Flag = True
    retry_in: Annotated[Duration, Field(ge=timedelta(0))] | None = None


class ListFilterInput(InputModel):
    chat_id: Uuid | None = None
    agent_name: Name | None = None
    status: ExecutionStatus | None = None


class StaleCheckInput(InputModel):
    older_than: Annotated[Duration, Field(gt=timedelta(0))]


class PurgeFinishedInput(InputModel):
    """The arguments of purge_finished_executions and purge_finished_tool_calls."""

    older_than: Annotated[Duration, Field(gt=timedelta(0))]
    batch_size: Annotated[StrictInt, Field(ge=1, le=MAX_PURGE_BATCH)] = 1000


class StatsFilterInput(InputModel):
    agent_name: Name | None = None
    since: Timestamp | None = None


# Tools: MCP servers, their tools, and the calls executions make --------------------------

McpTransport = Literal["stdio", "http", "sse"]
ToolCallStatus = Literal["running", "succeeded", "failed"]

MAX_TOOL_PAYLOAD_BYTES = 65_536
"""The most a tool call's arguments, result or error may hold (as JSON text, UTF-8): the log
stays a log. A larger payload is refused before anything is written."""


DEFAULT_TOOL_SCHEMA: dict[str, Any] = {"type": "object"}
"""The input schema of a tool that gives none: it takes an object (never mutate this one)."""


class McpServer(BaseModel):
    """A row of agents.mcp_servers: shared by all owners (owner_id None) or one owner's."""

    id: UUID
    owner_id: UUID | None
    name: str
    transport: McpTransport
    endpoint: str
    config: dict[str, Any]
    is_enabled: bool
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


class Tool(BaseModel):
    """A row of agents.tools (its embedding is not loaded: `has_embedding` says if it is set)."""

    id: UUID
    mcp_server_id: UUID
    name: str
    description: str
    input_schema: dict[str, Any]
    has_embedding: bool
    content_hash: str
    is_enabled: bool
    created_at: datetime
    updated_at: datetime


class ToolHit(BaseModel):
    """A selected tool and its cosine similarity to the task's embedding."""

    tool: Tool
    similarity: float


class ToolSync(BaseModel):
    """What `sync_tools` did: how many tools it inserted, updated, disabled and found
    unchanged. Updated: changed, or offered again; disabled: no longer offered."""

    inserted: int
    updated: int
    disabled: int
    unchanged: int


class ToolCall(BaseModel):
    """A row of agents.tool_calls."""

    id: UUID
    execution_id: UUID
    tool_id: UUID | None
    owner_id: UUID | None
    tool_name: str
    arguments: dict[str, Any]
    result: Any
    error: str | None
    status: ToolCallStatus
    started_at: datetime
    finished_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def duration(self) -> timedelta | None:
        """How long the call took (the server's clock); None while it runs."""
        return None if self.finished_at is None else self.finished_at - self.started_at


class ToolCallStats(BaseModel):
    """One tool's calls: how many, how many failed, and the durations of finished ones."""

    tool_name: str
    calls: int
    failures: int
    failure_rate: float
    p50_duration: timedelta | None
    p95_duration: timedelta | None


class ToolSpec(InputModel):
    """A tool as an MCP server's tools/list gives it."""

    name: Name
    description: Text = ""
    input_schema: JsonObject = Field(default_factory=lambda: dict(DEFAULT_TOOL_SCHEMA))


@with_config(ConfigDict(extra="forbid"))
class ToolSpecDict(TypedDict):
    """The fields of `ToolSpec` as a dict, for callers of `sync_tools` that pass the dicts of
    an MCP tools/list: validated all in one call, far cheaper than a ToolSpec per tool. The
    same fields with the same types; a key left out takes ToolSpec's default."""

    name: Name
    description: NotRequired[Text]
    input_schema: NotRequired[JsonObject]


class McpServerInput(InputModel):
    name: Name
    transport: McpTransport
    endpoint: NonBlankText
    owner_id: Uuid | None = None
    config: JsonObject = Field(default_factory=dict)


class ToolCallInput(InputModel):
    tool_name: Name
    arguments: JsonObject
    tool_id: Uuid | None = None


class ToolCallFinish(InputModel):
    result: JsonValue | None = None
    error: NonBlankText | None = None


class ToolStatsInput(InputModel):
    since: Timestamp | None = None
    tool_name: Name | None = None
