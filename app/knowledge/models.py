"""Row and input models of schema `knowledge`: memories, documents and their chunks."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, NotRequired, get_args
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
    with_config,
)
from typing_extensions import TypedDict  # pydantic reads typing.TypedDict only from 3.12

from app.database.validation import (
    Count32,
    Duration,
    Flag,
    InputModel,
    JsonObject,
    NonBlankText,
    Text,
    Timestamp,
    Title,
    Uuid,
)
from app.database.vectors import Embedding

MemoryKind = Literal["fact", "preference", "episode", "instruction"]
MEMORY_KINDS: tuple[str, ...] = get_args(MemoryKind)

MAX_RECALL_LIMIT = 200
"""The most memories or chunks one recall or search returns."""
MAX_WEIGHT = 100.0
MAX_QUERY_LENGTH = 10_000
"""Characters of a full-text query (as for messages: the tsquery parser's stack)."""


def _real(low: float, high: float) -> Any:
    """A validator of a real number (an int or float, never a bool or a numeric string) that
    is finite and from `low` to `high`."""

    def check(value: Any) -> float:
        if type(value) not in (int, float):
            raise ValueError(f"must be a number, not {type(value).__name__}")
        if not low <= value <= high:  # also refuses NaN and infinity
            raise ValueError(f"must be a number from {low:g} to {high:g}, not {value!r}")
        return float(value)

    return PlainValidator(check)


Importance = Annotated[float, _real(0.0, 1.0)]
"""How much a memory matters: from 0 to 1."""

Weight = Annotated[float, _real(0.0, MAX_WEIGHT)]
MergeThreshold = Annotated[float, _real(0.0, 1.0)]
ShortText = Annotated[
    NonBlankText,
    StringConstraints(max_length=255),
]
ContentHash = Annotated[NonBlankText, StringConstraints(max_length=128)]


# Row models -------------------------------------------------------------------------------


class Memory(BaseModel):
    """A row of knowledge.memories."""

    id: UUID
    owner_id: UUID
    chat_id: UUID | None
    source_message_id: UUID | None
    kind: MemoryKind
    content: str
    embedding: list[float] | None
    """The stored vector; None in recall's hits (6 KB a row the caller did not ask for)."""
    importance: float
    times_reinforced: int
    last_recalled_at: datetime | None
    recall_count: int
    expires_at: datetime | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


class MemoryHit(BaseModel):
    """A recalled memory (its embedding is not loaded), its similarity and its score."""

    memory: Memory
    similarity: float
    """1 - cosine distance between the memory and the query embedding."""
    score: float
    """weights.similarity * similarity + weights.importance * importance + weights.recency *
    0.5 ^ (age / half_life), age since the last recall (else since creation)."""


class Document(BaseModel):
    """A row of knowledge.documents."""

    id: UUID
    owner_id: UUID
    title: str
    source_uri: str | None
    content_type: str
    content_hash: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


class Chunk(BaseModel):
    """A row of knowledge.chunks (without the generated full-text column)."""

    id: UUID
    document_id: UUID
    owner_id: UUID
    chunk_index: int
    content: str
    embedding: list[float] | None
    """The stored vector; None in search hits, and for a chunk that is not embedded."""
    token_count: int | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


class ChunkHit(BaseModel):
    """A search result: the chunk (its embedding is not loaded) and how well it matched."""

    chunk: Chunk
    similarity: float | None = None
    """1 - cosine distance to the query embedding; None when only the words matched."""
    score: float | None = None
    """Hybrid search only: the reciprocal-rank-fusion score (higher is better)."""


# Input models -----------------------------------------------------------------------------


class RecallWeights(InputModel):
    """How recall weighs the three terms of its score; 0 switches a term off."""

    similarity: Weight = 1.0
    importance: Weight = 0.3
    recency: Weight = 0.3

    @model_validator(mode="after")
    def _some_weight(self) -> RecallWeights:
        if not (self.similarity or self.importance or self.recency):
            raise ValueError("at least one weight must be above 0")
        return self


DEFAULT_WEIGHTS = RecallWeights()
DEFAULT_HALF_LIFE = timedelta(days=14)


class MemoryCreate(InputModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    owner_id: Uuid
    content: NonBlankText
    embedding: Embedding
    kind: MemoryKind = "fact"
    importance: Importance = 0.5
    chat_id: Uuid | None = None
    source_message_id: Uuid | None = None
    metadata: JsonObject = Field(default_factory=dict)
    expires_at: Timestamp | None = None
    merge_threshold: MergeThreshold = 0.92


class MemoryUpdate(InputModel):
    """The fields of a partial update; which fields to set comes from the keys given to
    update_memory. A given None clears expires_at; the other fields are NOT NULL."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    content: NonBlankText | None = None
    embedding: Embedding | None = None
    kind: MemoryKind | None = None
    importance: Importance | None = None
    expires_at: Timestamp | None = None
    metadata: JsonObject | None = None

    @field_validator("content", "embedding", "kind", "importance", "metadata", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be None (the column is NOT NULL)")
        return value


MEMORY_UPDATE_FIELDS: tuple[str, ...] = tuple(MemoryUpdate.model_fields)


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than zero")
    return value


class RecallInput(InputModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    owner_id: Uuid
    embedding: Embedding
    limit: Annotated[StrictInt, Field(ge=1, le=MAX_RECALL_LIMIT)]
    kinds: list[MemoryKind] | None = None
    chat_id: Uuid | None = None
    weights: RecallWeights
    half_life: Annotated[Duration, AfterValidator(_positive)]
    touch: Flag


class MemoryFilter(InputModel):
    owner_id: Uuid
    kinds: list[MemoryKind] | None = None


class DocumentCreate(InputModel):
    owner_id: Uuid
    title: Title
    source_uri: NonBlankText | None = None
    content_type: ShortText = "text/plain"
    content_hash: ContentHash | None = None
    metadata: JsonObject = Field(default_factory=dict)


class ChunkCreate(InputModel):
    """One chunk of a document; `add_chunks` takes a sequence of these (or of dicts)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    chunk_index: Count32
    content: Text
    embedding: Embedding | None = None
    token_count: Count32 | None = None
    metadata: JsonObject = Field(default_factory=dict)


@with_config(ConfigDict(extra="forbid", arbitrary_types_allowed=True))
class ChunkCreateDict(TypedDict):
    """The fields of `ChunkCreate` as a dict, validated all at once by add_chunks. The same
    fields with the same types; a key left out takes ChunkCreate's default."""

    chunk_index: Count32
    content: Text
    embedding: NotRequired[Embedding | None]
    token_count: NotRequired[Count32 | None]
    metadata: NotRequired[JsonObject]


class ChunkSearchInput(InputModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    owner_id: Uuid
    embedding: Embedding
    limit: Annotated[StrictInt, Field(ge=1, le=MAX_RECALL_LIMIT)]
    document_ids: list[Uuid] | None = None
    query: Annotated[NonBlankText, StringConstraints(max_length=MAX_QUERY_LENGTH)] | None = None
