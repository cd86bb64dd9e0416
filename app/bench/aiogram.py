"""`agentdb bench aiogram`: aiogram 3's FSM on agentdb's PostgresStorage, against aiogram's
MemoryStorage (the floor), side by side in one run.

Each storage first holds a state and some data for every one of `users` StorageKeys (private
chats: chat = user), so that PostgreSQL looks rows up in a table of that many, as a real
bot's would. Then, per operation, several rounds; in every round both storages run the same
calls on the same keys one after the other, in an order that alternates, so that drift of
the machine hits both alike. The operations:

- the storage's own calls: get_state, set_state (a State of a group), update_data (a patch
  of two keys, merged into the data), get_data;
- `Dispatcher.feed_update` of a private message to a handler that reads the data, updates
  it and moves the state on: the whole path of an update through aiogram (its middlewares,
  the FSM context, the event isolation, the router), with the setup each storage is meant
  for: MemoryStorage with SimpleEventIsolation, PostgresStorage with
  `storage.create_isolation()` (an advisory lock per key, held on a connection of its own);
  and both without an isolation (aiogram's default), which is what the lock costs.

No network: the Bot's session answers the Bot API in memory (and the handler does not call
it), so an update costs only aiogram's work and the storage's. The PostgreSQL storage is
`PostgresStorage.from_url(…)` on a throwaway server over its Unix socket. Reported: median
ops/s per storage, the median of the per-round time ratios postgres/memory, what PostgreSQL
adds per operation, and each storage's client CPU per operation. Writes
bench-results/aiogram.md.
"""

from __future__ import annotations

import asyncio
import gc
import platform
import random
import statistics
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any, cast

import psycopg
from aiogram import Bot, Dispatcher
from aiogram.client.session.base import BaseSession
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.fsm.storage.base import BaseEventIsolation, BaseStorage, StorageKey
from aiogram.fsm.storage.memory import MemoryStorage, SimpleEventIsolation
from aiogram.methods import GetMe, SendMessage
from aiogram.methods.base import TelegramMethod, TelegramType
from aiogram.types import Chat, Message, Update, User
from psycopg.conninfo import make_conninfo

from app.bench.common import markdown_table, results_dir
from app.database import embedded
from app.database.migrations import Migrator
from app.integrations.aiogram import PostgresStorage

BOT_ID = 7_000_000_001
BOT_TOKEN = f"{BOT_ID}:bench-token-never-sent-anywhere"
FIRST_USER = 100_000_000
LANGUAGES = ("en", "de", "es", "pt-br", "ru", "uk")
TEXTS = ("next", "back", "ok", "2 more, please")


@dataclass(frozen=True)
class AiogramSize:
    users: int
    rounds: int  # even: each storage runs first in half of them
    ops_per_round: int  # storage calls
    updates_per_round: int  # feed_update calls


FULL = AiogramSize(users=1_000, rounds=60, ops_per_round=300, updates_per_round=100)
QUICK = AiogramSize(users=200, rounds=6, ops_per_round=50, updates_per_round=20)


# The bot ----------------------------------------------------------------------------------


class Checkout(StatesGroup):
    cart = State()
    address = State()
    payment = State()
    confirm = State()


STATES: tuple[State, ...] = (Checkout.cart, Checkout.address, Checkout.payment, Checkout.confirm)


