"""app.database: configuration, the pool manager, the error mapping and the shared helpers."""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import UUID, uuid4

import psycopg
import psycopg_pool
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel, Field, ValidationError

from app.database import (
    AgentDBError,
    ConflictError,
    DatabaseConfig,
    DatabaseManager,
    DatabaseUnavailableError,
    ForeignKeyError,
    InvalidInputError,
    NotFoundError,
)
from app.database.errors import database_errors, translate
from app.database.pagination import check_limit, decode_cursor, encode_cursor, page_of
from app.database.rows import model_rows
from app.database.validation import InputModel, JsonObject, JsonValue, Title, as_uuid, validated
from app.database.vectors import register_vector_types

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
    async with DatabaseManager(unreachable(tmp_path)) as manager:
        with pytest.raises(DatabaseUnavailableError) as raised:
            async with manager.connection():
                pass
    assert PASSWORD not in "".join(traceback.format_exception(raised.value))


def test_min_pool_size_above_max_pool_size_is_rejected() -> None:
    with pytest.raises(ValidationError, match="min_pool_size"):
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
    with pytest.raises(ValidationError):
        DatabaseConfig(**settings)


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


async def test_health_check_is_false_quickly_when_the_server_does_not_exist(
    tmp_path: Path,
) -> None:
    async with DatabaseManager(unreachable(tmp_path)) as manager:
        started = time.monotonic()
        assert await manager.health_check(timeout=0.5) is False
        assert time.monotonic() - started < 1.5


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


async def test_a_cancelled_statement_is_an_agentdb_error_not_unavailability(
    database_url: str,
) -> None:
    config = DatabaseConfig(url=database_url, statement_timeout=0.1)
    async with DatabaseManager(config) as manager, manager.connection() as conn:
        error = translate(await error_of(conn, SLEEP, [2]))
    assert type(error) is AgentDBError
    assert "QueryCanceled" in str(error)


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
    assert type(error) is AgentDBError and str(error) == "odd"


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
    cursor = encode_cursor("2024-05-01T12:00:00+00:00", key)
    assert decode_cursor(cursor, str, UUID) == ("2024-05-01T12:00:00+00:00", key)
    assert "=" not in cursor


@pytest.mark.parametrize(
    "cursor",
    ["", "!!!", "bnVsbA", "eyJhIjoxfQ", encode_cursor("a"), encode_cursor("a", "b", "c")],
    ids=["empty", "not-base64", "json-null", "json-object", "too-short", "too-long"],
)
def test_decode_cursor_rejects_anything_but_its_own_cursors_naming_cursor(cursor: str) -> None:
    with pytest.raises(InvalidInputError, match=r"^cursor: ") as raised:
        decode_cursor(cursor, str, UUID)
    assert raised.value.field == "cursor"


def test_decode_cursor_rejects_a_value_its_converter_refuses() -> None:
    with pytest.raises(InvalidInputError, match=r"^cursor: "):
        decode_cursor(encode_cursor("x", "not-a-uuid"), str, UUID)


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
