"""app.messaging against a real server: chats, messages, keyset pages, validation, COPY."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, NotRequired, get_args, get_origin, get_type_hints
from uuid import UUID, uuid4

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app import messaging
from app.database import (
    DatabaseConfig,
    DatabaseManager,
    ForeignKeyError,
    InvalidInputError,
    NotFoundError,
)
from app.database.errors import translate
from app.database.pagination import encode_cursor
from app.messaging import EMBEDDING_DIMENSIONS, Chat, Message, MessageCreate
from tests.conftest import wait_for_lock_waiters

Conn = psycopg.AsyncConnection[Any]

# Raw SQL the tests use to look behind the public API (whether anything was written at all).
COUNT_ALL_CHATS = "SELECT count(*) FROM messaging.chats"
COUNT_ALL_MESSAGES = "SELECT count(*) FROM messaging.messages"
COUNT_ALL_ROWS = """
SELECT (SELECT count(*) FROM messaging.chats), (SELECT count(*) FROM messaging.messages)
"""
SELECT_CHAT_DELETED_AT = "SELECT deleted_at FROM messaging.chats WHERE id = %s"
SELECT_MESSAGE_DELETED_AT = "SELECT deleted_at FROM messaging.messages WHERE id = %s"
SELECT_LAST_MESSAGE_AT = "SELECT last_message_at FROM messaging.chats WHERE id = %s"
INSERT_MESSAGE_WITH_OWNER = """
INSERT INTO messaging.messages (chat_id, owner_id, role, content)
VALUES (%s, %s, 'user', 'not mine')
"""

A_DATE = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def shared_conn(shared_database_url: str) -> AsyncIterator[Conn]:
    """A pooled autocommit connection to the module's shared database."""
    config = DatabaseConfig(url=shared_database_url, max_pool_size=1)
    async with DatabaseManager(config) as manager, manager.connection() as connection:
        yield connection


async def scalar(conn: Conn, statement: str, params: list[Any] | None = None) -> Any:
    cursor = await conn.execute(statement, params)
    row = await cursor.fetchone()
    assert row is not None
    return row[0]


async def row_counts(conn: Conn) -> tuple[int, int]:
    """How many chats and messages the database holds, deleted ones included."""
    cursor = await conn.execute(COUNT_ALL_ROWS)
    row = await cursor.fetchone()
    assert row is not None
    return row[0], row[1]


def vector(seed: int) -> list[float]:
    """A reproducible embedding of Python floats (float64, so they round to float32)."""
    return np.random.default_rng(seed).standard_normal(EMBEDDING_DIMENSIONS).tolist()


def as_float32(values: Any) -> list[float]:
    return np.asarray(values, dtype=np.float32).tolist()


async def new_chat(conn: Conn, **fields: Any) -> Chat:
    return await messaging.create_chat(conn, owner_id=fields.pop("owner_id", uuid4()), **fields)


async def all_pages_of_messages(conn: Conn, chat_id: UUID, limit: int) -> list[list[Message]]:
    pages = []
    before = None
    while True:
        page = await messaging.list_messages(conn, chat_id, limit=limit, before=before)
        pages.append(page.items)
        if page.next_cursor is None:
            return pages
        before = page.next_cursor


async def all_pages_of_chats(conn: Conn, owner_id: UUID, limit: int) -> list[list[Chat]]:
    pages = []
    cursor = None
    while True:
        page = await messaging.list_chats(conn, owner_id=owner_id, limit=limit, cursor=cursor)
        pages.append(page.items)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


# create_chat / get_chat -------------------------------------------------------------------


async def test_create_chat_returns_the_stored_row(conn: Conn) -> None:
    owner_id = uuid4()
    chat = await messaging.create_chat(
        conn, owner_id=owner_id, title="Groceries", metadata={"source": "web", "n": [1, 2.5]}
    )
    assert (chat.owner_id, chat.title, chat.metadata) == (
        owner_id,
        "Groceries",
        {"source": "web", "n": [1, 2.5]},
    )
    assert chat.last_message_at is None and chat.deleted_at is None
    assert chat.created_at.tzinfo is not None and chat.updated_at.tzinfo is not None
    assert await messaging.get_chat(conn, chat.id) == chat


async def test_create_chat_without_title_or_metadata_is_untitled_with_empty_metadata(
    conn: Conn,
) -> None:
    chat = await new_chat(conn)
    assert chat.title is None and chat.metadata == {}


async def test_create_chat_accepts_the_owner_id_as_a_string(conn: Conn) -> None:
    owner_id = uuid4()
    chat = await messaging.create_chat(conn, owner_id=str(owner_id))  # type: ignore[arg-type]
    assert chat.owner_id == owner_id


async def test_get_chat_returns_none_for_a_chat_that_does_not_exist(conn: Conn) -> None:
    assert await messaging.get_chat(conn, uuid4()) is None


async def test_get_chat_rejects_an_id_that_is_not_a_uuid(shared_conn: Conn) -> None:
    with pytest.raises(InvalidInputError, match=r"^chat_id: ") as error:
        await messaging.get_chat(shared_conn, "chat-1")  # type: ignore[arg-type]
    assert error.value.field == "chat_id"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"title": "a\x00b"}, "title"),
        ({"title": "x" * 501}, "title"),
        ({"title": "   \t"}, "title"),
        ({"title": ""}, "title"),
        ({"metadata": {"note": "a\x00b"}}, "metadata"),
        ({"metadata": {"a\x00": 1}}, "metadata"),
        ({"metadata": {"deep": {"er": ["ok", {"k": "\x00"}]}}}, "metadata"),
        ({"metadata": {"deep": {"key\x00": True}}}, "metadata"),
        ({"metadata": {"score": math.nan}}, "metadata"),
        ({"metadata": {"score": [math.inf]}}, "metadata"),
        ({"metadata": {"when": datetime.now(UTC)}}, "metadata"),
        ({"metadata": {1: "int key"}}, "metadata.1.[key]"),
        ({"owner_id": "not-a-uuid"}, "owner_id"),
    ],
    ids=[
        "nul-in-title",
        "title-501-chars",
        "blank-title",
        "empty-title",
        "nul-in-metadata-value",
        "nul-in-metadata-key",
        "nul-nested-in-metadata-value",
        "nul-nested-in-metadata-key",
        "nan-in-metadata",
        "inf-in-metadata",
        "non-json-in-metadata",
        "non-string-metadata-key",
        "owner-id-not-uuid",
    ],
)
async def test_create_chat_rejects_bad_input_naming_the_field_and_writes_nothing(
    shared_conn: Conn, fields: dict[str, Any], field: str
) -> None:
    before = await row_counts(shared_conn)
    with pytest.raises(InvalidInputError) as error:
        await messaging.create_chat(shared_conn, **{"owner_id": uuid4(), **fields})
    assert error.value.field == field
    assert str(error.value).startswith(f"{field}: ")
    assert await row_counts(shared_conn) == before


async def test_create_chat_accepts_a_title_of_exactly_500_characters(conn: Conn) -> None:
    chat = await new_chat(conn, title="é" * 500)
    assert chat.title == "é" * 500


async def test_an_exception_inside_a_session_after_create_chat_leaves_no_row(
    db: DatabaseManager, conn: Conn
) -> None:
    with pytest.raises(RuntimeError, match="changed my mind"):
        async with db.session() as session:
            await new_chat(session, title="never")
            raise RuntimeError("changed my mind")
    assert await scalar(conn, COUNT_ALL_CHATS) == 0


# update_chat ------------------------------------------------------------------------------


async def test_update_chat_sets_the_title_and_keeps_the_omitted_metadata(conn: Conn) -> None:
    chat = await new_chat(conn, title="Old", metadata={"keep": 1})
    updated = await messaging.update_chat(conn, chat.id, title="New")
    assert (updated.title, updated.metadata) == ("New", {"keep": 1})
    assert await messaging.get_chat(conn, chat.id) == updated


