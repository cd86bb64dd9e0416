"""Test harness: one PostgreSQL server per test session, a template database migrated once,
and a fresh clone of it (CREATE DATABASE … TEMPLATE) for each test.

The server is the one `DATABASE_URL` names when it is set (the harness takes the variable for
itself, so tests see an environment without it), else a throwaway embedded server started for
the session. Every database the session makes is named `agentdb_test_<session>_…`, so two
runs can share a server, and is dropped at the end; the database in `DATABASE_URL` itself is
only connected to. What the role may do (superuser, CREATEDB, CREATEROLE) is read once, and
a test that needs more than it has is skipped with the reason in one line.
"""

from __future__ import annotations

import os
import queue
import secrets
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from app.database import DatabaseConfig, DatabaseManager, embedded
from app.database.config import check_url, redact_url
from app.database.migrations import Migrator

# Taken once, at import, before any test or subprocess can see it: tests of the configuration
# set the variables they mean, and a command run by a test must not find the harness's server.
GIVEN_URL = os.environ.pop("DATABASE_URL", None) or None

SESSION = secrets.token_hex(3)
# The password of every login role a test makes: a server that asks for passwords on TCP
# (scram, md5: a distribution's default) lets them in too, one that trusts ignores it.
LOGIN_PASSWORD = secrets.token_hex(16)
PREFIX = f"agentdb_test_{SESSION}_"
TEMPLATE = f"{PREFIX}template"

SELECT_ROLE = """
SELECT r.rolname, r.rolsuper, r.rolcreatedb, r.rolcreaterole,
       pg_catalog.current_setting('server_version')
FROM pg_catalog.pg_roles AS r
WHERE r.rolname = current_user
"""


@dataclass(frozen=True)
class Server:
    """The session's server: where it is, whether this session started it, and what its
    role may do."""

    url: str  # its maintenance database (`postgres`, or the one DATABASE_URL names)
    is_own: bool  # a throwaway embedded server of this session
    where: str  # host:port or socket directory
    version: str
    user: str
    is_superuser: bool
    can_create_databases: bool
    can_create_roles: bool

    def describe(self) -> str:
        rights = [
            name
            for name, has in (
                ("superuser", self.is_superuser),
                ("CREATEDB", self.can_create_databases),
                ("CREATEROLE", self.can_create_roles),
            )
            if has
        ]
        origin = "throwaway embedded server of this session" if self.is_own else "DATABASE_URL"
        return (
            f"PostgreSQL {self.version} at {self.where} as {self.user}"
            f" ({', '.join(rights) or 'no superuser, CREATEDB or CREATEROLE'}; {origin})"
        )


def inspect_server(url: str, *, is_own: bool) -> Server:
    """What the server at `url` is and what its role may do."""
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(SELECT_ROLE).fetchone()
        assert row is not None
        host = conn.info.host
        where = host if host.startswith("/") else f"{host}:{conn.info.port}"
        if host.startswith("/") and conn.info.port != 5432:
            where += f" port {conn.info.port}"
    user, superuser, createdb, createrole, version = row
    return Server(url, is_own, where, version, user, superuser, createdb, createrole)


def given_server() -> Server:
    """The server DATABASE_URL names; a one-line exit when it is unusable."""
    assert GIVEN_URL is not None
    try:
        return inspect_server(check_url(GIVEN_URL), is_own=False)
    except (ValueError, psycopg.Error) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        pytest.exit(f"DATABASE_URL={redact_url(GIVEN_URL)}: {reason}", returncode=2)


def pytest_report_header(config: pytest.Config) -> str:
    """Which server the tests run on, before they start."""
    if GIVEN_URL is not None:
        return "server: " + given_server().describe()
    postgres = subprocess.run(
        [str(embedded.binary("postgres")), "--version"], capture_output=True, text=True
    ).stdout.strip()
    return f"server: a throwaway embedded server of this session ({postgres}); DATABASE_URL unset"


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """The session's server (see the module docstring)."""
    if GIVEN_URL is not None:
        yield given_server()
        return
    # Not under pytest's tmp_path: pytest prunes old basetemp dirs, which would pull the data
    # directory from under a server that another pytest session is still running.
    with embedded.throwaway_server(prefix="agentdb-test-") as url:
        yield inspect_server(url, is_own=True)


