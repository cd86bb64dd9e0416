"""Test harness: one throwaway embedded PostgreSQL per test session, a template database
migrated once, and a fresh clone of it (CREATE DATABASE … TEMPLATE) for each test."""

from __future__ import annotations

import queue
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from app.database import DatabaseConfig, DatabaseManager, embedded
from app.database.migrations import Migrator

TEMPLATE = "agentdb_template"


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of the maintenance database `postgres` on the session's own throwaway server."""
    # Not under pytest's tmp_path: pytest prunes old basetemp dirs, which would pull the data
    # directory from under a server that another pytest session is still running.
    with embedded.throwaway_server(prefix="agentdb-test-") as url:
        yield url


@pytest.fixture(scope="session")
def template_url(server_url: str) -> str:
    """The template database, migrated once per session."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    url = make_conninfo(server_url, dbname=TEMPLATE)
    Migrator(url).apply()
    return url


class Clones:
    """Databases cloned from the template ahead of demand by a few background threads.

    A clone costs ~0.3 s of mostly waiting inside the server (CREATE DATABASE forces
    checkpoints); made in parallel while tests run, a test almost never waits for one.
    """

    def __init__(self, server_url: str, template: str, ahead: int = 3) -> None:
        self.server_url = server_url
        self.template = template
        self.ready: queue.Queue[str] = queue.Queue(maxsize=ahead)
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._fill, daemon=True) for _ in range(ahead)]
        for thread in self.threads:
            thread.start()

    def _fill(self) -> None:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            while not self.stopping.is_set():
                name = f"test_{secrets.token_hex(6)}"
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                        sql.Identifier(name), sql.Identifier(self.template)
                    )
                )
                while not self.stopping.is_set():
                    try:
                        self.ready.put(name, timeout=0.2)
                        break
                    except queue.Full:
                        continue

    def take(self) -> str:
        """The URL of a fresh clone of the template, this caller's alone."""
        return make_conninfo(self.server_url, dbname=self.ready.get(timeout=120))

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)


def _drop_database(server_url: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(str(name))))


@pytest.fixture(scope="session")
def clones(server_url: str, template_url: str) -> Iterator[Clones]:
    factory = Clones(server_url, TEMPLATE)
    yield factory
    factory.stop()


@pytest.fixture
def database_url(server_url: str, clones: Clones) -> Iterator[str]:
    """A fresh, fully migrated database of this test's own (a clone of the template)."""
    url = clones.take()
    yield url
    _drop_database(server_url, url)


@pytest.fixture(scope="module")
def shared_database_url(server_url: str, template_url: str) -> Iterator[str]:
    """One migrated database for a whole test module, for tests that write nothing (bad
    input) or only rows of their own: a clone per test would cost more than the test."""
    name = f"test_shared_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE)
            )
        )
    url = make_conninfo(server_url, dbname=name)
    yield url
    _drop_database(server_url, url)


@pytest.fixture
def empty_database_url(server_url: str) -> Iterator[str]:
    """A fresh database with nothing in it, for migration tests."""
    name = f"test_empty_{secrets.token_hex(6)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(server_url, dbname=name)
    yield url
    _drop_database(server_url, url)


@pytest.fixture
def migrated_conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A sync autocommit connection to a fresh migrated database (catalog inspection)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[DatabaseManager]:
    """An open DatabaseManager on a fresh migrated database."""
    async with DatabaseManager(DatabaseConfig(url=database_url, max_pool_size=8)) as manager:
        yield manager


@pytest.fixture
async def conn(db: DatabaseManager) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A pooled connection in autocommit mode: each query function call is its own transaction."""
    async with db.connection() as connection:
        yield connection


@pytest.fixture(scope="session")
def agentdb_command() -> list[str]:
    """How to run the `agentdb` console script of this environment in a subprocess."""
    import sys

    return [str(Path(sys.executable).with_name("agentdb"))]


COUNT_LOCK_WAITERS = """
SELECT count(*)
FROM pg_catalog.pg_stat_activity
WHERE datname = pg_catalog.current_database()
  AND wait_event_type = 'Lock'
"""


async def wait_for_lock_waiters(conn: psycopg.AsyncConnection[Any], count: int = 1) -> None:
    """Return once `count` backends of this database wait for a lock (a race's loser is then
    really blocked behind the winner, not merely scheduled after it); fail after 10 s."""
    import asyncio

    for _ in range(1000):
        cursor = await conn.execute(COUNT_LOCK_WAITERS)
        row = await cursor.fetchone()
        if row is not None and row[0] >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {count} backends ever waited for a lock")


@pytest.fixture
def login_as(server_url: str, database_url: str) -> Iterator[Any]:
    """`login_as("agentdb_app")`: a new LOGIN role that is a member of that group role, and
    the URL of this test's database for it. The roles are dropped after the test."""
    made: list[str] = []

    def make(group: str) -> str:
        name = f"login_{group.removeprefix('agentdb_')}_{secrets.token_hex(4)}"
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                    sql.Identifier(name), sql.Identifier(group)
                )
            )
        made.append(name)
        return make_conninfo(database_url, user=name)

    yield make
    with psycopg.connect(server_url, autocommit=True) as admin:
        for name in made:
            # The role's sessions end with the test; its database may outlive this fixture.
            admin.execute(
                "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity "
                "WHERE usename = %s",
                [name],
            )
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
async def app_db(login_as: Any) -> AsyncIterator[DatabaseManager]:
    """A DatabaseManager logged in as a member of agentdb_app (row-level security applies)."""
    config = DatabaseConfig(url=login_as("agentdb_app"), max_pool_size=2)
    async with DatabaseManager(config) as manager:
        yield manager
