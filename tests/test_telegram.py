"""telegram.sessions through app.telegram: session keys, sessions, FSM state and data, lists."""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import AsyncConnection

from app import messaging, telegram
from app.database import DatabaseManager
from app.database.errors import ForeignKeyError, InvalidInputError, NotFoundError
from app.telegram import SessionKey
from app.telegram.models import SessionKeyInput

BOT = 7_000_000_001
KEY = SessionKey(BOT, -100_123, 42)

Conn = AsyncConnection[Any]


async def count_sessions(conn: Conn) -> int:
    cursor = await conn.execute("SELECT count(*) FROM telegram.sessions")
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


# The package ------------------------------------------------------------------------------


def test_app_telegram_exports_the_models_of_telegram_models_and_the_functions_of_its_queries() -> (
    None
):
    from app.telegram import models, queries

    for name in ("SessionKey", "SessionUpsert", "TelegramSession"):
        assert getattr(telegram, name) is getattr(models, name)
        assert name in telegram.__all__
    for name in ("upsert_session", "link_chat", "set_state", "update_data", "list_active_sessions"):
        assert getattr(telegram, name) is getattr(queries, name)
        assert name in telegram.__all__


def test_every_statement_returning_sessions_selects_the_one_column_list_of_telegram_session() -> (
    None
):
    from app.telegram import queries

    fields = list(telegram.TelegramSession.model_fields)
    # each item's output name (state and data are masked once expired: "CASE … END AS state")
    assert [item.split()[-1] for item in queries.SESSION_COLUMNS.split(",")] == fields
    for statement in (
        queries.UPSERT_SESSION,
        queries.SELECT_SESSION,
        queries.LINK_CHAT,
        queries.SELECT_ACTIVE_SESSIONS_PAGE,
    ):
        assert queries.SESSION_COLUMNS in statement


def test_every_statement_finding_a_session_by_its_key_matches_the_key_one_way() -> None:
    from app.telegram import queries

    for statement in (
        queries.SELECT_SESSION,
        queries.DEACTIVATE_SESSION,
        queries.LINK_CHAT,
        queries.SELECT_STATE,
        queries.SELECT_DATA,
    ):
        assert queries.WHERE_SESSION_KEY in statement


# SessionKey -------------------------------------------------------------------------------


def test_session_key_has_aiogram_storage_key_defaults() -> None:
    key = SessionKey(bot_id=1, telegram_chat_id=2, telegram_user_id=3)
    assert (key.thread_id, key.business_connection_id, key.destiny) == (None, None, "default")


def test_session_keys_with_equal_parts_are_equal_and_hash_alike() -> None:
    assert SessionKey(1, 2, 3, 4, "bc", "d") == SessionKey(1, 2, 3, 4, "bc", "d")
    assert len({SessionKey(1, 2, 3), SessionKey(1, 2, 3), SessionKey(1, 2, 3, 4)}) == 2


def test_session_key_is_immutable() -> None:
    with pytest.raises(AttributeError):
        KEY.destiny = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("parts", "field"),
    [
        ({"bot_id": True}, "bot_id"),
        ({"bot_id": "1"}, "bot_id"),
        ({"telegram_chat_id": 1.0}, "telegram_chat_id"),
        ({"telegram_user_id": 2**63}, "telegram_user_id"),
        ({"thread_id": -(2**63) - 1}, "thread_id"),
        ({"business_connection_id": "x" * 201}, "business_connection_id"),
        ({"business_connection_id": "a\x00b"}, "business_connection_id"),
        ({"business_connection_id": "  "}, "business_connection_id"),
        ({"destiny": ""}, "destiny"),
        ({"destiny": "   "}, "destiny"),
        ({"destiny": "d" * 101}, "destiny"),
        ({"destiny": "d\x00"}, "destiny"),
    ],
)
def test_session_key_rejects_an_invalid_part_naming_it(parts: dict[str, Any], field: str) -> None:
    arguments: dict[str, Any] = {"bot_id": 1, "telegram_chat_id": 2, "telegram_user_id": 3}
    with pytest.raises(InvalidInputError) as error:
        SessionKey(**(arguments | parts))
    assert str(error.value).startswith(f"{field}:")


ID_PARTS = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64), st.booleans(), st.floats(), st.text()
)