async def test_update_chat_with_title_none_clears_the_title(conn: Conn) -> None:
    chat = await new_chat(conn, title="Old", metadata={"keep": 1})
    updated = await messaging.update_chat(conn, chat.id, title=None)
    assert (updated.title, updated.metadata) == (None, {"keep": 1})


async def test_update_chat_replaces_the_metadata_whole_and_keeps_the_title(conn: Conn) -> None:
    chat = await new_chat(conn, title="Title", metadata={"a": 1, "b": 2})
    updated = await messaging.update_chat(conn, chat.id, metadata={"c": 3})
    assert (updated.title, updated.metadata) == ("Title", {"c": 3})


async def test_update_chat_without_fields_changes_nothing(conn: Conn) -> None:
    chat = await new_chat(conn, title="Same", metadata={"a": 1})
    assert await messaging.update_chat(conn, chat.id) == chat


async def test_update_chat_of_a_chat_that_does_not_exist_raises_not_found(conn: Conn) -> None:
    with pytest.raises(NotFoundError):
        await messaging.update_chat(conn, uuid4(), title="x")


async def test_update_chat_of_a_deleted_chat_raises_not_found(conn: Conn) -> None:
    chat = await new_chat(conn, title="Old")
    await messaging.delete_chat(conn, chat.id)
    with pytest.raises(NotFoundError):
        await messaging.update_chat(conn, chat.id, title="New")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"title": "bad\x00"}, "title"),
        ({"title": "x" * 501}, "title"),
        ({"title": " "}, "title"),
        ({"metadata": {"k": {"v": "\x00"}}}, "metadata"),
        ({"metadata": {"k": math.nan}}, "metadata"),
        ({"metadata": None}, "metadata"),
    ],
    ids=["nul-title", "long-title", "blank-title", "nul-metadata", "nan-metadata", "null-metadata"],
)
async def test_update_chat_rejects_bad_input_naming_the_field_and_changes_nothing(
    shared_conn: Conn, fields: dict[str, Any], field: str
) -> None:
    chat = await new_chat(shared_conn, title="Before", metadata={"before": True})
    with pytest.raises(InvalidInputError) as error:
        await messaging.update_chat(shared_conn, chat.id, **fields)
    assert error.value.field == field
    assert str(error.value).startswith(f"{field}: ")
    assert await messaging.get_chat(shared_conn, chat.id) == chat


# delete_chat ------------------------------------------------------------------------------


async def test_delete_chat_hides_the_chat_and_its_messages_from_get_list_and_count(
    conn: Conn,
) -> None:
    chat = await new_chat(conn)
    message = await messaging.add_message(conn, chat.id, role="user", content="hello")
    await messaging.delete_chat(conn, chat.id)
    assert await messaging.get_chat(conn, chat.id) is None
    assert await messaging.get_message(conn, message.id) is None
    assert (await messaging.list_messages(conn, chat.id)).items == []
    assert await messaging.count_messages(conn, chat.id) == 0
    assert (await messaging.list_chats(conn, owner_id=chat.owner_id)).items == []


async def test_delete_chat_is_soft_the_chat_and_messages_rows_stay(conn: Conn) -> None:
    chat = await new_chat(conn)
    message = await messaging.add_message(conn, chat.id, role="user", content="hello")
    await messaging.delete_chat(conn, chat.id)
    assert await scalar(conn, SELECT_CHAT_DELETED_AT, [chat.id]) is not None
    assert await scalar(conn, SELECT_MESSAGE_DELETED_AT, [message.id]) is not None


async def test_delete_chat_leaves_other_chats_and_their_messages_alone(conn: Conn) -> None:
    doomed, kept = await new_chat(conn), await new_chat(conn)
    await messaging.add_message(conn, doomed.id, role="user", content="bye")
    message = await messaging.add_message(conn, kept.id, role="user", content="stay")
    await messaging.delete_chat(conn, doomed.id)
    assert await messaging.get_chat(conn, kept.id) is not None
    assert await messaging.get_message(conn, message.id) == message
    assert await messaging.count_messages(conn, kept.id) == 1


async def test_delete_chat_of_a_chat_that_does_not_exist_raises_not_found(conn: Conn) -> None:
    with pytest.raises(NotFoundError):
        await messaging.delete_chat(conn, uuid4())


async def test_delete_chat_twice_raises_not_found_the_second_time(conn: Conn) -> None:
    chat = await new_chat(conn)
    await messaging.delete_chat(conn, chat.id)
    with pytest.raises(NotFoundError):
        await messaging.delete_chat(conn, chat.id)


# list_chats -------------------------------------------------------------------------------


async def test_list_chats_returns_only_the_owners_live_chats(conn: Conn) -> None:
    owner_id = uuid4()
    mine = await new_chat(conn, owner_id=owner_id)
    deleted = await new_chat(conn, owner_id=owner_id)
    await new_chat(conn)  # somebody else's
    await messaging.delete_chat(conn, deleted.id)
    page = await messaging.list_chats(conn, owner_id=owner_id)
    assert [chat.id for chat in page.items] == [mine.id]
    assert page.next_cursor is None


async def test_list_chats_puts_the_most_recently_created_chat_first(conn: Conn) -> None:
    owner_id = uuid4()
    first = await new_chat(conn, owner_id=owner_id)
    second = await new_chat(conn, owner_id=owner_id)
    page = await messaging.list_chats(conn, owner_id=owner_id)
    assert [chat.id for chat in page.items] == [second.id, first.id]


async def test_list_chats_moves_a_chat_that_gets_a_new_message_to_the_top(conn: Conn) -> None:
    owner_id = uuid4()
    older = await new_chat(conn, owner_id=owner_id)
    newer = await new_chat(conn, owner_id=owner_id)
    await messaging.add_message(conn, older.id, role="user", content="bump")
    page = await messaging.list_chats(conn, owner_id=owner_id)
    assert [chat.id for chat in page.items] == [older.id, newer.id]


async def test_list_chats_never_repeats_or_drops_a_chat_across_pages_with_equal_timestamps(
    db: DatabaseManager, conn: Conn
) -> None:
    owner_id = uuid4()
    async with db.session() as session:  # one transaction: every created_at is the same now()
        created = [await new_chat(session, owner_id=owner_id) for _ in range(7)]
    assert len({chat.created_at for chat in created}) == 1
    pages = await all_pages_of_chats(conn, owner_id, limit=3)
    assert [len(page) for page in pages] == [3, 3, 1]
    listed = [chat.id for page in pages for chat in page]
    assert listed == sorted((chat.id for chat in created), reverse=True)


async def test_list_chats_pages_by_activity_when_messages_arrive(
    db: DatabaseManager, conn: Conn
) -> None:
    owner_id = uuid4()
    chats = [await new_chat(conn, owner_id=owner_id) for _ in range(5)]
    async with db.session() as session:
        for chat in chats[1::2]:
            await messaging.add_message(session, chat.id, role="user", content="hi")
    pages = await all_pages_of_chats(conn, owner_id, limit=2)
    listed = [chat.id for page in pages for chat in page]
    bumped = [chats[3].id, chats[1].id]
    assert listed == [*bumped, chats[4].id, chats[2].id, chats[0].id]


async def test_list_chats_of_an_owner_without_chats_is_an_empty_last_page(conn: Conn) -> None:
    page = await messaging.list_chats(conn, owner_id=uuid4())
    assert page.items == [] and page.next_cursor is None


@pytest.mark.parametrize("limit", [0, -1, 1001, True, 2.5, "10"])
async def test_list_chats_rejects_a_limit_outside_1_to_1000(shared_conn: Conn, limit: Any) -> None:
    with pytest.raises(InvalidInputError, match=r"^limit: ") as error:
        await messaging.list_chats(shared_conn, owner_id=uuid4(), limit=limit)
    assert error.value.field == "limit"


