"""The aiogram 3 integration, against aiogram's documented storage contract: PostgresStorage
(state, data, values, expiry, separation of keys, refusals, atomic updates from many
processes' worth of connections) and PostgresEventIsolation (one key's handlers one at a time
across real OS processes, different keys in parallel, a killed process's lock released)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from aiogram.exceptions import DataNotDictLikeError
from aiogram.fsm.state import State, StatesGroup
from aiogram.fsm.storage.base import StorageKey

from app import telegram
from app.database import (
    AccessDeniedError,
    DatabaseConfig,
    DatabaseManager,
    DatabaseUnavailableError,
    InvalidInputError,
)
from app.integrations.aiogram import PostgresEventIsolation, PostgresStorage, lock_id
from tests.conftest import wait_for_lock_waiters

Conn = psycopg.AsyncConnection[Any]


class Form(StatesGroup):
    name = State()
    age = State()


def key(user: int = 10, **parts: Any) -> StorageKey:
    return StorageKey(bot_id=1, chat_id=user, user_id=user, **parts)


@pytest.fixture
async def storage(db: DatabaseManager) -> AsyncIterator[PostgresStorage]:
    storage = PostgresStorage(db)
    yield storage
    await storage.close()


async def scalar(db: DatabaseManager, statement: str, params: Any = None) -> Any:
    async with db.connection() as conn:
        row = await (await conn.execute(statement, params)).fetchone()
    assert row is not None
    return row[0]


# The storage contract ---------------------------------------------------------------------


async def test_an_unknown_key_has_no_state_no_data_and_the_default_value(
    storage: PostgresStorage,
) -> None:
    assert await storage.get_state(key()) is None
    assert await storage.get_data(key()) == {}
    assert await storage.get_value(key(), "name") is None
    assert await storage.get_value(key(), "name", "nobody") == "nobody"


async def test_state_is_stored_as_a_string_from_a_string_or_a_state_and_cleared_with_none(
    storage: PostgresStorage,
) -> None:
    await storage.set_state(key(), Form.name)
    assert await storage.get_state(key()) == "Form:name"
    await storage.set_state(key(), "Form:age")
    assert await storage.get_state(key()) == "Form:age"
    await storage.set_state(key(), None)
    assert await storage.get_state(key()) is None


async def test_data_is_replaced_by_set_data_and_read_back_as_a_fresh_dict(
    storage: PostgresStorage,
) -> None:
    await storage.set_data(key(), {"name": "Alice", "tags": ["a", "b"]})
    await storage.set_data(key(), {"name": "Bob"})
    data = await storage.get_data(key())
    assert data == {"name": "Bob"}
    data["name"] = "changed in memory"
    again = await storage.get_data(key())
    assert again == {"name": "Bob"} and again is not data
    await storage.set_data(key(), {})
    assert await storage.get_data(key()) == {}


async def test_clearing_state_and_data_as_fsm_context_clear_does(
    storage: PostgresStorage,
) -> None:
    await storage.set_state(key(), Form.age)
    await storage.set_data(key(), {"name": "Alice"})
    await storage.set_state(key(), None)
    await storage.set_data(key(), {})
    assert await storage.get_state(key()) is None
    assert await storage.get_data(key()) == {}


async def test_keys_differing_in_any_one_part_never_share_a_record(
    storage: PostgresStorage,
) -> None:
    keys = [
        key(),
        StorageKey(bot_id=2, chat_id=10, user_id=10),
        key(user=11),
        StorageKey(bot_id=1, chat_id=10, user_id=99),
        key(thread_id=5),
        key(business_connection_id="biz-1"),
        key(destiny="other"),
    ]
    for number, each in enumerate(keys):
        await storage.set_state(each, f"S:{number}")
        await storage.set_data(each, {"n": number})
    for number, each in enumerate(keys):
        assert await storage.get_state(each) == f"S:{number}"
        assert await storage.get_data(each) == {"n": number}
        assert await storage.get_value(each, "n") == number


@pytest.mark.parametrize("data", [(), [], [("a", 1)], None, "text", 1])
async def test_set_data_and_update_data_refuse_what_is_not_a_dict(
    storage: PostgresStorage, data: Any
) -> None:
    await storage.set_data(key(), {"kept": True})
    with pytest.raises(DataNotDictLikeError):
        await storage.set_data(key(), data)
    with pytest.raises(DataNotDictLikeError):
        await storage.update_data(key(), data)
    assert await storage.get_data(key()) == {"kept": True}


async def test_a_value_json_cannot_hold_is_invalid_input_naming_its_key_and_nothing_is_written(
    storage: PostgresStorage,
) -> None:
    await storage.set_data(key(), {"kept": True})
    with pytest.raises(InvalidInputError, match="when"):
        await storage.set_data(key(), {"when": datetime.now(UTC)})
    with pytest.raises(InvalidInputError, match="blob"):
        await storage.update_data(key(), {"blob": b"\x00"})
    assert await storage.get_data(key()) == {"kept": True}


async def test_get_value_reads_one_value_and_tells_a_stored_null_from_a_missing_key(
    storage: PostgresStorage,
) -> None:
    await storage.set_data(key(), {"name": "Alice", "age": None, "cart": {"items": 2}})
    assert await storage.get_value(key(), "name") == "Alice"
    assert await storage.get_value(key(), "cart") == {"items": 2}
    assert await storage.get_value(key(), "age", "unset") is None
    assert await storage.get_value(key(), "missing", "unset") == "unset"


async def test_update_data_merges_shallowly_and_returns_the_merged_data(
    storage: PostgresStorage,
) -> None:
    assert await storage.update_data(key(), {"name": "Alice"}) == {"name": "Alice"}
    merged = await storage.update_data(key(), {"age": 30, "name": "Alicia"})
    assert merged == {"name": "Alicia", "age": 30}
    assert await storage.get_data(key()) == merged


async def test_twenty_concurrent_update_data_from_twenty_storages_lose_no_key(
    database_url: str,
) -> None:
    storages = [PostgresStorage.from_url(database_url, max_pool_size=1) for _ in range(20)]
    try:
        # Every storage connects first, so that the updates themselves overlap.
        await asyncio.gather(*(each.get_state(key()) for each in storages))
        await asyncio.gather(
            *(each.update_data(key(), {f"k{n}": n}) for n, each in enumerate(storages))
        )
        assert await storages[0].get_data(key()) == {f"k{n}": n for n in range(20)}
    finally:
        for each in storages:
            await each.close()


async def test_a_storage_closes_its_own_database_manager_and_leaves_a_shared_one_open(
    db: DatabaseManager, database_url: str
) -> None:
    shared = PostgresStorage(db)
    await shared.set_state(key(), "S:1")
    await shared.close()
    assert db.is_open
    owned = PostgresStorage.from_url(database_url)
    assert await owned.get_state(key()) == "S:1"  # opened on first use
    assert owned.db.is_open
    await owned.close()
    assert not owned.db.is_open


# Expiry -----------------------------------------------------------------------------------


async def test_state_and_data_written_with_a_ttl_expire_then_read_as_empty(
    db: DatabaseManager,
) -> None:
    storage = PostgresStorage(db, state_ttl=60, data_ttl=timedelta(minutes=5))
    await storage.set_state(key(), Form.name)
    await storage.set_data(key(), {"name": "Alice"})
    remaining = await scalar(
        db,
        "SELECT state_expires_at - now(), data_expires_at - now() FROM telegram.sessions",
    )
    assert timedelta(seconds=50) < remaining <= timedelta(seconds=60)
    assert await storage.get_state(key()) == "Form:name"

    # An hour passes for this row (its expiry moves into the past).
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE telegram.sessions SET state_expires_at = now() - interval '1 second',"
            " data_expires_at = now() - interval '1 second'"
        )
    assert await storage.get_state(key()) is None
    assert await storage.get_data(key()) == {}
    assert await storage.get_value(key(), "name", "gone") == "gone"
    async with db.connection() as conn:
        session = await telegram.get_session(conn, telegram.SessionKey(1, 10, 10))
    assert session is not None and session.state is None and session.data == {}
    # expired data is merged into as {}, and the write sets a new expiry
    assert await storage.update_data(key(), {"age": 30}) == {"age": 30}
    assert await storage.get_data(key()) == {"age": 30}


async def test_without_a_ttl_nothing_expires(storage: PostgresStorage, db: DatabaseManager) -> None:
    await storage.set_state(key(), Form.name)
    await storage.update_data(key(), {"name": "Alice"})
    expiries = "SELECT state_expires_at IS NULL AND data_expires_at IS NULL FROM telegram.sessions"
    assert await scalar(db, expiries) is True


@pytest.mark.parametrize("ttl", [0, -5, True, "60", 1.5, timedelta(0)])
def test_a_ttl_that_is_not_positive_seconds_or_a_timedelta_is_invalid_input(
    db: DatabaseManager, ttl: Any
) -> None:
    with pytest.raises(InvalidInputError, match=r"^state_ttl: "):
        PostgresStorage(db, state_ttl=ttl)
    with pytest.raises(InvalidInputError, match=r"^data_ttl: "):
        PostgresStorage(db, data_ttl=ttl)


# Purging inactive sessions ----------------------------------------------------------------


async def age_sessions(db: DatabaseManager, user: int, days: int) -> None:
    """Move a session's last write `days` into the past (past the updated_at trigger)."""
    async with db.session() as conn:
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            "UPDATE telegram.sessions SET updated_at = now() - make_interval(days => %s),"
            " last_seen_at = now() - make_interval(days => %s) WHERE telegram_user_id = %s",
            [days, days, user],
        )


