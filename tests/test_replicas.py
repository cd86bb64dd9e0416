"""Read replicas against a real streaming standby: a primary of this module's own, and a
standby made from it with `pg_basebackup -R` (the embedded binaries), started, stopped and
paused for real."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from app import knowledge, messaging
from app.database import (
    AccessDeniedError,
    DatabaseConfig,
    DatabaseManager,
    InvalidInputError,
    embedded,
)
from app.database.migrations import Migrator
from app.database.replicas import PrimaryHistory, format_lsn, parse_lsn, wal_end

DATABASE = "agentdb"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
SERVER_USER = "embedded_postgres" if IS_ROOT else None  # the embedded server's system user

IN_RECOVERY = "SELECT pg_catalog.pg_is_in_recovery()"


def run(*command: str) -> None:
    """Run a PostgreSQL program as the embedded server's system user."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, user=SERVER_USER)
    assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"


@dataclass
class Cluster:
    """A primary and its streaming standby, each on a Unix socket in its data directory."""

    primary_url: str
    standby_dir: Path

    @property
    def standby_url(self) -> str:
        return make_conninfo(host=str(self.standby_dir), user="postgres", dbname=DATABASE)

    def start_standby(self) -> None:
        run(
            str(embedded.binary("pg_ctl")),
            *("-D", str(self.standby_dir), "-l", str(self.standby_dir / "log"), "-w"),
            *("-o", f"-k {self.standby_dir} -h ''", "start"),
        )

    def stop_standby(self, mode: str = "fast") -> None:
        run(str(embedded.binary("pg_ctl")), "-D", str(self.standby_dir), "-m", mode, "-w", "stop")

    def on_standby(self, query: str) -> Any:
        with psycopg.connect(self.standby_url, autocommit=True) as conn:
            row = conn.execute(query).fetchone()
        return None if row is None else row[0]


