"""`agentdb bench search`: recall and latency of `search_messages`.

On a throwaway server, two modes:

- the curve (default): N messages with clustered 1536-d embeddings (one owner, so recall is
  the index's alone), the migration's HNSW index built after the load, and Q queries near
  stored points. For each ef_search it reports recall@10 against exact brute force (numpy),
  p50/p95 end-to-end latency of `search_messages` (Python call to models returned), the same
  statement through bare psycopg (the driver's floor, settings made once per session), and
  the server's own time (EXPLAIN ANALYZE: planning + execution). Writes
  bench-results/search.md and search.png.
- `--owners`: N messages of many owners, among them owners holding 0.01%, 0.1% and 1% of the
  table, queried with vectors from anywhere in the table. For each it reports the rows
  returned (of limit 10) and recall@10 of their own rows, for the plain HNSW statement under
  pgvector's defaults (what a search did before the plan choice) and for `search_messages`
  (the plan it chose, and its latency). Writes bench-results/search-owners.md.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.conninfo import make_conninfo

from app import messaging
from app.bench.common import markdown_table, percentile, results_dir
from app.database import DatabaseConfig, DatabaseManager, embedded
from app.database.migrations import Migrator
from app.database.vectors import (
    EXACT_SEARCH_MIN_ROWS,
    SEARCH_MAX_SCAN_TUPLES,
    plan_choice_params,
    register_vector_types,
)
from app.messaging import DEFAULT_EF_SEARCH, EMBEDDING_DIMENSIONS, MessageCreate

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
        """End-to-end over bare psycopg for the same statement (the target: <= 1.3)."""
        return self.e2e_p50_ms / self.raw_p50_ms


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
        raw = await psycopg.AsyncConnection.connect(url, autocommit=True)
        await register_vector_types(raw)
        await raw.execute(
            SET_SESSION_SEARCH_SETTINGS, [str(ef_search), str(SEARCH_MAX_SCAN_TUPLES)]
        )

        recalls: list[float] = []

        async def layer(query: Any, expected: Any) -> float:
            started = time.perf_counter()
            hits = await messaging.search_messages(
                conn, owner_id=owner_id, embedding=query, limit=10, ef_search=ef_search
            )
            elapsed = (time.perf_counter() - started) * 1000
            found = {hit.message.id for hit in hits}
            recalls.append(len(found & {ids[i] for i in expected}) / len(expected))
            return elapsed

        async def bare(query: Any, expected: Any) -> float:
            return await raw_time(raw, owner_id, query)

        async def explained(query: Any, expected: Any) -> float:
            return await server_time(conn, owner_id, query, ef_search)

        ways = {"e2e": layer, "raw": bare, "server": explained}
        times: dict[str, list[float]] = {name: [] for name in ways}
        pairs = list(zip(queries, truth, strict=True))
        # Warm the cache (every query's part of the graph) and the prepared statements, so
        # that none of the three pays for pages the others then find in memory.
        for pair in pairs:
            for way in ways.values():
                await way(*pair)
        recalls.clear()
        # Then each query three ways, taking turns at going first.
        for turn, pair in enumerate(pairs):
            for name in [*ways][turn % 3 :] + [*ways][: turn % 3]:
                times[name].append(await ways[name](*pair))
        await raw.close()
    e2e, floor, server = times["e2e"], times["raw"], times["server"]
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
       pg_catalog.set_config('hnsw.max_scan_tuples', %s, false),
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


CURVE_EF_VALUES = (10, 20, 40, 64, 100, 200, 400)


def run(
    count: int = 20_000, queries: int = 200, ef_values: tuple[int, ...] = CURVE_EF_VALUES
) -> str:
    """The recall/latency curve over ef_search; return the Markdown report (also written to
    bench-results/)."""
    rng = np.random.default_rng(7)
    data = clustered_vectors(rng, count, clusters=max(count // 200, 10))
    picks = rng.integers(0, count, queries)
    query_vectors = data[picks] + rng.normal(0, 0.02, (queries, EMBEDDING_DIMENSIONS)).astype(
        np.float32
    )
    truth = exact_neighbours(data, query_vectors, 10)
    with bench_database() as url:
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
            "e2e/raw p50",
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
        f" {queries} queries, limit 10 (e2e/raw: the layer over bare psycopg, same statement)\n\n"
        + table
        + "\n"
    )
    (results_dir() / "search.md").write_text(report)
    png = plot(results, count)
    return report + (
        f"\nplot: {png}\n" if png else "\n(no plot: install the bench extra for matplotlib)\n"
    )


@contextmanager
def bench_database() -> Iterator[str]:
    """A migrated database on a throwaway server, for the length of the block."""
    with embedded.throwaway_server(prefix="agentdb-bench-") as server_url:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench_search")
        url = make_conninfo(server_url, dbname="bench_search")
        Migrator(url).apply()
        yield url


# --owners -----------------------------------------------------------------------------------

SMALL_SHARES = (0.0001, 0.001, 0.01)
"""The owners whose completeness is measured, by their share of the table."""

LARGE_OWNERS = 10
OWNER_EF_VALUES = (40, 100, 200, 400)
"""The rest of the table is split evenly among this many owners (~10% each)."""

COPY_MESSAGES = """
COPY messaging.messages (chat_id, owner_id, role, content, embedding)
FROM STDIN (FORMAT BINARY)
"""
INSERT_CHAT = "INSERT INTO messaging.chats (owner_id) VALUES (%s) RETURNING id"

# What a search ran before the plan choice, under pgvector's defaults for the scan bound and
# the candidate list: the owner's rows in HNSW order, an iterative scan.
PLAIN_HNSW_SEARCH = """
SELECT id
FROM messaging.messages
WHERE owner_id = %(owner_id)s AND embedding IS NOT NULL AND deleted_at IS NULL
ORDER BY embedding <=> %(embedding)s
LIMIT %(limit)s
"""
SET_PGVECTOR_DEFAULTS = """
SELECT pg_catalog.set_config('hnsw.ef_search', '40', false),
       pg_catalog.set_config('hnsw.iterative_scan', 'strict_order', false),
       pg_catalog.set_config('hnsw.max_scan_tuples', '20000', false),
       pg_catalog.set_config('enable_sort', 'off', false)