class InMemorySession(BaseSession):
    """A Bot API session with no network: getMe and sendMessage are answered in memory,
    anything else is refused (the benchmark's handler calls neither)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def close(self) -> None:
        pass

    async def make_request(
        self, bot: Bot, method: TelegramMethod[TelegramType], timeout: int | None = None
    ) -> TelegramType:
        self.calls += 1
        answer: object
        if isinstance(method, GetMe):
            answer = User(id=bot.id, is_bot=True, first_name="bench", username="bench_bot")
        elif isinstance(method, SendMessage):
            answer = Message(
                message_id=self.calls,
                date=datetime.now(UTC),
                chat=Chat(id=int(method.chat_id), type="private"),
                text=method.text,
            )
        else:
            raise NotImplementedError(f"{type(method).__name__}: not answered in the benchmark")
        return cast(TelegramType, answer)

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        raise NotImplementedError("no downloads in the benchmark")
        yield b""  # pragma: no cover - makes this an async generator


async def on_message(message: Message, state: FSMContext) -> str:
    """A step of a checkout dialogue: read the data, record the step, move the state on.
    (FSMContextMiddleware has read the state already, for every update.)"""
    data = await state.get_data()
    step = int(data.get("step", 0)) + 1
    await state.update_data(step=step, last_text=message.text)
    await state.set_state(STATES[step % len(STATES)])
    return "ok"


def dispatcher(storage: BaseStorage, isolation: BaseEventIsolation | None) -> Dispatcher:
    dp = (
        Dispatcher(storage=storage)
        if isolation is None
        else Dispatcher(storage=storage, events_isolation=isolation)
    )
    dp.message.register(on_message)
    return dp


def storage_key(user_id: int) -> StorageKey:
    return StorageKey(bot_id=BOT_ID, chat_id=user_id, user_id=user_id)


def initial_data(rng: random.Random, user_id: int) -> dict[str, Any]:
    return {
        "step": rng.randrange(10),
        "name": f"user{user_id}",
        "language": rng.choice(LANGUAGES),
        "cart": [rng.randrange(1, 500) for _ in range(rng.randrange(1, 5))],
    }


def update(bot: Bot, number: int, user_id: int, text: str) -> Update:
    """A private text message from `user_id`, mounted on `bot` as polling mounts it."""
    user = {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"}
    payload = {
        "update_id": number,
        "message": {
            "message_id": number,
            "date": 1_750_000_000 + number,
            "chat": {"id": user_id, "type": "private", "first_name": user["first_name"]},
            "from": user,
            "text": text,
        },
    }
    return Update.model_validate(payload, context={"bot": bot})


# The two sides ----------------------------------------------------------------------------


@dataclass
class Side:
    """One storage, and a dispatcher on it with and without an event isolation."""

    storage: BaseStorage
    isolated: Dispatcher
    plain: Dispatcher


SIDES = ("memory", "postgres")
Call = Callable[[Side], Awaitable[object]]


def on_storage(method: str, *args: Any) -> Call:
    """A call of `side.storage.<method>(*args)` on whichever side it is given (the coroutine
    itself, awaited by the round: no wrapper of ours on the timed path)."""

    def call(side: Side) -> Awaitable[object]:
        return cast(Awaitable[object], getattr(side.storage, method)(*args))

    return call


def on_dispatcher(dispatcher: str, bot: Bot, event: Update) -> Call:
    """`side.<dispatcher>.feed_update(bot, event)` ("isolated" or "plain")."""

    def call(side: Side) -> Awaitable[object]:
        return cast(Dispatcher, getattr(side, dispatcher)).feed_update(bot, event)

    return call


@dataclass(frozen=True)
class Operation:
    name: str
    make_calls: Callable[[random.Random, int], list[Call]]
    per_round: int
    dispatches: bool = False  # calls return feed_update's response (checked in the warm-up)


def operations(bot: Bot, size: AiogramSize) -> list[Operation]:
    users = range(FIRST_USER, FIRST_USER + size.users)
    numbers = iter(range(1, 1 << 62))

    def get_state(rng: random.Random, count: int) -> list[Call]:
        return [on_storage("get_state", storage_key(rng.choice(users))) for _ in range(count)]

    def set_state(rng: random.Random, count: int) -> list[Call]:
        return [
            on_storage("set_state", storage_key(rng.choice(users)), rng.choice(STATES))
            for _ in range(count)
        ]

    def update_data(rng: random.Random, count: int) -> list[Call]:
        return [
            on_storage(
                "update_data",
                storage_key(rng.choice(users)),
                {"step": rng.randrange(10), "seen": rng.random()},
            )
            for _ in range(count)
        ]

    def get_data(rng: random.Random, count: int) -> list[Call]:
        return [on_storage("get_data", storage_key(rng.choice(users))) for _ in range(count)]

    def feed(dispatcher: str) -> Callable[[random.Random, int], list[Call]]:
        def make_calls(rng: random.Random, count: int) -> list[Call]:
            # Updates are frozen models: both sides get the same objects, built untimed.
            return [
                on_dispatcher(
                    dispatcher,
                    bot,
                    update(bot, next(numbers), rng.choice(users), rng.choice(TEXTS)),
                )
                for _ in range(count)
            ]

        return make_calls

    ops, updates = size.ops_per_round, size.updates_per_round
    return [
        Operation("get_state", get_state, ops),
        Operation("set_state", set_state, ops),
        Operation("update_data (patch of 2 keys)", update_data, ops),
        Operation("get_data", get_data, ops),
        Operation(
            "feed_update, state-changing handler", feed("isolated"), updates, dispatches=True
        ),
        Operation("feed_update, no isolation", feed("plain"), updates, dispatches=True),
    ]


# Measuring --------------------------------------------------------------------------------


@dataclass
class OperationResult:
    operation: Operation
    seconds: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})
    cpu_seconds: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})

    def ops_per_second(self, side: str) -> float:
        return statistics.median(self.operation.per_round / s for s in self.seconds[side])

    def cpu_per_op(self, side: str) -> float:
        """Median client CPU seconds of one call: the Python side, without the waits."""
        return statistics.median(self.cpu_seconds[side]) / self.operation.per_round

    def ratio(self) -> float:
        """Median over rounds of postgres time / memory time (same calls in each round)."""
        return statistics.median(
            p / m for p, m in zip(self.seconds["postgres"], self.seconds["memory"], strict=True)
        )

    def added_per_op(self) -> float:
        """Median over rounds of the seconds PostgreSQL adds to one call."""
        return statistics.median(
            (p - m) / self.operation.per_round
            for p, m in zip(self.seconds["postgres"], self.seconds["memory"], strict=True)
        )


async def run_round(calls: Sequence[Call], side: Side) -> tuple[float, float]:
    """Wall-clock and client CPU seconds of running `calls` on `side`."""
    cpu, started = time.process_time(), time.perf_counter()
    for call in calls:
        await call(side)
    return time.perf_counter() - started, time.process_time() - cpu


async def measure(
    sides: dict[str, Side], operation: Operation, rounds: int, seed: int
) -> OperationResult:
    """`rounds` rounds of the same calls on both sides, in an order that alternates."""
    rng = random.Random(seed)
    result = OperationResult(operation)
    # Warm up: psycopg prepares a statement on its 5th run; aiogram builds its handler
    # tables and pydantic its validators on first use; the server's buffers fill.
    warm = operation.make_calls(rng, 3 * operation.per_round)
    for name in SIDES:
        responses = [await call(sides[name]) for call in warm]
        if operation.dispatches and any(response is UNHANDLED for response in responses):
            raise RuntimeError(f"{operation.name}: the {name} dispatcher left updates unhandled")
    gc.collect()
    for number in range(rounds):
        calls = operation.make_calls(rng, operation.per_round)
        shift = number % len(SIDES)
        for name in SIDES[shift:] + SIDES[:shift]:
            wall, cpu = await run_round(calls, sides[name])
            result.seconds[name].append(wall)
            result.cpu_seconds[name].append(cpu)
    return result


async def fill(storage: BaseStorage, size: AiogramSize) -> None:
    """A state and data for every user; the same for both storages (same seed)."""
    rng = random.Random(7)
    for user_id in range(FIRST_USER, FIRST_USER + size.users):
        key = storage_key(user_id)
        await storage.set_state(key, rng.choice(STATES))
        await storage.set_data(key, initial_data(rng, user_id))


async def measure_all(conninfo: str, size: AiogramSize) -> list[OperationResult]:
    memory = MemoryStorage()
    postgres = PostgresStorage.from_url(conninfo)
    bot = Bot(BOT_TOKEN, session=InMemorySession())
    sides = {
        "memory": Side(
            memory, dispatcher(memory, SimpleEventIsolation()), dispatcher(memory, None)
        ),
        "postgres": Side(
            postgres, dispatcher(postgres, postgres.create_isolation()), dispatcher(postgres, None)
        ),
    }
    results = []
    try:
        started = time.perf_counter()
        for side in sides.values():
            await fill(side.storage, size)
        print(f"  {size.users:,} keys in each storage in {time.perf_counter() - started:.1f} s")
        gc.collect()
        gc.freeze()  # the keys and the updates' schema are never garbage
        for index, operation in enumerate(operations(bot, size)):
            started = time.perf_counter()
            result = await measure(sides, operation, size.rounds, seed=1000 + index)
            print(
                f"  {operation.name}: "
                + ", ".join(f"{name} {result.ops_per_second(name):,.0f}/s" for name in SIDES)
                + f" ({time.perf_counter() - started:.1f} s)",
                flush=True,
            )
            results.append(result)
    finally:
        await bot.session.close()
        await memory.close()
        await postgres.close()
        gc.unfreeze()
    return results


# Reporting --------------------------------------------------------------------------------


def report_table(results: Sequence[OperationResult]) -> str:
    rows = [
        [
            r.operation.name,
            *(f"{r.ops_per_second(name):,.0f}" for name in SIDES),
            f"{r.ratio():.1f}",
            f"{r.added_per_op() * 1e6:,.0f}",
            *(f"{r.cpu_per_op(name) * 1e6:,.1f}" for name in SIDES),
        ]
        for r in results
    ]
    return markdown_table(
        [
            "operation",
            "memory ops/s",
            "postgres ops/s",
            "postgres/memory time",
            "postgres adds µs/op",
            "memory CPU µs/op",
            "postgres CPU µs/op",
        ],
        rows,
    )


def versions(server_version: int) -> str:
    major, minor = divmod(server_version, 10_000)
    return (
        f"PostgreSQL {major}.{minor} (embedded, Unix socket), Python {platform.python_version()},"
        f" psycopg {version('psycopg')}, aiogram {version('aiogram')}"
    )


# Entry point ------------------------------------------------------------------------------


def run(size: AiogramSize = FULL) -> str:
    """Run the whole benchmark; return the Markdown report (also written to bench-results/)."""
    started = time.perf_counter()
    with embedded.throwaway_server(prefix="agentdb-bench-") as server_url:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench_aiogram")
            server_version = conn.info.server_version
        conninfo = make_conninfo(server_url, dbname="bench_aiogram")
        Migrator(conninfo).apply()
        results = asyncio.run(measure_all(conninfo, size))
    elapsed = time.perf_counter() - started
    report = (
        f"aiogram FSM storage benchmark: {versions(server_version)}; {size.users:,} StorageKeys,"
        f" {size.rounds} rounds x {size.ops_per_round} calls"
        f" ({size.updates_per_round} updates for feed_update); {elapsed:.0f} s in all\n\n"
        + report_table(results)
        + "\n\nops/s: median over rounds, sequential calls on random keys that all hold a state"
        " and data. postgres/memory time and postgres adds µs/op: medians of the per-round"
        " ratios and differences (each round runs the same calls on both storages). CPU µs/op:"
        " this process's CPU per call (median over rounds); the rest of the time is waiting on"
        " the server. feed_update: a private message through Dispatcher.feed_update to a"
        " handler that reads the data, updates it and sets a new state (no Bot API calls),"
        " with SimpleEventIsolation for memory and storage.create_isolation() for postgres;"
        " 'no isolation': both with aiogram's default DisabledEventIsolation.\n"
        + (
            "\n(--quick: a smoke test with few rounds; judge the numbers on a full run.)\n"
            if size == QUICK
            else ""
        )
    )
    (results_dir() / "aiogram.md").write_text(report)
    return report
