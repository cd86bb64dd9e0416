"""Query functions of schema `telegram`: a bot's sessions, which are also aiogram 3 FSM storage.

A session is identified by a `SessionKey`: the six parts of aiogram's `StorageKey` (bot,
chat, user, forum topic, business connection, destiny), so an aiogram `BaseStorage` maps onto
`set_state` / `get_state` / `set_data` / `get_data` / `update_data` one to one.

SQL constants first, then the functions in the order of the public API. Every function
takes the caller's connection and never commits.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from app.audit.queries import RECORD_PURGE
from app.database.errors import (
    ForeignKeyError,
    InvalidInputError,
    NotFoundError,
    database_errors,
)
from app.database.pagination import Page, check_limit, encode_cursor, newest_first_start, page_of
from app.database.rows import column_list, model_rows, returned
from app.database.transactions import execute
from app.database.validation import as_uuid, validated
from app.telegram.models import (
    BotInput,
    DataInput,
    PatchInput,
    PurgeSessionsInput,
    SessionKey,
    SessionUpsert,
    StateInput,
    TelegramSession,
    ValueNameInput,
)

# SQL --------------------------------------------------------------------------------------
#
# A key is matched with IS NOT DISTINCT FROM on thread_id and business_connection_id, so a
# NULL matches NULL exactly as uq_sessions_fsm_key (UNIQUE NULLS NOT DISTINCT) counts it. The
# equalities on the constraint's three leading columns find the user's few rows in its index.
# Writes that may create the row are INSERT … ON CONFLICT ON CONSTRAINT uq_sessions_fsm_key:
# one statement, no read-then-write race between two updates of a new user.

#
# State and data expire (state_expires_at, data_expires_at, set when they are written from a
# ttl; NULL: never): every statement reads an expired state as NULL and expired data as {}.

SESSION_COLUMNS = column_list(
    TelegramSession,
    "id, bot_id, telegram_chat_id, telegram_user_id, thread_id, business_connection_id, "
    "destiny, chat_id, username, language_code, "
    "CASE WHEN state_expires_at <= now() THEN NULL ELSE state END AS state, "
    "CASE WHEN data_expires_at <= now() THEN '{}'::jsonb ELSE data END AS data, "
    "is_active, last_seen_at, created_at, updated_at",
)

# The one session of a key, as every statement that reads or changes a session finds it.
WHERE_SESSION_KEY = """
WHERE bot_id = %(bot_id)s
  AND telegram_chat_id = %(telegram_chat_id)s
  AND telegram_user_id = %(telegram_user_id)s
  AND thread_id IS NOT DISTINCT FROM %(thread_id)s
  AND business_connection_id IS NOT DISTINCT FROM %(business_connection_id)s
  AND destiny = %(destiny)s
"""

# None keeps what is stored: Telegram omits a username the bot cannot see; last_seen_at and
# is_active say that the user is back.
UPSERT_SESSION = (
    """
INSERT INTO telegram.sessions
    (bot_id, telegram_chat_id, telegram_user_id, thread_id, business_connection_id, destiny,
     username, language_code)
VALUES (%(bot_id)s, %(telegram_chat_id)s, %(telegram_user_id)s, %(thread_id)s,
        %(business_connection_id)s, %(destiny)s, %(username)s, %(language_code)s)
ON CONFLICT ON CONSTRAINT uq_sessions_fsm_key DO UPDATE
SET username = COALESCE(EXCLUDED.username, sessions.username),
    language_code = COALESCE(EXCLUDED.language_code, sessions.language_code),
    is_active = true,
    last_seen_at = now()
RETURNING """
    + SESSION_COLUMNS
)

# Inactive sessions are returned too (is_active = false): the row and its FSM data are kept.
SELECT_SESSION = "SELECT " + SESSION_COLUMNS + "\nFROM telegram.sessions" + WHERE_SESSION_KEY

DEACTIVATE_SESSION = (
    """
