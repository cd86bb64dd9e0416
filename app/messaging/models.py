"""Row and input models of schema `messaging`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, with_config
from typing_extensions import TypedDict  # pydantic reads typing.TypedDict only from 3.12

from app.database.validation import (
    Count32,
    InputModel,
    JsonObject,
    NonBlankText,
    Text,
    Timestamp,
    Title,
    Uuid,
)
from app.database.vectors import Embedding

Role = Literal["system", "user", "assistant", "tool"]


class _Unset:
    """Marks an argument that was not given (None is a value: it clears the column)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


# Row models -------------------------------------------------------------------------------


class Chat(BaseModel):
    """A row of messaging.chats."""

    id: UUID
    owner_id: UUID
    title: str | None
    metadata: dict[str, Any]
    last_message_at: datetime | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None

    @property
    def last_activity_at(self) -> datetime:
        """When the chat last changed hands: its newest message, else its creation."""
        return self.last_message_at or self.created_at


class Message(BaseModel):
    """A row of messaging.messages (without the generated full-text column)."""

    id: UUID
    chat_id: UUID
    owner_id: UUID
    role: Role
    content: str
    embedding: list[float] | None
    token_count: int | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


# Input models -----------------------------------------------------------------------------


class ChatCreate(InputModel):
    """The fields of a new chat, as `create_chat` takes them."""

    owner_id: Uuid
    title: Title | None = None
    metadata: JsonObject = Field(default_factory=dict)


class ChatUpdate(InputModel):
    """The fields `update_chat` may set."""

    title: Title | None = None
    metadata: JsonObject = Field(default_factory=dict)


class MessageCreate(InputModel):
    """One message to add; `add_messages` takes a sequence of these."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    chat_id: Uuid
    role: Role
    content: Text
    embedding: Embedding | None = None
    token_count: Count32 | None = None
    metadata: JsonObject = Field(default_factory=dict)
    created_at: Timestamp | None = None


@with_config(ConfigDict(extra="forbid", arbitrary_types_allowed=True))
class MessageCreateDict(TypedDict):
    """The fields of `MessageCreate` as a dict, for callers of `add_messages` that pass dicts.

    add_messages validates such dicts with this type, all in one call, which costs about half
    of building a `MessageCreate` per message. The same fields with the same types (a test
    holds the two together); a key left out takes MessageCreate's default.
    """

    chat_id: Uuid
    role: Role
    content: Text
    embedding: NotRequired[Embedding | None]
    token_count: NotRequired[Count32 | None]
    metadata: NotRequired[JsonObject]
    created_at: NotRequired[Timestamp | None]


class EmbeddingInput(InputModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    embedding: Embedding


class MessageHit(BaseModel):
    """A search result: the message (its embedding is not loaded) and how well it matched."""

    message: Message
    similarity: float | None = None
    """1 - cosine distance to the query embedding; None when only the keywords matched."""
    score: float | None = None
    """Hybrid search only: the reciprocal-rank-fusion score (higher is better)."""


MAX_SEARCH_LIMIT = 200
MAX_EF_SEARCH = 1000  # pgvector's upper bound for hnsw.ef_search
MAX_QUERY_LENGTH = 10_000
"""Characters of a full-text query: PostgreSQL's tsquery parser runs out of stack at about
20,000 words, and no one types a search that long."""


class SearchInput(InputModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    owner_id: Uuid
    embedding: Embedding
    chat_id: Uuid | None = None
    limit: Annotated[StrictInt, Field(ge=1, le=MAX_SEARCH_LIMIT)]
    ef_search: Annotated[StrictInt, Field(ge=1, le=MAX_EF_SEARCH)]
    query: Annotated[NonBlankText, StringConstraints(max_length=MAX_QUERY_LENGTH)] | None = None
