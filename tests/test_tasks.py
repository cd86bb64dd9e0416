"""tasks: todos — creation, validation, soft delete, status lists, keyset pages, updates,
completion and counts, against a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from app import messaging, tasks
from app.database import (
    ConflictError,
    DatabaseManager,
    ForeignKeyError,
    InvalidInputError,
    NotFoundError,
)
from app.database.pagination import MAX_PAGE_SIZE

Conn = psycopg.AsyncConnection[Any]

DUE = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

UUID_AS_BYTES = UUID(int=1).bytes
"""The 16 bytes of a UUID: never taken for one (bytes are no text of a UUID)."""


async def _todo(conn: Conn, owner_id: UUID, title: str = "Buy milk", **fields: Any) -> tasks.Todo:
    return await tasks.create_todo(conn, owner_id=owner_id, title=title, **fields)


async def _row_count(conn: Conn) -> int:
    """Every row of tasks.todos, soft-deleted ones included."""
    cursor = await conn.execute("SELECT count(*) FROM tasks.todos")
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def _all_pages(conn: Conn, limit: int, **filters: Any) -> list[list[tasks.Todo]]:
    pages: list[list[tasks.Todo]] = []
    cursor: str | None = None
    while True:
        page = await tasks.list_todos(conn, limit=limit, cursor=cursor, **filters)
        pages.append(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return pages
        assert len(pages) < 100, "list_todos does not terminate"


# The package ------------------------------------------------------------------------------


def test_app_tasks_exports_the_models_of_tasks_models_and_the_functions_of_tasks_queries() -> None:
    from app.tasks import models, queries

    for name in ("Todo", "TodoCreate", "TodoUpdate", "TodoStatus", "TODO_STATUSES"):
        assert getattr(tasks, name) is getattr(models, name)
        assert name in tasks.__all__
    assert tasks.UPDATABLE_FIELDS is models.UPDATABLE_FIELDS
    for name in ("create_todo", "get_todo", "list_todos", "update_todo", "complete_todo"):
        assert getattr(tasks, name) is getattr(queries, name)
        assert name in tasks.__all__


def test_every_statement_returning_todos_selects_the_one_column_list_of_todo() -> None:
    from app.tasks import queries

    assert queries.TODO_COLUMNS.replace(" ", "").split(",") == list(tasks.Todo.model_fields)
    for statement in (
        queries.INSERT_TODO,
        queries.SELECT_TODO,
        queries.SELECT_TODOS_BY_STATUS,
        queries.SELECT_OWNER_TODOS_BY_STATUS,
        queries.SELECT_TODOS_PAGE,
        queries.UPDATE_TODO,
        queries.COMPLETE_TODO,
    ):
        assert queries.TODO_COLUMNS in statement


# create_todo ------------------------------------------------------------------------------


async def test_create_todo_returns_a_pending_todo_with_the_defaults(conn: Conn) -> None:
    owner_id = uuid4()
    todo = await _todo(conn, owner_id)
    assert (todo.owner_id, todo.title, todo.status, todo.priority) == (
        owner_id,
        "Buy milk",
        "pending",
        3,
    )
    assert (todo.description, todo.chat_id, todo.due_at, todo.completed_at) == (
        None,
        None,
        None,
        None,
    )
    assert todo.metadata == {}
    assert todo.deleted_at is None
    assert todo.created_at.tzinfo is not None


async def test_create_todo_stores_every_given_field(conn: Conn) -> None:
    owner_id = uuid4()
    chat = await messaging.create_chat(conn, owner_id=owner_id, title="Groceries")
    due_at = datetime(2030, 5, 1, 9, 30, tzinfo=timezone(timedelta(hours=2)))
    todo = await _todo(
        conn,
        owner_id,
        description="the oat one",
        chat_id=chat.id,
        priority=1,
        due_at=due_at,
        metadata={"source": "agent", "tags": ["shop"]},
    )
    assert await tasks.get_todo(conn, todo.id) == todo
    assert (todo.description, todo.chat_id, todo.priority) == ("the oat one", chat.id, 1)
    assert todo.due_at == due_at
    assert todo.metadata == {"source": "agent", "tags": ["shop"]}


async def test_create_todo_accepts_a_title_of_exactly_500_characters(conn: Conn) -> None:
    todo = await _todo(conn, uuid4(), title="x" * 500)
    assert len(todo.title) == 500


@pytest.mark.parametrize(
    ("field", "fields"),
    [
        ("title", {"title": "x" * 501}),
        ("title", {"title": " \t\n"}),
        ("title", {"title": "milk\x00"}),
        ("description", {"description": "oat\x00milk"}),
        ("metadata", {"metadata": {"note": "a\x00b"}}),
        ("metadata", {"metadata": {"nested": [{"deep": "\x00"}]}}),
        ("metadata", {"metadata": ["not", "an", "object"]}),
        ("priority", {"priority": 0}),
        ("priority", {"priority": 6}),
        ("priority", {"priority": True}),
        ("due_at", {"due_at": datetime(2030, 1, 1, 12, 0)}),
        ("owner_id", {"owner_id": "not-a-uuid"}),
    ],
    ids=lambda value: repr(value)[:40] if isinstance(value, dict) else value,
)
async def test_create_todo_refuses_invalid_input_naming_the_field_and_writes_nothing(
    conn: Conn, field: str, fields: dict[str, Any]
) -> None:
    arguments: dict[str, Any] = {"owner_id": uuid4(), "title": "Buy milk", **fields}
    with pytest.raises(InvalidInputError) as raised:
        await tasks.create_todo(conn, **arguments)
    assert str(raised.value).startswith(field)
    assert await _row_count(conn) == 0


@pytest.mark.parametrize("metadata", [[], 0, "", False], ids=repr)
async def test_create_todo_refuses_a_falsy_metadata_that_is_not_an_object_instead_of_storing_one(
    conn: Conn, metadata: Any
) -> None:
    with pytest.raises(InvalidInputError, match=r"^metadata") as raised:
        await _todo(conn, uuid4(), metadata=metadata)
    assert raised.value.field == "metadata"
    assert await _row_count(conn) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("owner_id", UUID_AS_BYTES),
        ("chat_id", UUID_AS_BYTES),
        ("due_at", 1_900_000_000),
        ("due_at", "2030-01-01T12:00:00+00:00"),
        ("priority", 2.0),
        ("priority", "2"),
    ],
    ids=repr,
)
async def test_create_todo_refuses_a_value_of_the_wrong_type_even_if_it_could_be_converted(
    conn: Conn, field: str, value: Any
) -> None:
    arguments: dict[str, Any] = {"owner_id": uuid4(), "title": "Buy milk", field: value}
    with pytest.raises(InvalidInputError, match=f"^{field}") as raised:
        await tasks.create_todo(conn, **arguments)
    assert raised.value.field == field
    assert await _row_count(conn) == 0


async def test_create_todo_with_a_missing_chat_raises_foreign_key_error_naming_the_constraint(
    conn: Conn,
) -> None:
    with pytest.raises(ForeignKeyError) as raised:
        await _todo(conn, uuid4(), chat_id=uuid4())
    assert raised.value.constraint == "fk_todos_chats"
    assert str(raised.value).startswith("fk_todos_chats")
    assert await _row_count(conn) == 0


async def test_hard_deleting_the_chat_keeps_the_todo_and_clears_its_chat_id(conn: Conn) -> None:
    owner_id = uuid4()
    chat = await messaging.create_chat(conn, owner_id=owner_id)
    todo = await _todo(conn, owner_id, chat_id=chat.id)
    await conn.execute("DELETE FROM messaging.chats WHERE id = %s", [chat.id])
    kept = await tasks.get_todo(conn, todo.id)
    assert kept is not None
    assert kept.chat_id is None


async def test_create_todo_writes_nothing_when_the_callers_session_rolls_back(
    db: DatabaseManager, conn: Conn
) -> None:
    with pytest.raises(RuntimeError):
        async with db.session() as session:
            await _todo(session, uuid4())
            raise RuntimeError("the caller fails after create_todo")
    assert await _row_count(conn) == 0


# get_todo / delete_todo -------------------------------------------------------------------


async def test_get_todo_returns_none_for_an_unknown_id(conn: Conn) -> None:
    assert await tasks.get_todo(conn, uuid4()) is None


async def test_get_todo_refuses_an_id_that_is_not_a_uuid(conn: Conn) -> None:
    with pytest.raises(InvalidInputError, match=r"^todo_id"):
        await tasks.get_todo(conn, "42")  # type: ignore[arg-type]


async def test_delete_todo_hides_the_todo_from_get_todo(conn: Conn) -> None:
    todo = await _todo(conn, uuid4())
    await tasks.delete_todo(conn, todo.id)
    assert await tasks.get_todo(conn, todo.id) is None


async def test_delete_todo_keeps_the_row_with_deleted_at_set(conn: Conn) -> None:
    todo = await _todo(conn, uuid4())
    await tasks.delete_todo(conn, todo.id)
    cursor = await conn.execute("SELECT deleted_at FROM tasks.todos WHERE id = %s", [todo.id])
    row = await cursor.fetchone()
    assert row is not None
    assert row[0] is not None


async def test_delete_todo_of_a_missing_todo_raises_not_found(conn: Conn) -> None:
    with pytest.raises(NotFoundError):
        await tasks.delete_todo(conn, uuid4())


async def test_delete_todo_of_a_deleted_todo_raises_not_found(conn: Conn) -> None:
    todo = await _todo(conn, uuid4())
    await tasks.delete_todo(conn, todo.id)
    with pytest.raises(NotFoundError):
        await tasks.delete_todo(conn, todo.id)


async def test_deleted_todos_are_left_out_of_list_todos(conn: Conn) -> None:
    owner_id = uuid4()
    kept = await _todo(conn, owner_id, title="kept")
    gone = await _todo(conn, owner_id, title="gone")
    await tasks.delete_todo(conn, gone.id)
    page = await tasks.list_todos(conn, owner_id=owner_id)
    assert [todo.id for todo in page.items] == [kept.id]


async def test_deleted_todos_are_left_out_of_get_todos_by_status(conn: Conn) -> None:
    owner_id = uuid4()
    kept = await _todo(conn, owner_id, title="kept")
    gone = await _todo(conn, owner_id, title="gone")
    await tasks.delete_todo(conn, gone.id)
    for owner in (owner_id, None):
        todos = await tasks.get_todos_by_status(conn, "pending", owner_id=owner)
        assert [todo.id for todo in todos] == [kept.id]


async def test_deleted_todos_are_not_counted_by_count_todos_by_status(conn: Conn) -> None:
    owner_id = uuid4()
    await _todo(conn, owner_id, title="kept")
    gone = await _todo(conn, owner_id, title="gone")
    await tasks.delete_todo(conn, gone.id)
    counts = await tasks.count_todos_by_status(conn, owner_id=owner_id)
    assert counts["pending"] == 1


async def test_update_todo_of_a_deleted_todo_raises_not_found(conn: Conn) -> None:
    todo = await _todo(conn, uuid4())
    await tasks.delete_todo(conn, todo.id)
    with pytest.raises(NotFoundError):
        await tasks.update_todo(conn, todo.id, {"title": "back"})


async def test_complete_todo_of_a_deleted_todo_raises_not_found(conn: Conn) -> None:
    todo = await _todo(conn, uuid4())
    await tasks.delete_todo(conn, todo.id)
    with pytest.raises(NotFoundError):
        await tasks.complete_todo(conn, todo.id)


# get_todos_by_status ----------------------------------------------------------------------


async def test_get_todos_by_status_returns_only_that_status_newest_first(conn: Conn) -> None:
    owner_id = uuid4()
    first = await _todo(conn, owner_id, title="first")
    done = await _todo(conn, owner_id, title="done")
    await tasks.complete_todo(conn, done.id)
    second = await _todo(conn, owner_id, title="second")
    todos = await tasks.get_todos_by_status(conn, "pending", owner_id=owner_id)
    assert [todo.id for todo in todos] == [second.id, first.id]


async def test_get_todos_by_status_with_an_owner_returns_only_that_owners_todos(
    conn: Conn,
) -> None:
    owner_id = uuid4()
    mine = await _todo(conn, owner_id)
    await _todo(conn, uuid4())
    todos = await tasks.get_todos_by_status(conn, "pending", owner_id=owner_id)
    assert [todo.id for todo in todos] == [mine.id]


async def test_get_todos_by_status_without_an_owner_returns_every_owners_todos(
    conn: Conn,
) -> None:
    mine = await _todo(conn, uuid4())
    theirs = await _todo(conn, uuid4())
    todos = await tasks.get_todos_by_status(conn, "pending")
    assert [todo.id for todo in todos] == [theirs.id, mine.id]


async def test_get_todos_by_status_breaks_equal_created_at_ties_by_id_descending(
    db: DatabaseManager,
) -> None:
    owner_id = uuid4()
    async with db.session() as session:
        created = [await _todo(session, owner_id, title=f"t{n}") for n in range(4)]
    assert len({todo.created_at for todo in created}) == 1
    async with db.connection() as conn:
        todos = await tasks.get_todos_by_status(conn, "pending", owner_id=owner_id)
    assert [todo.id for todo in todos] == sorted((todo.id for todo in created), reverse=True)


async def test_get_todos_by_status_returns_at_most_limit_todos(conn: Conn) -> None:
    owner_id = uuid4()
    created = [await _todo(conn, owner_id, title=f"t{n}") for n in range(3)]
    todos = await tasks.get_todos_by_status(conn, "pending", owner_id=owner_id, limit=2)
    assert [todo.id for todo in todos] == [created[2].id, created[1].id]


async def test_get_todos_by_status_refuses_an_owner_id_given_as_bytes(conn: Conn) -> None:
    with pytest.raises(InvalidInputError, match=r"^owner_id"):
        await tasks.get_todos_by_status(conn, "pending", owner_id=UUID_AS_BYTES)  # type: ignore[arg-type]


async def test_get_todos_by_status_refuses_an_unknown_status(conn: Conn) -> None:
    with pytest.raises(InvalidInputError, match=r"^status"):
        await tasks.get_todos_by_status(conn, "finished")


@pytest.mark.parametrize("limit", [0, MAX_PAGE_SIZE + 1, True])
async def test_get_todos_by_status_refuses_a_limit_outside_the_page_size_range(
    conn: Conn, limit: int
) -> None:
    with pytest.raises(InvalidInputError, match=r"^limit"):
        await tasks.get_todos_by_status(conn, "pending", limit=limit)


# list_todos -------------------------------------------------------------------------------


async def test_list_todos_orders_by_priority_then_due_date_then_undated(conn: Conn) -> None:
    owner_id = uuid4()
    p3_undated = await _todo(conn, owner_id, priority=3)
    p3_late = await _todo(conn, owner_id, priority=3, due_at=DUE + timedelta(days=2))
    p1_undated = await _todo(conn, owner_id, priority=1)
    p3_early = await _todo(conn, owner_id, priority=3, due_at=DUE)
    p5_early = await _todo(conn, owner_id, priority=5, due_at=DUE - timedelta(days=9))
    p1_due = await _todo(conn, owner_id, priority=1, due_at=DUE + timedelta(days=30))
    page = await tasks.list_todos(conn, owner_id=owner_id)
    assert [todo.id for todo in page.items] == [
        p1_due.id,
        p1_undated.id,
        p3_early.id,
        p3_late.id,
        p3_undated.id,
        p5_early.id,
    ]
    assert page.next_cursor is None


async def test_list_todos_never_repeats_or_drops_a_row_across_pages_with_equal_keys(
    db: DatabaseManager,
) -> None:
    owner_id = uuid4()
    async with db.session() as session:
        created = [
            await _todo(session, owner_id, title=f"t{n}", priority=2, due_at=DUE) for n in range(7)
        ]
    assert len({(todo.created_at, todo.priority, todo.due_at) for todo in created}) == 1
    async with db.connection() as conn:
        pages = await _all_pages(conn, 3, owner_id=owner_id)
    assert [len(page) for page in pages] == [3, 3, 1]
    listed = [todo.id for page in pages for todo in page]
    assert listed == sorted(todo.id for todo in created)


async def test_list_todos_never_repeats_or_drops_undated_rows_across_pages(
    db: DatabaseManager,
) -> None:
    owner_id = uuid4()
    async with db.session() as session:
        created = [await _todo(session, owner_id, title=f"t{n}") for n in range(5)]
    async with db.connection() as conn:
        pages = await _all_pages(conn, 2, owner_id=owner_id)
    listed = [todo.id for page in pages for todo in page]
    assert listed == sorted(todo.id for todo in created)


async def test_list_todos_pages_concatenate_to_the_single_page_order(
    db: DatabaseManager,
) -> None:
    owner_id = uuid4()
    async with db.session() as session:
        for n in range(12):
            due_at = None if n % 3 == 0 else DUE + timedelta(days=n % 4)
            await _todo(session, owner_id, title=f"t{n}", priority=1 + n % 2, due_at=due_at)
    async with db.connection() as conn:
        whole = await tasks.list_todos(conn, owner_id=owner_id)
        pages = await _all_pages(conn, 5, owner_id=owner_id)
    assert [todo.id for page in pages for todo in page] == [todo.id for todo in whole.items]


async def test_list_todos_last_full_page_has_no_next_cursor(conn: Conn) -> None:
    owner_id = uuid4()
    for n in range(2):
        await _todo(conn, owner_id, title=f"t{n}")
    page = await tasks.list_todos(conn, owner_id=owner_id, limit=2)
    assert len(page.items) == 2
    assert page.next_cursor is None


async def test_list_todos_returns_only_the_owners_todos(conn: Conn) -> None:
    owner_id = uuid4()
    mine = await _todo(conn, owner_id)
    await _todo(conn, uuid4())
    page = await tasks.list_todos(conn, owner_id=owner_id)
    assert [todo.id for todo in page.items] == [mine.id]


async def test_list_todos_keeps_only_the_given_statuses(conn: Conn) -> None:
    owner_id = uuid4()
    pending = await _todo(conn, owner_id, title="pending", priority=1)
    started = await _todo(conn, owner_id, title="started", priority=2)
    await tasks.update_todo(conn, started.id, {"status": "in_progress"})
    done = await _todo(conn, owner_id, title="done")
    await tasks.complete_todo(conn, done.id)
    page = await tasks.list_todos(conn, owner_id=owner_id, statuses=["pending", "in_progress"])
    assert [todo.id for todo in page.items] == [pending.id, started.id]


async def test_list_todos_applies_the_statuses_filter_on_every_page(
    db: DatabaseManager,
) -> None:
    owner_id = uuid4()
    async with db.session() as session:
        created = [await _todo(session, owner_id, title=f"t{n}") for n in range(6)]
        for todo in created[::2]:
            await tasks.complete_todo(session, todo.id)
    async with db.connection() as conn:
        pages = await _all_pages(conn, 2, owner_id=owner_id, statuses=["done"])
    listed = [todo.id for page in pages for todo in page]
    assert listed == sorted(todo.id for todo in created[::2])


async def test_list_todos_with_an_empty_statuses_list_returns_nothing(conn: Conn) -> None:
    owner_id = uuid4()
    await _todo(conn, owner_id)
    page = await tasks.list_todos(conn, owner_id=owner_id, statuses=[])
    assert page.items == []
    assert page.next_cursor is None


@pytest.mark.parametrize("statuses", [["pending", "finished"], "pending", b"pending", 3])
async def test_list_todos_refuses_statuses_that_are_not_a_list_of_known_statuses(
    conn: Conn, statuses: Any
) -> None:
    with pytest.raises(InvalidInputError, match=r"^statuses"):
        await tasks.list_todos(conn, owner_id=uuid4(), statuses=statuses)


async def test_list_todos_due_before_keeps_todos_due_strictly_before_and_drops_undated(
    conn: Conn,
) -> None:
    owner_id = uuid4()
    early = await _todo(conn, owner_id, due_at=DUE - timedelta(seconds=1))
    await _todo(conn, owner_id, due_at=DUE)
    await _todo(conn, owner_id, due_at=DUE + timedelta(days=1))
    await _todo(conn, owner_id)
    page = await tasks.list_todos(conn, owner_id=owner_id, due_before=DUE)
    assert [todo.id for todo in page.items] == [early.id]


@pytest.mark.parametrize("due_before", [1_900_000_000, "2030-01-01T00:00:00+00:00"], ids=repr)
async def test_list_todos_refuses_a_due_before_that_is_not_a_datetime(
    conn: Conn, due_before: Any
) -> None:
    with pytest.raises(InvalidInputError, match=r"^due_before"):
        await tasks.list_todos(conn, owner_id=uuid4(), due_before=due_before)


async def test_list_todos_refuses_an_owner_id_given_as_bytes(conn: Conn) -> None:
    with pytest.raises(InvalidInputError, match=r"^owner_id"):
        await tasks.list_todos(conn, owner_id=UUID_AS_BYTES)  # type: ignore[arg-type]


async def test_list_todos_refuses_a_naive_due_before(conn: Conn) -> None:
    with pytest.raises(InvalidInputError, match=r"^due_before"):
        await tasks.list_todos(conn, owner_id=uuid4(), due_before=datetime(2030, 1, 1))


@pytest.mark.parametrize("cursor", ["garbage", "WyIxIl0"])  # the second is ["1"]
async def test_list_todos_refuses_a_cursor_it_did_not_make(conn: Conn, cursor: str) -> None:
    with pytest.raises(InvalidInputError, match=r"^cursor"):
        await tasks.list_todos(conn, owner_id=uuid4(), cursor=cursor)


async def test_list_todos_refuses_a_cursor_of_another_owners_list(conn: Conn) -> None:
    owner_id, other_owner_id = uuid4(), uuid4()
    for n in range(2):
        await _todo(conn, other_owner_id, title=f"t{n}")
    page = await tasks.list_todos(conn, owner_id=other_owner_id, limit=1)
    assert page.next_cursor is not None
    with pytest.raises(InvalidInputError, match=r"^cursor") as raised:
        await tasks.list_todos(conn, owner_id=owner_id, cursor=page.next_cursor)
    assert raised.value.field == "cursor"


@pytest.mark.parametrize("limit", [0, MAX_PAGE_SIZE + 1, True])
async def test_list_todos_refuses_a_limit_outside_the_page_size_range(
    conn: Conn, limit: int
) -> None:
    with pytest.raises(InvalidInputError, match=r"^limit"):
        await tasks.list_todos(conn, owner_id=uuid4(), limit=limit)


# update_todo ------------------------------------------------------------------------------


async def test_update_todo_changes_the_given_fields_and_keeps_the_others(conn: Conn) -> None:
    owner_id = uuid4()
    chat = await messaging.create_chat(conn, owner_id=owner_id)
    todo = await _todo(conn, owner_id, description="keep me", metadata={"a": 1})
    updated = await tasks.update_todo(
        conn,
        todo.id,
        {"title": "Buy oat milk", "priority": 1, "due_at": DUE, "chat_id": chat.id},
    )
    assert (updated.title, updated.priority, updated.due_at, updated.chat_id) == (
        "Buy oat milk",
        1,
        DUE,
        chat.id,
    )
    assert (updated.description, updated.metadata, updated.status) == (
        "keep me",
        {"a": 1},
        "pending",
    )
    assert updated.updated_at > todo.updated_at
    assert await tasks.get_todo(conn, todo.id) == updated


async def test_update_todo_with_none_clears_the_nullable_fields(conn: Conn) -> None:
    owner_id = uuid4()
    chat = await messaging.create_chat(conn, owner_id=owner_id)
    todo = await _todo(conn, owner_id, description="d", due_at=DUE, chat_id=chat.id)
    updated = await tasks.update_todo(
        conn, todo.id, {"description": None, "due_at": None, "chat_id": None}
    )
    assert (updated.description, updated.due_at, updated.chat_id) == (None, None, None)


async def test_update_todo_replaces_metadata_whole(conn: Conn) -> None:
    todo = await _todo(conn, uuid4(), metadata={"a": 1, "b": 2})
    updated = await tasks.update_todo(conn, todo.id, {"metadata": {"c": 3}})
    assert updated.metadata == {"c": 3}


async def test_update_todo_with_no_fields_returns_the_todo_unchanged(conn: Conn) -> None:
    todo = await _todo(conn, uuid4())
    assert await tasks.update_todo(conn, todo.id, {}) == todo


async def test_update_todo_refuses_an_unknown_field_naming_it_and_writes_nothing(
    conn: Conn,
) -> None:
    todo = await _todo(conn, uuid4())
    with pytest.raises(InvalidInputError, match=r"^owner_id") as raised:
        await tasks.update_todo(conn, todo.id, {"title": "new", "owner_id": uuid4()})
    assert raised.value.field == "owner_id"
    assert await tasks.get_todo(conn, todo.id) == todo


@pytest.mark.parametrize(
    ("field", "updates"),
    [
        ("title", {"title": "x" * 501}),
        ("title", {"title": "   "}),
        ("title", {"title": "a\x00b"}),
        ("title", {"title": None}),
        ("description", {"description": "a\x00b"}),
        ("metadata", {"metadata": {"k": "a\x00b"}}),
        ("priority", {"priority": 0}),
        ("priority", {"priority": 6}),
        ("status", {"status": "finished"}),
        ("status", {"status": None}),
        ("due_at", {"due_at": datetime(2030, 1, 1)}),
    ],
    ids=lambda value: repr(value)[:40] if isinstance(value, dict) else value,
)
async def test_update_todo_refuses_invalid_values_naming_the_field_and_writes_nothing(
    conn: Conn, field: str, updates: dict[str, Any]
) -> None:
    todo = await _todo(conn, uuid4(), description="d", metadata={"a": 1})
    with pytest.raises(InvalidInputError) as raised:
        await tasks.update_todo(conn, todo.id, {"title": "fine", **updates})
    assert str(raised.value).startswith(field)
    assert await tasks.get_todo(conn, todo.id) == todo


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("chat_id", UUID_AS_BYTES),
        ("due_at", 1_900_000_000),
        ("due_at", "2030-01-01T12:00:00+00:00"),
        ("priority", True),
        ("priority", 1.0),
        ("metadata", []),
        ("metadata", False),
    ],
    ids=repr,
)
async def test_update_todo_refuses_a_value_of_the_wrong_type_even_if_it_could_be_converted(
    conn: Conn, field: str, value: Any
) -> None:
    todo = await _todo(conn, uuid4())
    with pytest.raises(InvalidInputError, match=f"^{field}") as raised:
        await tasks.update_todo(conn, todo.id, {field: value})
    assert raised.value.field == field
    assert await tasks.get_todo(conn, todo.id) == todo


async def test_update_todo_refuses_updates_that_are_not_a_mapping(conn: Conn) -> None:
    todo = await _todo(conn, uuid4())
    with pytest.raises(InvalidInputError, match=r"^updates"):
        await tasks.update_todo(conn, todo.id, [("title", "new")])  # type: ignore[arg-type]


async def test_update_todo_of_a_missing_todo_raises_not_found(conn: Conn) -> None:
    with pytest.raises(NotFoundError):
        await tasks.update_todo(conn, uuid4(), {"title": "new"})


async def test_update_todo_with_no_fields_of_a_missing_todo_raises_not_found(conn: Conn) -> None:
    with pytest.raises(NotFoundError):
        await tasks.update_todo(conn, uuid4(), {})


async def test_update_todo_with_a_missing_chat_raises_foreign_key_error_and_writes_nothing(
    conn: Conn,
) -> None:
    todo = await _todo(conn, uuid4())
    with pytest.raises(ForeignKeyError) as raised:
        await tasks.update_todo(conn, todo.id, {"chat_id": uuid4()})
    assert raised.value.constraint == "fk_todos_chats"
    assert await tasks.get_todo(conn, todo.id) == todo


async def test_update_todo_to_done_sets_completed_at(conn: Conn) -> None:
    todo = await _todo(conn, uuid4())
    done = await tasks.update_todo(conn, todo.id, {"status": "done"})
    assert done.status == "done"
    assert done.completed_at is not None
    assert done.completed_at >= todo.created_at


async def test_update_todo_leaving_done_clears_completed_at(conn: Conn) -> None:
    todo = await _todo(conn, uuid4())
    await tasks.complete_todo(conn, todo.id)
    reopened = await tasks.update_todo(conn, todo.id, {"status": "in_progress"})
    assert (reopened.status, reopened.completed_at) == ("in_progress", None)


async def test_update_todo_from_done_to_done_keeps_the_first_completed_at(conn: Conn) -> None:
    todo = await _todo(conn, uuid4())
    done = await tasks.complete_todo(conn, todo.id)
    again = await tasks.update_todo(conn, todo.id, {"status": "done"})
    assert again.completed_at == done.completed_at


async def test_update_todo_without_status_keeps_completed_at(conn: Conn) -> None:
    todo = await _todo(conn, uuid4())
    done = await tasks.complete_todo(conn, todo.id)
    renamed = await tasks.update_todo(conn, todo.id, {"title": "Bought milk"})
    assert (renamed.status, renamed.completed_at) == ("done", done.completed_at)


async def test_update_todo_can_cancel_and_reopen_a_todo(conn: Conn) -> None:
    todo = await _todo(conn, uuid4())
    cancelled = await tasks.update_todo(conn, todo.id, {"status": "cancelled"})
    reopened = await tasks.update_todo(conn, todo.id, {"status": "pending"})
    assert (cancelled.status, cancelled.completed_at) == ("cancelled", None)
    assert (reopened.status, reopened.completed_at) == ("pending", None)


# complete_todo ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["pending", "in_progress"])
async def test_complete_todo_marks_an_open_todo_done_with_completed_at(
    conn: Conn, status: str
) -> None:
    todo = await _todo(conn, uuid4())
    await tasks.update_todo(conn, todo.id, {"status": status})
    done = await tasks.complete_todo(conn, todo.id)
    assert done.status == "done"
    assert done.completed_at is not None
    assert done.completed_at >= todo.created_at
    assert await tasks.get_todo(conn, todo.id) == done


async def test_complete_todo_of_a_done_todo_returns_it_unchanged(conn: Conn) -> None:
    todo = await _todo(conn, uuid4())
    done = await tasks.complete_todo(conn, todo.id)
    assert await tasks.complete_todo(conn, todo.id) == done


async def test_complete_todo_of_a_cancelled_todo_raises_conflict_and_writes_nothing(
    conn: Conn,
) -> None:
    todo = await _todo(conn, uuid4())
    cancelled = await tasks.update_todo(conn, todo.id, {"status": "cancelled"})
    with pytest.raises(ConflictError, match="cancelled"):
        await tasks.complete_todo(conn, todo.id)
    assert await tasks.get_todo(conn, todo.id) == cancelled


async def test_complete_todo_of_a_missing_todo_raises_not_found(conn: Conn) -> None:
    with pytest.raises(NotFoundError):
        await tasks.complete_todo(conn, uuid4())


# count_todos_by_status --------------------------------------------------------------------


async def test_count_todos_by_status_has_every_status_as_a_key_with_zero_for_none(
    conn: Conn,
) -> None:
    counts = await tasks.count_todos_by_status(conn, owner_id=uuid4())
    assert counts == dict.fromkeys(tasks.TODO_STATUSES, 0)


async def test_count_todos_by_status_counts_each_status_of_the_owner_only(conn: Conn) -> None:
    owner_id = uuid4()
    for _ in range(3):
        await _todo(conn, owner_id)
    started = await _todo(conn, owner_id)
    await tasks.update_todo(conn, started.id, {"status": "in_progress"})
    done = await _todo(conn, owner_id)
    await tasks.complete_todo(conn, done.id)
    await _todo(conn, uuid4())
    counts = await tasks.count_todos_by_status(conn, owner_id=owner_id)
    assert counts == {"pending": 3, "in_progress": 1, "done": 1, "cancelled": 0}


@pytest.mark.parametrize(("field", "value"), [("title", b"Buy milk"), ("description", b"x")])
async def test_create_todo_takes_no_bytes_for_text(conn: Any, field: str, value: bytes) -> None:
    arguments: dict[str, Any] = {"owner_id": uuid4(), "title": "Buy milk", field: value}
    with pytest.raises(InvalidInputError, match=rf"^{field}: ") as error:
        await tasks.create_todo(conn, **arguments)
    assert error.value.field == field