@given(bot=ID_PARTS, chat=ID_PARTS, user=ID_PARTS)
def test_a_usual_key_is_accepted_or_refused_as_its_input_model_decides(
    bot: Any, chat: Any, user: Any
) -> None:
    # SessionKey checks the usual key (ids only) without pydantic: the same verdict.
    parts = {"bot_id": bot, "telegram_chat_id": chat, "telegram_user_id": user}
    try:
        SessionKeyInput(**parts, thread_id=None, business_connection_id=None, destiny="default")
    except InvalidInputError as expected:
        with pytest.raises(InvalidInputError) as error:
            SessionKey(**parts)
        assert str(error.value) == str(expected)
    else:
        assert SessionKey(**parts).telegram_chat_id == chat


def test_session_key_accepts_the_extremes_of_bigint() -> None:
    key = SessionKey(2**63 - 1, -(2**63), 0, thread_id=2**63 - 1, destiny="d" * 100)
    assert key.bot_id == 2**63 - 1


async def test_query_functions_refuse_a_key_that_is_not_a_session_key(conn: Conn) -> None:
    with pytest.raises(InvalidInputError, match=r"^key:"):
        await telegram.set_state(conn, (BOT, 1, 2), "s")  # type: ignore[arg-type]
    assert await count_sessions(conn) == 0


# upsert_session ---------------------------------------------------------------------------


async def test_upsert_session_creates_an_active_session_with_empty_fsm(conn: Conn) -> None:
    session = await telegram.upsert_session(conn, KEY, username="alice", language_code="pt-BR")
    assert session.key == KEY
    assert (session.username, session.language_code) == ("alice", "pt-BR")
    assert session.is_active
    assert (session.state, session.data, session.chat_id) == (None, {}, None)
    assert session.last_seen_at.tzinfo is not None
    assert await telegram.get_session(conn, KEY) == session


async def test_upsert_session_twice_updates_the_one_row(conn: Conn) -> None:
    first = await telegram.upsert_session(conn, KEY, username="alice")
    second = await telegram.upsert_session(conn, KEY, username="alice2", language_code="en")
    assert second.id == first.id
    assert (second.username, second.language_code) == ("alice2", "en")
    assert await count_sessions(conn) == 1


async def test_upsert_session_keeps_the_stored_username_and_language_when_given_none(
    conn: Conn,
) -> None:
    await telegram.upsert_session(conn, KEY, username="alice", language_code="en")
    session = await telegram.upsert_session(conn, KEY)
    assert (session.username, session.language_code) == ("alice", "en")


async def test_upsert_session_touches_last_seen_at(conn: Conn) -> None:
    first = await telegram.upsert_session(conn, KEY)
    second = await telegram.upsert_session(conn, KEY)
    assert second.last_seen_at > first.last_seen_at
    assert second.created_at == first.created_at


async def test_upsert_session_reactivates_a_deactivated_session(conn: Conn) -> None:
    await telegram.upsert_session(conn, KEY)
    await telegram.deactivate_session(conn, KEY)
    session = await telegram.upsert_session(conn, KEY)
    assert session.is_active


async def test_upsert_session_keeps_fsm_state_and_data(conn: Conn) -> None:
    await telegram.set_state(conn, KEY, "Form:name")
    await telegram.set_data(conn, KEY, {"name": "Ann"})
    session = await telegram.upsert_session(conn, KEY, username="ann")
    assert (session.state, session.data) == ("Form:name", {"name": "Ann"})


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"username": "u" * 65}, "username"),
        ({"username": "a\x00b"}, "username"),
        ({"username": " "}, "username"),
        ({"language_code": "l" * 36}, "language_code"),
        ({"language_code": "en\x00"}, "language_code"),
    ],
)
async def test_upsert_session_rejects_invalid_input_and_writes_nothing(
    conn: Conn, arguments: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInputError) as error:
        await telegram.upsert_session(conn, KEY, **arguments)
    assert str(error.value).startswith(f"{field}:")
    assert await count_sessions(conn) == 0


async def test_upsert_session_accepts_the_longest_username_and_language_code(conn: Conn) -> None:
    session = await telegram.upsert_session(conn, KEY, username="u" * 64, language_code="l" * 35)
    assert (len(session.username or ""), len(session.language_code or "")) == (64, 35)