async def test_purge_inactive_sessions_deletes_only_untouched_sessions_and_audits_it(
    storage: PostgresStorage, db: DatabaseManager
) -> None:
    for user in (1, 2, 3):
        await storage.set_data(key(user=user), {"user": user})
    await age_sessions(db, 1, 100)
    await age_sessions(db, 2, 100)
    await storage.update_data(key(user=2), {"back": True})  # user 2 came back: a write
    async with db.connection() as conn:
        assert await telegram.purge_inactive_sessions(conn, older_than=timedelta(days=90)) == 1
        assert await telegram.purge_inactive_sessions(conn, older_than=timedelta(days=90)) == 0
    assert await storage.get_data(key(user=1)) == {}
    assert await storage.get_data(key(user=2)) == {"user": 2, "back": True}
    assert await scalar(db, "SELECT count(*) FROM telegram.sessions") == 2
    event = "SELECT details ->> 'deleted' FROM audit.events WHERE operation = 'purge'"
    assert await scalar(db, event) == "1"


async def test_purge_inactive_sessions_is_refused_to_the_app_role_and_deletes_nothing(
    storage: PostgresStorage, db: DatabaseManager, login_as: Any
) -> None:
    await storage.set_data(key(), {"kept": True})
    await age_sessions(db, 10, 100)
    app_config = DatabaseConfig(url=login_as("agentdb_app"))
    async with DatabaseManager(app_config) as app_db, app_db.connection() as conn:
        with pytest.raises(AccessDeniedError):
            await telegram.purge_inactive_sessions(conn, older_than=timedelta(days=90))
    assert await storage.get_data(key()) == {"kept": True}


