"""`agentdb bench search`: recall and latency of `search_messages` for several ef_search.

On a throwaway server: N messages with clustered 1536-d embeddings (one owner, so recall is
the index's alone), the migration's HNSW index built after the load, and Q queries near
stored points. For each ef_search it reports recall@10 against exact brute force (numpy),
p50/p95 end-to-end latency of `search_messages` (Python call to models returned), and the
server's own time for the same statement (EXPLAIN ANALYZE: planning + execution), with the
ratio end-to-end / server. Writes bench-results/search.md and search.png.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from app import messaging
from app.bench.common import markdown_table, percentile, results_dir
from app.database import DatabaseConfig, DatabaseManager, embedded
from app.database.migrations import Migrator
from app.database.vectors import plan_choice_params, register_vector_types
from app.messaging import EMBEDDING_DIMENSIONS, MessageCreate

SELECT_INDEX_DEFINITION = (
    "SELECT pg_catalog.pg_get_indexdef('messaging.idx_messages_embedding'::regclass)"
)
DROP_EMBEDDING_INDEX = "DROP INDEX messaging.idx_messages_embedding"
EXPLAIN_PREFIX = "EXPLAIN (ANALYZE, FORMAT JSON, TIMING OFF, SUMMARY ON) "


@dataclass(frozen=True)
class SearchResult:
    ef_search: int
    recall: float
    e2e_p50_ms: float
    e2e_p95_ms: float
    raw_p50_ms: float
    server_p50_ms: float
    server_p95_ms: float

    @property
    def ratio(self) -> float:
        return self.e2e_p50_ms / self.server_p50_ms


def clustered_vectors(rng: np.random.Generator, count: int, clusters: int) -> np.ndarray[Any, Any]:
    """Unit vectors scattered around `clusters` random centres, like real text embeddings."""
    centres = rng.normal(0, 1, (clusters, EMBEDDING_DIMENSIONS)).astype(np.float32)
    labels = rng.integers(0, clusters, count)
    noise = rng.normal(0, 0.6, (count, EMBEDDING_DIMENSIONS)).astype(np.float32)
    vectors = centres[labels] + noise
    unit: np.ndarray[Any, Any] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit


def exact_neighbours(
    data: np.ndarray[Any, Any], queries: np.ndarray[Any, Any], k: int
) -> np.ndarray[Any, Any]:
    """Indices of the k nearest rows of `data` (cosine; rows are unit vectors) per query."""
    similarity = queries @ data.T
    return np.argsort(-similarity, axis=1)[:, :k]


async def load(url: str, vectors: np.ndarray[Any, Any]) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """Insert the vectors as one owner's messages; build the HNSW index after the load (as a
    bulk load should: per-row inserts into HNSW are several times slower than one build)."""
    owner_id = uuid.uuid4()
    config = DatabaseConfig(url=url, max_pool_size=2)
    async with DatabaseManager(config) as db, db.connection() as conn:
        definition = (await (await conn.execute(SELECT_INDEX_DEFINITION)).fetchone() or [""])[0]
        await conn.execute(DROP_EMBEDDING_INDEX)
        chats = [
            await messaging.create_chat(conn, owner_id=owner_id, title=f"topic {i}")
            for i in range(50)
        ]
        for start in range(0, len(vectors), 2000):
            batch = [
                MessageCreate(
                    chat_id=chats[i % len(chats)].id,
                    role="user",
                    content=f"message {i}",
                    embedding=vectors[i],
                )
                for i in range(start, min(start + 2000, len(vectors)))
            ]
            async with conn.transaction():
                await messaging.add_messages(conn, batch)
        await conn.execute("SET maintenance_work_mem = '1GB'")
        await conn.execute(sql.SQL(definition))  # the migration's own definition, verbatim
        await conn.execute("RESET maintenance_work_mem")
        await conn.execute("VACUUM ANALYZE messaging.messages")
        rows = await (await conn.execute("SELECT id, content FROM messaging.messages")).fetchall()
    by_index = {int(content.split()[1]): message_id for message_id, content in rows}
    return owner_id, [by_index[i] for i in range(len(vectors))]


async def measure(
    url: str,
    owner_id: uuid.UUID,
    ids: list[uuid.UUID],
    queries: np.ndarray[Any, Any],
    truth: np.ndarray[Any, Any],
    ef_search: int,
) -> SearchResult:
    config = DatabaseConfig(url=url, max_pool_size=1)
    async with DatabaseManager(config) as db, db.connection() as conn:
        for query in queries[:10]:  # warm the cache and the prepared statements
            await messaging.search_messages(
                conn, owner_id=owner_id, embedding=query, ef_search=ef_search
            )
        raw = await psycopg.AsyncConnection.connect(url, autocommit=True)
        await register_vector_types(raw)
        await raw.execute(SET_SESSION_SEARCH_SETTINGS, [str(ef_search)])
        recalls, e2e, floor, server = [], [], [], []
        for query, expected in zip(queries, truth, strict=True):
            started = time.perf_counter()
            hits = await messaging.search_messages(
                conn, owner_id=owner_id, embedding=query, limit=10, ef_search=ef_search
            )
            e2e.append((time.perf_counter() - started) * 1000)
            found = {hit.message.id for hit in hits}
            recalls.append(len(found & {ids[i] for i in expected}) / len(expected))
            floor.append(await raw_time(raw, owner_id, query))
            server.append(await server_time(conn, owner_id, query, ef_search))
        await raw.close()
    return SearchResult(
        ef_search,
        sum(recalls) / len(recalls),
        percentile(e2e, 0.5),
        percentile(e2e, 0.95),
        percentile(floor, 0.5),
        percentile(server, 0.5),
        percentile(server, 0.95),
    )


# The floor: the same statement on a plain psycopg connection whose settings were made
# session-wide once (fine for a benchmark's own connection, never for a pooled one).
SET_SESSION_SEARCH_SETTINGS = """
SELECT pg_catalog.set_config('hnsw.ef_search', %s, false),
       pg_catalog.set_config('hnsw.iterative_scan', 'strict_order', false),
       pg_catalog.set_config('plan_cache_mode', 'force_custom_plan', false)