@pytest.mark.parametrize(
    "cursor",
    ["garbage!", "e30", encode_cursor("yesterday", uuid4()), encode_cursor(A_DATE.isoformat())],
    ids=["not-base64", "not-a-list", "not-a-date", "wrong-length"],
)
async def test_list_chats_rejects_a_malformed_cursor_naming_cursor(
    shared_conn: Conn, cursor: str
) -> None:
    with pytest.raises(InvalidInputError, match=r"^cursor: ") as error:
        await messaging.list_chats(shared_conn, owner_id=uuid4(), cursor=cursor)
    assert error.value.field == "cursor"


async def test_list_chats_rejects_an_owner_id_that_is_not_a_uuid(shared_conn: Conn) -> None:
    with pytest.raises(InvalidInputError, match=r"^owner_id: "):
        await messaging.list_chats(shared_conn, owner_id="me")  # type: ignore[arg-type]


# add_message ------------------------------------------------------------------------------


async def test_add_message_returns_the_stored_message_with_the_chats_owner(conn: Conn) -> None:
    chat = await new_chat(conn)
    message = await messaging.add_message(
        conn,
        chat.id,
        role="assistant",
        content="Milk is on the list.",
        embedding=vector(1),
        token_count=7,
        metadata={"model": "gpt", "tools": [{"name": "add"}]},
    )
    assert (message.chat_id, message.owner_id, message.role, message.content) == (
        chat.id,
        chat.owner_id,
        "assistant",
        "Milk is on the list.",
    )
    assert (message.token_count, message.metadata) == (
        7,
        {"model": "gpt", "tools": [{"name": "add"}]},
    )
    assert message.embedding == as_float32(vector(1))
    assert message.created_at.tzinfo is not None and message.deleted_at is None
    assert await messaging.get_message(conn, message.id) == message


async def test_add_message_defaults_to_no_embedding_no_token_count_and_empty_metadata(
    conn: Conn,
) -> None:
    chat = await new_chat(conn)
    message = await messaging.add_message(conn, chat.id, role="user", content="")
    assert (message.content, message.embedding, message.token_count, message.metadata) == (
        "",
        None,
        None,
        {},
    )


async def test_add_message_sets_the_chats_last_message_at(conn: Conn) -> None:
    chat = await new_chat(conn)
    first = await messaging.add_message(conn, chat.id, role="user", content="one")
    second = await messaging.add_message(conn, chat.id, role="assistant", content="two")
    reloaded = await messaging.get_chat(conn, chat.id)
    assert reloaded is not None
    assert reloaded.last_message_at == second.created_at > first.created_at


async def test_messages_added_in_one_transaction_keep_their_insertion_order(
    db: DatabaseManager, conn: Conn
) -> None:
    chat = await new_chat(conn)
    async with db.session() as session:
        added = [
            await messaging.add_message(session, chat.id, role="user", content=str(n))
            for n in range(6)
        ]
    listed = (await messaging.list_messages(conn, chat.id)).items
    assert [message.id for message in listed] == [message.id for message in added]


async def test_add_message_to_a_chat_that_does_not_exist_raises_not_found(conn: Conn) -> None:
    with pytest.raises(NotFoundError):
        await messaging.add_message(conn, uuid4(), role="user", content="hello?")
    assert await scalar(conn, COUNT_ALL_MESSAGES) == 0


async def test_add_message_to_a_deleted_chat_raises_not_found(conn: Conn) -> None:
    chat = await new_chat(conn)
    await messaging.delete_chat(conn, chat.id)
    with pytest.raises(NotFoundError):
        await messaging.add_message(conn, chat.id, role="user", content="hello?")
    assert await scalar(conn, COUNT_ALL_MESSAGES) == 0


async def test_add_message_accepts_a_numpy_embedding(conn: Conn) -> None:
    chat = await new_chat(conn)
    array = np.asarray(vector(2), dtype=np.float64)
    message = await messaging.add_message(conn, chat.id, role="user", content="np", embedding=array)
    assert message.embedding == as_float32(array)