# Key identity -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "other",
    [
        SessionKey(BOT, -100_123, 42, thread_id=7),
        SessionKey(BOT, -100_123, 42, business_connection_id="biz-1"),
        SessionKey(BOT, -100_123, 42, destiny="quiz"),
        SessionKey(BOT, -100_123, 43),
    ],
)
async def test_keys_differing_in_one_part_are_distinct_sessions(
    conn: Conn, other: SessionKey
) -> None:
    await telegram.set_state(conn, KEY, "first")
    await telegram.set_state(conn, other, "second")
    assert await telegram.get_state(conn, KEY) == "first"
    assert await telegram.get_state(conn, other) == "second"
    assert await count_sessions(conn) == 2


async def test_keys_with_null_thread_and_business_connection_are_one_session(
    conn: Conn,
) -> None:
    first = await telegram.upsert_session(conn, SessionKey(BOT, 5, 6))
    await telegram.set_state(conn, SessionKey(BOT, 5, 6, None, None), "s")
    await telegram.update_data(conn, SessionKey(BOT, 5, 6), {"a": 1})
    second = await telegram.upsert_session(conn, SessionKey(BOT, 5, 6))
    assert second.id == first.id
    assert (second.state, second.data) == ("s", {"a": 1})
    assert await count_sessions(conn) == 1


async def test_a_key_with_every_part_set_is_found_again(conn: Conn) -> None:
    key = SessionKey(BOT, 5, 6, thread_id=9, business_connection_id="biz", destiny="quiz")
    created = await telegram.upsert_session(conn, key)
    assert await telegram.get_session(conn, SessionKey(BOT, 5, 6, 9, "biz", "quiz")) == created


# get_session / deactivate_session ---------------------------------------------------------


async def test_get_session_returns_none_for_an_unknown_key(conn: Conn) -> None:
    assert await telegram.get_session(conn, KEY) is None


async def test_deactivate_session_keeps_the_row_and_its_fsm(conn: Conn) -> None:
    await telegram.set_state(conn, KEY, "Form:age")
    await telegram.set_data(conn, KEY, {"age": 30})
    await telegram.deactivate_session(conn, KEY)
    session = await telegram.get_session(conn, KEY)
    assert session is not None
    assert not session.is_active
    assert (session.state, session.data) == ("Form:age", {"age": 30})


async def test_deactivate_session_of_an_unknown_key_raises_not_found(conn: Conn) -> None:
    with pytest.raises(NotFoundError):
        await telegram.deactivate_session(conn, KEY)
    assert await count_sessions(conn) == 0


async def test_deactivate_session_twice_is_harmless(conn: Conn) -> None:
    await telegram.upsert_session(conn, KEY)
    await telegram.deactivate_session(conn, KEY)
    await telegram.deactivate_session(conn, KEY)
    session = await telegram.get_session(conn, KEY)
    assert session is not None and not session.is_active


# link_chat --------------------------------------------------------------------------------


async def test_link_chat_records_the_agentdb_chat(conn: Conn) -> None:
    chat = await messaging.create_chat(conn, owner_id=uuid.uuid4())
    await telegram.upsert_session(conn, KEY)
    session = await telegram.link_chat(conn, KEY, chat.id)
    assert session.chat_id == chat.id
    assert await telegram.get_session(conn, KEY) == session


async def test_link_chat_of_an_unknown_session_raises_not_found(conn: Conn) -> None:
    chat = await messaging.create_chat(conn, owner_id=uuid.uuid4())
    with pytest.raises(NotFoundError):
        await telegram.link_chat(conn, KEY, chat.id)
    assert await count_sessions(conn) == 0


async def test_link_chat_to_a_missing_chat_raises_foreign_key_error(conn: Conn) -> None:
    await telegram.upsert_session(conn, KEY)
    with pytest.raises(ForeignKeyError) as error:
        await telegram.link_chat(conn, KEY, uuid.uuid4())
    assert error.value.constraint == "fk_sessions_chats"
    session = await telegram.get_session(conn, KEY)
    assert session is not None and session.chat_id is None


async def test_link_chat_to_a_deleted_chat_raises_foreign_key_error(conn: Conn) -> None:
    chat = await messaging.create_chat(conn, owner_id=uuid.uuid4())
    await messaging.delete_chat(conn, chat.id)
    await telegram.upsert_session(conn, KEY)
    with pytest.raises(ForeignKeyError):
        await telegram.link_chat(conn, KEY, chat.id)