UPDATE telegram.sessions
SET is_active = false"""
    + WHERE_SESSION_KEY
    + "RETURNING id\n"
)

# fk_sessions_chats only knows that the row exists; a soft-deleted chat is gone to callers
# (get_chat returns None), so it must not be linked either. FOR SHARE on the chat conflicts
# with its soft delete (an UPDATE, which takes FOR NO KEY UPDATE; FOR KEY SHARE would not):
# a delete in flight makes the link wait for it, then find the chat gone; a delete that comes
# second waits for the link's commit. No row: the chat is not live, or the key has no session.
LINK_CHAT = (
    """
WITH live_chat AS (
    SELECT id AS live_chat_id
    FROM messaging.chats
    WHERE id = %(chat_id)s
      AND deleted_at IS NULL
    FOR SHARE
)
UPDATE telegram.sessions
SET chat_id = live_chat_id
FROM live_chat"""
    + WHERE_SESSION_KEY
    + "RETURNING "
    + SESSION_COLUMNS
)

# Only after LINK_CHAT changed nothing: tells a chat that is not live from a missing session.
SELECT_LIVE_CHAT = """
SELECT id
FROM messaging.chats
WHERE id = %s
  AND deleted_at IS NULL
"""

# aiogram sets a state for users it has never stored: the row is created on the way. A ttl
# of NULL leaves the expiry NULL (never).
UPSERT_STATE = """
INSERT INTO telegram.sessions
    (bot_id, telegram_chat_id, telegram_user_id, thread_id, business_connection_id, destiny,
     state, state_expires_at)
VALUES (%(bot_id)s, %(telegram_chat_id)s, %(telegram_user_id)s, %(thread_id)s,
        %(business_connection_id)s, %(destiny)s, %(state)s, now() + %(ttl)s::interval)
ON CONFLICT ON CONSTRAINT uq_sessions_fsm_key DO UPDATE
SET state = EXCLUDED.state,
    state_expires_at = EXCLUDED.state_expires_at
"""

SELECT_STATE = (
    "SELECT state\nFROM telegram.sessions"
    + WHERE_SESSION_KEY
    + "  AND (state_expires_at IS NULL OR state_expires_at > now())\n"
)

UPSERT_DATA = """
INSERT INTO telegram.sessions
    (bot_id, telegram_chat_id, telegram_user_id, thread_id, business_connection_id, destiny,
     data, data_expires_at)
VALUES (%(bot_id)s, %(telegram_chat_id)s, %(telegram_user_id)s, %(thread_id)s,
        %(business_connection_id)s, %(destiny)s, %(data)s, now() + %(ttl)s::interval)
ON CONFLICT ON CONSTRAINT uq_sessions_fsm_key DO UPDATE
SET data = EXCLUDED.data,
    data_expires_at = EXCLUDED.data_expires_at
"""

SELECT_DATA = (
    "SELECT data\nFROM telegram.sessions"
    + WHERE_SESSION_KEY
    + "  AND (data_expires_at IS NULL OR data_expires_at > now())\n"
)

# One value of the data, and whether the data has that key at all (a stored null is not a
# missing key).
SELECT_DATA_VALUE = (
    "SELECT data ? %(name)s, data -> %(name)s\nFROM telegram.sessions"
    + WHERE_SESSION_KEY
    + "  AND (data_expires_at IS NULL OR data_expires_at > now())\n"
)

# The merge happens in the row lock ON CONFLICT DO UPDATE takes, on the newest committed
# data: concurrent patches of one session all land (jsonb || is aiogram's shallow
# dict.update), where a read-modify-write in Python would lose all but the last. Expired
# data is merged into as {}; the write sets the expiry anew, as a write of the whole does.
MERGE_DATA = """
INSERT INTO telegram.sessions
    (bot_id, telegram_chat_id, telegram_user_id, thread_id, business_connection_id, destiny,
     data, data_expires_at)
VALUES (%(bot_id)s, %(telegram_chat_id)s, %(telegram_user_id)s, %(thread_id)s,
        %(business_connection_id)s, %(destiny)s, %(patch)s, now() + %(ttl)s::interval)
ON CONFLICT ON CONSTRAINT uq_sessions_fsm_key DO UPDATE
SET data = CASE WHEN sessions.data_expires_at <= now() THEN EXCLUDED.data
                ELSE sessions.data || EXCLUDED.data END,
    data_expires_at = EXCLUDED.data_expires_at
