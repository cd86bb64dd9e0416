"""End to end, offline: a two-step aiogram 3 form bot on PostgresStorage and its event
isolation. Hand-made Updates go through `Dispatcher.feed_update`, the Bot API calls land in a
recording session (no network), and the FSM rows are read back from telegram.sessions: between
the steps, across a restart of the bot (new storage, new dispatcher, same database), and for
two users whose conversations interleave."""

from __future__ import annotations

import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

import psycopg
import pytest
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.base import BaseSession
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.fsm.storage.base import StorageKey
from aiogram.methods import SendMessage, TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import Message, TelegramObject, Update

from app import telegram
from app.integrations.aiogram import PostgresStorage, lock_id

TOKEN = "42:TEST"
BOT_ID = 42  # the part of the token before the colon: aiogram's bot.id, the StorageKey's bot_id


# The bot under test ------------------------------------------------------------------------


class Form(StatesGroup):
    name = State()
    age = State()


def form_router() -> Router:
    """A fresh router each time: aiogram attaches a router to one dispatcher only, and a
    restarted bot builds its own anyway."""
    router = Router(name="form")

    @router.message(Command("start"))
    async def start(message: Message, state: FSMContext) -> None:
        await state.set_state(Form.name)
        await message.answer("What is your name?")

    @router.message(StateFilter(Form.name), F.text)
    async def got_name(message: Message, state: FSMContext) -> None:
        await state.update_data(name=message.text)
        await state.set_state(Form.age)
        await message.answer("How old are you?")

    @router.message(StateFilter(Form.age), F.text.regexp(r"^\d+$"))
    async def got_age(message: Message, state: FSMContext) -> None:
        data = await state.update_data(age=int(cast(str, message.text)))
        await state.clear()
        await message.answer(f"{data['name']}, {data['age']}")

    @router.message(StateFilter(Form.age))
    async def bad_age(message: Message) -> None:
        await message.answer("Please send your age as a number.")

    return router


def launch(url: str) -> tuple[PostgresStorage, Dispatcher]:
    """The bot's start-up: the three lines that put it on PostgreSQL, and the form."""
    storage = PostgresStorage.from_url(url)
    dispatcher = Dispatcher(storage=storage, events_isolation=storage.create_isolation())
    dispatcher.include_router(form_router())
    return storage, dispatcher


# An offline Telegram -----------------------------------------------------------------------


