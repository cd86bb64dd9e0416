"""`agentdb bench knowledge`: long-term memory and document retrieval, against the bare driver.

On a throwaway server:
- remember: a new memory each time, and a near-duplicate that reinforces one (p50/p95).
- recall at each memory count (one owner holding them all, the HNSW plan; and a small owner
  in the same table, the exact plan): recall@10 against a numpy brute force of the same
  score over all of the owner's memories, p50/p95 of `knowledge.recall`, the same statement
  through bare psycopg (its settings made once for the session), and the server's own time
  (EXPLAIN ANALYZE: planning + execution).
- chunk ingest: `add_chunks` against a raw binary COPY of the same rows into the same table
  (1536-d embeddings, every index in place), in alternating batches, in rows/s.
- hybrid chunk search: p50/p95 of `hybrid_search_chunks` against the bare statement.
Writes bench-results/knowledge.md and knowledge.png.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from app import knowledge
from app.bench.common import markdown_table, percentile, results_dir
from app.database import DatabaseConfig, DatabaseManager, embedded
from app.database.migrations import Migrator
from app.database.vectors import (
    EMBEDDING_DIMENSIONS,
    SEARCH_MAX_SCAN_TUPLES,
    SET_SEARCH_SETTINGS,
    plan_choice_params,
    register_vector_types,
)
from app.knowledge import documents, memories
from app.knowledge.search import candidates_for

EXPLAIN_PREFIX = "EXPLAIN (ANALYZE, FORMAT JSON, TIMING OFF, SUMMARY ON) "
HALF_LIFE = timedelta(days=14)
WEIGHTS = knowledge.RecallWeights()
SMALL_OWNER_MEMORIES = 300
VOCABULARY = [f"word{i}" for i in range(2_000)]


@dataclass(frozen=True)
class Settings:
    memory_counts: tuple[int, ...]
    queries: int
    remembers: int
    ingest_batches: int
    batch_size: int


QUICK = Settings(
    memory_counts=(20_000,), queries=50, remembers=50, ingest_batches=10, batch_size=250
)
FULL = Settings(
    memory_counts=(20_000, 100_000), queries=200, remembers=300, ingest_batches=10, batch_size=500
)

# The bare driver's session: the settings run_vector_search sets per search, made once.
SET_SESSION_SEARCH_SETTINGS = """
SELECT pg_catalog.set_config('hnsw.ef_search', %s, false),
       pg_catalog.set_config('hnsw.iterative_scan', 'strict_order', false),
       pg_catalog.set_config('hnsw.max_scan_tuples', %s, false),
       pg_catalog.set_config('plan_cache_mode', 'force_custom_plan', false)
"""

COPY_MEMORIES = """
COPY knowledge.memories (owner_id, kind, content, embedding, importance, created_at)
FROM STDIN (FORMAT BINARY)
"""

COPY_CHUNKS = """
COPY knowledge.chunks (document_id, owner_id, chunk_index, content, embedding, token_count,
                       metadata)