async def wait_until_blocked_on_a_lock(conn: Conn, task: asyncio.Task[Any]) -> None:
    """Wait until some backend of this database waits for a lock (the `task`'s, the only
    other one running); fail if the task finishes or 5 s pass first."""
    for _ in range(500):
        assert not task.done(), "it ran through without waiting for the other transaction"
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        row = await cursor.fetchone()
        if row is not None and row[0] > 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("it neither finished nor waited for a lock within 5 s")


async def test_link_chat_during_a_soft_delete_of_the_chat_waits_for_it_then_raises_foreign_key_error(  # noqa: E501
    db: DatabaseManager, conn: Conn
) -> None:
    chat = await messaging.create_chat(conn, owner_id=uuid.uuid4())
    await telegram.upsert_session(conn, KEY)

    async def link() -> telegram.TelegramSession:
        async with db.connection() as linker:
            return await telegram.link_chat(linker, KEY, chat.id)

    async with db.session() as deleter:
        await messaging.delete_chat(deleter, chat.id)
        linking = asyncio.create_task(link())
        await wait_until_blocked_on_a_lock(conn, linking)
    with pytest.raises(ForeignKeyError) as error:
        await linking
    assert error.value.constraint == "fk_sessions_chats"
    session = await telegram.get_session(conn, KEY)
    assert session is not None and session.chat_id is None


async def test_a_soft_delete_of_the_chat_during_link_chat_waits_for_the_link_to_commit(
    db: DatabaseManager, conn: Conn
) -> None:
    chat = await messaging.create_chat(conn, owner_id=uuid.uuid4())
    await telegram.upsert_session(conn, KEY)

    async def delete() -> None:
        async with db.session() as deleter:
            await messaging.delete_chat(deleter, chat.id)

    async with db.session() as linker:
        linked = await telegram.link_chat(linker, KEY, chat.id)
        deleting = asyncio.create_task(delete())
        await wait_until_blocked_on_a_lock(conn, deleting)
    await deleting
    # The state of the link followed by the delete: the link was made while the chat was
    # live, and the chat is deleted now (so it can be linked no more).
    assert await telegram.get_session(conn, KEY) == linked
    assert linked.chat_id == chat.id
    assert await messaging.get_chat(conn, chat.id) is None
    with pytest.raises(ForeignKeyError):
        await telegram.link_chat(conn, KEY, chat.id)


async def test_link_chat_rejects_a_chat_id_that_is_not_a_uuid(conn: Conn) -> None:
    await telegram.upsert_session(conn, KEY)
    with pytest.raises(InvalidInputError, match=r"^chat_id:"):
        await telegram.link_chat(conn, KEY, "not-a-uuid")  # type: ignore[arg-type]


# set_state / get_state --------------------------------------------------------------------


async def test_set_state_creates_the_session_of_a_new_user(conn: Conn) -> None:
    await telegram.set_state(conn, KEY, "Form:name")
    assert await telegram.get_state(conn, KEY) == "Form:name"
    session = await telegram.get_session(conn, KEY)
    assert session is not None and session.is_active and session.data == {}


async def test_set_state_replaces_the_state_and_none_clears_it(conn: Conn) -> None:
    await telegram.set_state(conn, KEY, "Form:name")
    await telegram.set_state(conn, KEY, "Form:age")
    assert await telegram.get_state(conn, KEY) == "Form:age"
    await telegram.set_state(conn, KEY, None)
    assert await telegram.get_state(conn, KEY) is None


async def test_set_state_leaves_the_data_alone(conn: Conn) -> None:
    await telegram.set_data(conn, KEY, {"a": 1})
    await telegram.set_state(conn, KEY, "s")
    assert await telegram.get_data(conn, KEY) == {"a": 1}


async def test_get_state_of_an_unknown_key_is_none(conn: Conn) -> None:
    assert await telegram.get_state(conn, KEY) is None
    assert await count_sessions(conn) == 0


@pytest.mark.parametrize("state", ["s" * 501, "Form:\x00name"])
async def test_set_state_rejects_invalid_state_and_writes_nothing(conn: Conn, state: str) -> None:
    with pytest.raises(InvalidInputError, match=r"^state:"):
        await telegram.set_state(conn, KEY, state)
    assert await count_sessions(conn) == 0


async def test_set_state_accepts_a_500_character_state(conn: Conn) -> None:
    await telegram.set_state(conn, KEY, "s" * 500)
    assert await telegram.get_state(conn, KEY) == "s" * 500


# set_data / get_data ----------------------------------------------------------------------


