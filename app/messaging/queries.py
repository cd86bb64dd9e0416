"""Query functions of schema `messaging`: chats and their messages.

SQL constants first, then the functions in the order of the public API. Every function takes
the caller's connection and never commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from pydantic import TypeAdapter

from app.database.errors import NotFoundError, database_errors
from app.database.pagination import Page, check_limit, encode_cursor, newest_first_start, page_of
from app.database.rows import column_list, model_rows, returned
from app.database.transactions import execute
from app.database.validation import as_uuid, validated, validated_batch
from app.database.vectors import embedding_pairs
from app.messaging.models import (
    UNSET,
    Chat,
    ChatCreate,
    ChatUpdate,
    EmbeddingInput,
    Message,
    MessageCreate,
    MessageCreateDict,
)

# SQL --------------------------------------------------------------------------------------

CHAT_COLUMNS = column_list(
    Chat, "id, owner_id, title, metadata, last_message_at, created_at, updated_at, deleted_at"
)

MESSAGE_COLUMNS = column_list(
    Message,
    "id, chat_id, owner_id, role, content, embedding, token_count, metadata, created_at, "
    "updated_at, deleted_at",
)

INSERT_CHAT = (
    """
INSERT INTO messaging.chats (owner_id, title, metadata)
VALUES (%(owner_id)s, %(title)s, %(metadata)s)
RETURNING """
    + CHAT_COLUMNS
)

SELECT_CHAT = (
    "SELECT "
    + CHAT_COLUMNS
    + """
FROM messaging.chats
WHERE id = %s
  AND deleted_at IS NULL
"""
)

# One statement for any combination of fields: a flag per field says whether to set it, so
# None can clear the title while an omitted field keeps its value.
UPDATE_CHAT = (
    """
UPDATE messaging.chats
SET title = CASE WHEN %(set_title)s THEN %(title)s ELSE title END,
    metadata = CASE WHEN %(set_metadata)s THEN %(metadata)s ELSE metadata END
WHERE id = %(chat_id)s
  AND deleted_at IS NULL
RETURNING """
    + CHAT_COLUMNS
)

# The soft delete takes the chat's row lock (an UPDATE: FOR NO KEY UPDATE), which every
# writer of its messages takes too. The messages go in a second statement, whose snapshot
# is taken after that lock is held: it sees every message a writer committed while this one
# waited (one statement with both updates would share a snapshot from before the wait, and
# leave such a message live in a deleted chat). Both run in one pipeline: one round trip.
SOFT_DELETE_CHAT = """
UPDATE messaging.chats
SET deleted_at = now()
WHERE id = %s
  AND deleted_at IS NULL
RETURNING id
"""

SOFT_DELETE_CHAT_MESSAGES = """
UPDATE messaging.messages
SET deleted_at = now()
WHERE chat_id = %s
  AND deleted_at IS NULL
"""

# Keyset page on idx_chats_owner_id_last_activity: the cursor is the last row's
# (activity, id); the first page starts from ('infinity', the largest uuid).
SELECT_CHATS_PAGE = (
    "SELECT "
    + CHAT_COLUMNS
    + """
FROM messaging.chats
WHERE owner_id = %(owner_id)s
  AND deleted_at IS NULL
  AND (COALESCE(last_message_at, created_at), id) < (%(after_activity)s, %(after_id)s)
ORDER BY COALESCE(last_message_at, created_at) DESC, id DESC
LIMIT %(limit)s
"""
)

# The chat's row lock first (FOR NO KEY UPDATE: it conflicts with a soft delete and with
# other writers of the chat's messages, not with inserts that only reference the chat), then
# the stamp: clock_timestamp() is read in `stamp`, over the locked row, so it is taken after
# the lock is granted. The lock is held to commit, so messages of one chat are stamped in
# commit order, and a reader paging by (created_at, id) never misses one that commits later
# with an older stamp. clock_timestamp(), not now(): messages of one transaction keep their
# order. The stamp is the message's created_at and updated_at; last_message_at never goes back.
INSERT_MESSAGE = (
    """
WITH chat AS (
    SELECT id, owner_id
    FROM messaging.chats
    WHERE id = %(chat_id)s
      AND deleted_at IS NULL
    FOR NO KEY UPDATE
), stamp AS (
    SELECT id, owner_id, clock_timestamp() AS at
    FROM chat
), touched AS (
    UPDATE messaging.chats
    SET last_message_at = GREATEST(chats.last_message_at, stamp.at)
    FROM stamp
    WHERE chats.id = stamp.id
)
INSERT INTO messaging.messages
    (chat_id, owner_id, role, content, embedding, token_count, metadata, created_at, updated_at)