FROM STDIN (FORMAT BINARY)
"""


@dataclass(frozen=True)
class Timing:
    p50: float
    p95: float

    @classmethod
    def of(cls, values: list[float]) -> Timing:
        return cls(percentile(values, 0.5), percentile(values, 0.95))


@dataclass(frozen=True)
class RecallResult:
    memories: int
    owner: str
    owner_memories: int
    recall: float
    agentdb: Timing
    bare: Timing
    server: Timing


def unit(vectors: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    result: np.ndarray[Any, Any] = vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)
    return result.astype(np.float32)


def topics(rng: np.random.Generator, count: int) -> np.ndarray[Any, Any]:
    """Unit vectors in topics of about 25 (a user's memories about one thing), around random
    centres."""
    centres = rng.normal(0, 1, (max(count // 25, 1), EMBEDDING_DIMENSIONS))
    labels = rng.integers(0, len(centres), count)
    return unit(centres[labels] + rng.normal(0, 0.8, (count, EMBEDDING_DIMENSIONS)))


async def in_turns(number: int, first: Any, second: Any) -> None:
    """Run the two measured calls of one query, taking turns at going first: the second to
    run finds the pages the first read in the buffer cache, which matters once the table is
    larger than shared_buffers."""
    for call in (first, second) if number % 2 == 0 else (second, first):
        await call()


def ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


async def manager(url: str) -> DatabaseManager:
    db = DatabaseManager(DatabaseConfig(url=url, max_pool_size=2))
    await db.open()
    return db


# remember ---------------------------------------------------------------------------------


async def bench_remember(url: str, count: int) -> dict[str, Timing]:
    """p50/p95 of remember: `count` new memories of one owner, then `count` near-duplicates
    of one of them (each a reinforcement)."""
    rng = np.random.default_rng(3)
    owner = uuid.uuid4()
    vectors = topics(rng, count)
    db = await manager(url)
    try:
        async with db.connection() as conn:
            new, merged = [], []
            for index, vector in enumerate(vectors):
                started = time.perf_counter()
                await knowledge.remember(
                    conn,
                    owner_id=owner,
                    content=f"fact {index}",
                    embedding=vector,
                    merge_threshold=1.0,
                )
                new.append(ms_since(started))
            for index in range(count):
                again = unit(vectors[0] + rng.normal(0, 0.003, EMBEDDING_DIMENSIONS))
                started = time.perf_counter()
                memory = await knowledge.remember(
                    conn, owner_id=owner, content=f"fact 0, again {index}", embedding=again
                )
                merged.append(ms_since(started))
            assert memory.times_reinforced == count
    finally:
        await db.close()
    return {"remember (new memory)": Timing.of(new), "remember (reinforces one)": Timing.of(merged)}


# recall -----------------------------------------------------------------------------------


@dataclass
class MemorySet:
    owner: uuid.UUID
    ids: list[uuid.UUID]
    vectors: np.ndarray[Any, Any]
    importance: np.ndarray[Any, Any]
    created_at: list[datetime]


def load_memories(url: str, count: int, rng: np.random.Generator) -> list[MemorySet]:
    """One owner with `count` memories and a small owner with SMALL_OWNER_MEMORIES, loaded
    by COPY, the HNSW index rebuilt after the load (as a bulk load should)."""
    sets = []
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        found = conn.execute(
            "SELECT pg_catalog.pg_get_indexdef('knowledge.idx_memories_embedding'::regclass)"
        ).fetchone()
        definition = found[0] if found else ""
        conn.execute("DROP INDEX knowledge.idx_memories_embedding")
        conn.execute("TRUNCATE knowledge.memories")
        now = datetime.now(UTC)
        for size in (count, SMALL_OWNER_MEMORIES):
            owner = uuid.uuid4()
            vectors = topics(rng, size)
            importance = rng.uniform(0, 1, size).astype(np.float32)
            created = [now - timedelta(days=float(d)) for d in rng.uniform(0, 60, size)]
            with conn.cursor().copy(COPY_MEMORIES) as copy:
                copy.set_types(["uuid", "varchar", "text", "vector", "float4", "timestamptz"])
                for index in range(size):
                    copy.write_row(
                        (
                            owner,
                            "fact",
                            f"memory {index}",
                            vectors[index],
                            importance[index],
                            created[index],
                        )
                    )
            rows = conn.execute(
                "SELECT id, content FROM knowledge.memories WHERE owner_id = %s", [owner]
            ).fetchall()
            by_index = {int(content.split()[1]): memory_id for memory_id, content in rows}
            ids = [by_index[i] for i in range(size)]
            sets.append(MemorySet(owner, ids, vectors, importance, created))
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute(sql.SQL(definition))  # the migration's own definition, verbatim
        conn.execute("VACUUM ANALYZE knowledge.memories")
    return sets


def brute_force_top(
    memory_set: MemorySet, query: Any, now: datetime, k: int = 10
) -> set[uuid.UUID]:
    """The exact top k of the recall score over all of the owner's memories (numpy)."""
    similarity = memory_set.vectors.astype(np.float64) @ np.asarray(query, dtype=np.float64)
    ages = np.array([(now - created).total_seconds() for created in memory_set.created_at])
    recency = 0.5 ** np.clip(ages / HALF_LIFE.total_seconds(), 0, 1000)
    scores = (
        WEIGHTS.similarity * similarity
        + WEIGHTS.importance * memory_set.importance.astype(np.float64)
        + WEIGHTS.recency * recency
    )
    return {memory_set.ids[i] for i in np.argsort(-scores)[:k]}


def recall_params(owner: uuid.UUID, query: Any) -> dict[str, Any]:
    """The parameters knowledge.recall sends for a default recall of 10 (touch off)."""
    return {
        "owner_id": owner,
        "embedding": query,
        "kinds": None,
        "chat_id": None,
        "similarity_weight": WEIGHTS.similarity,
        "importance_weight": WEIGHTS.importance,
        "recency_weight": WEIGHTS.recency,
        "half_life": HALF_LIFE.total_seconds(),
        "candidates": candidates_for(10),
        "limit": 10,
        "touch": False,
        **plan_choice_params(),
    }


async def bare_connection(url: str, ef_search: int) -> psycopg.AsyncConnection[Any]:
    raw = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await register_vector_types(raw)
    await raw.execute(SET_SESSION_SEARCH_SETTINGS, [str(ef_search), str(SEARCH_MAX_SCAN_TUPLES)])
    return raw


async def server_ms(conn: Any, statement: Any, params: dict[str, Any], ef_search: int) -> float:
    """Planning + execution time the server reports for `statement` under the settings."""
    async with conn.transaction():
        await conn.execute(SET_SEARCH_SETTINGS, [str(ef_search)])
        cursor = await conn.execute(
            sql.SQL(EXPLAIN_PREFIX) + sql.SQL(statement), params, binary=True
        )
        row = await cursor.fetchone()
    plan: Any = row[0] if row else "[{}]"
    report = (json.loads(plan) if isinstance(plan, str | bytes) else plan)[0]
    return float(report["Planning Time"]) + float(report["Execution Time"])


async def bench_recall(
    url: str, memory_set: MemorySet, queries: np.ndarray[Any, Any], total: int, label: str
) -> RecallResult:
    ef_search = candidates_for(10)
    db = await manager(url)
    raw = await bare_connection(url, ef_search)
    recalls, ours, bare, server = [], [], [], []
    try:
        async with db.connection() as conn:
            for query in queries[:10]:  # warm the cache and the prepared statements
                await knowledge.recall(
                    conn, owner_id=memory_set.owner, embedding=query, touch=False
                )
                await (
                    await raw.execute(
                        memories.READ_MEMORIES,
                        recall_params(memory_set.owner, query),
                        binary=True,
                    )
                ).fetchall()
            for number, query in enumerate(queries):
                params = recall_params(memory_set.owner, query)

                async def ours_once(query: Any = query) -> None:
                    now = datetime.now(UTC)
                    started = time.perf_counter()
                    hits = await knowledge.recall(
                        conn, owner_id=memory_set.owner, embedding=query, touch=False
                    )
                    ours.append(ms_since(started))
                    expected = brute_force_top(memory_set, query, now)
                    recalls.append(len({hit.memory.id for hit in hits} & expected) / 10)

                async def bare_once(params: dict[str, Any] = params) -> None:
                    started = time.perf_counter()
                    cursor = await raw.execute(memories.READ_MEMORIES, params, binary=True)
                    await cursor.fetchall()
                    bare.append(ms_since(started))

                await in_turns(number, ours_once, bare_once)
                server.append(await server_ms(conn, memories.READ_MEMORIES, params, ef_search))
    finally:
        await raw.close()
        await db.close()
    return RecallResult(
        total,
        label,
        len(memory_set.ids),
        sum(recalls) / len(recalls),
        Timing.of(ours),
        Timing.of(bare),
        Timing.of(server),
    )


def memory_queries(memory_set: MemorySet, rng: np.random.Generator, count: int) -> Any:
    picks = rng.integers(0, len(memory_set.ids), count)
    noise = rng.normal(0, 0.02, (count, EMBEDDING_DIMENSIONS))
    return unit(memory_set.vectors[picks] + noise)


# chunks -----------------------------------------------------------------------------------


def chunk_batch(rng: np.random.Generator, size: int) -> list[dict[str, Any]]:
    vectors = topics(rng, size)
    return [
        {
            "chunk_index": index,
            "content": " ".join(rng.choice(VOCABULARY, 60)),
            "embedding": vectors[index],
            "token_count": 80,
            "metadata": {"page": index // 10},
        }
        for index in range(size)
    ]


async def bench_ingest(url: str, settings: Settings) -> tuple[float, float, uuid.UUID]:
    """Rows/s of add_chunks and of a raw binary COPY of rows alike, each batch into a document
    of its own (both write into the same, growing indexes). Each side gets fresh vectors (a
    batch inserted twice would find the HNSW graph's paths already warm the second time), and
    the two take turns going first."""
    rng = np.random.default_rng(5)
    owner = uuid.uuid4()
    db = await manager(url)
    seconds = {"ours": 0.0, "raw": 0.0}
    rows = 0
    try:
        async with db.connection() as conn:
            raw = await psycopg.AsyncConnection.connect(url)
            await register_vector_types(raw)
            for number in range(settings.ingest_batches):
                order = ("ours", "raw") if number % 2 == 0 else ("raw", "ours")
                for side in order:
                    batch = chunk_batch(rng, settings.batch_size)
                    document = await knowledge.add_document(
                        conn, owner_id=owner, title=f"{side} {number}"
                    )
                    started = time.perf_counter()
                    if side == "ours":
                        await knowledge.add_chunks(conn, document.id, batch)
                    else:
                        await raw_copy(raw, document.id, owner, batch)
                    seconds[side] += time.perf_counter() - started
                rows += settings.batch_size
            await raw.close()
            await conn.execute("VACUUM ANALYZE knowledge.chunks")
    finally:
        await db.close()
    return rows / seconds["ours"], rows / seconds["raw"], owner


async def raw_copy(
    raw: psycopg.AsyncConnection[Any], document_id: uuid.UUID, owner: uuid.UUID, batch: Any
) -> None:
    """The batch by a bare binary COPY in a transaction: the floor of add_chunks."""
    async with raw.transaction(), raw.cursor().copy(COPY_CHUNKS) as copy:
        copy.set_types(documents.COPY_CHUNKS_TYPES)
        for chunk in batch:
            await copy.write_row(
                (
                    document_id,
                    owner,
                    chunk["chunk_index"],
                    chunk["content"],
                    chunk["embedding"],
                    chunk["token_count"],
                    Jsonb(chunk["metadata"]),
                )
            )


async def bench_hybrid(url: str, owner: uuid.UUID, count: int) -> tuple[Timing, Timing, Timing]:
    rng = np.random.default_rng(9)
    queries = topics(rng, count)
    words = [" ".join(rng.choice(VOCABULARY, 2)) for _ in range(count)]
    candidates = candidates_for(10)
    db = await manager(url)
    raw = await bare_connection(url, candidates)
    ours, bare, server = [], [], []

    def params(index: int) -> dict[str, Any]:
        return {
            "owner_id": owner,
            "embedding": queries[index],
            "query": words[index],
            "document_ids": None,
            "candidates": candidates,
            "k": documents.RRF_K,
            "limit": 10,
            **plan_choice_params(),
        }

    try:
        async with db.connection() as conn:
            for index in range(min(10, count)):  # warm up
                await knowledge.hybrid_search_chunks(
                    conn, owner_id=owner, embedding=queries[index], query=words[index]
                )
            for index in range(count):

                async def ours_once(index: int = index) -> None:
                    started = time.perf_counter()
                    await knowledge.hybrid_search_chunks(
                        conn, owner_id=owner, embedding=queries[index], query=words[index]
                    )
                    ours.append(ms_since(started))

                async def bare_once(index: int = index) -> None:
                    started = time.perf_counter()
                    cursor = await raw.execute(
                        documents.HYBRID_SEARCH_CHUNKS, params(index), binary=True
                    )
                    await cursor.fetchall()
                    bare.append(ms_since(started))

                await in_turns(index, ours_once, bare_once)
                server.append(
                    await server_ms(conn, documents.HYBRID_SEARCH_CHUNKS, params(index), candidates)
                )
    finally:
        await raw.close()
        await db.close()
    return Timing.of(ours), Timing.of(bare), Timing.of(server)


# report -----------------------------------------------------------------------------------


def plot(results: list[RecallResult]) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axes = plt.subplots(figsize=(7, 4))
    labels = [f"{r.memories:,}\n{r.owner}" for r in results]
    positions = np.arange(len(results))
    for offset, name, values in (
        (-0.25, "knowledge.recall", [r.agentdb.p50 for r in results]),
        (0.0, "bare psycopg", [r.bare.p50 for r in results]),
        (0.25, "server (EXPLAIN ANALYZE)", [r.server.p50 for r in results]),
    ):
        axes.bar(positions + offset, values, width=0.25, label=name)
    axes.set_xticks(positions, labels)
    axes.set_ylabel("p50 latency (ms)")
    axes.set_title("recall, limit 10: table size and owner")
    axes.legend()
    axes.grid(alpha=0.3, axis="y")
    path = results_dir() / "knowledge.png"
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return str(path)


def run(settings: Settings = FULL) -> str:
    """Run the whole benchmark; return the Markdown report (also written to bench-results/)."""
    rng = np.random.default_rng(7)
    with embedded.throwaway_server(prefix="agentdb-bench-") as server_url:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench_knowledge")
        url = make_conninfo(server_url, dbname="bench_knowledge")
        Migrator(url).apply()
        remembered = asyncio.run(bench_remember(url, settings.remembers))
        print("remember: done")
        recalls = []
        for count in settings.memory_counts:
            started = time.perf_counter()
            large, small = load_memories(url, count, rng)
            print(
                f"loaded {count:,} memories and built the HNSW index in "
                f"{time.perf_counter() - started:.1f} s"
            )
            for memory_set, label in ((large, "one owner"), (small, "small owner")):
                queries = memory_queries(memory_set, rng, settings.queries)
                recalls.append(asyncio.run(bench_recall(url, memory_set, queries, count, label)))
        ours_rate, raw_rate, owner = asyncio.run(bench_ingest(url, settings))
        print("ingest: done")
        hybrid = asyncio.run(bench_hybrid(url, owner, settings.queries))
    chunks = settings.ingest_batches * settings.batch_size
    recall_table = markdown_table(
        [
            "memories",
            "owner (its memories)",
            "recall@10",
            "recall p50 ms",
            "p95 ms",
            "bare psycopg p50 ms",
            "p50 / bare",
            "server p50 ms",
            "server p95 ms",
        ],
        [
            [
                f"{r.memories:,}",
                f"{r.owner} ({r.owner_memories:,})",
                f"{r.recall:.3f}",
                f"{r.agentdb.p50:.2f}",
                f"{r.agentdb.p95:.2f}",
                f"{r.bare.p50:.2f}",
                f"{r.agentdb.p50 / r.bare.p50:.2f}x",
                f"{r.server.p50:.2f}",
                f"{r.server.p95:.2f}",
            ]
            for r in recalls
        ],
    )
    other_table = markdown_table(
        ["operation", "p50 ms", "p95 ms", "bare psycopg p50 ms", "p50 / bare", "rows/s", "ratio"],
        [
            *[
                [name, f"{t.p50:.2f}", f"{t.p95:.2f}", "", "", "", ""]
                for name, t in remembered.items()
            ],
            [
                "add_chunks vs raw binary COPY",
                "",
                "",
                "",
                "",
                f"{ours_rate:,.0f} vs {raw_rate:,.0f}",
                f"{ours_rate / raw_rate:.2f}x",
            ],
            [
                f"hybrid_search_chunks ({chunks:,} chunks, server p50 {hybrid[2].p50:.2f} ms)",
                f"{hybrid[0].p50:.2f}",
                f"{hybrid[0].p95:.2f}",
                f"{hybrid[1].p50:.2f}",
                f"{hybrid[0].p50 / hybrid[1].p50:.2f}x",
                "",
                "",
            ],
        ],
    )
    report = (
        f"knowledge, 1536-d embeddings, {settings.queries} queries, limit 10; targets: recall "
        "p50 <= 1.3x bare psycopg, add_chunks >= 0.9x raw COPY, recall@10 >= 0.95\n\n"
        + recall_table
        + "\n\n"
        + other_table
        + "\n"
    )
    (results_dir() / "knowledge.md").write_text(report)
    png = plot(recalls)
    return report + (
        f"\nplot: {png}\n" if png else "\n(no plot: install the bench extra for matplotlib)\n"
    )
