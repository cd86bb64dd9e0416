"""Query functions of schema `tasks`: the todos a user keeps, by hand or through an agent.

SQL constants first, then the functions in the order of the public API. Every function
takes the caller's connection and never commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from app.database.errors import ConflictError, NotFoundError, database_errors
from app.database.pagination import (
    Page,
    aware_datetime,
    check_limit,
    decode_cursor,
    encode_cursor,
    page_of,
)
from app.database.rows import column_list, model_rows, returned
from app.database.validation import as_uuid, check_update_fields, validated
from app.tasks.models import (
    TODO_STATUSES,
    UPDATABLE_FIELDS,
    StatusFilter,
    Todo,
    TodoCreate,
    TodoFilter,
    TodoUpdate,
)

# SQL --------------------------------------------------------------------------------------

TODO_COLUMNS = column_list(
    Todo,
    "id, owner_id, chat_id, title, description, status, priority, due_at, completed_at, "
    "metadata, created_at, updated_at, deleted_at",
)

INSERT_TODO = (
    """
INSERT INTO tasks.todos (owner_id, chat_id, title, description, priority, due_at, metadata)
VALUES (%(owner_id)s, %(chat_id)s, %(title)s, %(description)s, %(priority)s, %(due_at)s,
        %(metadata)s)
RETURNING """
    + TODO_COLUMNS
)

SELECT_TODO = (
    "SELECT "
    + TODO_COLUMNS
    + """
FROM tasks.todos
WHERE id = %s
  AND deleted_at IS NULL
"""
)

SOFT_DELETE_TODO = """
UPDATE tasks.todos
SET deleted_at = now()
WHERE id = %s
  AND deleted_at IS NULL
RETURNING id
"""

# On idx_todos_status_created_at: one status across every owner, newest first (id breaks
# ties between todos created in one transaction).
SELECT_TODOS_BY_STATUS = (
    "SELECT "
    + TODO_COLUMNS
    + """
FROM tasks.todos
WHERE status = %(status)s
  AND deleted_at IS NULL
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
"""
)

# The same for one owner, on idx_todos_owner_id_status_created_at. A separate statement
# rather than "owner_id IS NULL OR …", which a generic plan could not serve from either index.
SELECT_OWNER_TODOS_BY_STATUS = (
    "SELECT "
    + TODO_COLUMNS
    + """
FROM tasks.todos
WHERE owner_id = %(owner_id)s
  AND status = %(status)s
  AND deleted_at IS NULL
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
"""
)

# Keyset page on idx_todos_owner_id_priority_due_at: the row comparison and the ORDER BY use
# its exact expression COALESCE(due_at, 'infinity'), which also puts undated todos last. The
# cursor is the last row's key; the first page starts below every key (priority 0). The
# filters are casts of NULL-able parameters, so one statement serves every combination.
SELECT_TODOS_PAGE = (
    "SELECT "
    + TODO_COLUMNS
    + """
FROM tasks.todos
WHERE owner_id = %(owner_id)s
  AND deleted_at IS NULL
  AND (priority, COALESCE(due_at, 'infinity'::timestamptz), id)
      > (%(after_priority)s, %(after_due_at)s::timestamptz, %(after_id)s)
  AND status = ANY(%(statuses)s::varchar[])
  AND (%(due_before)s::timestamptz IS NULL OR due_at < %(due_before)s::timestamptz)
ORDER BY priority, COALESCE(due_at, 'infinity'::timestamptz), id
LIMIT %(limit)s
"""
)

# One statement for any combination of fields: a flag per field says whether to set it, so
# None can clear a nullable column while an omitted field keeps its value. completed_at
# follows status (ck_todos_completed_at_iff_done): entering done stamps it, staying done
# keeps the old stamp (the right-hand side reads the old row), leaving done clears it.
UPDATE_TODO = (
    """
UPDATE tasks.todos
SET title = CASE WHEN %(set_title)s THEN %(title)s ELSE title END,
    description = CASE WHEN %(set_description)s THEN %(description)s ELSE description END,
    status = CASE WHEN %(set_status)s THEN %(status)s::varchar ELSE status END,
    priority = CASE WHEN %(set_priority)s THEN %(priority)s ELSE priority END,
    due_at = CASE WHEN %(set_due_at)s THEN %(due_at)s ELSE due_at END,
    chat_id = CASE WHEN %(set_chat_id)s THEN %(chat_id)s ELSE chat_id END,
    metadata = CASE WHEN %(set_metadata)s THEN %(metadata)s ELSE metadata END,
    completed_at = CASE
        WHEN NOT %(set_status)s THEN completed_at
        WHEN %(status)s::varchar = 'done' THEN COALESCE(completed_at, now())
        ELSE NULL
    END