"""


async def raw_time(conn: psycopg.AsyncConnection[Any], owner_id: uuid.UUID, query: Any) -> float:
    """Milliseconds for the bare statement returning tuples: the driver's floor."""
    params = {
        "owner_id": owner_id,
        "embedding": query,
        "chat_id": None,
        "candidates": 10,
        **plan_choice_params(),
    }
    started = time.perf_counter()
    cursor = await conn.execute(messaging.SEARCH_MESSAGES, params, binary=True)
    await cursor.fetchall()
    return (time.perf_counter() - started) * 1000


async def server_time(
    conn: psycopg.AsyncConnection[Any], owner_id: uuid.UUID, query: Any, ef: int
) -> float:
    """Planning + execution time (ms) the server reports for the statement search_messages runs."""
    params = {
        "owner_id": owner_id,
        "embedding": query,
        "chat_id": None,
        "candidates": 10,
        **plan_choice_params(),
    }
    async with conn.transaction():
        await conn.execute(messaging.SET_SEARCH_SETTINGS, [str(max(ef, 10))])
        cursor = await conn.execute(
            sql.SQL(EXPLAIN_PREFIX) + sql.SQL(messaging.SEARCH_MESSAGES), params, binary=True
        )
        row = await cursor.fetchone()
    plan: Any = row[0] if row else "[{}]"
    report = (json.loads(plan) if isinstance(plan, str | bytes) else plan)[0]
    return float(report["Planning Time"]) + float(report["Execution Time"])


def plot(results: list[SearchResult], count: int) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(
        [r.e2e_p50_ms for r in results], [r.recall for r in results], "o-", label="end-to-end p50"
    )
    axes.plot(
        [r.server_p50_ms for r in results], [r.recall for r in results], "s--", label="server p50"
    )
    for r in results:
        axes.annotate(
            f"ef={r.ef_search}",
            (r.e2e_p50_ms, r.recall),
            textcoords="offset points",
            xytext=(5, -12),
        )
    axes.set_xlabel("latency (ms)")
    axes.set_ylabel("recall@10")
    axes.set_title(f"search_messages: {count:,} messages x {EMBEDDING_DIMENSIONS} dims (HNSW)")
    axes.grid(alpha=0.3)
    axes.legend()
    path = results_dir() / "search.png"
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return str(path)


def run(
    count: int = 20_000, queries: int = 200, ef_values: tuple[int, ...] = (40, 100, 200)
) -> str:
    """Run the whole benchmark; return the Markdown report (also written to bench-results/)."""
    rng = np.random.default_rng(7)
    data = clustered_vectors(rng, count, clusters=max(count // 200, 10))
    picks = rng.integers(0, count, queries)
    query_vectors = data[picks] + rng.normal(0, 0.02, (queries, EMBEDDING_DIMENSIONS)).astype(
        np.float32
    )
    truth = exact_neighbours(data, query_vectors, 10)
    with embedded.throwaway_server(prefix="agentdb-bench-") as server_url:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench_search")
        url = make_conninfo(server_url, dbname="bench_search")
        Migrator(url).apply()
        started = time.perf_counter()
        owner_id, ids = asyncio.run(load(url, data))
        elapsed = time.perf_counter() - started
        print(f"loaded {count:,} messages and built the HNSW index in {elapsed:.1f} s")
        results = [
            asyncio.run(measure(url, owner_id, ids, query_vectors, truth, ef)) for ef in ef_values
        ]
    table = markdown_table(
        [
            "ef_search",
            "recall@10",
            "e2e p50 ms",
            "e2e p95 ms",
            "raw psycopg p50 ms",
            "server p50 ms",
            "server p95 ms",
            "e2e/server p50",
            "raw/server p50",
        ],
        [
            [
                r.ef_search,
                f"{r.recall:.3f}",
                f"{r.e2e_p50_ms:.2f}",
                f"{r.e2e_p95_ms:.2f}",
                f"{r.raw_p50_ms:.2f}",
                f"{r.server_p50_ms:.2f}",
                f"{r.server_p95_ms:.2f}",
                f"{r.ratio:.2f}x",
                f"{r.raw_p50_ms / r.server_p50_ms:.2f}x",
            ]
            for r in results
        ],
    )
    report = (
        f"search_messages, {count:,} messages x {EMBEDDING_DIMENSIONS} dims,"
        f" {queries} queries, limit 10\n\n" + table + "\n"
    )
    (results_dir() / "search.md").write_text(report)
    png = plot(results, count)
    return report + (
        f"\nplot: {png}\n" if png else "\n(no plot: install the bench extra for matplotlib)\n"
    )