"""
# enable_sort off: before migration 0025 there was no index to read a small owner's rows
# through, and on a large table the HNSW index was the plan; now the planner could sort an
# owner's rows read through idx_messages_owner_id_chat_id by itself.
INDEX_ROWS = """
SELECT reltuples
FROM pg_catalog.pg_class
WHERE oid = 'messaging.idx_messages_embedding'::pg_catalog.regclass
"""


@dataclass(frozen=True)
class OwnerResult:
    share: float
    ef_search: int
    rows: int
    plan: str
    plain_rows: float
    plain_recall: float
    plain_p50_ms: float
    rows_returned: float
    recall: float
    p50_ms: float


def load_owners(
    url: str, data: np.ndarray[Any, Any], sizes: list[int]
) -> list[tuple[uuid.UUID, list[int]]]:
    """Owners of consecutive slices of `data` (a chat each), by binary COPY, the HNSW index
    built after the load; each owner with the indices of its rows in `data`."""
    owners = []
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        definition = conn.execute(SELECT_INDEX_DEFINITION).fetchone()[0]  # type: ignore[index]
        conn.execute(DROP_EMBEDDING_INDEX)
        start = 0
        for size in sizes:
            owner_id = uuid.uuid4()
            chat_id = conn.execute(INSERT_CHAT, [owner_id]).fetchone()[0]  # type: ignore[index]
            with conn.cursor().copy(COPY_MESSAGES) as copy:
                copy.set_types(["uuid", "uuid", "varchar", "text", "vector"])
                for index in range(start, start + size):
                    copy.write_row((chat_id, owner_id, "user", f"message {index}", data[index]))
            owners.append((owner_id, list(range(start, start + size))))
            start += size
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute(sql.SQL(definition))
        conn.execute("VACUUM ANALYZE messaging.messages")
    return owners


async def measure_owner(
    url: str,
    owner_id: uuid.UUID,
    rows: list[int],
    data: np.ndarray[Any, Any],
    queries: np.ndarray[Any, Any],
    share: float,
    ids: dict[str, uuid.UUID],
    ef_search: int = DEFAULT_EF_SEARCH,
) -> OwnerResult:
    """Rows returned and recall@10 of the owner's own rows, before and with the plan choice."""
    own = data[rows]
    truth = [{ids[f"message {rows[i]}"] for i in top} for top in exact_neighbours(own, queries, 10)]
    plain = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await register_vector_types(plain)
    await plain.execute(SET_PGVECTOR_DEFAULTS)
    config = DatabaseConfig(url=url, max_pool_size=1)
    plain_counts, plain_recalls, plain_times = [], [], []
    counts, recalls, times = [], [], []
    async with DatabaseManager(config) as db, db.connection() as conn:
        reltuples = (await (await conn.execute(INDEX_ROWS)).fetchone() or [0])[0]
        threshold = max(EXACT_SEARCH_MIN_ROWS, (10 * max(reltuples, 0)) ** 0.5)
        for query, expected in zip(queries, truth, strict=True):
            params = {"owner_id": owner_id, "embedding": query, "limit": 10}
            started = time.perf_counter()
            cursor = await plain.execute(PLAIN_HNSW_SEARCH, params, binary=True)
            found = {row[0] for row in await cursor.fetchall()}
            plain_times.append((time.perf_counter() - started) * 1000)
            plain_counts.append(len(found))
            plain_recalls.append(len(found & expected) / len(expected))
            started = time.perf_counter()
            hits = await messaging.search_messages(
                conn, owner_id=owner_id, embedding=query, ef_search=ef_search
            )
            times.append((time.perf_counter() - started) * 1000)
            found = {hit.message.id for hit in hits}
            counts.append(len(found))
            recalls.append(len(found & expected) / len(expected))
    await plain.close()
    return OwnerResult(
        share,
        ef_search,
        len(rows),
        "exact" if len(rows) <= threshold else "hnsw",
        sum(plain_counts) / len(plain_counts),
        sum(plain_recalls) / len(plain_recalls),
        percentile(plain_times, 0.5),
        sum(counts) / len(counts),
        sum(recalls) / len(recalls),
        percentile(times, 0.5),
    )