RETURNING data
"""

# Sessions nobody has touched since the cutoff: every write moves updated_at, and
# upsert_session's touch of last_seen_at is a write too.
DELETE_INACTIVE_SESSIONS = """
WITH gone AS (
    DELETE FROM telegram.sessions
    WHERE updated_at < now() - %(older_than)s::interval
    RETURNING 1
)
SELECT count(*) FROM gone
"""

# Keyset page on the partial index idx_sessions_bot_id_last_seen_at (WHERE is_active): the
# cursor is the last row's (last_seen_at, id); the first page starts from ('infinity', the
# largest uuid).
SELECT_ACTIVE_SESSIONS_PAGE = (
    "SELECT "
    + SESSION_COLUMNS
    + """
FROM telegram.sessions
WHERE bot_id = %(bot_id)s
  AND is_active
  AND (last_seen_at, id) < (%(after_last_seen_at)s, %(after_id)s)
ORDER BY last_seen_at DESC, id DESC
LIMIT %(limit)s
"""
)


SESSION_ROW = model_rows(TelegramSession)


# Query functions --------------------------------------------------------------------------


@database_errors
async def upsert_session(
    conn: AsyncConnection[Any],
    key: SessionKey,
    *,
    username: str | None = None,
    language_code: str | None = None,
) -> TelegramSession:
    """Record that the user was seen: create or re-activate the session, touch last_seen_at."""
    params = _key_params(key)
    data = validated(SessionUpsert, username=username, language_code=language_code)
    params |= {"username": data.username, "language_code": data.language_code}
    async with conn.cursor(row_factory=SESSION_ROW) as cursor:
        await execute(cursor, UPSERT_SESSION, params)
        return returned(await cursor.fetchone())


@database_errors
async def get_session(conn: AsyncConnection[Any], key: SessionKey) -> TelegramSession | None:
    """The session (active or not), or None if the key has none."""
    async with conn.cursor(row_factory=SESSION_ROW) as cursor:
        await execute(cursor, SELECT_SESSION, _key_params(key))
        return await cursor.fetchone()


@database_errors
async def deactivate_session(conn: AsyncConnection[Any], key: SessionKey) -> None:
    """Mark the session inactive (kept with its FSM data; upsert_session re-activates it)."""
    cursor = await conn.execute(DEACTIVATE_SESSION, _key_params(key))
    if await cursor.fetchone() is None:
        raise NotFoundError(f"session {key} not found")


@database_errors
async def link_chat(conn: AsyncConnection[Any], key: SessionKey, chat_id: UUID) -> TelegramSession:
    """Record the session's conversation in the live agentdb chat `chat_id`."""
    params = _key_params(key) | {"chat_id": as_uuid(chat_id, "chat_id")}
    async with conn.cursor(row_factory=SESSION_ROW) as cursor:
        await cursor.execute(LINK_CHAT, params)
        session = await cursor.fetchone()
    if session is not None:
        return session
    cursor = await conn.execute(SELECT_LIVE_CHAT, [params["chat_id"]])
    if await cursor.fetchone() is None:
        raise ForeignKeyError(
            f"chat_id: chat {chat_id} not found",
            field="chat_id",
            constraint="fk_sessions_chats",
        )
    raise NotFoundError(f"session {key} not found")


@database_errors
async def set_state(
    conn: AsyncConnection[Any],
    key: SessionKey,
    state: str | None,
    *,
    ttl: timedelta | None = None,
) -> None:
    """Set the FSM state (None: no state), creating the session if it does not exist. With
    `ttl`, the state reads as None once that long has passed."""
    params = _key_params(key)
    data = validated(StateInput, state=state, ttl=ttl)
    params["state"], params["ttl"] = data.state, data.ttl
    await execute(conn.cursor(), UPSERT_STATE, params)


@database_errors
async def get_state(conn: AsyncConnection[Any], key: SessionKey) -> str | None:
    """The FSM state, or None (no state, an expired one, or no session)."""
    cursor = conn.cursor()
    await execute(cursor, SELECT_STATE, _key_params(key))
    row = await cursor.fetchone()
    return str(row[0]) if row and row[0] is not None else None


