"""`agentdb seed`: a realistic demo data set, written through the public query functions.

Owners have long-tailed numbers of chats and chats long-tailed numbers of messages (a few
long conversations, many short ones), so `./scripts/psql` shows what production looks like.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import numpy as np
from tqdm import tqdm

from app import agents, messaging, tasks, telegram
from app.database import DatabaseConfig, DatabaseManager
from app.messaging import EMBEDDING_DIMENSIONS, MessageCreate, Role


@dataclass(frozen=True)
class SeedSize:
    owners: int
    chats: int
    messages: int
    todos: int
    executions: int
    sessions: int
    with_embeddings: bool = False
    random_seed: int = 42


TOPICS = [
    ("Groceries", "buy", ["milk", "eggs", "bread", "coffee", "apples", "rice", "olive oil"]),
    ("Trip to Lisbon", "book", ["a flight", "the hotel", "a tram pass", "dinner in Alfama"]),
    ("Tax return", "file", ["the receipts", "form 1040", "the bank statements"]),
    ("Birthday party", "order", ["a cake", "balloons", "pizza for twelve", "the playlist"]),
    ("Learning Rust", "explain", ["borrowing", "lifetimes", "traits", "async/await"]),
    ("Garden", "plant", ["tomatoes", "basil", "tulip bulbs", "a lemon tree"]),
    ("Job search", "draft", ["a cover letter", "the CV summary", "a thank-you note"]),
    ("Home repairs", "fix", ["the leaking tap", "the squeaky door", "the shelf"]),
]

AGENTS = ["planner", "researcher", "summarizer", "coder", "scheduler"]
MODELS = ["gpt-4o-mini", "gpt-4.1", "claude-sonnet", "llama-3.1-70b"]
LANGUAGES = ["en", "pt-BR", "de", "uk", "es", None]


def long_tail(rng: random.Random, total: int, buckets: int) -> list[int]:
    """`total` split over `buckets` with Pareto weights: a few large, many small (≥ 1 each)."""
    if buckets == 0:
        return []
    weights = [rng.paretovariate(1.2) for _ in range(buckets)]
    scale = max(total - buckets, 0) / sum(weights)
    counts = [1 + int(weight * scale) for weight in weights]
    counts[0] += max(total - sum(counts), 0)
    return counts


def topic_vector(rng: np.random.Generator, centres: np.ndarray[Any, Any], topic: int) -> Any:
    """A unit vector near the topic's centre: clustered like real embeddings."""
    vector = centres[topic] + rng.normal(0, 0.35, EMBEDDING_DIMENSIONS).astype(np.float32)
    return vector / np.linalg.norm(vector)


async def seed(config: DatabaseConfig, size: SeedSize, *, progress: bool = True) -> dict[str, int]:
    """Write the data set; return how many rows of each kind were created."""
    rng = random.Random(size.random_seed)
    np_rng = np.random.default_rng(size.random_seed)
    centres = np_rng.normal(0, 1, (len(TOPICS), EMBEDDING_DIMENSIONS)).astype(np.float32)
    owners = [UUID(int=rng.getrandbits(128), version=4) for _ in range(size.owners)]
    bar = tqdm(
        total=size.chats + size.messages + size.todos + size.executions + size.sessions,
        disable=not progress,
        unit="row",
        desc="seeding",
    )
    async with DatabaseManager(config) as db:
        chats = await _seed_chats(db, rng, owners, size.chats, bar)
        await _seed_messages(db, rng, np_rng, centres, chats, size, bar)
        await _seed_todos(db, rng, chats, size.todos, bar)
        await _seed_executions(db, rng, chats, size.executions, bar)
        await _seed_sessions(db, rng, chats, size.sessions, bar)
    bar.close()
    return {
        "owners": size.owners,
        "chats": size.chats,
        "messages": size.messages,
        "todos": size.todos,
        "executions": size.executions,
        "sessions": size.sessions,
    }


async def _seed_chats(
    db: DatabaseManager, rng: random.Random, owners: list[UUID], count: int, bar: tqdm[Any]
) -> list[tuple[messaging.Chat, int]]:
    chats = []
    per_owner = long_tail(rng, count, len(owners))
    async with db.session() as conn:
        for owner_id, how_many in zip(owners, per_owner, strict=True):
            for _ in range(how_many):
                topic = rng.randrange(len(TOPICS))
                chat = await messaging.create_chat(
                    conn,
                    owner_id=owner_id,
                    title=TOPICS[topic][0],
                    metadata={"source": rng.choice(["web", "telegram"])},
                )
                chats.append((chat, topic))
                bar.update()
    return chats