def test_agentdb_purge_sessions_deletes_and_reports_them(
    database_url: str, agentdb_command: list[str]
) -> None:
    async def prepare() -> None:
        async with DatabaseManager(DatabaseConfig(url=database_url)) as db:
            storage = PostgresStorage(db)
            await storage.set_state(key(user=1), "S:old")
            await storage.set_state(key(user=2), "S:new")
            await age_sessions(db, 1, 100)

    asyncio.run(prepare())
    cli = [*agentdb_command, "purge-sessions", "--database", database_url]
    done = subprocess.run([*cli, "--older-than", "90d"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "purged 1 Telegram sessions inactive for more than 90d"
    bad = subprocess.run([*cli, "--older-than", "soon"], capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "agentdb: error: --older-than: 'soon' is not a number of days, hours or minutes"
        " (e.g. 30d, 12h, 90m)"
    ]


# The event isolation ----------------------------------------------------------------------


def test_lock_ids_differ_for_keys_differing_in_any_part_and_are_the_same_everywhere() -> None:
    keys = [
        key(),
        StorageKey(bot_id=2, chat_id=10, user_id=10),
        key(user=11),
        StorageKey(bot_id=1, chat_id=10, user_id=99),
        key(thread_id=5),
        key(business_connection_id="biz-1"),
        key(destiny="other"),
    ]
    ids = [lock_id(each) for each in keys]
    assert len(set(ids)) == len(keys)
    assert all(-(2**63) <= number < 2**63 for number in ids)
    # (that another interpreter computes the same ids: the Locker processes below report theirs)


async def test_one_keys_handlers_run_one_at_a_time_and_other_keys_do_not_wait(
    storage: PostgresStorage, conn: Conn
) -> None:
    isolation = storage.create_isolation()
    inside: list[str] = []
    first_in, other_in, release_first = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with isolation.lock(key()):
            inside.append("first in")
            first_in.set()
            await release_first.wait()
            inside.append("first out")

    async def same_key() -> None:
        await first_in.wait()
        async with isolation.lock(key()):
            inside.append("same key in")

    async def other_key() -> None:
        await first_in.wait()
        async with isolation.lock(key(user=11)):
            inside.append("other key in")
            other_in.set()

    tasks = [asyncio.create_task(job()) for job in (first, same_key, other_key)]
    await asyncio.wait_for(first_in.wait(), 10)
    await wait_for_lock_waiters(conn)  # the same key's handler waits on the server
    await asyncio.wait_for(other_in.wait(), 10)  # while the other key's got in
    assert "same key in" not in inside
    release_first.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert inside.index("same key in") > inside.index("first out")


LOCKER = textwrap.dedent(
    """
    import asyncio, sys
    from aiogram.fsm.storage.base import StorageKey
    from app.integrations.aiogram import PostgresStorage, lock_id

    async def main(url, user):
        storage = PostgresStorage.from_url(url)
        isolation = storage.create_isolation()
        key = StorageKey(bot_id=1, chat_id=user, user_id=user)
        print(lock_id(key), flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # go
        async with isolation.lock(key):
            print("locked", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
        print("released", flush=True)
        await storage.close()

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


class Locker:
    """A real OS process that takes the lock of a user's key when told to (`go()`) and holds
    it until told again (`release()`). Interpreters start slowly: a test starts all its
    processes first, then tells each in turn."""

    def __init__(self, database_url: str, user: int) -> None:
        self.user = user
        self.process = subprocess.Popen(
            [sys.executable, "-c", LOCKER, database_url, str(user)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def go(self) -> Locker:
        # another interpreter (another hash seed) computes the same lock id
        assert int(self.read()) == lock_id(key(user=self.user))
        self.write()
        return self

    def write(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def read(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def release(self) -> str:
        self.write()
        return self.read()

    def kill(self) -> None:
        """SIGKILL: no handler runs, no unlock is sent; only the server can clean up."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


async def test_two_processes_on_one_key_run_one_after_the_other_and_on_two_keys_at_once(
    database_url: str, conn: Conn
) -> None:
    first, same, other = (Locker(database_url, user) for user in (10, 10, 11))
    assert first.go().read() == "locked"
    same.go()
    await wait_for_lock_waiters(conn)  # the second process waits on the server
    assert other.go().read() == "locked"  # a different key is not held up by either
    assert first.release() == "released"
    assert same.read() == "locked"
    assert same.release() == "released"
    assert other.release() == "released"
    for locker in (first, same, other):
        assert locker.process.wait(10) == 0


async def test_a_killed_process_releases_its_lock(
    database_url: str, storage: PostgresStorage
) -> None:
    holder = Locker(database_url, 10)
    assert holder.go().read() == "locked"
    holder.kill()
    isolation = storage.create_isolation()
    async with asyncio.timeout(20):  # the server drops the dead session and its lock
        async with isolation.lock(key()):
            pass


async def test_handlers_past_the_lock_connections_get_a_clear_error_not_a_hang(
    db: DatabaseManager,
) -> None:
    isolation = PostgresEventIsolation(db, max_connections=1, timeout=0.2)
    try:
        async with isolation.lock(key()):
            with pytest.raises(DatabaseUnavailableError, match="max_connections"):
                async with isolation.lock(key(user=11)):
                    pass
        async with isolation.lock(key(user=11)):  # free again once the first is released
            pass
    finally:
        await isolation.close()


ADVISORY_LOCKS = "SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory'"


async def test_a_handler_that_raises_releases_its_lock(storage: PostgresStorage) -> None:
    # (Counted on the server: advisory locks are reentrant, so a lock left on a pooled
    # connection would not block the next handler that happens to get that connection.)
    isolation = storage.create_isolation()
    with pytest.raises(RuntimeError):
        async with isolation.lock(key()):
            assert await scalar(storage.db, ADVISORY_LOCKS) == 1
            raise RuntimeError("handler failed")
    assert await scalar(storage.db, ADVISORY_LOCKS) == 0
    async with asyncio.timeout(10), isolation.lock(key()):
        pass
    assert await scalar(storage.db, ADVISORY_LOCKS) == 0


async def test_a_handler_cancelled_while_waiting_for_the_lock_leaves_no_lock_behind(
    storage: PostgresStorage, conn: Conn
) -> None:
    isolation = storage.create_isolation()
    held, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with isolation.lock(key()):
            held.set()
            await release.wait()

    async def waiter() -> None:
        async with isolation.lock(key()):
            raise AssertionError("the cancelled waiter got the lock")

    holding = asyncio.create_task(holder())
    await asyncio.wait_for(held.wait(), 10)
    waiting = asyncio.create_task(waiter())
    await wait_for_lock_waiters(conn)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    release.set()
    await holding
    # Had the cancelled wait gone on to take the lock on a pooled connection, this would hang.
    async with asyncio.timeout(10), isolation.lock(key()):
        pass
    assert await scalar(storage.db, ADVISORY_LOCKS) == 0


@pytest.mark.parametrize(
    ("options", "field"),
    [({"max_connections": 0}, "max_connections"), ({"timeout": -1}, "timeout")],
)
def test_bad_isolation_options_are_invalid_input_naming_them(
    db: DatabaseManager, options: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInputError, match=f"^{field}: "):
        PostgresEventIsolation(db, **options)


# The extra --------------------------------------------------------------------------------


def test_without_aiogram_the_module_says_which_extra_to_install_in_one_line() -> None:
    code = "import sys; sys.modules['aiogram'] = None; import app.integrations.aiogram"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        "ImportError: app.integrations.aiogram needs aiogram: install the extra,"
        " pip install 'agentdb[aiogram]'"
    )


def test_the_core_never_imports_aiogram() -> None:
    code = (
        "import sys, app, app.database, app.messaging, app.tasks, app.agents, app.telegram,"
        " app.audit, app.cli; print('aiogram' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