@database_errors
async def set_data(
    conn: AsyncConnection[Any],
    key: SessionKey,
    data: dict[str, Any],
    *,
    ttl: timedelta | None = None,
) -> None:
    """Replace the FSM data with `data`, creating the session if it does not exist. With
    `ttl`, the data reads as {} once that long has passed."""
    params = _key_params(key)
    checked = validated(DataInput, data=data, ttl=ttl)
    params["data"], params["ttl"] = Jsonb(checked.data), checked.ttl
    await execute(conn.cursor(), UPSERT_DATA, params)


@database_errors
async def get_data(conn: AsyncConnection[Any], key: SessionKey) -> dict[str, Any]:
    """The FSM data ({} when it expired or the session does not exist)."""
    cursor = conn.cursor()
    await execute(cursor, SELECT_DATA, _key_params(key))
    row = await cursor.fetchone()
    return dict(row[0]) if row else {}


@database_errors
async def get_value(
    conn: AsyncConnection[Any], key: SessionKey, name: str, default: Any = None
) -> Any:
    """One value of the FSM data, read on the server (`default` when the data has no `name`)."""
    params = _key_params(key)
    params["name"] = validated(ValueNameInput, name=name).name
    cursor = await conn.execute(SELECT_DATA_VALUE, params)
    row = await cursor.fetchone()
    return row[1] if row and row[0] else default


@database_errors
async def update_data(
    conn: AsyncConnection[Any],
    key: SessionKey,
    patch: dict[str, Any],
    *,
    ttl: timedelta | None = None,
) -> dict[str, Any]:
    """Merge `patch` into the FSM data key by key, atomically; return the merged data. With
    `ttl`, the merged data reads as {} once that long has passed."""
    params = _key_params(key)
    checked = validated(PatchInput, patch=patch, ttl=ttl)
    params["patch"], params["ttl"] = Jsonb(checked.patch), checked.ttl
    cursor = conn.cursor()
    await execute(cursor, MERGE_DATA, params)
    return dict(returned(await cursor.fetchone())[0])


@database_errors
async def purge_inactive_sessions(conn: AsyncConnection[Any], *, older_than: timedelta) -> int:
    """Delete the sessions (state, data and all) not written or seen for `older_than`;
    return how many. One transaction, with one 'purge' audit event (its count and the
    cutoff): for the schema owner or a worker login."""
    data = validated(PurgeSessionsInput, older_than=older_than)
    async with conn.transaction():
        cursor = await conn.execute(DELETE_INACTIVE_SESSIONS, {"older_than": data.older_than})
        deleted = int(returned(await cursor.fetchone())[0])
        if deleted:
            event = {
                "schema_name": "telegram",
                "table_name": "sessions",
                "deleted": deleted,
                "older_than": data.older_than,
            }
            await conn.execute(RECORD_PURGE, event)
    return deleted


@database_errors
async def list_active_sessions(
    conn: AsyncConnection[Any],
    *,
    bot_id: int,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[TelegramSession]:
    """The bot's active sessions, most recently seen first."""
    bot = validated(BotInput, bot_id=bot_id)
    check_limit(limit)
    scope = f"sessions:{bot.bot_id}"
    after_last_seen_at, after_id = newest_first_start(cursor, scope)
    params = {
        "bot_id": bot.bot_id,
        "after_last_seen_at": after_last_seen_at,
        "after_id": after_id,
        "limit": limit + 1,
    }
    async with conn.cursor(row_factory=SESSION_ROW) as db_cursor:
        await db_cursor.execute(SELECT_ACTIVE_SESSIONS_PAGE, params)
        rows = await db_cursor.fetchall()
    return page_of(
        rows,
        limit,
        lambda session: encode_cursor(scope, session.last_seen_at.isoformat(), session.id),
    )


# Helpers ----------------------------------------------------------------------------------


def _key_params(key: SessionKey) -> dict[str, Any]:
    """The six key parameters every statement matches or inserts."""
    if not isinstance(key, SessionKey):
        raise InvalidInputError(f"key: must be a SessionKey, got {type(key).__name__}", field="key")
    return {
        "bot_id": key.bot_id,
        "telegram_chat_id": key.telegram_chat_id,
        "telegram_user_id": key.telegram_user_id,
        "thread_id": key.thread_id,
        "business_connection_id": key.business_connection_id,
        "destiny": key.destiny,
    }