class RecordingSession(BaseSession):
    """A Bot API that never leaves the process: records every call and answers sendMessage
    with the Message Telegram would return; any other call fails the test."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[TelegramMethod[Any]] = []
        self.closed = False
        self._message_ids = itertools.count(10_000)

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,
    ) -> TelegramType:
        self.requests.append(method)
        if not isinstance(method, SendMessage):
            raise AssertionError(f"unexpected Bot API call {method.__api_method__}")
        chat_id = int(method.chat_id)
        sent = Message.model_validate(
            {
                "message_id": next(self._message_ids),
                "date": datetime.now(UTC),
                "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
                "from": {"id": bot.id, "is_bot": True, "first_name": "Form bot"},
                "text": method.text,
            },
            context={"bot": bot},
        )
        assert isinstance(sent, method.__returning__)
        return cast(TelegramType, sent)

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        raise AssertionError(f"unexpected download of {url}")
        yield b""  # pragma: no cover - makes this an async generator, as the base class is

    async def close(self) -> None:
        self.closed = True

    def replies(self) -> list[tuple[int, str]]:
        """(chat id, text) of every message the bot sent, in order."""
        return [
            (int(method.chat_id), method.text)
            for method in self.requests
            if isinstance(method, SendMessage)
        ]


def new_bot() -> tuple[Bot, RecordingSession]:
    session = RecordingSession()
    return Bot(token=TOKEN, session=session), session


class Telegram:
    """Makes the Updates Telegram would deliver: text messages, numbered in order."""

    def __init__(self) -> None:
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)

    def message(
        self, bot: Bot, *, user_id: int, first_name: str, text: str, chat_id: int | None = None
    ) -> Update:
        """`text` from the user, in their private chat, or in the group `chat_id`; bound to
        `bot`, so that the handlers' `message.answer` goes through it."""
        chat_id = user_id if chat_id is None else chat_id
        chat: dict[str, Any] = (
            {"id": chat_id, "type": "private", "first_name": first_name}
            if chat_id == user_id
            else {"id": chat_id, "type": "group", "title": "Form testers"}
        )
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(datetime.now(UTC).timestamp()),
            "chat": chat,
            "from": {"id": user_id, "is_bot": False, "first_name": first_name},
            "text": text,
        }
        if text.startswith("/"):
            command = text.split()[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return Update.model_validate(
            {"update_id": next(self._update_ids), "message": message}, context={"bot": bot}
        )


# Reading the database ----------------------------------------------------------------------


def session_key(chat_id: int, user_id: int) -> telegram.SessionKey:
    return telegram.SessionKey(bot_id=BOT_ID, telegram_chat_id=chat_id, telegram_user_id=user_id)


async def stored(
    conn: psycopg.AsyncConnection[Any], chat_id: int, user_id: int
) -> tuple[str | None, dict[str, Any]]:
    """The (state, data) telegram.sessions holds for the user in that chat."""
    key = session_key(chat_id, user_id)
    return await telegram.get_state(conn, key), await telegram.get_data(conn, key)


HELD_ADVISORY_LOCKS = """
SELECT (l.classid::bigint << 32) | l.objid::bigint
FROM pg_catalog.pg_locks AS l
JOIN pg_catalog.pg_database AS d ON d.oid = l.database
WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
  AND d.datname = pg_catalog.current_database()
ORDER BY 1
"""


async def held_advisory_locks(conn: psycopg.AsyncConnection[Any]) -> list[int]:
    """The numbers of the bigint advisory locks any session holds in this database."""
    cursor = await conn.execute(HELD_ADVISORY_LOCKS)
    return [int(row[0]) for row in await cursor.fetchall()]


# Fixtures ----------------------------------------------------------------------------------


@pytest.fixture
async def storages() -> AsyncIterator[list[PostgresStorage]]:
    """Every storage a test launches goes in here and is closed after it, pass or fail."""
    launched: list[PostgresStorage] = []
    try:
        yield launched
    finally:
        for storage in launched:
            await storage.close()


# Tests -------------------------------------------------------------------------------------


async def test_form_conversation_survives_a_restart_between_its_steps(
    database_url: str,
    conn: psycopg.AsyncConnection[Any],
    storages: list[PostgresStorage],
) -> None:
    alice: dict[str, Any] = {"user_id": 1001, "first_name": "Alice"}
    chat = user = 1001
    updates = Telegram()

    storage, dispatcher = launch(database_url)
    storages.append(storage)
    bot, session = new_bot()

    # While a handler runs, the isolation holds the advisory lock of the update's key.
    locks_in_handlers: list[list[int]] = []

    async def probe_locks(
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        locks_in_handlers.append(await held_advisory_locks(conn))
        return await handler(event, data)

    dispatcher.message.outer_middleware(probe_locks)

    # No state yet: a plain message matches no handler, and nothing is written.
    result = await dispatcher.feed_update(bot, updates.message(bot, **alice, text="hello"))
    assert result is UNHANDLED
    assert session.replies() == []
    assert await telegram.get_session(conn, session_key(chat, user)) is None

    await dispatcher.feed_update(bot, updates.message(bot, **alice, text="/start"))
    assert session.replies() == [(chat, "What is your name?")]
    assert await stored(conn, chat, user) == ("Form:name", {})

    await dispatcher.feed_update(bot, updates.message(bot, **alice, text="Alice"))
    assert session.replies() == [(chat, "What is your name?"), (chat, "How old are you?")]
    assert await stored(conn, chat, user) == ("Form:age", {"name": "Alice"})

    lock = lock_id(StorageKey(bot_id=BOT_ID, chat_id=chat, user_id=user))
    assert locks_in_handlers == [[lock], [lock], [lock]]
    assert await held_advisory_locks(conn) == []  # released once each update was handled

    # Restart: the dispatcher shuts down as polling would stop it, which closes the storage
    # (and its isolation); a new process builds everything anew on the same database.
    await dispatcher.emit_shutdown(bot=bot)
    await bot.session.close()
    assert not storage.db.is_open
    assert session.closed
    assert await stored(conn, chat, user) == ("Form:age", {"name": "Alice"})

    storage, dispatcher = launch(database_url)
    storages.append(storage)
    bot, session = new_bot()

    await dispatcher.feed_update(bot, updates.message(bot, **alice, text="thirty"))
    assert session.replies() == [(chat, "Please send your age as a number.")]
    assert await stored(conn, chat, user) == ("Form:age", {"name": "Alice"})

    await dispatcher.feed_update(bot, updates.message(bot, **alice, text="30"))
    assert session.replies() == [
        (chat, "Please send your age as a number."),
        (chat, "Alice, 30"),  # the name comes from the row written before the restart
    ]
    # state.clear(): no state and empty data, on the row the conversation kept.
    assert await stored(conn, chat, user) == (None, {})
    row = await telegram.get_session(conn, session_key(chat, user))
    assert row is not None
    assert (row.state, row.data) == (None, {})
    assert await held_advisory_locks(conn) == []


@pytest.mark.parametrize("where", ["private chats", "one group chat"])
async def test_interleaved_conversations_of_two_users_do_not_mix(
    where: str,
    database_url: str,
    conn: psycopg.AsyncConnection[Any],
    storages: list[PostgresStorage],
) -> None:
    group = -100_555 if where == "one group chat" else None
    alice: dict[str, Any] = {"user_id": 1001, "first_name": "Alice", "chat_id": group}
    bob: dict[str, Any] = {"user_id": 2002, "first_name": "Bob", "chat_id": group}
    alice_chat = 1001 if group is None else group
    bob_chat = 2002 if group is None else group
    updates = Telegram()

    storage, dispatcher = launch(database_url)
    storages.append(storage)
    bot, session = new_bot()

    async def say(person: dict[str, Any], text: str) -> None:
        await dispatcher.feed_update(bot, updates.message(bot, **person, text=text))

    async def states() -> tuple[tuple[str | None, dict[str, Any]], ...]:
        return await stored(conn, alice_chat, 1001), await stored(conn, bob_chat, 2002)

    await say(alice, "/start")
    assert await states() == (("Form:name", {}), (None, {}))

    await say(bob, "/start")
    assert await states() == (("Form:name", {}), ("Form:name", {}))

    await say(alice, "Alice")
    assert await states() == (("Form:age", {"name": "Alice"}), ("Form:name", {}))

    await say(bob, "Bob")
    assert await states() == (("Form:age", {"name": "Alice"}), ("Form:age", {"name": "Bob"}))

    await say(bob, "25")
    assert await states() == (("Form:age", {"name": "Alice"}), (None, {}))

    await say(alice, "30")
    assert await states() == ((None, {}), (None, {}))

    assert session.replies() == [
        (alice_chat, "What is your name?"),
        (bob_chat, "What is your name?"),
        (alice_chat, "How old are you?"),
        (bob_chat, "How old are you?"),
        (bob_chat, "Bob, 25"),
        (alice_chat, "Alice, 30"),
    ]