BAD_MESSAGE_INPUT = [
    ({"content": "nul \x00 inside"}, "content"),
    ({"role": "robot"}, "role"),
    ({"role": "USER"}, "role"),
    ({"token_count": -1}, "token_count"),
    ({"token_count": 1.5}, "token_count"),
    ({"metadata": {"k": "v\x00"}}, "metadata"),
    ({"metadata": {"k\x00": "v"}}, "metadata"),
    ({"metadata": {"outer": [{"inner": "\x00"}]}}, "metadata"),
    ({"metadata": {"outer": {"in\x00ner": 1}}}, "metadata"),
    ({"metadata": {"score": math.nan}}, "metadata"),
    ({"metadata": {"score": -math.inf}}, "metadata"),
    ({"embedding": [0.1] * (EMBEDDING_DIMENSIONS - 1)}, "embedding"),
    ({"embedding": [0.1] * (EMBEDDING_DIMENSIONS + 1)}, "embedding"),
    ({"embedding": np.zeros((2, EMBEDDING_DIMENSIONS // 2))}, "embedding"),
    ({"embedding": [*[0.1] * (EMBEDDING_DIMENSIONS - 1), math.nan]}, "embedding"),
    ({"embedding": [math.inf, *[0.1] * (EMBEDDING_DIMENSIONS - 1)]}, "embedding"),
    ({"embedding": [1e39] * EMBEDDING_DIMENSIONS}, "embedding"),
    ({"embedding": ["a"] * EMBEDDING_DIMENSIONS}, "embedding"),
    ({"embedding": "0.1,0.2"}, "embedding"),
    ({"embedding": 0.5}, "embedding"),
    ({"content": "lone \ud800 surrogate"}, "content"),
    ({"metadata": {"note": ["ok", "\udc00"]}}, "metadata"),
]
BAD_MESSAGE_IDS = [
    "nul-in-content",
    "unknown-role",
    "role-wrong-case",
    "negative-token-count",
    "fractional-token-count",
    "nul-in-metadata-value",
    "nul-in-metadata-key",
    "nul-nested-in-metadata-value",
    "nul-nested-in-metadata-key",
    "nan-in-metadata",
    "inf-in-metadata",
    "embedding-too-short",
    "embedding-too-long",
    "embedding-2d",
    "embedding-with-nan",
    "embedding-with-inf",
    "embedding-beyond-float32",
    "embedding-of-strings",
    "embedding-a-string",
    "embedding-a-scalar",
    "lone-surrogate-in-content",
    "lone-surrogate-in-metadata",
]


@pytest.mark.parametrize(("fields", "field"), BAD_MESSAGE_INPUT, ids=BAD_MESSAGE_IDS)
async def test_add_message_rejects_bad_input_naming_the_field_and_writes_nothing(
    shared_conn: Conn, fields: dict[str, Any], field: str
) -> None:
    await assert_add_message_refuses(shared_conn, fields, field)


async def assert_add_message_refuses(conn: Conn, fields: dict[str, Any], field: str) -> None:
    """add_message with `fields` raises InvalidInputError naming `field` and writes nothing."""
    chat = await new_chat(conn)
    before = await row_counts(conn)
    arguments = {"role": "user", "content": "hello", **fields}
    with pytest.raises(InvalidInputError) as error:
        await messaging.add_message(conn, chat.id, **arguments)
    assert error.value.field == field
    assert str(error.value).startswith(f"{field}: ")
    assert await row_counts(conn) == before
    assert await scalar(conn, SELECT_LAST_MESSAGE_AT, [chat.id]) is None


async def test_add_message_rejects_a_chat_id_that_is_not_a_uuid(shared_conn: Conn) -> None:
    before = await row_counts(shared_conn)
    with pytest.raises(InvalidInputError, match=r"^chat_id: ") as error:
        await messaging.add_message(shared_conn, "chat-1", role="user", content="x")  # type: ignore[arg-type]
    assert error.value.field == "chat_id"
    assert await row_counts(shared_conn) == before


async def test_a_message_whose_owner_differs_from_its_chats_violates_fk_messages_chats(
    conn: Conn,
) -> None:
    chat = await new_chat(conn)
    with pytest.raises(psycopg.errors.ForeignKeyViolation) as raised:
        await conn.execute(INSERT_MESSAGE_WITH_OWNER, [chat.id, uuid4()])
    error = translate(raised.value)
    assert isinstance(error, ForeignKeyError)
    assert error.constraint == "fk_messages_chats"
    assert str(error).startswith("fk_messages_chats: ")
    assert await scalar(conn, COUNT_ALL_MESSAGES) == 0


# add_messages -----------------------------------------------------------------------------


async def test_add_messages_returns_how_many_it_inserted_in_their_order(conn: Conn) -> None:
    chat = await new_chat(conn)
    batch = [
        {"chat_id": chat.id, "role": role, "content": f"message {n}"}
        for n, role in enumerate(["system", "user", "assistant", "tool", "user"])
    ]
    assert await messaging.add_messages(conn, batch) == 5
    listed = (await messaging.list_messages(conn, chat.id)).items
    assert [(message.role, message.content) for message in listed] == [
        (item["role"], item["content"]) for item in batch
    ]
    assert all(message.owner_id == chat.owner_id for message in listed)


async def test_add_messages_of_nothing_returns_zero(conn: Conn) -> None:
    assert await messaging.add_messages(conn, []) == 0


async def test_add_messages_accepts_dicts_and_message_creates_together(conn: Conn) -> None:
    chat = await new_chat(conn)
    batch: list[MessageCreate | dict[str, Any]] = [
        MessageCreate(chat_id=chat.id, role="user", content="model"),
        {"chat_id": str(chat.id), "role": "assistant", "content": "dict"},
    ]
    assert await messaging.add_messages(conn, batch) == 2
    listed = (await messaging.list_messages(conn, chat.id)).items
    assert [message.content for message in listed] == ["model", "dict"]


async def test_add_messages_round_trips_embeddings_token_counts_and_metadata(conn: Conn) -> None:
    chat = await new_chat(conn)
    await messaging.add_messages(
        conn,
        [
            {"chat_id": chat.id, "role": "user", "content": "list", "embedding": vector(3)},
            MessageCreate(
                chat_id=chat.id,
                role="assistant",
                content="numpy",
                embedding=np.asarray(vector(4)),
                token_count=12,
                metadata={"nested": {"ok": [1, None, "é"]}},
            ),
            {"chat_id": chat.id, "role": "tool", "content": "none"},
        ],
    )
    listed = (await messaging.list_messages(conn, chat.id)).items
    assert [message.embedding for message in listed] == [
        as_float32(vector(3)),
        as_float32(vector(4)),
        None,
    ]
    assert [(message.token_count, message.metadata) for message in listed] == [
        (None, {}),
        (12, {"nested": {"ok": [1, None, "é"]}}),
        (None, {}),
    ]


async def test_add_messages_copies_each_chats_owner_onto_its_messages(conn: Conn) -> None:
    first, second = await new_chat(conn), await new_chat(conn)
    await messaging.add_messages(
        conn,
        [
            {"chat_id": first.id, "role": "user", "content": "a"},
            {"chat_id": second.id, "role": "user", "content": "b"},
            {"chat_id": first.id, "role": "user", "content": "c"},
        ],
    )
    for chat, contents in ((first, ["a", "c"]), (second, ["b"])):
        listed = (await messaging.list_messages(conn, chat.id)).items
        assert [message.content for message in listed] == contents
        assert {message.owner_id for message in listed} == {chat.owner_id}


async def test_add_messages_sets_each_chats_last_message_at_to_its_newest_message(
    conn: Conn,
) -> None:
    first, second = await new_chat(conn), await new_chat(conn)
    await messaging.add_messages(
        conn,
        [
            {"chat_id": first.id, "role": "user", "content": "a"},
            {"chat_id": second.id, "role": "user", "content": "b"},
            {"chat_id": first.id, "role": "user", "content": "c"},
        ],
    )
    for chat in (first, second):
        newest = (await messaging.list_messages(conn, chat.id)).items[-1]
        assert await scalar(conn, SELECT_LAST_MESSAGE_AT, [chat.id]) == newest.created_at


async def test_add_messages_keeps_explicit_created_at_values(conn: Conn) -> None:
    chat = await new_chat(conn)
    stamps = [A_DATE, A_DATE + timedelta(minutes=1)]
    await messaging.add_messages(
        conn,
        [{"chat_id": chat.id, "role": "user", "content": "x", "created_at": at} for at in stamps],
    )
    listed = (await messaging.list_messages(conn, chat.id)).items
    assert [message.created_at for message in listed] == stamps
    assert await scalar(conn, SELECT_LAST_MESSAGE_AT, [chat.id]) == stamps[-1]


async def test_add_messages_to_a_chat_that_does_not_exist_raises_not_found_and_writes_nothing(
    conn: Conn,
) -> None:
    chat = await new_chat(conn)
    missing = uuid4()
    with pytest.raises(NotFoundError, match=str(missing)):
        await messaging.add_messages(
            conn,
            [
                {"chat_id": chat.id, "role": "user", "content": "fine"},
                {"chat_id": missing, "role": "user", "content": "lost"},
            ],
        )
    assert await scalar(conn, COUNT_ALL_MESSAGES) == 0
    assert await scalar(conn, SELECT_LAST_MESSAGE_AT, [chat.id]) is None


async def test_add_messages_to_a_deleted_chat_raises_not_found(conn: Conn) -> None:
    chat = await new_chat(conn)
    await messaging.delete_chat(conn, chat.id)
    with pytest.raises(NotFoundError):
        await messaging.add_messages(conn, [{"chat_id": chat.id, "role": "user", "content": "x"}])
    assert await scalar(conn, COUNT_ALL_MESSAGES) == 0


async def test_add_messages_not_found_inside_a_session_keeps_the_sessions_earlier_work(
    db: DatabaseManager, conn: Conn
) -> None:
    async with db.session() as session:
        chat = await new_chat(session)
        with pytest.raises(NotFoundError):
            await messaging.add_messages(
                session, [{"chat_id": uuid4(), "role": "user", "content": "x"}]
            )
        await messaging.add_message(session, chat.id, role="user", content="still works")
    assert await messaging.count_messages(conn, chat.id) == 1


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"content": "bad \x00"}, "messages[3].content"),
        ({"role": "narrator"}, "messages[3].role"),
        ({"token_count": -5}, "messages[3].token_count"),
        ({"metadata": {"a": {"b\x00": 1}}}, "messages[3].metadata"),
        ({"embedding": [0.0] * 3}, "messages[3].embedding"),
        ({"chat_id": "not-a-uuid"}, "messages[3].chat_id"),
        ({"created_at": datetime(2024, 1, 1)}, "messages[3].created_at"),
        ({"surprise": 1}, "messages[3].surprise"),
    ],
    ids=[
        "nul-content",
        "unknown-role",
        "negative-token-count",
        "nul-metadata-key",
        "wrong-dimension",
        "chat-id-not-uuid",
        "naive-created-at",
        "unknown-field",
    ],
)
async def test_add_messages_rejects_an_invalid_item_naming_its_index_and_writes_nothing(
    shared_conn: Conn, item: dict[str, Any], field: str
) -> None:
    chat = await new_chat(shared_conn)
    valid = {"chat_id": chat.id, "role": "user", "content": "fine"}
    batch = [valid, valid, valid, {**valid, **item}, valid]
    before = await row_counts(shared_conn)
    with pytest.raises(InvalidInputError) as error:
        await messaging.add_messages(shared_conn, batch)
    assert error.value.field == field
    assert str(error.value).startswith(f"{field}: ")
    assert await row_counts(shared_conn) == before
    assert await scalar(shared_conn, SELECT_LAST_MESSAGE_AT, [chat.id]) is None