async def test_set_data_replaces_the_whole_object(conn: Conn) -> None:
    await telegram.set_data(conn, KEY, {"a": 1, "b": {"c": [1, 2]}})
    await telegram.set_data(conn, KEY, {"z": "ü"})
    assert await telegram.get_data(conn, KEY) == {"z": "ü"}


async def test_set_data_creates_the_session_of_a_new_user(conn: Conn) -> None:
    await telegram.set_data(conn, KEY, {"a": 1})
    session = await telegram.get_session(conn, KEY)
    assert session is not None and session.data == {"a": 1} and session.state is None


async def test_get_data_of_an_unknown_key_is_an_empty_dict(conn: Conn) -> None:
    assert await telegram.get_data(conn, KEY) == {}


async def test_set_data_keeps_the_state(conn: Conn) -> None:
    await telegram.set_state(conn, KEY, "s")
    await telegram.set_data(conn, KEY, {})
    assert await telegram.get_state(conn, KEY) == "s"


INVALID_DATA = [
    pytest.param({"name": "a\x00b"}, id="nul-in-value"),
    pytest.param({"a\x00": 1}, id="nul-in-key"),
    pytest.param({"deep": {"list": ["ok", "\x00"]}}, id="nul-nested"),
    pytest.param({"x": math.nan}, id="nan"),
    pytest.param({"x": math.inf}, id="infinity"),
    pytest.param({1: "int key"}, id="non-string-key"),
    pytest.param({"x": object()}, id="not-json"),
    pytest.param(["not", "an", "object"], id="list"),
]


@pytest.mark.parametrize("data", INVALID_DATA)
async def test_set_data_rejects_what_jsonb_cannot_hold_and_writes_nothing(
    conn: Conn, data: Any
) -> None:
    with pytest.raises(InvalidInputError, match=r"^data"):
        await telegram.set_data(conn, KEY, data)
    assert await count_sessions(conn) == 0


@pytest.mark.parametrize("data", [[], 0, "", False, None], ids=repr)
async def test_set_data_refuses_a_falsy_value_that_is_not_an_object_instead_of_storing_one(
    conn: Conn, data: Any
) -> None:
    with pytest.raises(InvalidInputError, match=r"^data") as error:
        await telegram.set_data(conn, KEY, data)
    assert error.value.field == "data"
    assert await count_sessions(conn) == 0


# update_data ------------------------------------------------------------------------------


async def test_update_data_merges_shallowly_and_returns_the_merged_data(conn: Conn) -> None:
    await telegram.set_data(conn, KEY, {"a": 1, "nested": {"x": 1}, "keep": True})
    merged = await telegram.update_data(conn, KEY, {"a": 2, "nested": {"y": 2}, "new": None})
    assert merged == {"a": 2, "nested": {"y": 2}, "keep": True, "new": None}
    assert await telegram.get_data(conn, KEY) == merged


async def test_update_data_creates_the_session_of_a_new_user(conn: Conn) -> None:
    assert await telegram.update_data(conn, KEY, {"a": 1}) == {"a": 1}
    assert await telegram.get_data(conn, KEY) == {"a": 1}
    assert await count_sessions(conn) == 1


async def test_update_data_with_an_empty_patch_returns_the_data_unchanged(conn: Conn) -> None:
    await telegram.set_data(conn, KEY, {"a": 1})
    assert await telegram.update_data(conn, KEY, {}) == {"a": 1}


@pytest.mark.parametrize(
    "patch",
    [
        pytest.param({"a\x00": 1}, id="nul-in-key"),
        pytest.param({"deep": {"x": "\x00"}}, id="nul-nested"),
        pytest.param({"x": math.nan}, id="nan"),
        pytest.param("not an object", id="string"),
    ],
)
async def test_update_data_rejects_what_jsonb_cannot_hold_and_writes_nothing(
    conn: Conn, patch: Any
) -> None:
    with pytest.raises(InvalidInputError, match=r"^patch"):
        await telegram.update_data(conn, KEY, patch)
    assert await count_sessions(conn) == 0


@pytest.mark.parametrize("patch", [[], 0, "", False, None], ids=repr)
async def test_update_data_refuses_a_falsy_patch_that_is_not_an_object_instead_of_merging_one(
    conn: Conn, patch: Any
) -> None:
    await telegram.set_data(conn, KEY, {"a": 1})
    with pytest.raises(InvalidInputError, match=r"^patch") as error:
        await telegram.update_data(conn, KEY, patch)
    assert error.value.field == "patch"
    assert await telegram.get_data(conn, KEY) == {"a": 1}