@pytest.fixture(scope="session")
def login_password() -> str:
    """The password to give a login role a test makes (see LOGIN_PASSWORD), for its URL."""
    return LOGIN_PASSWORD


@pytest.fixture(scope="session")
def database_prefix() -> str:
    """How the names of this session's databases begin. (A fixture, not an import: pytest
    loads this file as `conftest`, and an import of `tests.conftest` is another module, with
    another session token.)"""
    return PREFIX


@pytest.fixture(scope="session")
def server_url(server: Server) -> str:
    """URL of the maintenance database on the session's server."""
    return server.url


@pytest.fixture
def superuser(server: Server) -> Server:
    """Skips the test unless the session's role is a superuser."""
    if not server.is_superuser:
        pytest.skip(f"needs a superuser: role {server.user} of DATABASE_URL is not one")
    return server


@pytest.fixture
def own_server(server: Server) -> Server:
    """Skips the test unless the session started its server (the test edits its files,
    restarts it, or starts an embedded server of its own, which DATABASE_URL rules out)."""
    if not server.is_own:
        pytest.skip("needs the session's own embedded server: DATABASE_URL names another")
    return server


def create_database(server: Server, name: str, template: str | None = None) -> str:
    """CREATE DATABASE `name` (a clone of `template`); its URL."""
    if not (server.is_superuser or server.can_create_databases):
        pytest.skip(f"needs CREATEDB: role {server.user} may not create the test databases")
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(name), sql.Identifier(template)
        )
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(statement)
    return make_conninfo(server.url, dbname=name)


@pytest.fixture(scope="session")
def template_url(server: Server) -> Iterator[str]:
    """The template database, migrated once per session."""
    url = create_database(server, TEMPLATE)
    try:
        Migrator(url).apply()
        yield url
    finally:
        _drop_database(server.url, url)


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
                name = f"{PREFIX}{secrets.token_hex(6)}"
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
                else:  # made after the session stopped asking: nobody else will drop it
                    conn.execute(
                        sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))
                    )

    def take(self) -> str:
        """The URL of a fresh clone of the template, this caller's alone."""
        return make_conninfo(self.server_url, dbname=self.ready.get(timeout=120))

    def stop(self) -> None:
        """Stop making clones and drop those nobody took (on a shared server they would stay)."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)
        while not self.ready.empty():
            _drop_database(self.server_url, make_conninfo(self.server_url, dbname=self.ready.get()))


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
def shared_database_url(server: Server, template_url: str) -> Iterator[str]:
    """One migrated database for a whole test module, for tests that write nothing (bad
    input) or only rows of their own: a clone per test would cost more than the test."""
    url = create_database(server, f"{PREFIX}shared_{secrets.token_hex(4)}", TEMPLATE)
    yield url
    _drop_database(server.url, url)


@pytest.fixture
def empty_database_url(server: Server) -> Iterator[str]:
    """A fresh database with nothing in it, for migration tests."""
    url = create_database(server, f"{PREFIX}empty_{secrets.token_hex(6)}")
    yield url
    _drop_database(server.url, url)


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


async def generic_plans(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    """The plans the statements `conn` runs next actually run, each a notice from
    auto_explain, with generic plans forced (as a prepared statement soon runs them); the
    list fills as they run. `RESET plan_cache_mode` ends the forcing."""
    plans: list[str] = []
    conn.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
    await conn.execute("LOAD 'auto_explain'")
    await conn.execute("SET auto_explain.log_min_duration = 0")
    await conn.execute("SET auto_explain.log_level = 'notice'")
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    return plans


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
def login_as(server: Server, database_url: str) -> Iterator[Any]:
    """`login_as("agentdb_app")`: a new LOGIN role that is a member of that group role, and
    the URL of this test's database for it. The roles are dropped after the test."""
    if not (server.is_superuser or server.can_create_roles):
        pytest.skip(f"needs CREATEROLE: role {server.user} may not create the test's logins")
    server_url = server.url
    made: list[str] = []

    def make(group: str) -> str:
        name = f"login_{group.removeprefix('agentdb_')}_{secrets.token_hex(4)}"
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                    sql.Identifier(name), sql.Literal(LOGIN_PASSWORD), sql.Identifier(group)
                )
            )
        made.append(name)
        return make_conninfo(database_url, user=name, password=LOGIN_PASSWORD)

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