def test_message_create_dict_has_the_fields_types_and_defaults_of_message_create() -> None:
    # add_messages validates dicts with MessageCreateDict: the two must accept the same input.
    hints = get_type_hints(messaging.MessageCreateDict, include_extras=True)
    assert list(hints) == list(MessageCreate.model_fields)
    required = {name for name, hint in hints.items() if get_origin(hint) is not NotRequired}
    assert required == {
        name for name, field in MessageCreate.model_fields.items() if field.is_required()
    }
    for name, field in MessageCreate.model_fields.items():
        declared = hints[name]
        if get_origin(declared) is NotRequired:
            (declared,) = get_args(declared)
        expected = (
            Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
        )
        assert declared == expected, name


def test_message_create_refuses_an_invalid_message_on_construction() -> None:
    # So add_messages, which trusts MessageCreate instances, never receives a bad one.
    with pytest.raises(ValueError, match="role"):
        MessageCreate(chat_id=uuid4(), role="robot", content="x")  # type: ignore[arg-type]


# get_message / delete_message / count_messages --------------------------------------------


async def test_get_message_returns_none_for_a_message_that_does_not_exist(conn: Conn) -> None:
    assert await messaging.get_message(conn, uuid4()) is None


async def test_get_message_rejects_an_id_that_is_not_a_uuid(shared_conn: Conn) -> None:
    with pytest.raises(InvalidInputError, match=r"^message_id: "):
        await messaging.get_message(shared_conn, 42)  # type: ignore[arg-type]


async def test_delete_message_hides_it_from_get_list_and_count(conn: Conn) -> None:
    chat = await new_chat(conn)
    kept = await messaging.add_message(conn, chat.id, role="user", content="keep")
    gone = await messaging.add_message(conn, chat.id, role="user", content="gone")
    await messaging.delete_message(conn, gone.id)
    assert await messaging.get_message(conn, gone.id) is None
    assert [m.id for m in (await messaging.list_messages(conn, chat.id)).items] == [kept.id]
    assert await messaging.count_messages(conn, chat.id) == 1
    assert await scalar(conn, SELECT_MESSAGE_DELETED_AT, [gone.id]) is not None


async def test_delete_message_of_a_message_that_does_not_exist_raises_not_found(
    conn: Conn,
) -> None:
    with pytest.raises(NotFoundError):
        await messaging.delete_message(conn, uuid4())


async def test_delete_message_twice_raises_not_found_the_second_time(conn: Conn) -> None:
    chat = await new_chat(conn)
    message = await messaging.add_message(conn, chat.id, role="user", content="x")
    await messaging.delete_message(conn, message.id)
    with pytest.raises(NotFoundError):
        await messaging.delete_message(conn, message.id)


async def test_count_messages_counts_the_live_messages_of_that_chat_only(conn: Conn) -> None:
    chat, other = await new_chat(conn), await new_chat(conn)
    await messaging.add_messages(
        conn, [{"chat_id": chat.id, "role": "user", "content": str(n)} for n in range(4)]
    )
    await messaging.add_message(conn, other.id, role="user", content="elsewhere")
    assert await messaging.count_messages(conn, chat.id) == 4


async def test_count_messages_of_a_chat_that_does_not_exist_is_zero(conn: Conn) -> None:
    assert await messaging.count_messages(conn, uuid4()) == 0


# list_messages ----------------------------------------------------------------------------


async def test_list_messages_returns_the_newest_page_in_chronological_order(conn: Conn) -> None:
    chat = await new_chat(conn)
    added = [
        await messaging.add_message(conn, chat.id, role="user", content=str(n)) for n in range(5)
    ]
    page = await messaging.list_messages(conn, chat.id, limit=3)
    assert [message.content for message in page.items] == ["2", "3", "4"]
    assert page.next_cursor is not None
    older = await messaging.list_messages(conn, chat.id, limit=3, before=page.next_cursor)
    assert [message.id for message in older.items] == [added[0].id, added[1].id]
    assert older.next_cursor is None


async def test_list_messages_only_returns_that_chats_messages(conn: Conn) -> None:
    chat, other = await new_chat(conn), await new_chat(conn)
    await messaging.add_message(conn, other.id, role="user", content="other")
    mine = await messaging.add_message(conn, chat.id, role="user", content="mine")
    assert [m.id for m in (await messaging.list_messages(conn, chat.id)).items] == [mine.id]


async def test_list_messages_with_exactly_limit_messages_has_no_next_cursor(conn: Conn) -> None:
    chat = await new_chat(conn)
    await messaging.add_messages(
        conn, [{"chat_id": chat.id, "role": "user", "content": str(n)} for n in range(3)]
    )
    page = await messaging.list_messages(conn, chat.id, limit=3)
    assert len(page.items) == 3 and page.next_cursor is None


async def test_list_messages_never_repeats_or_drops_a_message_across_pages_with_equal_timestamps(
    conn: Conn,
) -> None:
    chat = await new_chat(conn)
    await messaging.add_messages(
        conn,
        [
            {"chat_id": chat.id, "role": "user", "content": str(n), "created_at": A_DATE}
            for n in range(8)
        ],
    )
    pages = await all_pages_of_messages(conn, chat.id, limit=3)
    assert [len(page) for page in pages] == [3, 3, 2]
    chronological = [message for page in reversed(pages) for message in page]
    assert [message.id for message in chronological] == sorted(m.id for m in chronological)
    assert len({message.id for message in chronological}) == 8
    assert {message.created_at for message in chronological} == {A_DATE}


async def test_list_messages_pages_are_stable_when_older_and_equal_timestamps_mix(
    conn: Conn,
) -> None:
    chat = await new_chat(conn)
    stamps = [A_DATE - timedelta(seconds=1)] * 3 + [A_DATE] * 4 + [A_DATE + timedelta(seconds=1)]
    await messaging.add_messages(
        conn,
        [
            {"chat_id": chat.id, "role": "user", "content": str(n), "created_at": at}
            for n, at in enumerate(stamps)
        ],
    )
    pages = await all_pages_of_messages(conn, chat.id, limit=2)
    chronological = [message for page in reversed(pages) for message in page]
    assert [(m.created_at, m.id) for m in chronological] == sorted(
        (m.created_at, m.id) for m in chronological
    )
    assert len({message.id for message in chronological}) == len(stamps)


async def test_list_messages_of_a_chat_without_messages_is_an_empty_last_page(
    conn: Conn,
) -> None:
    chat = await new_chat(conn)
    page = await messaging.list_messages(conn, chat.id)
    assert page.items == [] and page.next_cursor is None


@pytest.mark.parametrize("limit", [0, -5, 1001, False, None, "3"])
async def test_list_messages_rejects_a_limit_outside_1_to_1000(
    shared_conn: Conn, limit: Any
) -> None:
    with pytest.raises(InvalidInputError, match=r"^limit: ") as error:
        await messaging.list_messages(shared_conn, uuid4(), limit=limit)
    assert error.value.field == "limit"


@pytest.mark.parametrize(
    "before",
    ["%%%", "bm90IGpzb24", encode_cursor("soon", uuid4()), encode_cursor(A_DATE.isoformat(), "x")],
    ids=["not-base64", "not-json", "not-a-date", "not-a-uuid"],
)
async def test_list_messages_rejects_a_malformed_cursor_naming_cursor(
    shared_conn: Conn, before: str
) -> None:
    with pytest.raises(InvalidInputError, match=r"^cursor: ") as error:
        await messaging.list_messages(shared_conn, uuid4(), before=before)
    assert error.value.field == "cursor"


# set_message_embedding --------------------------------------------------------------------