async def test_concurrent_update_data_on_one_session_loses_no_key(db: DatabaseManager) -> None:
    async def add_key(index: int) -> None:
        async with db.session() as c:
            await telegram.update_data(c, KEY, {f"k{index}": index})
            await asyncio.sleep(0.005)  # hold the row lock so the others queue behind it

    await asyncio.gather(*(asyncio.create_task(add_key(index)) for index in range(20)))

    async with db.connection() as c:
        assert await telegram.get_data(c, KEY) == {f"k{index}": index for index in range(20)}
        assert await count_sessions(c) == 1


# list_active_sessions ---------------------------------------------------------------------


async def test_list_active_sessions_lists_most_recently_seen_first(conn: Conn) -> None:
    for user_id in (1, 2, 3):
        await telegram.upsert_session(conn, SessionKey(BOT, 10, user_id))
    await telegram.upsert_session(conn, SessionKey(BOT, 10, 1))
    page = await telegram.list_active_sessions(conn, bot_id=BOT)
    assert [session.telegram_user_id for session in page.items] == [1, 3, 2]
    assert page.next_cursor is None


async def test_list_active_sessions_leaves_out_inactive_sessions_and_other_bots(
    conn: Conn,
) -> None:
    await telegram.upsert_session(conn, SessionKey(BOT, 10, 1))
    await telegram.upsert_session(conn, SessionKey(BOT, 10, 2))
    await telegram.upsert_session(conn, SessionKey(BOT + 1, 10, 3))
    await telegram.deactivate_session(conn, SessionKey(BOT, 10, 2))
    page = await telegram.list_active_sessions(conn, bot_id=BOT)
    assert [session.telegram_user_id for session in page.items] == [1]


async def test_list_active_sessions_of_a_bot_without_sessions_is_empty(conn: Conn) -> None:
    page = await telegram.list_active_sessions(conn, bot_id=BOT)
    assert (page.items, page.next_cursor) == ([], None)


async def test_list_active_sessions_never_repeats_or_drops_a_row_across_pages_with_equal_last_seen_at(  # noqa: E501
    db: DatabaseManager, conn: Conn
) -> None:
    async with db.session() as c:
        created = [await telegram.upsert_session(c, SessionKey(BOT, 10, uid)) for uid in range(7)]
    assert len({session.last_seen_at for session in created}) == 1

    seen: list[uuid.UUID] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await telegram.list_active_sessions(conn, bot_id=BOT, limit=3, cursor=cursor)
        seen += [session.id for session in page.items]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == len(set(seen))
    assert set(seen) == {session.id for session in created}


async def test_list_active_sessions_page_of_exactly_limit_rows_has_no_next_cursor(
    conn: Conn,
) -> None:
    for user_id in (1, 2):
        await telegram.upsert_session(conn, SessionKey(BOT, 10, user_id))
    page = await telegram.list_active_sessions(conn, bot_id=BOT, limit=2)
    assert len(page.items) == 2 and page.next_cursor is None


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"bot_id": "1"}, "bot_id"),
        ({"bot_id": True}, "bot_id"),
        ({"bot_id": 2**63}, "bot_id"),
        ({"bot_id": BOT, "limit": 0}, "limit"),
        ({"bot_id": BOT, "limit": 1001}, "limit"),
        ({"bot_id": BOT, "cursor": "garbage"}, "cursor"),
    ],
)
async def test_list_active_sessions_rejects_invalid_arguments(
    conn: Conn, arguments: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInputError) as error:
        await telegram.list_active_sessions(conn, **arguments)
    assert str(error.value).startswith(f"{field}:")


async def test_list_active_sessions_refuses_a_cursor_of_another_bots_list(conn: Conn) -> None:
    for user_id in (1, 2):
        await telegram.upsert_session(conn, SessionKey(BOT + 1, 10, user_id))
    page = await telegram.list_active_sessions(conn, bot_id=BOT + 1, limit=1)
    assert page.next_cursor is not None
    with pytest.raises(InvalidInputError, match=r"^cursor:") as error:
        await telegram.list_active_sessions(conn, bot_id=BOT, cursor=page.next_cursor)
    assert error.value.field == "cursor"
