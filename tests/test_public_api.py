"""Every public query function, every argument, given values of the wrong shape: only the
project's own errors come out (never a raw TypeError, ValueError, RecursionError or psycopg
error), and a refusal of input names the argument it refused."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

import numpy as np
import psycopg
import pytest

from app import agents, audit, knowledge, messaging, tasks, telegram
from app.agents import tools
from app.database import AgentDBError, DatabaseConfig, DatabaseManager, InvalidInputError
from app.messaging import EMBEDDING_DIMENSIONS

Conn = psycopg.AsyncConnection[Any]

ONE_HOT = [1.0] + [0.0] * (EMBEDDING_DIMENSIONS - 1)

# A plausible value for every parameter name the public functions use, so that a call with
# one argument replaced by garbage fails (if it fails) because of that argument.
PLAUSIBLE: dict[str, Callable[[], Any]] = {
    "agent_name": lambda: "planner",
    "arguments": lambda: {"q": "milk"},
    "attempt": lambda: 1,
    "agent_names": lambda: ["planner"],
    "batch_size": lambda: 1000,
    "before": lambda: None,
    "bot_id": lambda: 1,
    "chat_id": uuid4,
    "claims": lambda: [(uuid4(), 1)],
    "completion_tokens": lambda: 1,
    "content": lambda: "hello",
    "cost_usd": lambda: Decimal("0.01"),
    "cursor": lambda: None,
    "data": lambda: {"a": 1},
    "dedupe_key": lambda: None,
    "description": lambda: None,
    "due_at": lambda: None,
    "due_before": lambda: None,
    "ef_search": lambda: 40,
    "embedding": lambda: ONE_HOT,
    "embeddings": lambda: [(uuid4(), ONE_HOT)],
    "error": lambda: "boom",
    "execution_id": uuid4,
    "input": lambda: {},
    "key": lambda: telegram.SessionKey(1, 2, 3),
    "language_code": lambda: "en",
    "default": lambda: None,
    "limit": lambda: 10,
    "max_attempts": lambda: 3,
    "message_id": uuid4,
    "messages": lambda: [],
    "metadata": lambda: {},
    "model": lambda: "m",
    "name": lambda: "step",
    "older_than": lambda: timedelta(minutes=5),
    "output": lambda: {},
    "owner_id": uuid4,
    "patch": lambda: {"a": 1},
    "priority": lambda: 3,
    "prompt_tokens": lambda: 1,
    "query": lambda: "milk",
    "results": lambda: [(uuid4(), 1, agents.ExecutionResult())],
    "retry": lambda: True,
    "retry_in": lambda: None,
    "role": lambda: "user",
    "run_after": lambda: None,
    "since": lambda: datetime(2024, 1, 1, tzinfo=UTC),
    "state": lambda: "Form:name",
    "status": lambda: "pending",
    "table_name": lambda: "chats",
    "statuses": lambda: ["pending"],
    "title": lambda: "A title",
    "todo_id": uuid4,
    "token_count": lambda: 1,
    "ttl": lambda: timedelta(hours=1),
    "updates": lambda: {"title": "x"},
    "username": lambda: "someone",
    "worker_id": lambda: "worker-1",
    "config": lambda: {},
    "endpoint": lambda: "https://tools.example/mcp",
    "items": lambda: [(uuid4(), ONE_HOT)],
    "result": lambda: {"hits": 1},
    "server_id": uuid4,
    "server_ids": lambda: [uuid4()],
    "tool_call_id": uuid4,
    "tool_id": lambda: None,
    "tool_name": lambda: "search",
    "tools": lambda: [{"name": "search"}],
    "transport": lambda: "http",
    "kind": lambda: "fact",
    "importance": lambda: 0.5,
    "source_message_id": lambda: None,
    "expires_at": lambda: None,
    "merge_threshold": lambda: 0.92,
    "kinds": lambda: ["fact"],
    "weights": lambda: knowledge.RecallWeights(),
    "half_life": lambda: timedelta(days=14),
    "touch": lambda: True,
    "memory_id": uuid4,
    "document_id": uuid4,
    "chunks": lambda: [{"chunk_index": 0, "content": "hello"}],
    "document_ids": lambda: None,
    "source_uri": lambda: None,
    "content_type": lambda: "text/plain",
    "content_hash": lambda: None,
}


def cyclic() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["loop"] = loop
    return loop


def nested_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


class Odd:
    """An object of no type any function expects."""


GARBAGE: list[tuple[str, Callable[[], Any]]] = [
    ("bytes", lambda: b"0123456789abcdef"),
    ("huge-int", lambda: 10**400),
    ("nan", lambda: float("nan")),
    ("bool", lambda: True),
    ("object", Odd),
    ("cyclic-dict", cyclic),
    ("nested-list", lambda: nested_list(200)),
    ("long-text", lambda: "x" * 100_000),
    ("nul-text", lambda: "a\x00b"),
    ("empty-list", list),
    ("complex", lambda: 1 + 2j),
    ("array-of-objects", lambda: np.array([Odd()] * 3, dtype=object)),
]

FUNCTIONS = [
    (f"{module.__name__}.{name}", getattr(module, name))
    for module in (messaging, tasks, agents, tools, telegram, audit, knowledge)
    for name in module.__all__
    if inspect.iscoroutinefunction(getattr(module, name))
]


def test_every_parameter_of_every_public_function_has_a_plausible_value() -> None:
    parameters = {
        parameter
        for _, function in FUNCTIONS
        for parameter in list(inspect.signature(function).parameters)[1:]
    }
    assert len(FUNCTIONS) >= 40
    assert parameters <= set(PLAUSIBLE), parameters - set(PLAUSIBLE)


@pytest.mark.parametrize(
    "function", [function for _, function in FUNCTIONS], ids=[name for name, _ in FUNCTIONS]
)
async def test_no_raw_python_or_psycopg_error_escapes_a_public_function(
    shared_database_url: str, function: Callable[..., Any]
) -> None:
    signature = inspect.signature(function)
    parameters = list(signature.parameters.items())[1:]
    problems = []
    config = DatabaseConfig(url=shared_database_url, max_pool_size=1)
    async with DatabaseManager(config) as db, db.connection() as conn:
        for parameter, _ in parameters:
            for label, garbage in GARBAGE:
                arguments = {name: PLAUSIBLE[name]() for name, _ in parameters}
                arguments[parameter] = garbage()
                positional = [
                    arguments.pop(name)
                    for name, spec in parameters
                    if spec.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
                ]
                call = f"{function.__name__}({parameter}={label})"
                try:
                    await function(conn, *positional, **arguments)
                except InvalidInputError as error:
                    # field "arguments" is the safety net's (a raw error it caught), unless the
                    # function has a parameter of that name (start_tool_call) under test
                    safety_net = error.field == "arguments" and parameter != "arguments"
                    if (
                        error.field is None
                        or safety_net
                        or not str(error).startswith(error.field or "-")
                    ):
                        problems.append(f"{call}: names no field: {error!r}"[:300])
                except AgentDBError:
                    pass  # not found, conflicts: the project's errors about rows, not input
                except Exception as error:
                    problems.append(f"{call}: raw {type(error).__name__}: {error}"[:300])
    assert not problems, "\n".join(problems)