async def test_set_message_embedding_round_trips_a_list_within_float32_precision(
    conn: Conn,
) -> None:
    chat = await new_chat(conn)
    message = await messaging.add_message(conn, chat.id, role="user", content="embed me")
    await messaging.set_message_embedding(conn, message.id, vector(5))
    stored = await messaging.get_message(conn, message.id)
    assert stored is not None and stored.embedding is not None
    assert all(type(value) is float for value in stored.embedding)
    assert stored.embedding == as_float32(vector(5))
    np.testing.assert_allclose(stored.embedding, vector(5), rtol=1e-6)


async def test_set_message_embedding_round_trips_a_numpy_array(conn: Conn) -> None:
    chat = await new_chat(conn)
    message = await messaging.add_message(conn, chat.id, role="user", content="embed me")
    array = np.asarray(vector(6), dtype=np.float32)
    await messaging.set_message_embedding(conn, message.id, array)
    stored = await messaging.get_message(conn, message.id)
    assert stored is not None and stored.embedding == array.tolist()


async def test_set_message_embedding_replaces_an_existing_embedding(conn: Conn) -> None:
    chat = await new_chat(conn)
    message = await messaging.add_message(
        conn, chat.id, role="user", content="x", embedding=vector(7)
    )
    await messaging.set_message_embedding(conn, message.id, vector(8))
    stored = await messaging.get_message(conn, message.id)
    assert stored is not None and stored.embedding == as_float32(vector(8))


async def test_set_message_embedding_of_a_message_that_does_not_exist_raises_not_found(
    conn: Conn,
) -> None:
    with pytest.raises(NotFoundError):
        await messaging.set_message_embedding(conn, uuid4(), vector(9))


async def test_set_message_embedding_of_a_deleted_message_raises_not_found(conn: Conn) -> None:
    chat = await new_chat(conn)
    message = await messaging.add_message(conn, chat.id, role="user", content="x")
    await messaging.delete_message(conn, message.id)
    with pytest.raises(NotFoundError):
        await messaging.set_message_embedding(conn, message.id, vector(9))


@pytest.mark.parametrize(
    "embedding",
    [
        [0.5] * 3,
        np.zeros(EMBEDDING_DIMENSIONS + 1),
        [math.nan] * EMBEDDING_DIMENSIONS,
        [math.inf] * EMBEDDING_DIMENSIONS,
        [None] * EMBEDDING_DIMENSIONS,
        [object()] * EMBEDDING_DIMENSIONS,
        None,
    ],
    ids=["too-short", "too-long", "nan", "inf", "nones", "objects", "none"],
)
async def test_set_message_embedding_rejects_a_bad_embedding_and_keeps_the_old_one(
    shared_conn: Conn, embedding: Any
) -> None:
    chat = await new_chat(shared_conn)
    message = await messaging.add_message(
        shared_conn, chat.id, role="user", content="x", embedding=vector(10)
    )
    with pytest.raises(InvalidInputError, match=r"^embedding: ") as error:
        await messaging.set_message_embedding(shared_conn, message.id, embedding)
    assert error.value.field == "embedding"
    assert await messaging.get_message(shared_conn, message.id) == message


@pytest.mark.filterwarnings("error")
async def test_an_embedding_beyond_float32_range_is_refused_without_a_runtime_warning(
    shared_conn: Conn,
) -> None:
    with pytest.raises(InvalidInputError, match=r"^embedding: .*float32"):
        await messaging.set_message_embedding(
            shared_conn, uuid4(), [3.5e38 * 10] * EMBEDDING_DIMENSIONS
        )


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda conn: messaging.update_chat(conn, "x", title="t"), "chat_id"),
        (lambda conn: messaging.delete_chat(conn, "x"), "chat_id"),
        (lambda conn: messaging.delete_message(conn, "x"), "message_id"),
        (lambda conn: messaging.count_messages(conn, "x"), "chat_id"),
        (lambda conn: messaging.list_messages(conn, "x"), "chat_id"),
        (lambda conn: messaging.set_message_embedding(conn, "x", vector(0)), "message_id"),
        (
            lambda conn: messaging.add_messages(
                conn, [{"chat_id": "x", "role": "user", "content": "c"}]
            ),
            "messages[0].chat_id",
        ),
    ],
    ids=[
        "update_chat",
        "delete_chat",
        "delete_message",
        "count_messages",
        "list_messages",
        "set_message_embedding",
        "add_messages",
    ],
)
async def test_every_id_argument_that_is_not_a_uuid_is_refused_naming_it(
    shared_conn: Conn, call: Any, field: str
) -> None:
    with pytest.raises(InvalidInputError) as error:
        await call(shared_conn)
    assert error.value.field == field
    assert str(error.value).startswith(f"{field}: ")


# Any text round-trips ---------------------------------------------------------------------

TRICKY_TEXTS = [
    "it's \"quoted\" `back` and 'single'",
    "back\\slash \\x00 \\\\ \\n literally",
    "$$ dollar $tag$ quoting $$",
    "-- a comment\n/* and another */; DROP TABLE messaging.messages; --",
    "%s %% %(x)s %(content)s {} {0}",
    "Ünïcödé — naïve café, 日本語, Ελληνικά",
    "emoji 👩🏽‍💻🚀🇺🇦 and ZWJ sequences",
    "RTL \u202e עברית العربية \u200f mixed",
    "\r\n\t whitespace \x0b\x0c\u00a0\u2028\u2029 ",
    "\x01\x1f\x7f control characters",
    "x" * 200_000,
    "🙂" * 50_000,
    "",
]


def with_examples(texts: list[str]) -> Any:
    """`@example(content=text)` for each text: cases hypothesis must always try."""

    def decorate(test: Any) -> Any:
        for text in texts:
            test = example(content=text)(test)
        return test

    return decorate


@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    max_examples=150,
    deadline=None,
)
@given(content=st.text(st.characters(codec="utf-8", exclude_characters="\x00")))
@with_examples(TRICKY_TEXTS)
async def test_any_text_without_nul_round_trips_exactly_through_add_and_get_message(
    shared_conn: Conn, content: str
) -> None:
    title = content.strip()[:500] or None
    chat = await new_chat(shared_conn, title=title, metadata={content: content})
    added = await messaging.add_message(shared_conn, chat.id, role="user", content=content)
    stored = await messaging.get_message(shared_conn, added.id)
    assert stored is not None and stored.content == content
    reloaded = await messaging.get_chat(shared_conn, chat.id)
    assert reloaded is not None
    assert (reloaded.title, reloaded.metadata) == (title, {content: content})


# Races, run for real on separate connections ------------------------------------------------

SELECT_LIVE_MESSAGES_OF_CHAT = """
SELECT count(*) FROM messaging.messages WHERE chat_id = %s AND deleted_at IS NULL
"""
SELECT_MESSAGE_STAMPS = """
SELECT content, created_at FROM messaging.messages WHERE chat_id = %s ORDER BY created_at, id
"""
FLAG_CHAT_DELETED_ONLY = "UPDATE messaging.chats SET deleted_at = now() WHERE id = %s"


async def test_delete_chat_racing_add_message_leaves_no_live_message_in_the_deleted_chat(
    db: DatabaseManager, conn: Conn
) -> None:
    # The writer holds the chat's lock with its message uncommitted; the delete waits for it,
    # then must see (and delete) the message committed while it waited.

    chat = await new_chat(conn)
    async with db.session() as writer:
        await messaging.add_message(writer, chat.id, role="user", content="sent as it closed")

        async def delete() -> None:
            async with db.session() as deleter:
                await messaging.delete_chat(deleter, chat.id)

        deleting = asyncio.create_task(delete())
        await wait_for_lock_waiters(conn)
    await deleting
    assert await scalar(conn, SELECT_LIVE_MESSAGES_OF_CHAT, [chat.id]) == 0