SELECT stamp.id, stamp.owner_id, %(role)s, %(content)s, %(embedding)s, %(token_count)s,
       %(metadata)s, stamp.at, stamp.at
FROM stamp
RETURNING """
    + MESSAGE_COLUMNS
)

# Before a bulk insert: each chat's owner (messages copy it), under the same lock
# add_message takes, taken in id order so that two batches over the same chats cannot
# deadlock. The clock is read over the locked rows (the last row's value is after every
# lock), to stamp the batch; and whether row-level security applies to this role, with
# whether this session has its staging table yet (COPY FROM is refused under RLS, so such a
# batch is copied into the staging table and moved from there).
LOCK_CHATS_FOR_MESSAGES = """
WITH locked AS (
    SELECT id, owner_id
    FROM messaging.chats
    WHERE id = ANY(%s::uuid[])
      AND deleted_at IS NULL
    ORDER BY id
    FOR NO KEY UPDATE
)
SELECT id, owner_id, clock_timestamp(),
       pg_catalog.row_security_active('messaging.messages'),
       pg_catalog.to_regclass('pg_temp.agentdb_staged_messages') IS NOT NULL
FROM locked
"""

COPY_MESSAGES = """
COPY messaging.messages
    (chat_id, owner_id, role, content, embedding, token_count, metadata, created_at, updated_at)
FROM STDIN (FORMAT BINARY)
"""

COPY_MESSAGES_TYPES = [
    "uuid",
    "uuid",
    "varchar",
    "text",
    "vector",
    "int4",
    "jsonb",
    "timestamptz",
    "timestamptz",
]

# Under row-level security, where COPY into messaging.messages is refused: the batch is
# copied into a temporary table of the session (created on its first batch; temporary
# tables are neither logged nor seen by other sessions), then moved with one INSERT …
# SELECT, so every row passes the policy's WITH CHECK, the constraints and the triggers as
# a COPY would. Then the staging table is truncated: empty again at once, even for a second
# batch in the same transaction, and a rollback takes both back. TRUNCATE, not DELETE:
# no autovacuum ever visits a temporary table, so deleted rows would stay and the table
# would grow by every batch for the life of the connection (1.6 MB per 10,000 messages),
# each later move reading all of it.
CREATE_STAGED_MESSAGES = """
CREATE TEMPORARY TABLE IF NOT EXISTS agentdb_staged_messages (
    chat_id     uuid,
    owner_id    uuid,
    role        varchar(20),
    content     text,
    embedding   public.vector(1536),
    token_count integer,
    metadata    jsonb,
    created_at  timestamptz
)
"""

COPY_STAGED_MESSAGES = """
COPY pg_temp.agentdb_staged_messages
    (chat_id, owner_id, role, content, embedding, token_count, metadata, created_at)
FROM STDIN (FORMAT BINARY)
"""

MOVE_STAGED_MESSAGES = """
INSERT INTO messaging.messages
    (chat_id, owner_id, role, content, embedding, token_count, metadata, created_at, updated_at)
SELECT chat_id, owner_id, role, content, embedding, token_count, metadata, created_at, created_at
FROM pg_temp.agentdb_staged_messages
"""

EMPTY_STAGED_MESSAGES = "TRUNCATE pg_temp.agentdb_staged_messages"

UPDATE_CHATS_LAST_MESSAGE_AT = """
UPDATE messaging.chats AS chat
SET last_message_at = GREATEST(chat.last_message_at, batch.last_message_at)
FROM unnest(%s::uuid[], %s::timestamptz[]) AS batch (chat_id, last_message_at)
WHERE chat.id = batch.chat_id
"""

# A message is live only while its chat is: the chat's own deleted_at is checked too (one
# primary-key probe), so no path shows a message of a deleted chat, whatever its own flag.
SELECT_MESSAGE = (
    "SELECT "
    + MESSAGE_COLUMNS
    + """
FROM messaging.messages
WHERE id = %s
  AND deleted_at IS NULL
  AND EXISTS (
      SELECT FROM messaging.chats
      WHERE chats.id = messages.chat_id
        AND chats.deleted_at IS NULL
  )
