"""Long-term memory and documents (schema knowledge): remember and its reinforcement race,
recall's weighted score against a brute force of the same score, expiry, soft deletes,
paging, owner isolation through a real login, and searches that stay complete for an owner
whose rows are a tiny share of the table."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector
from psycopg import sql

from app import knowledge, messaging
from app.database import (
    AccessDeniedError,
    ConflictError,
    DatabaseConfig,
    DatabaseManager,
    InvalidInputError,
    NotFoundError,
)
from app.database.vectors import (
    EMBEDDING_DIMENSIONS,
    SET_SEARCH_SETTINGS,
    plan_choice_params,
    register_vector_types,
)
from app.knowledge import RecallWeights
from app.knowledge import documents as document_queries
from app.knowledge import memories as memory_queries
from tests.conftest import wait_for_lock_waiters

Conn = psycopg.AsyncConnection[Any]

RNG = np.random.default_rng(17)


def unit(vectors: Any) -> np.ndarray[Any, Any]:
    array = np.asarray(vectors, dtype=np.float64)
    result: np.ndarray[Any, Any] = array / np.linalg.norm(array, axis=-1, keepdims=True)
    return result.astype(np.float32)


def random_vector() -> np.ndarray[Any, Any]:
    return unit(RNG.normal(0, 1, EMBEDDING_DIMENSIONS))


def near(vector: Any, noise: float = 0.01) -> np.ndarray[Any, Any]:
    """A vector at cosine similarity about 1 - noise² * 768 from `vector` (0.99 at 0.004)."""
    return unit(np.asarray(vector) + RNG.normal(0, noise, EMBEDDING_DIMENSIONS))


def blend(vector: Any, other: Any, similarity: float) -> np.ndarray[Any, Any]:
    """A unit vector at exactly `similarity` from unit `vector`, in the plane of `other`."""
    v = np.asarray(vector, dtype=np.float64)
    w = np.asarray(other, dtype=np.float64)
    w = w - (w @ v) * v
    w /= np.linalg.norm(w)
    return unit(similarity * v + np.sqrt(1 - similarity**2) * w)


async def scalar(conn: Conn, statement: Any, params: Any = None) -> Any:
    row = await (await conn.execute(statement, params)).fetchone()
    assert row is not None
    return row[0]


COUNT_MEMORIES = "SELECT count(*) FROM knowledge.memories WHERE owner_id = %s"
AGE_MEMORY = """
UPDATE knowledge.memories
SET created_at = now() - %s::interval
WHERE id = %s
"""


# remember --------------------------------------------------------------------------------


async def test_remember_stores_a_memory_with_its_fields(conn: Conn) -> None:
    owner = uuid.uuid4()
    vector = random_vector()
    expires = datetime.now(UTC) + timedelta(days=3)
    memory = await knowledge.remember(
        conn,
        owner_id=owner,
        content="Prefers window seats",
        embedding=vector,
        kind="preference",
        importance=0.8,
        metadata={"source": "chat"},
        expires_at=expires,
    )
    assert memory.owner_id == owner and memory.kind == "preference"
    assert memory.content == "Prefers window seats"
    assert memory.importance == pytest.approx(0.8)
    assert memory.times_reinforced == 0 and memory.recall_count == 0
    assert memory.last_recalled_at is None and memory.deleted_at is None
    assert memory.expires_at == expires and memory.metadata == {"source": "chat"}
    assert memory.embedding == pytest.approx(vector.tolist(), abs=1e-6)
    assert await knowledge.get_memory(conn, memory.id) == memory


async def test_remembering_a_near_duplicate_reinforces_the_memory(conn: Conn) -> None:
    owner = uuid.uuid4()
    vector = random_vector()
    first = await knowledge.remember(
        conn,
        owner_id=owner,
        content="Lives in Lyon",
        embedding=vector,
        importance=0.7,
        metadata={"a": 1},
    )
    again = await knowledge.remember(
        conn,
        owner_id=owner,
        content="Lives in Lyon, France",
        embedding=near(vector),
        importance=0.4,
        metadata={"b": 2},
    )
    assert again.id == first.id
    assert again.times_reinforced == 1
    assert again.content == "Lives in Lyon, France"
    assert again.importance == pytest.approx(0.7)  # the higher of both
    assert again.metadata == {"a": 1, "b": 2}
    assert await scalar(conn, COUNT_MEMORIES, [owner]) == 1


async def test_remember_adds_a_new_memory_below_the_threshold_or_of_another_kind(
    conn: Conn,
) -> None:
    owner = uuid.uuid4()
    vector = random_vector()
    first = await knowledge.remember(conn, owner_id=owner, content="Likes tea", embedding=vector)
    other_kind = await knowledge.remember(
        conn, owner_id=owner, content="Likes tea", embedding=vector, kind="preference"
    )
    below = await knowledge.remember(
        conn,
        owner_id=owner,
        content="Likes green tea",
        embedding=blend(vector, random_vector(), 0.85),
    )
    lower_threshold = await knowledge.remember(
        conn,
        owner_id=owner,
        content="Likes black tea",
        embedding=blend(vector, random_vector(), 0.85),
        merge_threshold=0.8,
    )
    assert len({first.id, other_kind.id, below.id}) == 3
    assert lower_threshold.id in (first.id, below.id)
    assert lower_threshold.times_reinforced == 1
    another_owner = await knowledge.remember(
        conn, owner_id=uuid.uuid4(), content="Likes tea", embedding=vector
    )
    assert another_owner.times_reinforced == 0


async def test_twenty_concurrent_remembers_of_one_fact_leave_one_row_reinforced_19_times(
    database_url: str, conn: Conn
) -> None:
    owner = uuid.uuid4()
    vector = random_vector()
    start = asyncio.Event()

    async def remember_once(number: int) -> knowledge.Memory:
        # each on its own connection, not through the pool: 20 at once for real
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as own:
            await register_vector_types(own)
            await start.wait()
            return await knowledge.remember(
                own,
                owner_id=owner,
                content=f"Has a dog called Rex ({number})",
                embedding=near(vector, 0.004),
                importance=number / 20,
            )

    tasks = [asyncio.create_task(remember_once(number)) for number in range(20)]
    await asyncio.sleep(0.5)
    start.set()
    memories = await asyncio.gather(*tasks)
    assert len({memory.id for memory in memories}) == 1
    assert await scalar(conn, COUNT_MEMORIES, [owner]) == 1
    (stored,) = (await knowledge.list_memories(conn, owner_id=owner)).items
    assert stored.times_reinforced == 19
    assert stored.importance == pytest.approx(19 / 20)
    assert sorted(memory.times_reinforced for memory in memories) == list(range(20))


async def test_a_forgotten_or_expired_memory_is_not_reinforced(conn: Conn) -> None:
    owner = uuid.uuid4()
    vector = random_vector()
    forgotten = await knowledge.remember(conn, owner_id=owner, content="Old job", embedding=vector)
    await knowledge.forget(conn, forgotten.id)
    expired = await knowledge.remember(
        conn,
        owner_id=owner,
        content="Old job",
        embedding=vector,
        expires_at=datetime.now(UTC) - timedelta(seconds=1),
    )
    assert expired.id != forgotten.id
    fresh = await knowledge.remember(conn, owner_id=owner, content="Old job", embedding=vector)
    assert fresh.id not in (forgotten.id, expired.id) and fresh.times_reinforced == 0


async def test_reinforcing_keeps_the_later_expiry_and_never_shortens_a_life(conn: Conn) -> None:
    owner = uuid.uuid4()
    vector = random_vector()
    soon = datetime.now(UTC) + timedelta(days=1)
    later = soon + timedelta(days=5)
    memory = await knowledge.remember(
        conn, owner_id=owner, content="In Paris", embedding=vector, expires_at=later
    )
    memory = await knowledge.remember(
        conn, owner_id=owner, content="In Paris", embedding=vector, expires_at=soon
    )
    assert memory.expires_at == later
    memory = await knowledge.remember(conn, owner_id=owner, content="In Paris", embedding=vector)
    assert memory.expires_at is None


BAD_REMEMBER = [
    ("embedding", [1.0] * 3),
    ("embedding", [float("nan")] + [1.0] * (EMBEDDING_DIMENSIONS - 1)),
    ("embedding", [0.0] * EMBEDDING_DIMENSIONS),
    ("importance", 1.5),
    ("importance", -0.1),
    ("importance", float("nan")),
    ("importance", True),
    ("kind", "rumour"),
    ("content", "   "),
    ("content", "a\x00b"),
    ("merge_threshold", 2.0),
    ("owner_id", "not-a-uuid"),
    ("expires_at", datetime(2030, 1, 1)),
    ("metadata", ["not", "an", "object"]),
]


@pytest.mark.parametrize(
    ("field", "value"), BAD_REMEMBER, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_REMEMBER)]
)
async def test_remember_refuses_bad_input_naming_the_field_and_writes_nothing(
    conn: Conn, field: str, value: Any
) -> None:
    owner = uuid.uuid4()
    arguments: dict[str, Any] = {
        "owner_id": owner,
        "content": "fact",
        "embedding": random_vector(),
        field: value,
    }
    with pytest.raises(InvalidInputError) as raised:
        await knowledge.remember(conn, **arguments)
    assert raised.value.field == field
    assert await scalar(conn, "SELECT count(*) FROM knowledge.memories") == 0


# recall ------------------------------------------------------------------------------------


async def remember_at(
    conn: Conn,
    owner: uuid.UUID,
    content: str,
    vector: Any,
    *,
    importance: float = 0.5,
    age: timedelta = timedelta(0),
    kind: str = "fact",
) -> knowledge.Memory:
    memory = await knowledge.remember(
        conn,
        owner_id=owner,
        content=content,
        embedding=vector,
        importance=importance,
        kind=kind,
        merge_threshold=1.0,
    )
    if age:
        await conn.execute(AGE_MEMORY, [age, memory.id])
    return memory


async def test_recall_ranks_by_similarity_when_importance_and_age_are_equal(
    conn: Conn,
) -> None:
    owner = uuid.uuid4()
    query = random_vector()
    other = random_vector()
    stored = [
        await remember_at(conn, owner, f"m{s}", blend(query, other, s)) for s in (0.3, 0.9, 0.6)
    ]
    hits = await knowledge.recall(conn, owner_id=owner, embedding=query, touch=False)
    assert [hit.memory.id for hit in hits] == [stored[1].id, stored[2].id, stored[0].id]
    assert [hit.similarity for hit in hits] == pytest.approx([0.9, 0.6, 0.3], abs=1e-5)
    assert hits[0].score == pytest.approx(0.9 + 0.3 * 0.5 + 0.3 * 1.0, abs=1e-3)
    assert hits[0].memory.embedding is None


async def test_importance_and_recency_change_the_order_as_the_weights_say(conn: Conn) -> None:
    owner = uuid.uuid4()
    query = random_vector()
    other = random_vector()
    close = await remember_at(conn, owner, "close", blend(query, other, 0.8), importance=0.1)
    important = await remember_at(
        conn, owner, "important", blend(query, other, 0.7), importance=1.0
    )
    old = await remember_at(
        conn, owner, "old", blend(query, other, 0.9), importance=0.1, age=timedelta(days=56)
    )

    async def order(weights: RecallWeights) -> list[uuid.UUID]:
        hits = await knowledge.recall(
            conn, owner_id=owner, embedding=query, weights=weights, touch=False
        )
        return [hit.memory.id for hit in hits]

    # similarity alone: old (0.9), close (0.8), important (0.7)
    assert await order(RecallWeights(importance=0, recency=0)) == [old.id, close.id, important.id]
    # importance weighs in: important (0.7 + 0.5) passes old (0.9 + 0.05)
    assert (await order(RecallWeights(importance=0.5, recency=0)))[0] == important.id
    # recency weighs in: old is four half-lives old (0.0625), the others new (1.0)
    assert await order(RecallWeights(importance=0, recency=0.5)) == [close.id, important.id, old.id]
    # importance alone: similarity switched off
    assert (await order(RecallWeights(similarity=0, importance=1, recency=0)))[0] == important.id
    hits = await knowledge.recall(
        conn,
        owner_id=owner,
        embedding=query,
        touch=False,
        weights=RecallWeights(similarity=0, importance=0, recency=1),
        half_life=timedelta(days=28),
    )
    by_id = {hit.memory.id: hit.score for hit in hits}
    assert by_id[old.id] == pytest.approx(0.25, abs=1e-3)  # two half-lives of 28 days
    assert by_id[close.id] == pytest.approx(1.0, abs=1e-3)


async def test_recall_touch_stamps_the_returned_memories_and_only_those(conn: Conn) -> None:
    owner = uuid.uuid4()
    query = random_vector()
    other = random_vector()
    kept = [
        await remember_at(conn, owner, f"m{i}", blend(query, other, 0.9 - i / 10)) for i in range(3)
    ]
    untouched = await knowledge.recall(conn, owner_id=owner, embedding=query, touch=False)
    assert all(hit.memory.recall_count == 0 for hit in untouched)
    hits = await knowledge.recall(conn, owner_id=owner, embedding=query, limit=2)
    assert [hit.memory.id for hit in hits] == [kept[0].id, kept[1].id]
    assert all(hit.memory.recall_count == 1 for hit in hits)
    assert all(hit.memory.last_recalled_at is not None for hit in hits)
    stored = {m.id: m for m in (await knowledge.list_memories(conn, owner_id=owner)).items}
    assert stored[kept[0].id].recall_count == 1 == stored[kept[1].id].recall_count
    assert stored[kept[0].id].last_recalled_at == hits[0].memory.last_recalled_at
    assert stored[kept[2].id].recall_count == 0 and stored[kept[2].id].last_recalled_at is None


async def test_recency_counts_from_the_last_recall(conn: Conn) -> None:
    owner = uuid.uuid4()
    query = random_vector()
    memory = await remember_at(conn, owner, "old", query, age=timedelta(days=14))
    weights = RecallWeights(similarity=0, importance=0, recency=1)
    (first,) = await knowledge.recall(conn, owner_id=owner, embedding=query, weights=weights)
    assert first.score == pytest.approx(0.5, abs=1e-3)
    (second,) = await knowledge.recall(conn, owner_id=owner, embedding=query, weights=weights)
    assert second.memory.id == memory.id
    assert second.score == pytest.approx(1.0, abs=1e-3)


async def test_concurrent_recalls_of_the_same_memories_each_count(db: DatabaseManager) -> None:
    owner = uuid.uuid4()
    query = random_vector()
    async with db.connection() as conn:
        for i in range(5):
            await remember_at(conn, owner, f"m{i}", near(query, 0.02 * (i + 1)))

    async def recall_once() -> None:
        async with db.connection() as conn:
            await knowledge.recall(conn, owner_id=owner, embedding=query, limit=5)

    await asyncio.gather(*(recall_once() for _ in range(8)))
    async with db.connection() as conn:
        page = await knowledge.list_memories(conn, owner_id=owner)
    assert [memory.recall_count for memory in page.items] == [8] * 5


async def test_expired_and_forgotten_memories_never_appear(conn: Conn) -> None:
    owner = uuid.uuid4()
    query = random_vector()
    live = await remember_at(conn, owner, "live", near(query, 0.02))
    forgotten = await remember_at(conn, owner, "forgotten", query)
    await knowledge.forget(conn, forgotten.id)
    expired = await knowledge.remember(
        conn,
        owner_id=owner,
        content="expired",
        embedding=near(query, 0.01),
        expires_at=datetime.now(UTC) + timedelta(milliseconds=50),
        merge_threshold=1.0,
    )
    await asyncio.sleep(0.1)
    hits = await knowledge.recall(conn, owner_id=owner, embedding=query)
    assert [hit.memory.id for hit in hits] == [live.id]
    assert await knowledge.get_memory(conn, forgotten.id) is None
    assert await knowledge.get_memory(conn, expired.id) is None
    listed = await knowledge.list_memories(conn, owner_id=owner)
    assert [memory.id for memory in listed.items] == [live.id]
    with pytest.raises(NotFoundError):
        await knowledge.forget(conn, forgotten.id)
    assert await knowledge.purge_expired_memories(conn) == 1
    assert await scalar(conn, COUNT_MEMORIES, [owner]) == 2


async def test_recall_filters_by_kinds_and_chat(conn: Conn) -> None:
    owner = uuid.uuid4()
    chat = await messaging.create_chat(conn, owner_id=owner)
    query = random_vector()
    fact = await remember_at(conn, owner, "fact", near(query, 0.01))
    preference = await knowledge.remember(
        conn,
        owner_id=owner,
        content="pref",
        embedding=near(query, 0.02),
        kind="preference",
        chat_id=chat.id,
        merge_threshold=1.0,
    )
    kinds = await knowledge.recall(conn, owner_id=owner, embedding=query, kinds=["preference"])
    assert [hit.memory.id for hit in kinds] == [preference.id]
    in_chat = await knowledge.recall(conn, owner_id=owner, embedding=query, chat_id=chat.id)
    assert [hit.memory.id for hit in in_chat] == [preference.id]
    both = await knowledge.recall(conn, owner_id=owner, embedding=query, kinds=["fact", "episode"])
    assert [hit.memory.id for hit in both] == [fact.id]
    assert await knowledge.recall(conn, owner_id=owner, embedding=query, kinds=[]) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("embedding", [1.0, 2.0]),
        ("embedding", [0.0] * EMBEDDING_DIMENSIONS),
        ("limit", 0),
        ("limit", 1000),
        ("kinds", ["rumour"]),
        ("kinds", "fact"),
        ("weights", RecallWeights),
        ("half_life", timedelta(0)),
        ("half_life", 3600),
        ("touch", 1),
    ],
)
async def test_recall_refuses_bad_input_naming_the_field(
    conn: Conn, field: str, value: Any
) -> None:
    arguments: dict[str, Any] = {"owner_id": uuid.uuid4(), "embedding": random_vector()}
    arguments[field] = value
    with pytest.raises(InvalidInputError) as raised:
        await knowledge.recall(conn, **arguments)
    assert raised.value.field is not None and raised.value.field.startswith(field)


@pytest.mark.parametrize(
    "weights",
    [
        {"similarity": -1.0},
        {"importance": float("inf")},
        {"recency": "0.3"},
        {"similarity": 0, "importance": 0, "recency": 0},
        {"novelty": 1.0},
    ],
)
def test_bad_weights_are_invalid_input(weights: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        RecallWeights(**weights)


# update, list -------------------------------------------------------------------------------


async def test_update_memory_sets_only_the_given_fields(conn: Conn) -> None:
    owner = uuid.uuid4()
    memory = await knowledge.remember(
        conn,
        owner_id=owner,
        content="Works at Acme",
        embedding=random_vector(),
        expires_at=datetime.now(UTC) + timedelta(days=1),
    )
    updated = await knowledge.update_memory(
        conn, memory.id, {"content": "Works at Initech", "importance": 0.9, "expires_at": None}
    )
    assert updated.content == "Works at Initech" and updated.importance == pytest.approx(0.9)
    assert updated.expires_at is None and updated.kind == memory.kind
    assert updated.embedding == memory.embedding
    with pytest.raises(InvalidInputError, match=r"^owner_id: not a field"):
        await knowledge.update_memory(conn, memory.id, {"owner_id": uuid.uuid4()})
    with pytest.raises(InvalidInputError, match=r"^content: "):
        await knowledge.update_memory(conn, memory.id, {"content": None})
    with pytest.raises(InvalidInputError, match=r"^importance: "):
        await knowledge.update_memory(conn, memory.id, {"importance": 7})
    with pytest.raises(NotFoundError):
        await knowledge.update_memory(conn, uuid.uuid4(), {"importance": 0.1})
    assert await knowledge.update_memory(conn, memory.id, {}) == updated


async def test_list_memories_pages_newest_first_without_repeating_a_row(conn: Conn) -> None:
    owner = uuid.uuid4()
    made = [
        await knowledge.remember(
            conn,
            owner_id=owner,
            content=f"m{i}",
            embedding=random_vector(),
            kind="episode" if i % 2 else "fact",
        )
        for i in range(7)
    ]
    seen: list[uuid.UUID] = []
    cursor = None
    while True:
        page = await knowledge.list_memories(conn, owner_id=owner, limit=3, cursor=cursor)
        seen += [memory.id for memory in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [memory.id for memory in reversed(made)]
    episodes = await knowledge.list_memories(conn, owner_id=owner, kinds=["episode"], limit=2)
    assert [m.kind for m in episodes.items] == ["episode", "episode"]
    with pytest.raises(InvalidInputError, match=r"^cursor: "):
        await knowledge.list_memories(conn, owner_id=owner, cursor=episodes.next_cursor)


# recall at scale ---------------------------------------------------------------------------

MAIN_MEMORIES = 2_500
RARE_MEMORIES = 3  # ~0.1% of the table
QUERIES = 20
COPY_MEMORIES = """
COPY knowledge.memories (owner_id, kind, content, embedding, importance, created_at)
FROM STDIN (FORMAT BINARY)
"""


@dataclass
class MemoryCorpus:
    url: str
    main_owner: uuid.UUID
    rare_owner: uuid.UUID
    ids: list[uuid.UUID]
    vectors: np.ndarray[Any, Any]
    importance: np.ndarray[Any, Any]
    created_at: list[datetime]
    rare_ids: list[uuid.UUID]
    queries: np.ndarray[Any, Any]


def copy_memories(
    conn: psycopg.Connection[Any], owner: uuid.UUID, vectors: Any, importance: Any, created: Any
) -> list[uuid.UUID]:
    with conn.cursor().copy(COPY_MEMORIES) as copy:
        copy.set_types(["uuid", "varchar", "text", "vector", "float4", "timestamptz"])
        for index, vector in enumerate(vectors):
            copy.write_row(
                (owner, "fact", f"memory {index}", vector, importance[index], created[index])
            )
    rows = conn.execute(
        "SELECT id, content FROM knowledge.memories WHERE owner_id = %s", [owner]
    ).fetchall()
    by_index = {int(content.rsplit(" ", 1)[1]): memory_id for memory_id, content in rows}
    return [by_index[i] for i in range(len(vectors))]


@pytest.fixture(scope="module")
def memory_corpus(clones: Any) -> Iterator[MemoryCorpus]:
    """2,500 memories of one owner in topics of about 25 (clustered vectors), importance
    uniform in 0-1, ages up to 60 days; 3 memories (0.1%) of another owner. The HNSW index is
    built after the load."""
    rng = np.random.default_rng(7)
    centres = rng.normal(0, 1, (100, EMBEDDING_DIMENSIONS))
    labels = rng.integers(0, len(centres), MAIN_MEMORIES)
    vectors = unit(centres[labels] + rng.normal(0, 0.8, (MAIN_MEMORIES, EMBEDDING_DIMENSIONS)))
    importance = rng.uniform(0, 1, MAIN_MEMORIES).astype(np.float32)
    base = datetime.now(UTC)
    created = [base - timedelta(days=float(days)) for days in rng.uniform(0, 60, MAIN_MEMORIES)]
    main_owner, rare_owner = uuid.uuid4(), uuid.uuid4()
    url = clones.take()
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        definition = conn.execute(
            "SELECT pg_catalog.pg_get_indexdef('knowledge.idx_memories_embedding'::regclass)"
        ).fetchone()[0]  # type: ignore[index]
        conn.execute("DROP INDEX knowledge.idx_memories_embedding")
        ids = copy_memories(conn, main_owner, vectors, importance, created)
        rare_vectors = unit(rng.normal(0, 1, (RARE_MEMORIES, EMBEDDING_DIMENSIONS)))
        rare_ids = copy_memories(
            conn, rare_owner, rare_vectors, [0.5] * RARE_MEMORIES, [base] * RARE_MEMORIES
        )
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute(sql.SQL(definition))
        conn.execute("VACUUM ANALYZE knowledge.memories")
    picks = rng.integers(0, MAIN_MEMORIES, QUERIES)
    queries = unit(vectors[picks] + rng.normal(0, 0.02, (QUERIES, EMBEDDING_DIMENSIONS)))
    yield MemoryCorpus(
        url, main_owner, rare_owner, ids, vectors, importance, created, rare_ids, queries
    )


@pytest.fixture
async def corpus_conn(memory_corpus: MemoryCorpus) -> AsyncIterator[Conn]:
    config = DatabaseConfig(url=memory_corpus.url, max_pool_size=1)
    async with DatabaseManager(config) as db, db.connection() as conn:
        yield conn


def brute_force_scores(
    corpus: MemoryCorpus,
    query: Any,
    now: datetime,
    weights: RecallWeights,
    half_life: timedelta,
) -> np.ndarray[Any, Any]:
    """The recall score of every main memory, computed in numpy."""
    similarity = corpus.vectors.astype(np.float64) @ np.asarray(query, dtype=np.float64)
    ages = np.array([(now - created).total_seconds() for created in corpus.created_at])
    recency = 0.5 ** np.clip(ages / half_life.total_seconds(), 0, 1000)
    scores: np.ndarray[Any, Any] = (
        weights.similarity * similarity
        + weights.importance * corpus.importance.astype(np.float64)
        + weights.recency * recency
    )
    return scores


async def test_recall_at_10_is_at_least_0_95_against_a_brute_force_of_the_same_score(
    memory_corpus: MemoryCorpus, corpus_conn: Conn
) -> None:
    weights, half_life = RecallWeights(), timedelta(days=14)
    recalls = []
    for query in memory_corpus.queries:
        now = await scalar(corpus_conn, "SELECT now()")
        hits = await knowledge.recall(
            corpus_conn, owner_id=memory_corpus.main_owner, embedding=query, touch=False
        )
        scores = brute_force_scores(memory_corpus, query, now, weights, half_life)
        expected = {memory_corpus.ids[i] for i in np.argsort(-scores)[:10]}
        recalls.append(len({hit.memory.id for hit in hits} & expected) / 10)
        by_id = dict(zip(memory_corpus.ids, scores, strict=True))
        for hit in hits:
            assert hit.score == pytest.approx(by_id[hit.memory.id], abs=1e-4)
    assert sum(recalls) / len(recalls) >= 0.95


MAX_SCAN_TUPLES = "SET hnsw.max_scan_tuples = 50"
BARE_HNSW_SEARCH = """
SELECT id
FROM knowledge.memories
WHERE owner_id = %(owner_id)s
  AND deleted_at IS NULL