async def test_add_message_waiting_for_a_chat_being_deleted_is_refused(
    db: DatabaseManager, conn: Conn
) -> None:
    chat = await new_chat(conn)

    async def add() -> None:
        async with db.session() as writer:
            await messaging.add_message(writer, chat.id, role="user", content="too late")

    async with db.session() as deleter:
        await messaging.delete_chat(deleter, chat.id)
        adding = asyncio.create_task(add())
        await wait_for_lock_waiters(conn)
    with pytest.raises(NotFoundError):
        await adding
    assert await scalar(conn, COUNT_ALL_MESSAGES) == 0


@pytest.mark.parametrize("first", ["delete", "add_messages"])
async def test_add_messages_and_a_soft_delete_of_the_chat_exclude_each_other(
    db: DatabaseManager, conn: Conn, first: str
) -> None:
    # FOR KEY SHARE did not conflict with the soft delete's UPDATE: a COPY could land live
    # messages in a chat deleted at the same moment. Whichever goes first, none stays live.

    chat, other = await new_chat(conn), await new_chat(conn)
    batch = [
        MessageCreate(chat_id=chat_id, role="user", content=f"m{index}")
        for index, chat_id in enumerate([other.id, chat.id, other.id, chat.id])
    ]

    async def add() -> None:
        async with db.session() as writer:
            await messaging.add_messages(writer, batch)

    async def delete() -> None:
        async with db.session() as deleter:
            await messaging.delete_chat(deleter, chat.id)

    waiter = add if first == "delete" else delete
    async with db.session() as held:
        if first == "delete":
            await messaging.delete_chat(held, chat.id)
        else:
            await messaging.add_messages(held, batch)
        waiting = asyncio.create_task(waiter())
        await wait_for_lock_waiters(conn)
    if first == "delete":
        with pytest.raises(NotFoundError):
            await waiting
        assert await scalar(conn, COUNT_ALL_MESSAGES) == 0
    else:
        await waiting
        assert await scalar(conn, SELECT_LIVE_MESSAGES_OF_CHAT, [chat.id]) == 0
        assert await scalar(conn, SELECT_LIVE_MESSAGES_OF_CHAT, [other.id]) == 2


async def test_concurrent_add_messages_over_the_same_chats_in_any_order_do_not_deadlock(
    db: DatabaseManager, conn: Conn
) -> None:
    chats = [await new_chat(conn) for _ in range(4)]

    async def add(order: list[Chat], rounds: int) -> None:
        for round in range(rounds):
            async with db.session() as writer:
                await messaging.add_messages(
                    writer,
                    [{"chat_id": c.id, "role": "user", "content": f"{round}"} for c in order],
                )

    await asyncio.gather(add(chats, 15), add(chats[::-1], 15), add(chats[1:] + chats[:1], 15))
    for chat in chats:
        assert await messaging.count_messages(conn, chat.id) == 45


async def test_messages_of_one_chat_are_stamped_in_commit_order(
    db: DatabaseManager, conn: Conn
) -> None:
    # Writers that hold their transactions open across several messages, started in a
    # shuffled order: each holds the chat's lock from its first message to its commit, so its
    # messages must form one block, and the blocks must follow the commits. A stamp taken
    # before the lock put a waiting writer's message inside another writer's block, where a
    # reader paging by cursor could have passed it already.
    import random

    chat = await new_chat(conn)
    commits: list[int] = []
    rng = random.Random(7)
    starts = list(range(6))
    rng.shuffle(starts)

    async def write(writer_id: int, start: int) -> None:
        await asyncio.sleep(start * 0.01)
        async with db.session() as writer:
            for part in range(3):
                await messaging.add_message(
                    writer, chat.id, role="user", content=f"{writer_id}:{part}"
                )
                await asyncio.sleep(rng.random() * 0.02)
        commits.append(writer_id)

    await asyncio.gather(*(write(writer_id, start) for writer_id, start in enumerate(starts)))
    cursor = await conn.execute(SELECT_MESSAGE_STAMPS, [chat.id])
    order = [int(content.split(":")[0]) for content, _ in await cursor.fetchall()]
    assert order == [writer_id for writer_id in commits for _ in range(3)]


async def test_a_reader_paging_by_cursor_never_misses_a_message_committed_later(
    db: DatabaseManager, conn: Conn
) -> None:
    # The reader keeps the cursor of the newest message it has seen and asks for what is
    # newer by reading every page back to that cursor; with stamps in commit order nothing
    # can appear behind the cursor after it was read.
    chat = await new_chat(conn)
    seen: set[str] = set()
    done = asyncio.Event()

    async def write(writer_id: int) -> None:
        for part in range(5):
            async with db.session() as writer:
                await messaging.add_message(
                    writer, chat.id, role="user", content=f"{writer_id}:{part}"
                )
                await asyncio.sleep(0.003 * writer_id)

    async def read() -> None:
        newest: tuple[datetime, UUID] | None = None
        while True:
            finished = done.is_set()
            async with db.connection() as reader:
                page = await messaging.list_messages(reader, chat.id, limit=1000)
            for message in page.items:
                key = (message.created_at, message.id)
                if message.content not in seen:
                    assert newest is None or key > newest, "a message appeared behind the cursor"
                    seen.add(message.content)
            if page.items:
                newest = (page.items[-1].created_at, page.items[-1].id)
            if finished:
                return
            await asyncio.sleep(0.001)

    reading = asyncio.create_task(read())
    await asyncio.gather(*(write(writer_id) for writer_id in range(4)))
    done.set()
    await reading
    assert len(seen) == 20


async def test_messages_of_a_deleted_chat_are_never_listed_counted_got_or_found(
    conn: Conn,
) -> None:
    # Only the chat carries the flag here (as after a crash between two statements, or a
    # hand-written UPDATE in psql): every read path must still hide its messages.
    owner = uuid4()
    chat = await new_chat(conn, owner_id=owner)
    embedding = vector(1)
    message = await messaging.add_message(
        conn, chat.id, role="user", content="buy milk", embedding=embedding
    )
    await conn.execute(FLAG_CHAT_DELETED_ONLY, [chat.id])
    assert (await messaging.list_messages(conn, chat.id)).items == []
    assert await messaging.count_messages(conn, chat.id) == 0
    assert await messaging.get_message(conn, message.id) is None
    assert await messaging.search_messages(conn, owner_id=owner, embedding=embedding) == []
    assert (
        await messaging.hybrid_search_messages(
            conn, owner_id=owner, embedding=embedding, query="milk"
        )
        == []
    )


# Strict input: no raw Python error escapes, every refusal names its field ---------------------


def cyclic() -> dict[str, Any]:
    loop: dict[str, Any] = {"a": 1}
    loop["self"] = loop
    return loop


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"x": value}
    return value


ONE_HOT = [1.0] + [0.0] * (EMBEDDING_DIMENSIONS - 1)
STRICT_MESSAGE_INPUT = [
    ({"token_count": True}, "token_count"),
    ({"token_count": 2**31}, "token_count"),
    ({"token_count": 2**63}, "token_count"),
    ({"embedding": [True] + [0.5] * (EMBEDDING_DIMENSIONS - 1)}, "embedding"),
    ({"embedding": ["0.5"] * EMBEDDING_DIMENSIONS}, "embedding"),
    ({"embedding": [1 + 2j] * EMBEDDING_DIMENSIONS}, "embedding"),
    ({"embedding": np.ones(EMBEDDING_DIMENSIONS, dtype=bool)}, "embedding"),
    ({"embedding": np.ones(EMBEDDING_DIMENSIONS, dtype=complex)}, "embedding"),
    ({"embedding": np.array(["0.5"] * EMBEDDING_DIMENSIONS)}, "embedding"),
    ({"embedding": np.ones(EMBEDDING_DIMENSIONS, dtype="datetime64[s]")}, "embedding"),
    ({"embedding": np.array([0.5] * EMBEDDING_DIMENSIONS, dtype=object)}, "embedding"),
    ({"embedding": [0.0] * EMBEDDING_DIMENSIONS}, "embedding"),
    ({"embedding": np.zeros(EMBEDDING_DIMENSIONS)}, "embedding"),
    ({"metadata": []}, "metadata"),
    ({"metadata": 0}, "metadata"),
    ({"metadata": ""}, "metadata"),
    ({"metadata": False}, "metadata"),
    ({"metadata": cyclic()}, "metadata"),
    ({"metadata": nested(5000)}, "metadata"),
    ({"metadata": {"big": 10**400}}, "metadata"),
    ({"metadata": {"big": [2**63]}}, "metadata"),
]
STRICT_MESSAGE_IDS = [
    "token-count-bool",
    "token-count-beyond-int4",
    "token-count-beyond-int8",
    "embedding-with-a-bool",
    "embedding-of-numeric-strings",
    "embedding-of-complex",
    "embedding-bool-array",
    "embedding-complex-array",
    "embedding-string-array",
    "embedding-datetime64-array",
    "embedding-object-array",
    "zero-vector",
    "zero-array",
    "metadata-empty-list",
    "metadata-zero",
    "metadata-empty-string",
    "metadata-false",
    "metadata-cyclic",
    "metadata-too-deep",
    "metadata-integer-too-large-for-python-json",
    "metadata-integer-beyond-bigint",
]


