"""The migration folder and the `agentdb` migration commands, against a real server."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from app.database.migrations import (
    EARLIER_CHECKSUMS,
    MigrationError,
    Migrator,
    default_migrations_dir,
    file_checksum,
    verify,
)

MIGRATIONS = default_migrations_dir()
FORWARD_FILES = sorted(p for p in MIGRATIONS.glob("*.sql") if not p.name.endswith(".rollback.sql"))

SELECT_SCHEMAS = """
SELECT nspname FROM pg_catalog.pg_namespace
WHERE nspname IN ('messaging', 'tasks', 'agents', 'telegram')
ORDER BY nspname
"""

SELECT_HAS_VECTOR = "SELECT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'vector')"

SELECT_VECTOR_IS_PREINSTALLED = """
SELECT is_preinstalled FROM public.agentdb_extensions WHERE extname = 'vector'
"""

SELECT_APPLY_COUNTS = """
SELECT migration_id, count(*) FROM _yoyo_log WHERE operation = 'apply' GROUP BY migration_id
"""


def run(
    command: list[str], *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def yoyo_url_of(url: str) -> str:
    """The database's URL as the yoyo CLI reads it (a postgresql+psycopg:// URL)."""
    params: dict[str, Any] = conninfo_to_dict(url)
    password = f":{quote(str(params['password']), safe='')}" if params.get("password") else ""
    query = f"host={quote(str(params['host']), safe='/')}&port={params.get('port') or 5432}"
    return (
        f"postgresql+psycopg://{quote(str(params['user']))}{password}@/{params['dbname']}?{query}"
    )


def schemas(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute(SELECT_SCHEMAS)]


def table_exists(url: str, name: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_catalog.to_regclass(%s)", [name]).fetchone()
        return row is not None and row[0] is not None


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    """A private copy of the migration folder that a test may add to or edit."""
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, copy)
    return copy


def test_every_forward_migration_has_a_rollback_file() -> None:
    missing = [p.name for p in FORWARD_FILES if not p.with_suffix(".rollback.sql").exists()]
    assert FORWARD_FILES and missing == []


def test_migration_files_are_numbered_without_gaps() -> None:
    # From 0000: 0000_record_preinstalled_extensions must run before 0001 on a fresh database.
    numbers = [int(p.name.split("_", 1)[0]) for p in FORWARD_FILES]
    assert numbers == list(range(len(numbers)))


def test_verify_proves_every_migration_idempotent_and_reversible(server_url: str) -> None:
    lines: list[str] = []
    verify(server_url, log=lines.append)
    assert lines[-1] == "applied again: schema identical to the first apply"


def test_verify_fails_on_a_migration_that_is_not_idempotent(
    server_url: str, migrations_copy: Path
) -> None:
    (migrations_copy / "0099_not_idempotent.sql").write_text(
        "CREATE TABLE messaging.once (id int);\n"
    )
    (migrations_copy / "0099_not_idempotent.rollback.sql").write_text(
        "DROP TABLE messaging.once;\n"
    )
    with pytest.raises(MigrationError, match=r"0099_not_idempotent\.sql fails when run again"):
        verify(server_url, migrations_copy, log=lambda line: None)


def test_verify_fails_on_a_rollback_that_leaves_a_privilege_behind(
    server_url: str, migrations_copy: Path
) -> None:
    # pg_dump --no-privileges, which verify compared before, does not see this one.
    (migrations_copy / "0099_leave_a_grant.sql").write_text(
        "CREATE TABLE IF NOT EXISTS messaging.extra (id int);\n"
    )
    (migrations_copy / "0099_leave_a_grant.rollback.sql").write_text(
        "DROP TABLE IF EXISTS messaging.extra;\nGRANT CREATE ON SCHEMA public TO PUBLIC;\n"
    )
    with pytest.raises(MigrationError, match=r"^rollback is not exact") as raised:
        verify(server_url, migrations_copy, log=lambda line: None)
    assert "+schema public acl=" in str(raised.value)


@pytest.fixture
def role_without_createdb(server_url: str, login_as: Any) -> str:
    """A login that may not create databases (a member of agentdb_readonly), its URL on the
    session's maintenance database."""
    login = conninfo_to_dict(login_as("agentdb_readonly"))
    return make_conninfo(server_url, user=login["user"], password=login["password"])