ORDER BY embedding <=> %(embedding)s
LIMIT %(limit)s
"""


async def test_an_owner_with_a_tenth_of_a_percent_of_the_rows_gets_all_of_them(
    memory_corpus: MemoryCorpus, corpus_conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The query points away from the owner's 3 memories (their mean, negated): every other
    # memory is nearer, so an iterative HNSW scan that may visit 50 tuples of 2,503 reaches
    # none of the 3, whatever the graph (a random query found all 3 by luck now and then).
    rare = await corpus_conn.execute(
        "SELECT embedding FROM knowledge.memories WHERE owner_id = %s", [memory_corpus.rare_owner]
    )
    query = unit(-np.mean([np.asarray(row[0]) for row in await rare.fetchall()], axis=0))
    params = {"owner_id": memory_corpus.rare_owner, "embedding": query, "limit": 3}
    # The bound bites:
    await corpus_conn.execute(MAX_SCAN_TUPLES)
    async with corpus_conn.transaction():
        await corpus_conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
        await corpus_conn.execute("SET LOCAL enable_sort = off")  # not the owner's btree
        explained = sql.SQL("EXPLAIN ") + sql.SQL(BARE_HNSW_SEARCH)
        plan = await (await corpus_conn.execute(explained, params, binary=True)).fetchall()
        assert "idx_memories_embedding" in str(plan)
        bare = await (await corpus_conn.execute(BARE_HNSW_SEARCH, params, binary=True)).fetchall()
    assert len(bare) < 3
    # recall: a small owner is scanned exactly ...
    hits = await knowledge.recall(
        corpus_conn, owner_id=memory_corpus.rare_owner, embedding=query, touch=False
    )
    assert {hit.memory.id for hit in hits} == set(memory_corpus.rare_ids)
    # ... and the HNSW branch (forced here) raises the bound for its own statement
    monkeypatch.setattr(memory_queries, "plan_choice_params", lambda: plan_choice_params("hnsw"))
    hits = await knowledge.recall(
        corpus_conn, owner_id=memory_corpus.rare_owner, embedding=query, touch=False
    )
    assert {hit.memory.id for hit in hits} == set(memory_corpus.rare_ids)
    assert await scalar(corpus_conn, "SHOW hnsw.max_scan_tuples") == "50"  # put back


async def test_recall_plans_the_hnsw_index_for_a_large_owner_and_an_exact_scan_for_a_small(
    memory_corpus: MemoryCorpus, corpus_conn: Conn
) -> None:
    async def plan(owner: uuid.UUID) -> str:
        params = {
            "owner_id": owner,
            "embedding": memory_corpus.queries[0],
            "kinds": None,
            "chat_id": None,
            "similarity_weight": 1.0,
            "importance_weight": 0.3,
            "recency_weight": 0.3,
            "half_life": 1209600.0,
            "candidates": 100,
            "limit": 10,
            "touch": False,
            **plan_choice_params(),
        }
        async with corpus_conn.transaction():
            await corpus_conn.execute(SET_SEARCH_SETTINGS, ["100"])
            statement = sql.SQL("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) ") + sql.SQL(
                memory_queries.READ_MEMORIES
            )
            cursor = await corpus_conn.execute(statement, params, binary=True)
            return "\n".join(row[0] for row in await cursor.fetchall())

    # The branch that ran: the HNSW walk for the large owner (on a table this small too: a
    # distance is priced like the page read it is, 0032), the exact scan for the small one.
    large = await plan(memory_corpus.main_owner)
    assert branches_run(large) == {"index": True, "exact": False}
    assert "Index Scan using idx_memories_embedding" in large
    assert branches_run(await plan(memory_corpus.rare_owner)) == {"index": False, "exact": True}


def branches_run(plan: str) -> dict[str, bool]:
    """Which of the two branches EXPLAIN ANALYZE says ran: the one gated by `NOT is_small`
    (the index walk) and the one gated by `is_small` (the exact scan); the gate itself is
    always evaluated, the scan under it only when it passes."""
    lines = plan.splitlines()
    ran = {}
    for number, line in enumerate(lines):
        # The gate reads `(InitPlan 1).col1` on PostgreSQL 18, `$5` on 15.
        if "One-Time Filter" in line and ("InitPlan" in line or "$" in line):
            branch = "index" if "NOT" in line else "exact"
            child = next(
                later
                for later in lines[number + 1 :]
                if "->" in later and "CTE Scan on owned" not in later
            )
            ran[branch] = "never executed" not in child
    return ran


# owner isolation ---------------------------------------------------------------------------


async def test_memories_of_another_owner_are_invisible_under_row_level_security(
    app_db: DatabaseManager, db: DatabaseManager
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    vector = random_vector()
    async with db.session() as admin:
        theirs = await knowledge.remember(admin, owner_id=b, content="b's", embedding=vector)
    async with app_db.session(owner_id=a) as conn:
        mine = await knowledge.remember(conn, owner_id=a, content="a's", embedding=vector)
        assert mine.id != theirs.id and mine.times_reinforced == 0
        hits = await knowledge.recall(conn, owner_id=b, embedding=vector)
        assert hits == []
        hits = await knowledge.recall(conn, owner_id=a, embedding=vector)
        assert [hit.memory.id for hit in hits] == [mine.id]
        assert await knowledge.get_memory(conn, theirs.id) is None
        with pytest.raises(NotFoundError):
            await knowledge.forget(conn, theirs.id)
        with pytest.raises(NotFoundError):
            await knowledge.update_memory(conn, theirs.id, {"importance": 1.0})
    with pytest.raises(AccessDeniedError):
        async with app_db.session(owner_id=a) as conn:
            await knowledge.remember(conn, owner_id=b, content="sneaky", embedding=random_vector())
    async with app_db.session() as conn:  # no owner: nothing
        assert (await knowledge.list_memories(conn, owner_id=a)).items == []


async def test_an_update_and_a_forget_are_audited_but_a_recall_is_not(conn: Conn) -> None:
    owner = uuid.uuid4()
    vector = random_vector()
    memory = await knowledge.remember(conn, owner_id=owner, content="x", embedding=vector)
    await knowledge.recall(conn, owner_id=owner, embedding=vector)
    await knowledge.update_memory(conn, memory.id, {"importance": 0.9})
    await knowledge.forget(conn, memory.id)
    rows = await (
        await conn.execute(
            "SELECT operation, changed_columns FROM audit.events WHERE row_id = %s "
            "ORDER BY occurred_at, operation",
            [memory.id],
        )
    ).fetchall()
    assert [row[0] for row in rows] == ["update", "soft_delete"]
    assert rows[0][1] == ["importance"]


# documents ---------------------------------------------------------------------------------


async def test_add_document_stores_it_and_list_documents_pages_newest_first(conn: Conn) -> None:
    owner = uuid.uuid4()
    document = await knowledge.add_document(
        conn,
        owner_id=owner,
        title="Lease.pdf",
        source_uri="s3://docs/lease.pdf",
        content_type="application/pdf",
        content_hash="ab" * 32,
        metadata={"pages": 3},
    )
    assert document.owner_id == owner and document.title == "Lease.pdf"
    assert document.content_type == "application/pdf" and document.metadata == {"pages": 3}
    assert await knowledge.get_document(conn, document.id) == document
    more = [await knowledge.add_document(conn, owner_id=owner, title=f"d{i}") for i in range(4)]
    assert more[0].content_type == "text/plain" and more[0].content_hash is None
    seen, cursor = [], None
    while True:
        page = await knowledge.list_documents(conn, owner_id=owner, limit=2, cursor=cursor)
        seen += [d.id for d in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [d.id for d in reversed([document, *more])]


async def test_a_duplicate_content_hash_is_a_conflict_carrying_the_existing_id(
    conn: Conn,
) -> None:
    owner = uuid.uuid4()
    first = await knowledge.add_document(conn, owner_id=owner, title="a", content_hash="h1")
    with pytest.raises(ConflictError) as raised:
        await knowledge.add_document(conn, owner_id=owner, title="b", content_hash="h1")
    assert isinstance(raised.value, knowledge.DuplicateDocumentError)
    assert raised.value.existing_id == first.id
    other = await knowledge.add_document(conn, owner_id=uuid.uuid4(), title="a", content_hash="h1")
    assert other.id != first.id
    await knowledge.delete_document(conn, first.id)
    again = await knowledge.add_document(conn, owner_id=owner, title="a", content_hash="h1")
    assert again.id != first.id


async def test_two_concurrent_adds_of_one_file_leave_one_document(
    db: DatabaseManager, conn: Conn
) -> None:
    owner = uuid.uuid4()
    async with db.session() as first:
        document = await knowledge.add_document(first, owner_id=owner, title="a", content_hash="h")

        async def second_add() -> BaseException | None:
            try:
                async with db.session() as second:
                    await knowledge.add_document(
                        second, owner_id=owner, title="b", content_hash="h"
                    )
            except ConflictError as error:
                return error
            return None

        task = asyncio.create_task(second_add())
        await wait_for_lock_waiters(conn)
    error = await task
    assert isinstance(error, knowledge.DuplicateDocumentError)
    assert error.existing_id == document.id


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", " "),
        ("title", "x" * 501),
        ("content_type", "x" * 256),
        ("content_hash", ""),
        ("metadata", [1]),
        ("source_uri", "a\x00b"),
    ],
)
async def test_add_document_refuses_bad_input_naming_the_field(
    conn: Conn, field: str, value: Any
) -> None:
    arguments: dict[str, Any] = {"owner_id": uuid.uuid4(), "title": "t", field: value}
    with pytest.raises(InvalidInputError) as raised:
        await knowledge.add_document(conn, **arguments)
    assert raised.value.field == field


async def test_add_chunks_copies_them_in_and_lists_them_in_order(conn: Conn) -> None:
    owner = uuid.uuid4()
    document = await knowledge.add_document(conn, owner_id=owner, title="notes")
    vectors = [random_vector() for _ in range(3)]
    added = await knowledge.add_chunks(
        conn,
        document.id,
        [
            knowledge.ChunkCreate(chunk_index=2, content="third", embedding=vectors[2]),
            {"chunk_index": 0, "content": "first", "embedding": vectors[0], "token_count": 1},
            {"chunk_index": 1, "content": "second", "metadata": {"page": 1}},
        ],
    )
    assert added == 3
    chunks = await knowledge.list_chunks(conn, document.id)
    assert [c.content for c in chunks] == ["first", "second", "third"]
    assert {c.owner_id for c in chunks} == {owner}
    assert chunks[0].token_count == 1 and chunks[1].metadata == {"page": 1}
    assert chunks[1].embedding is None
    assert chunks[0].embedding == pytest.approx(vectors[0].tolist(), abs=1e-6)
    assert await knowledge.add_chunks(conn, document.id, []) == 0


async def test_add_chunks_is_all_or_nothing(conn: Conn) -> None:
    document = await knowledge.add_document(conn, owner_id=uuid.uuid4(), title="notes")
    await knowledge.add_chunks(conn, document.id, [{"chunk_index": 0, "content": "a"}])
    with pytest.raises(ConflictError):
        await knowledge.add_chunks(
            conn,
            document.id,
            [{"chunk_index": 1, "content": "b"}, {"chunk_index": 0, "content": "c"}],
        )
    assert [c.content for c in await knowledge.list_chunks(conn, document.id)] == ["a"]
    with pytest.raises(NotFoundError):
        await knowledge.add_chunks(conn, uuid.uuid4(), [{"chunk_index": 0, "content": "a"}])


@pytest.mark.parametrize(
    ("chunk", "field"),
    [
        ({"chunk_index": -1, "content": "a"}, "chunks[1].chunk_index"),
        ({"chunk_index": 1, "content": "a", "embedding": [1.0]}, "chunks[1].embedding"),
        (
            {"chunk_index": 1, "content": "a", "embedding": [float("nan")] * EMBEDDING_DIMENSIONS},
            "chunks[1].embedding",
        ),
        (
            {"chunk_index": 1, "content": "a", "embedding": [0.0] * EMBEDDING_DIMENSIONS},
            "chunks[1].embedding",
        ),
        ({"chunk_index": 1, "content": "a\x00"}, "chunks[1].content"),
        ({"chunk_index": 1, "content": "a", "colour": "red"}, "chunks[1].colour"),
    ],
)
async def test_add_chunks_refuses_a_bad_chunk_naming_it_and_writes_nothing(
    conn: Conn, chunk: dict[str, Any], field: str
) -> None:
    document = await knowledge.add_document(conn, owner_id=uuid.uuid4(), title="notes")
    with pytest.raises(InvalidInputError) as raised:
        await knowledge.add_chunks(conn, document.id, [{"chunk_index": 0, "content": "ok"}, chunk])
    assert raised.value.field == field
    assert await knowledge.list_chunks(conn, document.id) == []


async def make_document(
    conn: Conn, owner: uuid.UUID, texts: list[str], vectors: list[Any | None]
) -> knowledge.Document:
    document = await knowledge.add_document(conn, owner_id=owner, title=texts[0][:20])
    await knowledge.add_chunks(
        conn,
        document.id,
        [
            {"chunk_index": index, "content": text, "embedding": vector}
            for index, (text, vector) in enumerate(zip(texts, vectors, strict=True))
        ],
    )
    return document


async def test_search_chunks_ranks_the_owners_chunks_by_similarity(conn: Conn) -> None:
    owner = uuid.uuid4()
    query, other = random_vector(), random_vector()
    document = await make_document(
        conn,
        owner,
        ["far", "near", "middle", "unembedded"],
        [blend(query, other, 0.2), blend(query, other, 0.9), blend(query, other, 0.5), None],
    )
    second = await make_document(conn, owner, ["other doc"], [blend(query, other, 0.95)])
    await make_document(conn, uuid.uuid4(), ["not mine"], [query])
    hits = await knowledge.search_chunks(conn, owner_id=owner, embedding=query)
    assert [hit.chunk.content for hit in hits] == ["other doc", "near", "middle", "far"]
    assert [hit.similarity for hit in hits] == pytest.approx([0.95, 0.9, 0.5, 0.2], abs=1e-5)
    assert hits[0].chunk.embedding is None and hits[0].score is None
    only = await knowledge.search_chunks(
        conn, owner_id=owner, embedding=query, document_ids=[document.id], limit=2
    )
    assert [hit.chunk.content for hit in only] == ["near", "middle"]
    assert second.id not in {hit.chunk.document_id for hit in only}


async def test_hybrid_search_chunks_fuses_words_and_meaning(conn: Conn) -> None:
    owner = uuid.uuid4()
    query, other = random_vector(), random_vector()
    await make_document(
        conn,
        owner,
        [
            "the lease ends in March, the lease deposit too",
            "a note about the garden",
            "lease renewal terms",
        ],
        [blend(query, other, 0.3), blend(query, other, 0.9), None],
    )
    hits = await knowledge.hybrid_search_chunks(
        conn, owner_id=owner, embedding=query, query="lease"
    )
    contents = [hit.chunk.content for hit in hits]
    assert set(contents) == {
        "the lease ends in March, the lease deposit too",
        "a note about the garden",
        "lease renewal terms",
    }
    assert (
        contents[0] == "the lease ends in March, the lease deposit too"
    )  # first by words and second by meaning
    by_content = {hit.chunk.content: hit for hit in hits}
    assert by_content["lease renewal terms"].similarity is None  # found by words alone
    assert by_content["the lease ends in March, the lease deposit too"].score == pytest.approx(
        1 / 61 + 1 / 62
    )
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]


async def test_a_deleted_documents_chunks_vanish_from_every_search(conn: Conn) -> None:
    owner = uuid.uuid4()
    query = random_vector()
    document = await make_document(conn, owner, ["secret plans"], [query])
    kept = await make_document(conn, owner, ["other plans"], [near(query, 0.03)])
    await knowledge.delete_document(conn, document.id)
    assert await knowledge.get_document(conn, document.id) is None
    assert await knowledge.list_chunks(conn, document.id) == []
    hits = await knowledge.search_chunks(conn, owner_id=owner, embedding=query)
    assert [hit.chunk.document_id for hit in hits] == [kept.id]
    hybrid = await knowledge.hybrid_search_chunks(
        conn, owner_id=owner, embedding=query, query="secret plans"
    )
    assert {hit.chunk.document_id for hit in hybrid} == {kept.id}
    assert [d.id for d in (await knowledge.list_documents(conn, owner_id=owner)).items] == [kept.id]
    with pytest.raises(NotFoundError):
        await knowledge.delete_document(conn, document.id)
    with pytest.raises(NotFoundError):
        await knowledge.add_chunks(conn, document.id, [{"chunk_index": 5, "content": "late"}])


async def test_a_delete_that_waited_for_add_chunks_hides_those_chunks_too(
    db: DatabaseManager, conn: Conn
) -> None:
    owner = uuid.uuid4()
    query = random_vector()
    document = await knowledge.add_document(conn, owner_id=owner, title="racing")
    async with db.session() as adding:
        await knowledge.add_chunks(
            adding, document.id, [{"chunk_index": 0, "content": "racing", "embedding": query}]
        )

        async def delete() -> None:
            async with db.session() as deleting:
                await knowledge.delete_document(deleting, document.id)

        task = asyncio.create_task(delete())
        await wait_for_lock_waiters(conn)
    await task
    assert await knowledge.search_chunks(conn, owner_id=owner, embedding=query) == []
    live = "SELECT count(*) FROM knowledge.chunks WHERE document_id = %s AND deleted_at IS NULL"
    assert await scalar(conn, live, [document.id]) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("embedding", [1.0]),
        ("limit", 0),
        ("limit", True),
        ("document_ids", "abc"),
        ("document_ids", ["nope"]),
        ("query", " "),
    ],
)
async def test_chunk_searches_refuse_bad_input_naming_the_field(
    conn: Conn, field: str, value: Any
) -> None:
    arguments: dict[str, Any] = {
        "owner_id": uuid.uuid4(),
        "embedding": random_vector(),
        "query": "q",
        field: value,
    }
    with pytest.raises(InvalidInputError) as raised:
        await knowledge.hybrid_search_chunks(conn, **arguments)
    assert raised.value.field is not None and raised.value.field.startswith(field)
    if field != "query":
        del arguments["query"]
        with pytest.raises(InvalidInputError):
            await knowledge.search_chunks(conn, **arguments)


async def test_documents_of_another_owner_are_invisible_under_row_level_security(
    app_db: DatabaseManager, db: DatabaseManager
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    query = random_vector()
    async with db.session() as admin:
        theirs = await make_document(admin, b, ["their lease"], [query])
    async with app_db.session(owner_id=a) as conn:
        mine = await make_document(conn, a, ["my lease", "my garden"], [near(query, 0.02), None])
        for _ in range(2):  # the staging table is emptied by each batch
            extra = await knowledge.add_document(conn, owner_id=a, title="extra")
            await knowledge.add_chunks(conn, extra.id, [{"chunk_index": 0, "content": "x"}])
        hits = await knowledge.search_chunks(conn, owner_id=a, embedding=query)
        assert [hit.chunk.document_id for hit in hits] == [mine.id]
        hybrid = await knowledge.hybrid_search_chunks(
            conn, owner_id=b, embedding=query, query="lease"
        )
        assert hybrid == []
        assert await knowledge.get_document(conn, theirs.id) is None
        with pytest.raises(NotFoundError):
            await knowledge.add_chunks(conn, theirs.id, [{"chunk_index": 1, "content": "sneaky"}])
        with pytest.raises(NotFoundError):
            await knowledge.delete_document(conn, theirs.id)
    with pytest.raises(AccessDeniedError):
        async with app_db.session(owner_id=a) as conn:
            await knowledge.add_document(conn, owner_id=b, title="not yours")
    async with db.session() as admin:
        assert len(await knowledge.list_chunks(admin, theirs.id)) == 1


# chunk search at scale ----------------------------------------------------------------------

MAIN_CHUNKS = 2_000
RARE_CHUNKS = 2  # 0.1% of the table
COPY_CHUNK_ROWS = """
COPY knowledge.chunks (document_id, owner_id, chunk_index, content, embedding)
FROM STDIN (FORMAT BINARY)
"""


@dataclass
class ChunkCorpus:
    url: str
    rare_owner: uuid.UUID
    rare_ids: set[uuid.UUID]


@pytest.fixture(scope="module")
def chunk_corpus(clones: Any) -> Iterator[ChunkCorpus]:
    """2,000 chunks of one owner's document and 2 (0.1%) of another's; the HNSW index built
    after the load."""
    rng = np.random.default_rng(11)
    url = clones.take()
    owners = [uuid.uuid4(), uuid.uuid4()]
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        definition = conn.execute(
            "SELECT pg_catalog.pg_get_indexdef('knowledge.idx_chunks_embedding'::regclass)"
        ).fetchone()[0]  # type: ignore[index]
        conn.execute("DROP INDEX knowledge.idx_chunks_embedding")
        for owner, count in zip(owners, (MAIN_CHUNKS, RARE_CHUNKS), strict=True):
            document_id = conn.execute(
                "INSERT INTO knowledge.documents (owner_id, title) VALUES (%s, 'd') RETURNING id",
                [owner],
            ).fetchone()[0]  # type: ignore[index]
            vectors = unit(rng.normal(0, 1, (count, EMBEDDING_DIMENSIONS)))
            with conn.cursor().copy(COPY_CHUNK_ROWS) as copy:
                copy.set_types(["uuid", "uuid", "int4", "text", "vector"])
                for index, vector in enumerate(vectors):
                    copy.write_row((document_id, owner, index, f"chunk {index}", vector))
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute(sql.SQL(definition))
        conn.execute("VACUUM ANALYZE knowledge.chunks")
        rare_ids = {
            row[0]
            for row in conn.execute(
                "SELECT id FROM knowledge.chunks WHERE owner_id = %s", [owners[1]]
            )
        }
    yield ChunkCorpus(url, owners[1], rare_ids)


async def test_chunk_searches_return_all_of_a_tiny_owners_chunks_whatever_the_scan_bound(
    chunk_corpus: ChunkCorpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    query = random_vector()
    config = DatabaseConfig(url=chunk_corpus.url, max_pool_size=1)
    async with DatabaseManager(config) as db, db.connection() as conn:
        await conn.execute(MAX_SCAN_TUPLES)
        for plan in ("auto", "hnsw"):  # auto: the exact branch for so few chunks

            def chosen(plan: Any = plan) -> dict[str, int | float]:
                return plan_choice_params(plan)

            monkeypatch.setattr(document_queries, "plan_choice_params", chosen)
            hits = await knowledge.search_chunks(
                conn, owner_id=chunk_corpus.rare_owner, embedding=query
            )
            assert {hit.chunk.id for hit in hits} == chunk_corpus.rare_ids
            hybrid = await knowledge.hybrid_search_chunks(
                conn, owner_id=chunk_corpus.rare_owner, embedding=query, query="nothing like it"
            )
            assert {hit.chunk.id for hit in hybrid} == chunk_corpus.rare_ids