async def _seed_messages(
    db: DatabaseManager,
    rng: random.Random,
    np_rng: np.random.Generator,
    centres: np.ndarray[Any, Any],
    chats: Sequence[tuple[messaging.Chat, int]],
    size: SeedSize,
    bar: tqdm[Any],
) -> None:
    batch: list[MessageCreate] = []
    start = datetime.now(UTC) - timedelta(days=90)
    for (chat, topic), how_many in zip(
        chats, long_tail(rng, size.messages, len(chats)), strict=True
    ):
        title, verb, things = TOPICS[topic]
        at = start + timedelta(minutes=rng.randrange(90 * 24 * 60))
        for turn in range(how_many):
            thing = rng.choice(things)
            role: Role = "user" if turn % 2 == 0 else "assistant"
            if turn == 0 and rng.random() < 0.2:
                role = "system"
            content = (
                f"Can you {verb} {thing} for the {title.lower()}?"
                if role == "user"
                else f"Done: I will {verb} {thing}. Anything else about the {title.lower()}?"
            )
            at += timedelta(seconds=rng.randrange(5, 600))
            batch.append(
                MessageCreate(
                    chat_id=chat.id,
                    role=role,
                    content=content,
                    token_count=len(content.split()) * 4 // 3,
                    embedding=topic_vector(np_rng, centres, topic)
                    if size.with_embeddings
                    else None,
                    created_at=at,
                )
            )
            if len(batch) >= 2000:
                await _flush(db, batch, bar)
    await _flush(db, batch, bar)


async def _flush(db: DatabaseManager, batch: list[MessageCreate], bar: tqdm[Any]) -> None:
    if batch:
        async with db.session() as conn:
            bar.update(await messaging.add_messages(conn, batch))
        batch.clear()


async def _seed_todos(
    db: DatabaseManager,
    rng: random.Random,
    chats: Sequence[tuple[messaging.Chat, int]],
    count: int,
    bar: tqdm[Any],
) -> None:
    now = datetime.now(UTC)
    async with db.session() as conn:
        for _ in range(count):
            chat, topic = rng.choice(chats)
            _, verb, things = TOPICS[topic]
            todo = await tasks.create_todo(
                conn,
                owner_id=chat.owner_id,
                chat_id=chat.id if rng.random() < 0.8 else None,
                title=f"{verb.capitalize()} {rng.choice(things)}",
                priority=rng.choice([1, 2, 3, 3, 3, 4, 5]),
                due_at=now + timedelta(days=rng.randrange(-10, 30)) if rng.random() < 0.6 else None,
            )
            status = rng.choices(["pending", "in_progress", "done", "cancelled"], [5, 2, 4, 1])[0]
            if status != "pending":
                await tasks.update_todo(conn, todo.id, {"status": status})
            bar.update()


async def _seed_executions(
    db: DatabaseManager,
    rng: random.Random,
    chats: Sequence[tuple[messaging.Chat, int]],
    count: int,
    bar: tqdm[Any],
) -> None:
    async with db.session() as conn:
        for _ in range(count):
            chat, _topic = rng.choice(chats)
            await agents.enqueue_execution(
                conn,
                agent_name=rng.choice(AGENTS),
                input={"prompt": "continue the conversation", "temperature": 0.2},
                chat_id=chat.id,
            )
        # Most of the queue has been worked off: claimed, then succeeded or failed.
        for _ in range(count * 4 // 5):
            execution = await agents.claim_next_execution(conn, worker_id="seed-worker-1")
            if execution is None:
                break
            if rng.random() < 0.9:
                prompt, completion = rng.randrange(200, 8000), rng.randrange(20, 1500)
                await agents.complete_execution(
                    conn,
                    execution.id,
                    output={"text": "done"},
                    model=rng.choice(MODELS),
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    cost_usd=round((prompt * 0.15 + completion * 0.6) / 1_000_000, 6),
                )
            else:
                await agents.fail_execution(conn, execution.id, error="model timeout", retry=False)
            bar.update()
        bar.update(count - count * 4 // 5)


async def _seed_sessions(
    db: DatabaseManager,
    rng: random.Random,
    chats: Sequence[tuple[messaging.Chat, int]],
    count: int,
    bar: tqdm[Any],
) -> None:
    bot_id = 7_000_000_001
    async with db.session() as conn:
        for index in range(count):
            user_id = 100_000_000 + index
            key = telegram.SessionKey(
                bot_id=bot_id, telegram_chat_id=user_id, telegram_user_id=user_id
            )
            await telegram.upsert_session(
                conn, key, username=f"user{index}", language_code=rng.choice(LANGUAGES)
            )
            if rng.random() < 0.5:
                chat, _topic = rng.choice(chats)
                await telegram.link_chat(conn, key, chat.id)
            if rng.random() < 0.3:
                await telegram.set_state(conn, key, "Checkout:address")
                await telegram.update_data(conn, key, {"cart_items": rng.randrange(1, 6)})
            bar.update()
