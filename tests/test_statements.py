"""Every SQL constant of app/ that returns a row model, described by the server itself:
its result columns must be exactly the model's fields (one column list per model, written
once in its queries module, is what every such statement is built from)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import psycopg
import pytest
from pydantic import BaseModel

from app import agents, audit, knowledge, messaging, tasks, telegram
from app.agents import queries as agent_queries
from app.audit import queries as audit_queries
from app.knowledge import documents as document_queries
from app.knowledge import memories as memory_queries
from app.messaging import queries as message_queries
from app.messaging import search as message_search
from app.tasks import queries as todo_queries
from app.telegram import queries as session_queries

# Each model's column list, and the columns a statement may add after it.
COLUMN_LISTS: list[tuple[str, type[BaseModel], tuple[str, ...]]] = [
    (message_queries.CHAT_COLUMNS, messaging.Chat, ()),
    (message_queries.MESSAGE_COLUMNS, messaging.Message, ()),
    (message_search.HIT_COLUMNS, messaging.Message, ("similarity",)),
    (todo_queries.TODO_COLUMNS, tasks.Todo, ()),
    (session_queries.SESSION_COLUMNS, telegram.TelegramSession, ()),
    (agent_queries.EXECUTION_COLUMNS, agents.Execution, ()),
    (audit_queries.AUDIT_EVENT_COLUMNS, audit.AuditEvent, ()),
    (memory_queries.MEMORY_COLUMNS, knowledge.Memory, ()),
    (memory_queries.RECALL_COLUMNS, knowledge.Memory, ("similarity",)),
    (document_queries.DOCUMENT_COLUMNS, knowledge.Document, ()),
    (document_queries.CHUNK_COLUMNS, knowledge.Chunk, ()),
    (document_queries.CHUNK_HIT_COLUMNS, knowledge.Chunk, ("similarity",)),
]
MODULES: list[ModuleType] = [
    message_queries,
    message_search,
    todo_queries,
    session_queries,
    agent_queries,
    audit_queries,
    memory_queries,
    document_queries,
]
# Statements that add a column after their model's besides those of their column list.
EXTRA_COLUMNS = {
    f"{agent_queries.__name__}.ENQUEUE_EXECUTIONS": ("ordinal",),
    f"{agent_queries.__name__}.COMPLETE_AND_CLAIM_EXECUTIONS": ("acked_ids",),
}
PLACEHOLDER = re.compile(r"%\((\w+)\)[sbt]|%[sbt]|%%")


def numbered(statement: str) -> str:
    """psycopg's placeholders as the server's $1, $2 … (a name keeps its number)."""
    numbers: dict[str, int] = {}
    count = 0

    def number(match: re.Match[str]) -> str:
        nonlocal count
        if match.group(0) == "%%":
            return "%"
        name = match.group(1)
        if name is None or name not in numbers:
            count += 1
            if name is not None:
                numbers[name] = count
            return f"${count}"
        return f"${numbers[name]}"

    return PLACEHOLDER.sub(number, statement)


def statements() -> Iterator[tuple[str, str, type[BaseModel], tuple[str, ...]]]:
    """(name, SQL, model, extra columns) of every module constant built on a column list."""
    for module in MODULES:
        for name, value in vars(module).items():
            if not name.isupper() or not isinstance(value, str) or name.endswith("_COLUMNS"):
                continue
            # The longest column list inside it decides (HIT_COLUMNS holds MESSAGE_COLUMNS'
            # words but not its text: its embedding is a NULL).
            found = [entry for entry in COLUMN_LISTS if entry[0] in value]
            if found:
                _, model, extra = max(found, key=lambda entry: len(entry[0]))
                qualified = f"{module.__name__}.{name}"
                yield qualified, value, model, EXTRA_COLUMNS.get(qualified, extra)


STATEMENTS = list(statements())


def test_the_statement_finder_finds_the_statements_of_every_model() -> None:
    models = {model for _, _, model, _ in STATEMENTS}
    assert models == {entry[1] for entry in COLUMN_LISTS}
    names = {name.rsplit(".", 1)[1] for name, *_ in STATEMENTS}
    assert {"SELECT_CHAT", "INSERT_MESSAGE", "SEARCH_MESSAGES", "SELECT_TODO"} <= names
    assert numbered("a = %(a)s AND b = %s AND c = %(a)s AND d LIKE 'x%%'") == (
        "a = $1 AND b = $2 AND c = $1 AND d LIKE 'x%'"
    )


@pytest.mark.parametrize(
    ("statement", "model", "extra"),
    [(sql, model, extra) for _, sql, model, extra in STATEMENTS],
    ids=[name for name, *_ in STATEMENTS],
)
def test_every_statement_returns_exactly_its_models_fields(
    migrated_conn: psycopg.Connection[Any],
    statement: str,
    model: type[BaseModel],
    extra: tuple[str, ...],
) -> None:
    pgconn = migrated_conn.pgconn
    result = pgconn.prepare(b"", numbered(statement).encode())
    assert result.error_message == b"", result.error_message.decode()
    described = pgconn.describe_prepared(b"")
    columns = [described.fname(index).decode() for index in range(described.nfields)]
    fields = list(model.model_fields)
    assert sorted(columns[: len(fields)]) == sorted(fields)
    assert columns[len(fields) :] in (list(extra), [*extra, "score"])