"""
)

SOFT_DELETE_MESSAGE = """
UPDATE messaging.messages
SET deleted_at = now()
WHERE id = %s
  AND deleted_at IS NULL
RETURNING id
"""

# Served by idx_messages_chat_id_created_at_id; nothing counts in a deleted chat.
COUNT_MESSAGES = """
SELECT count(*)
FROM messaging.messages
WHERE chat_id = %(chat_id)s
  AND deleted_at IS NULL
  AND EXISTS (
      SELECT FROM messaging.chats
      WHERE id = %(chat_id)s
        AND deleted_at IS NULL
  )
"""

# Newest first from the cursor back, on idx_messages_chat_id_created_at_id (scanned
# backwards); the caller reverses the page into chronological order. A deleted chat has no
# page (its EXISTS is a one-time filter, evaluated once for the whole statement).
SELECT_MESSAGES_PAGE = (
    "SELECT "
    + MESSAGE_COLUMNS
    + """
FROM messaging.messages
WHERE chat_id = %(chat_id)s
  AND deleted_at IS NULL
  AND (created_at, id) < (%(before_created_at)s, %(before_id)s)
  AND EXISTS (
      SELECT FROM messaging.chats
      WHERE id = %(chat_id)s
        AND deleted_at IS NULL
  )
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
"""
)

UPDATE_MESSAGE_EMBEDDING = """
UPDATE messaging.messages
SET embedding = %s
WHERE id = %s
  AND deleted_at IS NULL
RETURNING id
"""

# Backfill: one statement for a whole batch; the vectors travel as one binary vector[].
# The vectors go as one binary array (%b): psycopg would otherwise send a list of them as
# text, formatting 1536 floats apiece in Python (50 times the client time).
UPDATE_MESSAGE_EMBEDDINGS = """
UPDATE messaging.messages AS message
SET embedding = batch.embedding
FROM unnest(%s::uuid[], %b::public.vector[]) AS batch (id, embedding)
WHERE message.id = batch.id
  AND message.deleted_at IS NULL
"""


CHAT_ROW = model_rows(Chat)
MESSAGE_ROW = model_rows(Message)
MESSAGE_DICTS = TypeAdapter(list[MessageCreateDict])


# Query functions --------------------------------------------------------------------------


@database_errors
async def create_chat(
    conn: AsyncConnection[Any],
    *,
    owner_id: UUID,
    title: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Chat:
    """Create a chat for `owner_id`."""
    data = validated(
        ChatCreate, owner_id=owner_id, title=title, metadata={} if metadata is None else metadata
    )
    params = {"owner_id": data.owner_id, "title": data.title, "metadata": Jsonb(data.metadata)}
    async with conn.cursor(row_factory=CHAT_ROW) as cursor:
        await cursor.execute(INSERT_CHAT, params)
        return returned(await cursor.fetchone())


@database_errors
async def get_chat(conn: AsyncConnection[Any], chat_id: UUID) -> Chat | None:
    """The chat, or None if it does not exist or is deleted."""
    async with conn.cursor(row_factory=CHAT_ROW) as cursor:
        await execute(cursor, SELECT_CHAT, [as_uuid(chat_id, "chat_id")])
        return await cursor.fetchone()


@database_errors
async def update_chat(
    conn: AsyncConnection[Any],
    chat_id: UUID,
    *,
    title: str | None = UNSET,
    metadata: Mapping[str, Any] = UNSET,
) -> Chat:
    """Set the given fields (title=None clears the title); metadata is replaced whole."""
    given = {
        name: value
        for name, value in (("title", title), ("metadata", metadata))
        if value is not UNSET
    }
    data = validated(ChatUpdate, **given)
    params = {
        "chat_id": as_uuid(chat_id, "chat_id"),
        "set_title": "title" in given,
        "title": data.title,
        "set_metadata": "metadata" in given,
        "metadata": Jsonb(data.metadata),
    }
    async with conn.cursor(row_factory=CHAT_ROW) as cursor:
        await cursor.execute(UPDATE_CHAT, params)
        chat = await cursor.fetchone()
    if chat is None:
        raise NotFoundError(f"chat {chat_id} not found")
    return chat


@database_errors
async def delete_chat(conn: AsyncConnection[Any], chat_id: UUID) -> None:
    """Soft-delete the chat and its messages (also those whose writers the delete waited for)."""
    chat_id = as_uuid(chat_id, "chat_id")
    chat = conn.cursor()
    async with conn.pipeline():
        await chat.execute(SOFT_DELETE_CHAT, [chat_id])
        await conn.execute(SOFT_DELETE_CHAT_MESSAGES, [chat_id])
    if await chat.fetchone() is None:
        raise NotFoundError(f"chat {chat_id} not found", field="chat_id")


@database_errors
async def list_chats(
    conn: AsyncConnection[Any],
    *,
    owner_id: UUID,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Chat]:
    """The owner's chats, most recent activity (last message, else creation) first."""
    check_limit(limit)
    owner_id = as_uuid(owner_id, "owner_id")
    scope = f"chats:{owner_id}"
    after_activity, after_id = newest_first_start(cursor, scope)
    params = {
        "owner_id": owner_id,
        "after_activity": after_activity,
        "after_id": after_id,
        "limit": limit + 1,
    }
    async with conn.cursor(row_factory=CHAT_ROW) as db_cursor:
        await db_cursor.execute(SELECT_CHATS_PAGE, params)
        rows = await db_cursor.fetchall()
    return page_of(
        rows, limit, lambda chat: encode_cursor(scope, chat.last_activity_at.isoformat(), chat.id)
    )