@pytest.mark.parametrize(("fields", "field"), STRICT_MESSAGE_INPUT, ids=STRICT_MESSAGE_IDS)
async def test_add_message_is_strict_naming_the_field_and_writes_nothing(
    shared_conn: Conn, fields: dict[str, Any], field: str
) -> None:
    await assert_add_message_refuses(shared_conn, fields, field)


@pytest.mark.parametrize(
    ("value", "field"),
    [(b"0123456789abcdef", "owner_id"), (uuid4().int, "owner_id"), (None, "owner_id")],
    ids=["bytes", "int", "none"],
)
async def test_create_chat_takes_no_bytes_or_int_for_a_uuid(
    shared_conn: Conn, value: Any, field: str
) -> None:
    before = await row_counts(shared_conn)
    with pytest.raises(InvalidInputError, match=rf"^{field}: ") as error:
        await messaging.create_chat(shared_conn, owner_id=value)
    assert error.value.field == field
    assert await row_counts(shared_conn) == before


@pytest.mark.parametrize(
    "created_at",
    [1_700_000_000, 1_700_000_000.5, "2024-05-01T12:00:00+00:00", datetime(2024, 5, 1)],
    ids=["unix-int", "unix-float", "string", "naive"],
)
async def test_add_messages_takes_only_aware_datetimes_naming_the_field(
    shared_conn: Conn, created_at: Any
) -> None:
    chat = await new_chat(shared_conn)
    before = await row_counts(shared_conn)
    item = {"chat_id": chat.id, "role": "user", "content": "x", "created_at": created_at}
    with pytest.raises(InvalidInputError, match=r"^messages\[0\]\.created_at: "):
        await messaging.add_messages(shared_conn, [item])
    with pytest.raises(InvalidInputError, match=r"^created_at: "):
        MessageCreate(**item)  # type: ignore[arg-type]
    assert await row_counts(shared_conn) == before


@pytest.mark.parametrize(
    ("messages", "field"),
    [(None, "messages"), (42, "messages"), ("text", "messages"), ({"a": 1}, "messages")],
    ids=["none", "int", "string", "mapping"],
)
async def test_add_messages_refuses_what_is_not_a_sequence_naming_messages(
    shared_conn: Conn, messages: Any, field: str
) -> None:
    with pytest.raises(InvalidInputError, match=rf"^{field}: ") as error:
        await messaging.add_messages(shared_conn, messages)
    assert error.value.field == field


@pytest.mark.parametrize(
    ("embeddings", "field"),
    [
        (None, "embeddings"),
        (7, "embeddings"),
        ([uuid4()], "embeddings[0]"),
        ([(uuid4(),)], "embeddings[0]"),
        ([(uuid4(), ONE_HOT, 1)], "embeddings[0]"),
        ([(b"0123456789abcdef", ONE_HOT)], "embeddings[0].message_id"),
    ],
    ids=["none", "int", "a-uuid-not-a-pair", "one-value", "three-values", "bytes-id"],
)
async def test_set_message_embeddings_refuses_what_is_not_pairs_naming_the_field(
    shared_conn: Conn, embeddings: Any, field: str
) -> None:
    with pytest.raises(InvalidInputError) as error:
        await messaging.set_message_embeddings(shared_conn, embeddings)
    assert error.value.field == field
    assert str(error.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"limit": True}, "limit"),
        ({"ef_search": True}, "ef_search"),
        ({"limit": 10.0}, "limit"),
        ({"query": "milk " * 3000}, "query"),
    ],
    ids=["limit-bool", "ef-search-bool", "limit-float", "query-too-long"],
)
async def test_search_is_strict_naming_the_field(
    shared_conn: Conn, arguments: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInputError, match=rf"^{field}: ") as error:
        await messaging.hybrid_search_messages(
            shared_conn,
            owner_id=uuid4(),
            embedding=ONE_HOT,
            **{"query": "milk", **arguments},
        )
    assert error.value.field == field


@pytest.mark.parametrize("limit", [True, False])
async def test_list_messages_takes_no_bool_for_a_limit(shared_conn: Conn, limit: bool) -> None:
    chat = await new_chat(shared_conn)
    with pytest.raises(InvalidInputError, match=r"^limit: "):
        await messaging.list_messages(shared_conn, chat.id, limit=limit)


async def test_a_cursor_of_chat_b_is_refused_for_chat_a(shared_conn: Conn) -> None:
    a, b = await new_chat(shared_conn), await new_chat(shared_conn)
    for chat in (a, b):
        for index in range(3):
            await messaging.add_message(shared_conn, chat.id, role="user", content=f"{index}")
    page_of_b = await messaging.list_messages(shared_conn, b.id, limit=1)
    assert page_of_b.next_cursor is not None
    with pytest.raises(InvalidInputError, match=r"^cursor: belongs to another list"):
        await messaging.list_messages(shared_conn, a.id, before=page_of_b.next_cursor)
    chats_of_b = await messaging.list_chats(shared_conn, owner_id=b.owner_id, limit=1)
    other = await new_chat(shared_conn, owner_id=b.owner_id)
    assert other is not None
    chats_of_b = await messaging.list_chats(shared_conn, owner_id=b.owner_id, limit=1)
    assert chats_of_b.next_cursor is not None
    with pytest.raises(InvalidInputError, match=r"^cursor: belongs to another list"):
        await messaging.list_chats(shared_conn, owner_id=a.owner_id, cursor=chats_of_b.next_cursor)


@pytest.mark.parametrize(
    "cursor",
    [b"bytes", 12, "x" * 100_000, "€uro", encode_cursor("messages:x", "2024-05-01T12:00:00")],
    ids=["bytes", "int", "huge", "not-ascii", "naive-and-foreign"],
)
async def test_list_messages_refuses_any_garbage_cursor_naming_cursor(
    shared_conn: Conn, cursor: Any
) -> None:
    chat = await new_chat(shared_conn)
    with pytest.raises(InvalidInputError, match=r"^cursor: ") as error:
        await messaging.list_messages(shared_conn, chat.id, before=cursor)
    assert error.value.field == "cursor"


async def test_content_whose_full_text_vector_is_too_large_is_invalid_input_naming_content(
    shared_conn: Conn,
) -> None:
    # PostgreSQL refuses a tsvector over 1 MB (the generated content_tsv column): distinct
    # words enough to pass that limit.
    chat = await new_chat(shared_conn)
    before = await row_counts(shared_conn)
    words = " ".join(f"w{index}x{index * 7}" for index in range(200_000))
    with pytest.raises(InvalidInputError, match=r"^content: too large") as error:
        await messaging.add_message(shared_conn, chat.id, role="user", content=words)
    assert error.value.field == "content" and not error.value.retryable
    assert await row_counts(shared_conn) == before
