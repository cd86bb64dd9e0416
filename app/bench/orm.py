"""The ORM side of `agentdb bench layer`: SQLAlchemy 2.0 async ORM on asyncpg.

Mapped classes for the seven tables the benchmark touches, and the benchmark's operations
written the way a competent SQLAlchemy user would write them: an `AsyncSession` per unit of
work, `select()` statements, objects added and mutated, `flush`/`commit`, row locks where the
thin layer's single statement is atomic (SELECT … FOR UPDATE before a read-modify-write), and
server-generated values fetched with RETURNING (`eager_defaults`) instead of extra SELECTs.
Sessions are made with `expire_on_commit=False`, as async code must, so objects stay usable
after the commit. Only the benchmark imports this module (the `bench` extra); agentdb itself
has no ORM.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Computed,
    DateTime,
    Dialect,
    FetchedValue,
    ForeignKey,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column

from app.agents.models import ToolSpec
from app.agents.tools import content_hash
from app.database.vectors import EMBEDDING_DIMENSIONS


class BinaryVector(Vector):
    """pgvector's SQLAlchemy type, its values bound as they are: the binary codec that
    `make_engine` registers with asyncpg encodes them (the stock type binds the text form,
    which that codec refuses)."""

    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> None:
        return None


class Base(DeclarativeBase):
    # Every timestamp column is timestamptz.
    type_annotation_map = {datetime: DateTime(timezone=True)}  # noqa: RUF012


class Chat(Base):
    __tablename__ = "chats"
    __table_args__ = {"schema": "messaging"}  # noqa: RUF012
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=func.gen_random_uuid())
    owner_id: Mapped[uuid.UUID]
    title: Mapped[str | None] = mapped_column(String(500))
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb")
    )
    last_message_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), server_onupdate=FetchedValue()
    )
    deleted_at: Mapped[datetime | None]


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = {"schema": "messaging"}  # noqa: RUF012
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=func.gen_random_uuid())
    chat_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messaging.chats.id"))
    owner_id: Mapped[uuid.UUID]
    role: Mapped[str] = mapped_column(String(20))
    content: Mapped[str] = mapped_column(Text)
    embedding: Mapped[Any | None] = mapped_column(Vector(EMBEDDING_DIMENSIONS))
    content_tsv: Mapped[Any] = deferred(
        mapped_column(TSVECTOR, Computed("to_tsvector('english'::regconfig, content)"))
    )
    token_count: Mapped[int | None] = mapped_column(Integer)
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb")
    )
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), server_onupdate=FetchedValue()
    )
    deleted_at: Mapped[datetime | None]


class Todo(Base):
    __tablename__ = "todos"
    __table_args__ = {"schema": "tasks"}  # noqa: RUF012
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=func.gen_random_uuid())
    owner_id: Mapped[uuid.UUID]
    chat_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("messaging.chats.id"))
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), server_default="pending")
    priority: Mapped[int] = mapped_column(SmallInteger, server_default="3")
    due_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb")
    )
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), server_onupdate=FetchedValue()
    )
    deleted_at: Mapped[datetime | None]


class Execution(Base):
    __tablename__ = "executions"
    __table_args__ = {"schema": "agents"}  # noqa: RUF012
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=func.gen_random_uuid())
    chat_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("messaging.chats.id"))
    message_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("messaging.messages.id"))
    todo_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tasks.todos.id"))
    agent_name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), server_default="queued")
    priority: Mapped[int] = mapped_column(Integer, server_default="0")
    run_after: Mapped[datetime] = mapped_column(server_default=func.now())
    dedupe_key: Mapped[str | None] = mapped_column(String(200))
    input: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    output: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(200))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))
    attempt: Mapped[int] = mapped_column(Integer, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, server_default="3")
    worker_id: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None]
    is_cancel_requested: Mapped[bool] = mapped_column(server_default="false")
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), server_onupdate=FetchedValue()
    )


class TelegramSession(Base):
    __tablename__ = "sessions"
    __table_args__ = {"schema": "telegram"}  # noqa: RUF012
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=func.gen_random_uuid())
    bot_id: Mapped[int] = mapped_column(BigInteger)
    telegram_chat_id: Mapped[int] = mapped_column(BigInteger)
    telegram_user_id: Mapped[int] = mapped_column(BigInteger)
    thread_id: Mapped[int | None] = mapped_column(BigInteger)
    business_connection_id: Mapped[str | None] = mapped_column(String(200))
    destiny: Mapped[str] = mapped_column(String(100), server_default="default")
    chat_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("messaging.chats.id"))
    username: Mapped[str | None] = mapped_column(String(64))
    language_code: Mapped[str | None] = mapped_column(String(35))
    state: Mapped[str | None] = mapped_column(String(500))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    is_active: Mapped[bool] = mapped_column(server_default="true")
    last_seen_at: Mapped[datetime] = mapped_column(server_default=func.now())
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), server_onupdate=FetchedValue()
    )


class McpServer(Base):
    __tablename__ = "mcp_servers"
    __table_args__ = {"schema": "agents"}  # noqa: RUF012
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=func.gen_random_uuid())
    owner_id: Mapped[uuid.UUID | None]
    name: Mapped[str] = mapped_column(String(200))
    transport: Mapped[str] = mapped_column(String(10))
    endpoint: Mapped[str] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    is_enabled: Mapped[bool] = mapped_column(server_default="true")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), server_onupdate=FetchedValue()
    )
    deleted_at: Mapped[datetime | None]


class Tool(Base):
    __tablename__ = "tools"
    __table_args__ = {"schema": "agents"}  # noqa: RUF012
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=func.gen_random_uuid())
    mcp_server_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.mcp_servers.id"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, server_default="")
    input_schema: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=text('\'{"type": "object"}\'::jsonb')
    )
    # 6 KB a row, and needed only by the search itself: loaded when asked for.
    embedding: Mapped[Any | None] = deferred(mapped_column(BinaryVector(EMBEDDING_DIMENSIONS)))
    content_hash: Mapped[str] = mapped_column(String(64))
    is_enabled: Mapped[bool] = mapped_column(server_default="true")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), server_onupdate=FetchedValue()
    )


SESSION_KEY = (
    "bot_id",
    "telegram_chat_id",
    "telegram_user_id",
    "thread_id",
    "business_connection_id",
    "destiny",
)


def asyncpg_url(socket_dir: str, port: int | None, database: str) -> str:
    """A SQLAlchemy URL for asyncpg on the throwaway server's Unix socket."""
    port_part = f"&port={port}" if port else ""
    return f"postgresql+asyncpg://postgres@/{database}?host={socket_dir}{port_part}"


