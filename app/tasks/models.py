"""Row and input models of schema `tasks` (todos)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field, field_validator

from app.database.validation import InputModel, Int32, JsonObject, Text, Timestamp, Title, Uuid

TodoStatus = Literal["pending", "in_progress", "done", "cancelled"]

TODO_STATUSES: tuple[TodoStatus, ...] = ("pending", "in_progress", "done", "cancelled")
"""Every status, in lifecycle order (the keys of `count_todos_by_status`)."""

UPDATABLE_FIELDS: tuple[str, ...] = (
    "title",
    "description",
    "status",
    "priority",
    "due_at",
    "chat_id",
    "metadata",
)
"""The fields `update_todo` accepts; anything else is an InvalidInputError."""

Priority = Annotated[Int32, Field(ge=1, le=5)]
"""1 (most urgent) to 5 (least urgent); an int, so True, 3.0 or "3" are refused."""


# Row models -------------------------------------------------------------------------------


class Todo(BaseModel):
    """A row of tasks.todos."""

    id: UUID
    owner_id: UUID
    chat_id: UUID | None
    title: str
    description: str | None
    status: TodoStatus
    priority: int
    due_at: datetime | None
    completed_at: datetime | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


# Input models -----------------------------------------------------------------------------


class TodoCreate(InputModel):
    """The fields of a new todo, as `create_todo` takes them."""

    owner_id: Uuid
    title: Title
    description: Text | None = None
    chat_id: Uuid | None = None
    priority: Priority = 3
    due_at: Timestamp | None = None
    metadata: JsonObject = Field(default_factory=dict)


class TodoUpdate(InputModel):
    """The fields of a partial update. Which fields to set comes from the keys given to
    update_todo, not from None: a given None clears description, due_at or chat_id."""

    title: Title | None = None
    description: Text | None = None
    status: TodoStatus | None = None
    priority: Priority | None = None
    due_at: Timestamp | None = None
    chat_id: Uuid | None = None
    metadata: JsonObject | None = None

    # Runs only on values that were given (defaults are not validated): None may clear the
    # nullable columns, but not these NOT NULL ones.
    @field_validator("title", "status", "priority", "metadata", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be None (the column is NOT NULL)")
        return value


class TodoFilter(InputModel):
    """The filters of `list_todos`."""

    owner_id: Uuid
    statuses: list[TodoStatus] | None = None
    due_before: Timestamp | None = None


class StatusFilter(InputModel):
    """The filters of `get_todos_by_status`."""

    status: TodoStatus
    owner_id: Uuid | None = None