def run_owners(count: int = 100_000, queries: int = 50) -> str:
    """Completeness for small owners of a large table; return the Markdown report."""
    rng = np.random.default_rng(11)
    data = clustered_vectors(rng, count, clusters=max(count // 200, 10))
    small = [max(int(count * share), 10) for share in SMALL_SHARES]
    rest = count - sum(small)
    large = [rest // LARGE_OWNERS] * LARGE_OWNERS
    large[-1] += rest - sum(large)
    # Queries from anywhere in the table (near stored points), as a user's question is.
    picks = rng.integers(0, count, queries)
    query_vectors = data[picks] + rng.normal(0, 0.02, (queries, EMBEDDING_DIMENSIONS)).astype(
        np.float32
    )
    with bench_database() as url:
        started = time.perf_counter()
        owners = load_owners(url, data, [*small, *large])
        print(
            f"loaded {count:,} messages of {len(owners)} owners and built the HNSW index"
            f" in {time.perf_counter() - started:.1f} s"
        )
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT content, id FROM messaging.messages").fetchall()
        ids: dict[str, uuid.UUID] = dict(rows)
        runs = [
            (owner_id, indices, share, DEFAULT_EF_SEARCH)
            for (owner_id, indices), share in zip(owners, SMALL_SHARES, strict=False)
        ]
        # A large owner's search walks the HNSW index, filtered: its recall over ef_search.
        owner_id, indices = owners[len(small)]
        runs += [(owner_id, indices, large[0] / count, ef) for ef in OWNER_EF_VALUES]
        results = [
            asyncio.run(measure_owner(url, owner_id, indices, data, query_vectors, share, ids, ef))
            for owner_id, indices, share, ef in runs
        ]
    table = markdown_table(
        [
            "owner's share",
            "owner's rows",
            "plan chosen",
            "ef_search",
            "plain HNSW rows",
            "plain HNSW recall@10",
            "plain HNSW p50 ms",
            "search_messages rows",
            "search_messages recall@10",
            "search_messages p50 ms",
        ],
        [
            [
                f"{r.share:.2%}",
                f"{r.rows:,}",
                r.plan,
                r.ef_search,
                f"{r.plain_rows:.1f}",
                f"{r.plain_recall:.3f}",
                f"{r.plain_p50_ms:.2f}",
                f"{r.rows_returned:.1f}",
                f"{r.recall:.3f}",
                f"{r.p50_ms:.2f}",
            ]
            for r in results
        ],
    )
    report = (
        f"search_messages for owners of every size: {count:,} messages x {EMBEDDING_DIMENSIONS}"
        f" dims, {len(owners)} owners, {queries} queries from anywhere in the table, limit 10."
        " Plain HNSW: the owner's rows in HNSW order under pgvector's defaults (ef_search 40,"
        " hnsw.max_scan_tuples 20,000, strict_order iterative scan), the plan a search ran"
        " before the plan choice\n\n" + table + "\n"
    )
    (results_dir() / "search-owners.md").write_text(report)
    return report