@database_errors
async def add_message(
    conn: AsyncConnection[Any],
    chat_id: UUID,
    *,
    role: str,
    content: str,
    embedding: Sequence[float] | Any | None = None,
    token_count: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Message:
    """Append a message to a live chat and set the chat's `last_message_at`."""
    data = validated(
        MessageCreate,
        chat_id=chat_id,
        role=role,
        content=content,
        embedding=embedding,
        token_count=token_count,
        metadata={} if metadata is None else metadata,
    )
    async with conn.cursor(row_factory=MESSAGE_ROW) as cursor:
        await execute(cursor, INSERT_MESSAGE, _message_params(data), binary=True)
        message = await cursor.fetchone()
    if message is None:
        raise NotFoundError(f"chat {chat_id} not found", field="chat_id")
    return message


@database_errors
async def add_messages(
    conn: AsyncConnection[Any], messages: Sequence[MessageCreate | Mapping[str, Any]]
) -> int:
    """Insert many messages with one binary COPY; return how many. All or nothing. Under
    row-level security, where COPY is refused, it is a COPY into a temporary table and one
    INSERT from it.

    Messages keep their order: each gets a created_at a microsecond after the one before
    (unless it brings its own). Every chat must exist and be live.
    """
    rows = _message_rows(messages)
    if not rows:
        return 0
    chat_ids = list({row["chat_id"] for row in rows})
    async with conn.transaction():
        cursor = await conn.execute(LOCK_CHATS_FOR_MESSAGES, [chat_ids])
        found = await cursor.fetchall()
        owners: dict[UUID, UUID] = {row[0]: row[1] for row in found}
        missing = [str(chat_id) for chat_id in chat_ids if chat_id not in owners]
        if missing:
            raise NotFoundError(
                f"chat_id: chat(s) not found: {', '.join(missing)}", field="chat_id"
            )

        clock: datetime = max(row[2] for row in found)
        last_at: dict[UUID, datetime] = {}
        values = []
        for offset, row in enumerate(rows):
            chat_id = row["chat_id"]
            created_at = row.get("created_at") or clock + timedelta(microseconds=offset)
            latest = last_at.get(chat_id)
            if latest is None or created_at > latest:
                last_at[chat_id] = created_at
            values.append(
                (
                    chat_id,
                    owners[chat_id],
                    row["role"],
                    row["content"],
                    row.get("embedding"),
                    row.get("token_count"),
                    Jsonb(row.get("metadata", {})),
                    created_at,
                )
            )
        if found[0][3]:  # under row-level security
            if not found[0][4]:
                await conn.execute(CREATE_STAGED_MESSAGES)
            async with conn.cursor().copy(COPY_STAGED_MESSAGES) as copy:
                copy.set_types(COPY_MESSAGES_TYPES[:-1])
                for value in values:
                    await copy.write_row(value)
            await conn.execute(MOVE_STAGED_MESSAGES)
            await conn.execute(EMPTY_STAGED_MESSAGES)
        else:
            async with conn.cursor().copy(COPY_MESSAGES) as copy:
                copy.set_types(COPY_MESSAGES_TYPES)
                for value in values:
                    await copy.write_row((*value, value[-1]))
        await conn.execute(UPDATE_CHATS_LAST_MESSAGE_AT, [list(last_at), list(last_at.values())])
    return len(rows)


@database_errors
async def get_message(conn: AsyncConnection[Any], message_id: UUID) -> Message | None:
    """The message, or None if it does not exist or is deleted."""
    async with conn.cursor(row_factory=MESSAGE_ROW) as cursor:
        await cursor.execute(SELECT_MESSAGE, [as_uuid(message_id, "message_id")], binary=True)
        return await cursor.fetchone()


@database_errors
async def delete_message(conn: AsyncConnection[Any], message_id: UUID) -> None:
    """Soft-delete the message."""
    cursor = await conn.execute(SOFT_DELETE_MESSAGE, [as_uuid(message_id, "message_id")])
    if await cursor.fetchone() is None:
        raise NotFoundError(f"message {message_id} not found", field="message_id")


@database_errors
async def count_messages(conn: AsyncConnection[Any], chat_id: UUID) -> int:
    """How many live messages the chat has."""
    cursor = await conn.execute(COUNT_MESSAGES, {"chat_id": as_uuid(chat_id, "chat_id")})
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


@database_errors
async def list_messages(
    conn: AsyncConnection[Any],
    chat_id: UUID,
    *,
    limit: int = 50,
    before: str | None = None,
) -> Page[Message]:
    """The newest `limit` messages older than the cursor `before`, in chronological order.

    `next_cursor` fetches the page before this one (older messages).
    """
    check_limit(limit)
    chat_id = as_uuid(chat_id, "chat_id")
    scope = f"messages:{chat_id}"
    before_created_at, before_id = newest_first_start(before, scope)
    params = {
        "chat_id": chat_id,
        "before_created_at": before_created_at,
        "before_id": before_id,
        "limit": limit + 1,
    }
    async with conn.cursor(row_factory=MESSAGE_ROW) as cursor:
        # Sent without a pipeline: a page of 50 rows read through one cost more client CPU in
        # psycopg than the round trip of its BEGIN saved (bench throughput: 0.88x).
        await cursor.execute(SELECT_MESSAGES_PAGE, params, binary=True)
        rows = await cursor.fetchall()
    page = page_of(
        rows,
        limit,
        lambda message: encode_cursor(scope, message.created_at.isoformat(), message.id),
    )
    page.items.reverse()
    return page


@database_errors
async def set_message_embedding(
    conn: AsyncConnection[Any], message_id: UUID, embedding: Any
) -> None:
    """Store the embedding of a live message (list of floats or numpy array)."""
    data = validated(EmbeddingInput, embedding=embedding)
    cursor = await conn.execute(
        UPDATE_MESSAGE_EMBEDDING, [data.embedding, as_uuid(message_id, "message_id")]
    )
    if await cursor.fetchone() is None:
        raise NotFoundError(f"message {message_id} not found", field="message_id")


@database_errors
async def set_message_embeddings(
    conn: AsyncConnection[Any], embeddings: Mapping[UUID, Any] | Sequence[tuple[UUID, Any]]
) -> int:
    """Store many embeddings at once (message id → vector); return how many live messages
    were updated. Every vector is validated before anything is written.

    Each row updated also updates the HNSW index; to embed a large backlog, drop and rebuild
    the index around it, or run this in batches of a few thousand.
    """
    ids, vectors = embedding_pairs(embeddings, "embeddings", "message_id")
    if not ids:
        return 0
    cursor = await conn.execute(UPDATE_MESSAGE_EMBEDDINGS, [ids, vectors], binary=True)
    return cursor.rowcount


# Helpers ----------------------------------------------------------------------------------


def _message_params(data: MessageCreate) -> dict[str, Any]:
    return {
        "chat_id": data.chat_id,
        "role": data.role,
        "content": data.content,
        "embedding": data.embedding,
        "token_count": data.token_count,
        "metadata": Jsonb(data.metadata),
    }


def _message_rows(messages: Sequence[MessageCreate | Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Every message as a mapping of its fields (validated_batch: MessageCreate instances as
    they are, the dicts validated in one call as MessageCreateDict)."""
    rows = validated_batch(messages, MESSAGE_DICTS, MessageCreate, "messages")
    return [dict(row) if isinstance(row, MessageCreate) else row for row in rows]