def make_engine(url: str) -> AsyncEngine:
    """An async engine whose connections know pgvector's `vector` type."""
    engine = create_async_engine(url, pool_size=2, max_overflow=0)

    @event.listens_for(engine.sync_engine, "connect")
    def _register_vector(dbapi_connection: Any, _record: Any) -> None:
        from pgvector.asyncpg import register_vector

        dbapi_connection.run_async(register_vector)

    return engine


class OrmLayer:
    """The benchmark's operations as idiomatic SQLAlchemy 2.0 async ORM code."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def add_message(
        self, chat_id: uuid.UUID, role: str, content: str, token_count: int, metadata: Any
    ) -> Message:
        async with self.sessions() as session, session.begin():
            # Lock the chat (as the thin layer's UPDATE does) so messages of one chat are
            # stamped in commit order, and copy its owner onto the message.
            chat = await session.scalar(
                select(Chat).where(Chat.id == chat_id, Chat.deleted_at.is_(None)).with_for_update()
            )
            if chat is None:
                raise LookupError(f"chat {chat_id} not found")
            message = Message(
                chat_id=chat.id,
                owner_id=chat.owner_id,
                role=role,
                content=content,
                token_count=token_count,
                metadata_=metadata,
            )
            session.add(message)
            await session.flush()
            chat.last_message_at = message.created_at
        return message

    async def list_messages(self, chat_id: uuid.UUID, limit: int = 50) -> list[Message]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(Message)
                .where(Message.chat_id == chat_id, Message.deleted_at.is_(None))
                .order_by(Message.created_at.desc(), Message.id.desc())
                .limit(limit + 1)
            )
            messages = list(rows)[:limit]
        messages.reverse()
        return messages

    async def get_chat(self, chat_id: uuid.UUID) -> Chat | None:
        async with self.sessions() as session:
            chat: Chat | None = await session.scalar(
                select(Chat).where(Chat.id == chat_id, Chat.deleted_at.is_(None))
            )
            return chat

    async def update_todo(self, todo_id: uuid.UUID, updates: Mapping[str, Any]) -> Todo:
        async with self.sessions() as session, session.begin():
            todo = await session.scalar(
                select(Todo).where(Todo.id == todo_id, Todo.deleted_at.is_(None)).with_for_update()
            )
            if todo is None:
                raise LookupError(f"todo {todo_id} not found")
            for name, value in updates.items():
                setattr(todo, name, value)
            if "status" in updates:
                if updates["status"] != "done":
                    todo.completed_at = None
                elif todo.completed_at is None:
                    todo.completed_at = datetime.now(UTC)
        return todo

    async def enqueue_execution(
        self, agent_name: str, input: dict[str, Any], chat_id: uuid.UUID
    ) -> Execution:
        async with self.sessions() as session, session.begin():
            execution = Execution(agent_name=agent_name, input=input, chat_id=chat_id)
            session.add(execution)
            await session.flush()
            await session.execute(select(func.pg_notify("agentdb_executions", agent_name)))
        return execution

    async def claim_next_execution(self, worker_id: str) -> Execution | None:
        async with self.sessions() as session, session.begin():
            execution = await session.scalar(
                select(Execution)
                .where(Execution.status == "queued", Execution.run_after <= func.now())
                .order_by(Execution.priority.desc(), Execution.run_after, Execution.created_at)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if execution is None:
                return None
            now = datetime.now(UTC)
            execution.status = "running"
            execution.attempt += 1
            execution.worker_id = worker_id
            execution.started_at = now
            execution.heartbeat_at = now
            execution.finished_at = None
        return execution

    async def complete_execution(
        self,
        execution_id: uuid.UUID,
        output: Any,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: Decimal,
    ) -> Execution:
        async with self.sessions() as session, session.begin():
            execution = await session.get(Execution, execution_id, with_for_update=True)
            if execution is None:
                raise LookupError(f"execution {execution_id} not found")
            if execution.status != "running":
                raise RuntimeError(f"cannot complete execution {execution_id}: {execution.status}")
            execution.status = "succeeded"
            execution.output = output
            execution.model = model
            execution.prompt_tokens = prompt_tokens
            execution.completion_tokens = completion_tokens
            execution.cost_usd = cost_usd
            execution.finished_at = max(
                datetime.now(UTC), execution.started_at or datetime.now(UTC)
            )
        return execution

    async def upsert_session_and_update_data(
        self, key: Mapping[str, Any], username: str, language_code: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        async with self.sessions() as session, session.begin():
            # INSERT … ON CONFLICT is the only race-free upsert; SQLAlchemy exposes it as
            # postgresql.insert(), returning the ORM object.
            inserted = pg_insert(TelegramSession).values(
                **key, username=username, language_code=language_code
            )
            statement = inserted.on_conflict_do_update(
                constraint="uq_sessions_fsm_key",
                set_={
                    "username": func.coalesce(inserted.excluded.username, TelegramSession.username),
                    "language_code": func.coalesce(
                        inserted.excluded.language_code, TelegramSession.language_code
                    ),
                    "is_active": True,
                    "last_seen_at": func.now(),
                },
            ).returning(TelegramSession)
            telegram_session = await session.scalar(
                statement, execution_options={"populate_existing": True}
            )
            if telegram_session is None:
                raise RuntimeError("INSERT … RETURNING returned no row")
            # The FSM data merge, in the row lock the upsert holds: read, merge, write back.
            telegram_session.data = {**telegram_session.data, **patch}
            await session.flush()
            return telegram_session.data

    async def add_messages(self, rows: Sequence[Mapping[str, Any]]) -> int:
        async with self.sessions() as session, session.begin():
            chat_ids = list({row["chat_id"] for row in rows})
            owners = dict(
                (
                    await session.execute(
                        select(Chat.id, Chat.owner_id)
                        .where(Chat.id.in_(chat_ids), Chat.deleted_at.is_(None))
                        .with_for_update(key_share=True)
                    )
                ).all()
            )
            if len(owners) != len(chat_ids):
                raise LookupError("chat(s) not found")
            clock = datetime.now(UTC)
            last_at: dict[uuid.UUID, datetime] = {}
            values = []
            for offset, row in enumerate(rows):
                at = clock + timedelta(microseconds=offset)
                last_at[row["chat_id"]] = at
                values.append(
                    {
                        "chat_id": row["chat_id"],
                        "owner_id": owners[row["chat_id"]],
                        "role": row["role"],
                        "content": row["content"],
                        "token_count": row["token_count"],
                        "metadata_": row["metadata"],
                        "created_at": at,
                        "updated_at": at,
                    }
                )
            # ORM bulk INSERT: one executemany, no per-object identity-map bookkeeping.
            await session.execute(insert(Message), values)
            await session.execute(
                update(Chat),
                [{"id": chat_id, "last_message_at": at} for chat_id, at in last_at.items()],
            )
        return len(rows)

    async def sync_tools(
        self, server_id: uuid.UUID, tools: Sequence[Mapping[str, Any]]
    ) -> dict[str, int]:
        """Make the server's stored tools the offered ones: load them all, compare content
        hashes (the same as agentdb's, so that either may sync a server), add the new,
        update the changed (clearing their embedding), disable the ones no longer offered."""
        counts = dict.fromkeys(("inserted", "updated", "disabled", "unchanged"), 0)
        async with self.sessions() as session, session.begin():
            # The server's row lock, so that two syncs of one server run one after the other.
            locked = await session.scalar(
                select(McpServer.id)
                .where(McpServer.id == server_id, McpServer.deleted_at.is_(None))
                .with_for_update(key_share=True)
            )
            if locked is None:
                raise LookupError(f"MCP server {server_id} not found")
            stored = {
                tool.name: tool
                for tool in await session.scalars(
                    select(Tool).where(Tool.mcp_server_id == server_id)
                )
            }
            offered = set()
            for spec in tools:
                name = spec["name"]
                offered.add(name)
                digest = content_hash(ToolSpec.model_construct(**spec))
                tool = stored.get(name)
                if tool is None:
                    session.add(
                        Tool(
                            mcp_server_id=server_id,
                            name=name,
                            description=spec["description"],
                            input_schema=spec["input_schema"],
                            content_hash=digest,
                        )
                    )
                    counts["inserted"] += 1
                elif tool.content_hash != digest or not tool.is_enabled:
                    if tool.content_hash != digest:
                        tool.embedding = None
                    tool.description = spec["description"]
                    tool.input_schema = spec["input_schema"]
                    tool.content_hash = digest
                    tool.is_enabled = True
                    counts["updated"] += 1
                else:
                    counts["unchanged"] += 1
            for name, tool in stored.items():
                if tool.is_enabled and name not in offered:
                    tool.is_enabled = False
                    counts["disabled"] += 1
            await session.flush()
        return counts

    async def select_tools(
        self, embedding: Any, owner_id: uuid.UUID, limit: int = 8
    ) -> list[tuple[Tool, float]]:
        """The `limit` enabled, embedded tools nearest to `embedding` (cosine) of enabled,
        live servers that are shared or the owner's: the ORM's join, ordered by distance.
        (Whether the planner takes the HNSW index for it, or joins and sorts every distance,
        is the planner's call; no search settings, as no other operation here sets any.)"""
        distance = Tool.embedding.cosine_distance(embedding)
        async with self.sessions() as session:
            rows = await session.execute(
                select(Tool, (1 - distance).label("similarity"))
                .join(McpServer, McpServer.id == Tool.mcp_server_id)
                .where(
                    Tool.is_enabled,
                    Tool.embedding.is_not(None),
                    McpServer.is_enabled,
                    McpServer.deleted_at.is_(None),
                    or_(McpServer.owner_id.is_(None), McpServer.owner_id == owner_id),
                )
                .order_by(distance)
                .limit(limit)
            )
            return [(tool, similarity) for tool, similarity in rows.tuples()]