@pytest.fixture(scope="module")
def cluster(server: Any) -> Iterator[Cluster]:
    if not server.is_own:
        pytest.skip("needs the embedded binaries' own servers: DATABASE_URL names another")
    with embedded.throwaway_server(prefix="agentdb-primary-") as maintenance_url:
        with psycopg.connect(maintenance_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE agentdb")
        primary_url = make_conninfo(maintenance_url, dbname=DATABASE)
        Migrator(primary_url).apply()
        socket_dir = parse_qs(urlsplit(maintenance_url).query)["host"][0]
        parent = Path(tempfile.mkdtemp(prefix="agentdb-standby-"))
        if IS_ROOT:
            shutil.chown(parent, user="embedded_postgres")
        standby = Cluster(primary_url, parent / "data")
        try:
            run(
                str(embedded.binary("pg_basebackup")),
                *("-h", socket_dir, "-U", "postgres", "-D", str(standby.standby_dir)),
                *("-R", "-X", "stream", "-c", "fast"),
            )
            # The copy holds the primary's socket lock file and log: not the standby's.
            for copied in [*standby.standby_dir.glob(".s.PGSQL.*"), standby.standby_dir / "log"]:
                copied.unlink(missing_ok=True)
            try:
                standby.start_standby()
            except AssertionError:
                log = standby.standby_dir / "log"
                raise AssertionError(
                    log.read_text()[-2000:] if log.exists() else "no log"
                ) from None
            yield standby
        finally:
            if (standby.standby_dir / "postmaster.pid").exists():
                standby.stop_standby("immediate")
            shutil.rmtree(parent, ignore_errors=True)


def config(cluster: Cluster, **settings: Any) -> DatabaseConfig:
    return DatabaseConfig(
        url=cluster.primary_url,
        replica_urls=[cluster.standby_url],
        max_pool_size=4,
        **{"replica_check_interval": 0.1, **settings},
    )


@pytest.fixture
async def db(cluster: Cluster) -> AsyncIterator[DatabaseManager]:
    async with DatabaseManager(config(cluster)) as manager:
        yield manager


async def in_recovery(db: DatabaseManager, **read: Any) -> bool:
    async with db.read_session(**read) as conn:
        row = await (await conn.execute(IN_RECOVERY)).fetchone()
    assert row is not None
    return bool(row[0])


async def eventually(condition: Any, what: str, attempts: int = 300) -> None:
    """Wait (0.1 s steps, 30 s at most) until `condition()` is true: a state reached, not a
    time asserted."""
    for _ in range(attempts):
        if await condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never: {what}")


async def test_reads_go_to_the_standby_and_writes_there_are_refused(db: DatabaseManager) -> None:
    assert await in_recovery(db)
    async with db.read_session() as conn:
        assert await (await conn.execute("SHOW transaction_read_only")).fetchone() == ("on",)
    owner = uuid.uuid4()
    with pytest.raises(AccessDeniedError, match=r"read-only.*db\.session"):
        async with db.read_session(owner_id=owner) as conn:
            await messaging.create_chat(conn, owner_id=owner)


async def test_a_read_session_without_replicas_is_a_read_only_transaction_on_the_primary(
    cluster: Cluster,
) -> None:
    async with DatabaseManager(DatabaseConfig(url=cluster.primary_url)) as db:
        assert not await in_recovery(db)
        owner = uuid.uuid4()
        with pytest.raises(AccessDeniedError, match="read-only"):
            async with db.read_session() as conn:
                await messaging.create_chat(conn, owner_id=owner)
        async with db.session() as conn:
            assert (await messaging.list_chats(conn, owner_id=owner)).items == []


async def test_after_a_write_reads_it_on_the_standby_once_replayed(db: DatabaseManager) -> None:
    owner = uuid.uuid4()
    async with db.session() as conn:
        chat = await messaging.create_chat(conn, owner_id=owner, title="replicated")
    lsn = await db.current_lsn()
    seen = None
    for _ in range(300):  # replay takes a moment; until then the read is the primary's
        async with db.read_session(after=lsn) as conn:
            seen = await messaging.get_chat(conn, chat.id)
            where = await (await conn.execute(IN_RECOVERY)).fetchone()
        assert seen == chat  # wherever it read, it read the write
        if where == (True,):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the standby never replayed the write")


async def test_a_paused_replay_sends_reads_after_a_write_to_the_primary(
    cluster: Cluster, db: DatabaseManager
) -> None:
    cluster.on_standby("SELECT pg_catalog.pg_wal_replay_pause()")
    try:
        owner = uuid.uuid4()
        async with db.session() as conn:
            chat = await messaging.create_chat(conn, owner_id=owner)
        lsn = await db.current_lsn()
        for _ in range(5):
            async with db.read_session(after=lsn) as conn:
                assert await messaging.get_chat(conn, chat.id) == chat
                assert await (await conn.execute(IN_RECOVERY)).fetchone() == (False,)
        # Without after=, reads stay on the standby while it lags less than
        # max_replica_lag (5 s): it does not have the chat.
        async with db.read_session() as conn:
            if await (await conn.execute(IN_RECOVERY)).fetchone() == (True,):
                assert await messaging.get_chat(conn, chat.id) is None
    finally:
        cluster.on_standby("SELECT pg_catalog.pg_wal_replay_resume()")


async def test_a_standby_lagging_more_than_max_replica_lag_is_left_until_it_catches_up(
    cluster: Cluster,
) -> None:
    async with DatabaseManager(config(cluster, max_replica_lag=0.5)) as db:
        await eventually(lambda: in_recovery(db), "the standby in use")
        cluster.on_standby("SELECT pg_catalog.pg_wal_replay_pause()")
        try:
            async with db.session() as conn:  # WAL the standby does not replay
                await messaging.create_chat(conn, owner_id=uuid.uuid4())

            async def on_primary() -> bool:
                return not await in_recovery(db)

            await eventually(on_primary, "reads leave the lagging standby")
        finally:
            cluster.on_standby("SELECT pg_catalog.pg_wal_replay_resume()")
        await eventually(lambda: in_recovery(db), "reads back on the standby after replay")


async def test_a_stopped_standby_sends_reads_to_the_primary_without_a_failed_call(
    cluster: Cluster, db: DatabaseManager
) -> None:
    owner = uuid.uuid4()
    async with db.session() as conn:
        chat = await messaging.create_chat(conn, owner_id=owner)
    lsn = await db.current_lsn()
    await eventually(lambda: in_recovery(db, after=lsn), "the standby has the chat")
    cluster.stop_standby()
    try:
        places = []
        for _ in range(20):  # every call succeeds, on the primary
            async with db.read_session() as conn:
                assert await messaging.get_chat(conn, chat.id) == chat
                places.append(await (await conn.execute(IN_RECOVERY)).fetchone())
        assert places == [(False,)] * 20
    finally:
        cluster.start_standby()
    await eventually(lambda: in_recovery(db), "reads back on the restarted standby")


def unit(vector: Any) -> list[float]:
    array = np.asarray(vector, dtype=np.float64)
    result: list[float] = (array / np.linalg.norm(array)).tolist()
    return result


async def test_search_and_recall_run_on_the_standby(db: DatabaseManager) -> None:
    rng = np.random.default_rng(5)
    owner = uuid.uuid4()
    vectors = [unit(rng.normal(0, 1, 1536)) for _ in range(12)]
    async with db.session(owner_id=owner) as conn:
        chat = await messaging.create_chat(conn, owner_id=owner)
        for index, vector in enumerate(vectors):
            await messaging.add_message(
                conn, chat.id, role="user", content=f"message {index}", embedding=vector
            )
            await knowledge.remember(
                conn, owner_id=owner, kind="fact", content=f"memory {index}", embedding=vector
            )
    lsn = await db.current_lsn()
    query = unit(np.asarray(vectors[3]) + rng.normal(0, 0.01, 1536))

    async def on_standby_with_it() -> bool:
        return await in_recovery(db, after=lsn)

    await eventually(on_standby_with_it, "the standby has the messages")
    async with db.read_session(owner_id=owner, after=lsn) as conn:
        assert await (await conn.execute(IN_RECOVERY)).fetchone() == (True,)
        hits = await messaging.search_messages(conn, owner_id=owner, embedding=query, limit=3)
        recalled = await knowledge.recall(
            conn, owner_id=owner, embedding=query, limit=3, touch=False
        )
    assert hits[0].message.content == "message 3"
    assert recalled[0].memory.content == "memory 3"
    async with db.session(owner_id=owner) as conn:  # the primary's answers, the same
        assert [hit.message.id for hit in hits] == [
            hit.message.id
            for hit in await messaging.search_messages(
                conn, owner_id=owner, embedding=query, limit=3
            )
        ]


async def test_after_must_be_a_wal_position(db: DatabaseManager) -> None:
    for bad in ("yesterday", "0/XYZ", 42):
        with pytest.raises(InvalidInputError, match="after"):
            async with db.read_session(after=bad):  # type: ignore[arg-type]
                pass


def test_replica_urls_come_from_database_replica_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@primary/assistant")
    monkeypatch.setenv(
        "DATABASE_REPLICA_URLS", "postgresql://app@replica1/assistant, postgresql://app@r2/a"
    )
    urls = [url.get_secret_value() for url in DatabaseConfig.from_env().replica_urls]
    assert urls == ["postgresql://app@replica1/assistant", "postgresql://app@r2/a"]
    monkeypatch.setenv("DATABASE_REPLICA_URLS", "postgresql://app@r1/a,mysql://app@r2/a")
    with pytest.raises(InvalidInputError, match=r"^DATABASE_REPLICA_URLS: not a PostgreSQL URL"):
        DatabaseConfig.from_env()
    with pytest.raises(InvalidInputError, match="max_replica_lag"):
        DatabaseConfig(url="postgresql://app@primary/a", max_replica_lag=0)


def test_lag_is_how_long_ago_the_primary_was_where_the_replica_is() -> None:
    history = PrimaryHistory(span=10.0)
    for second, position in enumerate([100, 100, 200, 300]):
        history.add(float(second), position)
    assert history.lag(300, now=3.5) == 0.0  # has all the primary had at the last check
    assert history.lag(250, now=3.5) == 0.5  # lacks what the primary wrote by second 3
    assert history.lag(100, now=3.5) == 1.5  # lacks what it wrote by second 2
    assert history.lag(50, now=3.5) == 10.0  # behind everything kept: the whole span
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    # An insert position past an empty page's header: the last record ended at the page.
    assert wal_end("0/3002018", 8192, 16 << 20) == 0x3002000
    assert wal_end("0/3000028", 8192, 16 << 20) == 0x3000000  # a segment's first page
    assert wal_end("0/3002030", 8192, 16 << 20) == 0x3002030