def test_verify_says_it_needs_createdb_when_the_role_lacks_it(
    role_without_createdb: str, agentdb_command: list[str]
) -> None:
    with pytest.raises(MigrationError, match=r"^verify needs CREATEDB: role login_readonly_"):
        verify(role_without_createdb, log=lambda line: None)
    result = run(agentdb_command, "verify", "--database", role_without_createdb)
    assert result.returncode == 1
    assert result.stderr.startswith("agentdb: error: verify needs CREATEDB: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_migrate_prints_each_applied_migration_then_nothing_the_second_time(
    empty_database_url: str, agentdb_command: list[str]
) -> None:
    first = run(agentdb_command, "migrate", "--database", empty_database_url)
    assert first.returncode == 0, first.stderr
    assert [
        line.split()[1] for line in first.stdout.splitlines() if line.startswith("applied")
    ] == [p.stem for p in FORWARD_FILES]
    second = run(agentdb_command, "migrate", "--database", empty_database_url)
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("nothing to apply")
    assert schemas(empty_database_url) == ["agents", "messaging", "tasks", "telegram"]


def test_two_migrate_processes_at_once_apply_each_migration_exactly_once(
    empty_database_url: str, agentdb_command: list[str]
) -> None:
    processes = [
        subprocess.Popen(
            [*agentdb_command, "migrate", "--database", empty_database_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    with psycopg.connect(empty_database_url) as conn:
        counts = dict(conn.execute(SELECT_APPLY_COUNTS).fetchall())
    assert counts == {p.stem: 1 for p in FORWARD_FILES}


def test_a_migration_failing_half_way_leaves_nothing_of_itself_and_names_file_and_statement(
    empty_database_url: str, migrations_copy: Path, agentdb_command: list[str]
) -> None:
    (migrations_copy / "0099_break_half_way.sql").write_text(
        "-- creates a table, fills it, then fails\n"
        "CREATE TABLE IF NOT EXISTS messaging.half_way (id int);\n"
        "INSERT INTO messaging.half_way VALUES (1);\n"
        "SELECT 1 / 0 AS boom;\n"
    )
    (migrations_copy / "0099_break_half_way.rollback.sql").write_text(
        "DROP TABLE IF EXISTS messaging.half_way;\n"
    )
    result = run(
        agentdb_command,
        "--migrations",
        str(migrations_copy),
        "migrate",
        "--database",
        empty_database_url,
    )
    assert result.returncode == 1
    error = result.stderr.strip()
    assert len(error.splitlines()) == 1
    assert "0099_break_half_way.sql" in error
    assert "SELECT 1 / 0 AS boom" in error
    assert "division by zero" in error
    assert not table_exists(empty_database_url, "messaging.half_way")
    status = Migrator(empty_database_url, migrations_copy).status()
    assert [row.id for row in status if row.applied_at is None] == ["0099_break_half_way"]


def test_an_applied_migration_edited_afterwards_is_reported_as_drift(
    empty_database_url: str, migrations_copy: Path, agentdb_command: list[str]
) -> None:
    cli = [*agentdb_command, "--migrations", str(migrations_copy)]
    assert run(cli, "migrate", "--database", empty_database_url).returncode == 0
    edited = migrations_copy / "0004_create_messaging_chats.sql"
    edited.write_text(edited.read_text() + "\n-- an afterthought\n")

    status = run(cli, "status", "--database", empty_database_url)
    assert status.returncode == 1
    assert "0004_create_messaging_chats" in status.stdout and "DRIFT" in status.stdout

    migrate = run(cli, "migrate", "--database", empty_database_url)
    assert migrate.returncode == 1
    assert (
        "checksum drift" in migrate.stderr and "0004_create_messaging_chats.sql" in migrate.stderr
    )

    accepted = run(cli, "migrate", "--database", empty_database_url, "--accept-drift")
    assert accepted.returncode == 0, accepted.stderr
    assert run(cli, "status", "--database", empty_database_url).returncode == 0


def test_status_lists_applied_and_pending_migrations(empty_database_url: str) -> None:
    migrator = Migrator(empty_database_url)
    migrator.apply()
    migrator.rollback(count=2)
    rows = migrator.status()
    assert [row.id for row in rows] == [p.stem for p in FORWARD_FILES]
    assert [row.applied_at is None for row in rows] == [False] * (len(rows) - 2) + [True, True]
    assert all(row.applied_at.tzinfo is not None for row in rows if row.applied_at)


def test_rollback_to_keeps_that_migration_and_removes_the_later_ones(
    empty_database_url: str,
) -> None:
    migrator = Migrator(empty_database_url)
    migrator.apply()
    undone = migrator.rollback(to="0003_create_schemas")
    kept = [p.stem for p in FORWARD_FILES].index("0003_create_schemas") + 1
    assert undone == [p.stem for p in reversed(FORWARD_FILES[kept:])]
    assert schemas(empty_database_url) == ["agents", "messaging", "tasks", "telegram"]
    assert not table_exists(empty_database_url, "messaging.chats")


def test_rollback_of_everything_removes_the_schemas_and_the_extension_it_installed(
    empty_database_url: str,
) -> None:
    migrator = Migrator(empty_database_url)
    migrator.apply()
    assert is_preinstalled(empty_database_url) is False
    migrator.rollback(count=None)
    assert schemas(empty_database_url) == []
    assert not has_vector(empty_database_url)


def test_database_url_is_used_and_no_embedded_server_is_started(
    empty_database_url: str, tmp_path: Path, agentdb_command: list[str]
) -> None:
    never_created = tmp_path / "pgdata"
    env = {"DATABASE_URL": empty_database_url, "AGENTDB_PGDATA": str(never_created)}
    result = run(agentdb_command, "migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert schemas(empty_database_url) == ["agents", "messaging", "tasks", "telegram"]
    assert not never_created.exists()


def test_db_parts_from_the_environment_are_used(
    empty_database_url: str, tmp_path: Path, agentdb_command: list[str]
) -> None:
    params: dict[str, Any] = conninfo_to_dict(empty_database_url)
    env = {
        "DB_HOST": str(params["host"]),
        "DB_PORT": str(params.get("port") or 5432),
        "DB_NAME": str(params["dbname"]),
        "DB_USER": str(params["user"]),
        "AGENTDB_PGDATA": str(tmp_path / "pgdata"),
    }
    if params.get("password"):
        env["DB_PASSWORD"] = str(params["password"])
    os_env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    result = subprocess.run(
        [*agentdb_command, "migrate"],
        capture_output=True,
        text=True,
        env={**os_env, **env},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert schemas(empty_database_url) == ["agents", "messaging", "tasks", "telegram"]
    assert not (tmp_path / "pgdata").exists()


def test_plain_yoyo_cli_applies_the_folder_and_rolls_it_all_back(empty_database_url: str) -> None:
    yoyo_url = yoyo_url_of(empty_database_url)
    yoyo = [str(Path(sys.executable).with_name("yoyo"))]
    applied = run(yoyo, "apply", "--batch", "--database", yoyo_url, str(MIGRATIONS))
    assert applied.returncode == 0, applied.stderr
    assert schemas(empty_database_url) == ["agents", "messaging", "tasks", "telegram"]
    rolled_back = run(yoyo, "rollback", "--all", "--batch", "--database", yoyo_url, str(MIGRATIONS))
    assert rolled_back.returncode == 0, rolled_back.stderr
    assert schemas(empty_database_url) == []
    assert not has_vector(empty_database_url)  # the migrations installed it


# Extension ownership ------------------------------------------------------------------------

# 0001's rollback file as it was released, before it dropped vector only if the migrations
# installed it; a database migrated with it recorded this file's checksum.
RELEASED_0001_ROLLBACK = """\
-- Rollback of 0001_create_vector_extension.sql: removes pgvector.
--
-- No CASCADE: if a column still uses the vector type (a later migration was not rolled
-- back), this fails instead of silently dropping that column and its data.

DROP EXTENSION IF EXISTS vector;
"""


@pytest.fixture
def owned_database(
    superuser: Any, server_url: str, template_url: str, database_prefix: str, login_password: str
) -> Iterator[tuple[str, str]]:
    """A database owned by a new login that is not a superuser (CREATEROLE and the ADMIN
    OPTION of the group roles, which the template's migration made, as README's owner has),
    with vector created beforehand by the superuser: the owner's URL and the superuser's."""
    suffix = secrets.token_hex(4)
    owner, name = f"schema_owner_{suffix}", f"{database_prefix}owned_{suffix}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE NOSUPERUSER PASSWORD {}").format(
                sql.Identifier(owner), sql.Literal(login_password)
            )
        )
        for group in ("agentdb_app", "agentdb_worker", "agentdb_readonly"):
            admin.execute(
                sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(
                    sql.Identifier(group), sql.Identifier(owner)
                )
            )
        admin.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(owner)
            )
        )
    superuser_url = make_conninfo(server_url, dbname=name)
    with psycopg.connect(superuser_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    try:
        yield make_conninfo(superuser_url, user=owner, password=login_password), superuser_url
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(owner)))