WHERE id = %(todo_id)s
  AND deleted_at IS NULL
RETURNING """
    + TODO_COLUMNS
)

# Only an open todo changes: the row lock taken by UPDATE makes a concurrent cancel and
# complete serialize, and a todo that is already done is not rewritten (its updated_at and
# completed_at stay as they were).
COMPLETE_TODO = (
    """
UPDATE tasks.todos
SET status = 'done',
    completed_at = now()
WHERE id = %s
  AND deleted_at IS NULL
  AND status IN ('pending', 'in_progress')
RETURNING """
    + TODO_COLUMNS
)

# On idx_todos_owner_id_status_created_at: owner_id leads it and it is partial on live rows.
COUNT_TODOS_BY_STATUS = """
SELECT status, count(*)
FROM tasks.todos
WHERE owner_id = %s
  AND deleted_at IS NULL
GROUP BY status
"""

FIRST_PAGE_PRIORITY = 0
FIRST_PAGE_DUE_AT = "-infinity"
FIRST_UUID = UUID(int=0)
NO_DUE_DATE = "infinity"

TODO_ROW = model_rows(Todo)


# Query functions --------------------------------------------------------------------------


@database_errors
async def create_todo(
    conn: AsyncConnection[Any],
    *,
    owner_id: UUID,
    title: str,
    description: str | None = None,
    chat_id: UUID | None = None,
    priority: int = 3,
    due_at: datetime | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Todo:
    """Create a pending todo for `owner_id`, optionally linked to the chat it came from."""
    data = validated(
        TodoCreate,
        owner_id=owner_id,
        title=title,
        description=description,
        chat_id=chat_id,
        priority=priority,
        due_at=due_at,
        metadata={} if metadata is None else metadata,
    )
    params = {
        "owner_id": data.owner_id,
        "chat_id": data.chat_id,
        "title": data.title,
        "description": data.description,
        "priority": data.priority,
        "due_at": data.due_at,
        "metadata": Jsonb(data.metadata),
    }
    async with conn.cursor(row_factory=TODO_ROW) as cursor:
        await cursor.execute(INSERT_TODO, params)
        return returned(await cursor.fetchone())


@database_errors
async def get_todo(conn: AsyncConnection[Any], todo_id: UUID) -> Todo | None:
    """The todo, or None if it does not exist or is deleted."""
    async with conn.cursor(row_factory=TODO_ROW) as cursor:
        await cursor.execute(SELECT_TODO, [as_uuid(todo_id, "todo_id")])
        return await cursor.fetchone()


@database_errors
async def delete_todo(conn: AsyncConnection[Any], todo_id: UUID) -> None:
    """Soft-delete the todo."""
    cursor = await conn.execute(SOFT_DELETE_TODO, [as_uuid(todo_id, "todo_id")])
    if await cursor.fetchone() is None:
        raise NotFoundError(f"todo {todo_id} not found", field="todo_id")


@database_errors
async def get_todos_by_status(
    conn: AsyncConnection[Any],
    status: str,
    *,
    owner_id: UUID | None = None,
    limit: int = 100,
) -> list[Todo]:
    """The live todos in `status` (of one owner, or of everyone), newest first, at most `limit`."""
    data = validated(StatusFilter, status=status, owner_id=owner_id)
    check_limit(limit)
    params = {"owner_id": data.owner_id, "status": data.status, "limit": limit}
    query = SELECT_TODOS_BY_STATUS if data.owner_id is None else SELECT_OWNER_TODOS_BY_STATUS
    async with conn.cursor(row_factory=TODO_ROW) as cursor:
        await cursor.execute(query, params)
        return await cursor.fetchall()


@database_errors
async def list_todos(
    conn: AsyncConnection[Any],
    *,
    owner_id: UUID,
    statuses: Sequence[str] | None = None,
    due_before: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Todo]:
    """The owner's live todos by priority (1 first), then due date (undated last), then id.

    `statuses` keeps only those statuses (None: all; empty: none). `due_before` keeps only
    todos due strictly before it, so undated todos drop out. Pass the same filters with
    `next_cursor` to get the next page.
    """
    data = validated(TodoFilter, owner_id=owner_id, statuses=statuses, due_before=due_before)
    check_limit(limit)
    scope = f"todos:{data.owner_id}"
    after_priority, after_due_at, after_id = (
        (FIRST_PAGE_PRIORITY, FIRST_PAGE_DUE_AT, FIRST_UUID)
        if cursor is None
        else decode_cursor(cursor, scope, int, _due_key, UUID)
    )
    params = {
        "owner_id": data.owner_id,
        "after_priority": after_priority,
        "after_due_at": after_due_at,
        "after_id": after_id,
        "statuses": list(TODO_STATUSES if data.statuses is None else data.statuses),
        "due_before": data.due_before,
        "limit": limit + 1,
    }
    async with conn.cursor(row_factory=TODO_ROW) as db_cursor:
        await db_cursor.execute(SELECT_TODOS_PAGE, params)
        rows = await db_cursor.fetchall()
    return page_of(
        rows,
        limit,
        lambda todo: encode_cursor(
            scope,
            todo.priority,
            todo.due_at.isoformat() if todo.due_at else NO_DUE_DATE,
            todo.id,
        ),
    )


@database_errors
async def update_todo(
    conn: AsyncConnection[Any], todo_id: UUID, updates: Mapping[str, Any]
) -> Todo:
    """Set the given fields of a live todo; None clears description, due_at or chat_id.

    The fields are UPDATABLE_FIELDS; metadata is replaced whole. Status 'done' stamps
    completed_at (kept if it was already done); any other status clears it.
    """
    check_update_fields(updates, UPDATABLE_FIELDS, "update_todo")
    data = validated(TodoUpdate, **updates)
    todo_id = as_uuid(todo_id, "todo_id")
    if not updates:
        todo = await get_todo(conn, todo_id)
    else:
        params = {
            "todo_id": todo_id,
            **{f"set_{name}": name in updates for name in UPDATABLE_FIELDS},
            "title": data.title,
            "description": data.description,
            "status": data.status,
            "priority": data.priority,
            "due_at": data.due_at,
            "chat_id": data.chat_id,
            "metadata": None if data.metadata is None else Jsonb(data.metadata),
        }
        async with conn.cursor(row_factory=TODO_ROW) as cursor:
            await cursor.execute(UPDATE_TODO, params)
            todo = await cursor.fetchone()
    if todo is None:
        raise NotFoundError(f"todo {todo_id} not found", field="todo_id")
    return todo


@database_errors
async def complete_todo(conn: AsyncConnection[Any], todo_id: UUID) -> Todo:
    """Mark a pending or in-progress todo done; a done todo is returned unchanged.

    A cancelled todo raises ConflictError (reopen it with update_todo first).
    """
    todo_id = as_uuid(todo_id, "todo_id")
    async with conn.cursor(row_factory=TODO_ROW) as cursor:
        await cursor.execute(COMPLETE_TODO, [todo_id])
        todo = await cursor.fetchone()
    if todo is not None:
        return todo
    current = await get_todo(conn, todo_id)
    if current is None:
        raise NotFoundError(f"todo {todo_id} not found", field="todo_id")
    if current.status != "done":
        raise ConflictError(
            f"status: todo {todo_id} is {current.status}; only a pending or in_progress "
            "todo can be completed",
            field="status",
        )
    return current


@database_errors
async def count_todos_by_status(conn: AsyncConnection[Any], *, owner_id: UUID) -> dict[str, int]:
    """How many live todos the owner has in each status (every status is a key, 0 if none)."""
    cursor = await conn.execute(COUNT_TODOS_BY_STATUS, [as_uuid(owner_id, "owner_id")])
    counts: dict[str, int] = dict.fromkeys(TODO_STATUSES, 0)
    for status, count in await cursor.fetchall():
        counts[status] = int(count)
    return counts


# Helpers ----------------------------------------------------------------------------------


def _due_key(value: str) -> datetime | str:
    """The due-date part of a cursor: a timestamp, or 'infinity' for an undated todo."""
    return value if value == NO_DUE_DATE else aware_datetime(value)
