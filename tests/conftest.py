"""Test harness: one throwaway embedded PostgreSQL per test session, a template database
migrated once, and a fresh clone of it (CREATE DATABASE … TEMPLATE) for each test."""

from __future__ import annotations

import secrets
import shutil
import tempfile
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

# Durability is worthless for a throwaway server; without it tests run several times faster.
THROWAWAY_SETTINGS = ("fsync", "synchronous_commit", "full_page_writes")


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of the maintenance database `postgres` on the session's own server."""
    # Not under pytest's tmp_path: pytest prunes old basetemp dirs, which would pull the data
    # directory from under a server that another pytest session is still running.
    data_dir = Path(tempfile.mkdtemp(prefix="agentdb-test-")) / "data"
    url = embedded.start(data_dir, database="postgres")
    with psycopg.connect(url, autocommit=True) as conn:
        for setting in THROWAWAY_SETTINGS:
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = off").format(sql.Identifier(setting)))
        conn.execute("SELECT pg_catalog.pg_reload_conf()")
    yield url
    embedded.stop(data_dir)
    shutil.rmtree(data_dir.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def template_url(server_url: str) -> str:
    """The template database, migrated once per session."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    url = make_conninfo(server_url, dbname=TEMPLATE)
    Migrator(url).apply()
    return url


def _new_database(server_url: str, template: str | None) -> Iterator[str]:
    name = f"test_{secrets.token_hex(6)}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        create = sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(name), sql.Identifier(template)
        )
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(create)
    yield make_conninfo(server_url, dbname=name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def database_url(server_url: str, template_url: str) -> Iterator[str]:
    """A fresh, fully migrated database of this test's own."""
    yield from _new_database(server_url, TEMPLATE)


@pytest.fixture
def empty_database_url(server_url: str) -> Iterator[str]:
    """A fresh database with nothing in it, for migration tests."""
    yield from _new_database(server_url, None)


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