def has_vector(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(SELECT_HAS_VECTOR).fetchone()
        return row is not None and bool(row[0])


def is_preinstalled(url: str) -> bool | None:
    with psycopg.connect(url) as conn:
        row = conn.execute(SELECT_VECTOR_IS_PREINSTALLED).fetchone()
        return None if row is None else bool(row[0])


def test_an_owner_who_is_not_a_superuser_rolls_back_everything_and_leaves_a_preinstalled_vector(
    owned_database: tuple[str, str], agentdb_command: list[str]
) -> None:
    owner_url, superuser_url = owned_database
    migrated = run(agentdb_command, "migrate", "--database", owner_url)
    assert migrated.returncode == 0, migrated.stderr
    assert is_preinstalled(owner_url) is True

    rolled_back = run(agentdb_command, "rollback", "--all", "--database", owner_url)
    assert rolled_back.returncode == 0, rolled_back.stderr
    assert schemas(owner_url) == [] and has_vector(owner_url)

    yoyo = [str(Path(sys.executable).with_name("yoyo"))]
    owner_yoyo_url = yoyo_url_of(owner_url)
    applied = run(yoyo, "apply", "--batch", "--database", owner_yoyo_url, str(MIGRATIONS))
    assert applied.returncode == 0, applied.stderr
    assert schemas(owner_url) == ["agents", "messaging", "tasks", "telegram"]
    rolled_back = run(
        yoyo, "rollback", "--all", "--batch", "--database", owner_yoyo_url, str(MIGRATIONS)
    )
    assert rolled_back.returncode == 0, rolled_back.stderr
    assert schemas(owner_url) == [] and has_vector(superuser_url)


def test_a_database_migrated_before_0000_records_the_vector_its_role_owns_as_the_migrations(
    empty_database_url: str, migrations_copy: Path
) -> None:
    for path in migrations_copy.glob("0000_*"):
        path.unlink()
    (migrations_copy / "0001_create_vector_extension.rollback.sql").write_text(
        RELEASED_0001_ROLLBACK
    )
    released = Migrator(empty_database_url, migrations_copy)
    released.apply()
    (first,) = [m for m in released.migrations() if m.id == "0001_create_vector_extension"]
    assert file_checksum(first) in EARLIER_CHECKSUMS[first.id]
    migrator = Migrator(empty_database_url)
    assert not any(row.is_drifted for row in migrator.status())

    assert migrator.apply() == ["0000_record_preinstalled_extensions"]  # no drift refused it
    assert is_preinstalled(empty_database_url) is False
    migrator.rollback(count=None)
    assert schemas(empty_database_url) == [] and not has_vector(empty_database_url)


def test_new_migration_gets_the_next_number_and_its_template_passes_verify(
    server_url: str, migrations_copy: Path, agentdb_command: list[str]
) -> None:
    result = run(
        agentdb_command, "--migrations", str(migrations_copy), "new", "Add example things!"
    )
    assert result.returncode == 0, result.stderr
    number = len(FORWARD_FILES)  # numbered from 0000
    forward = migrations_copy / f"{number:04d}_add_example_things.sql"
    assert forward.exists() and forward.with_suffix(".rollback.sql").exists()
    verify(server_url, migrations_copy, log=lambda line: None)


def test_an_embedded_server_that_cannot_start_gives_a_one_line_error(
    tmp_path: Path, agentdb_command: list[str]
) -> None:
    broken = tmp_path / "pgdata"
    broken.mkdir()
    (broken / "PG_VERSION").write_text("9.6\n")
    env = {
        key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "DB_HOST")
    }
    env["AGENTDB_PGDATA"] = str(broken)
    result = subprocess.run(
        [*agentdb_command, "db", "start"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(
        f"agentdb: error: cannot start the embedded PostgreSQL in {broken}"
    )
