"""The `agentdb` command as a user meets it: run as a subprocess against a real server."""

from __future__ import annotations

import importlib.metadata
import os
import pty
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from app.database.migrations import Migrator, default_migrations_dir

MIGRATIONS = default_migrations_dir()
SETTINGS = ("DATABASE_URL", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD")

# Every relation of the database, system catalogs included: a command that writes nothing
# leaves this exactly as it was.
SELECT_RELATIONS = """
SELECT namespace.nspname, class.relname, class.relkind
FROM pg_catalog.pg_class AS class
JOIN pg_catalog.pg_namespace AS namespace ON namespace.oid = class.relnamespace
WHERE namespace.nspname NOT LIKE 'pg_toast%%'
ORDER BY 1, 2
"""


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any database setting (the suite may run with one), the
    embedded fallback off, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if key not in SETTINGS}
    env.pop("AGENTDB_MIGRATIONS", None)
    return {**env, "AGENTDB_EMBEDDED": "0", **extra}


def run(
    command: list[str], *args: str, env: dict[str, str] | None = None, stdin: Any = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        env=env if env is not None else clean_env(),
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        timeout=180,
    )


def relations(url: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(SELECT_RELATIONS).fetchall()


def applied_ids(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT migration_id FROM _yoyo_migration")]


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one stderr line of a failed command (asserting there is exactly one, no traceback)."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("agentdb: error: "), result.stderr
    return lines[0]


@pytest.fixture
def migrations_with_scratch_table(tmp_path: Path) -> Path:
    """The migration folder plus 0099, which creates messaging.scratch (rows go in by test)."""
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, copy)
    (copy / "0099_create_scratch.sql").write_text(
        "CREATE TABLE IF NOT EXISTS messaging.scratch (id int);\n"
    )
    (copy / "0099_create_scratch.rollback.sql").write_text(
        "-- drops the scratch table\nDROP TABLE IF EXISTS messaging.scratch;\n"
    )
    return copy


def scratch_rows(url: str, count: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO messaging.scratch SELECT generate_series(1, %s)", [count])


def test_version_is_the_installed_distribution_version(agentdb_command: list[str]) -> None:
    result = run(agentdb_command, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"agentdb {importlib.metadata.version('agentdb')}"


# rollback ------------------------------------------------------------------------------------


def test_rollback_without_a_terminal_refuses_to_drop_tables_with_rows_and_changes_nothing(
    database_url: str, migrations_with_scratch_table: Path, agentdb_command: list[str]
) -> None:
    Migrator(database_url, migrations_with_scratch_table).apply()
    scratch_rows(database_url, 3)
    before = applied_ids(database_url)
    cli = [*agentdb_command, "--migrations", str(migrations_with_scratch_table)]
    result = run(cli, "rollback", "--database", database_url)
    error = one_line_error(result)
    assert "messaging.scratch 3 rows" in error and "--yes" in error
    assert applied_ids(database_url) == before
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM messaging.scratch").fetchone() == (3,)


def test_rollback_with_yes_drops_tables_with_rows(
    database_url: str, migrations_with_scratch_table: Path, agentdb_command: list[str]
) -> None:
    Migrator(database_url, migrations_with_scratch_table).apply()
    scratch_rows(database_url, 3)
    cli = [*agentdb_command, "--migrations", str(migrations_with_scratch_table)]
    result = run(cli, "rollback", "--yes", "--database", database_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["rolled back  0099_create_scratch", "1 rolled back"]
    assert "0099_create_scratch" not in applied_ids(database_url)


def test_rollback_that_drops_no_rows_needs_no_confirmation(
    database_url: str, migrations_with_scratch_table: Path, agentdb_command: list[str]
) -> None:
    Migrator(database_url, migrations_with_scratch_table).apply()  # the scratch table is empty
    cli = [*agentdb_command, "--migrations", str(migrations_with_scratch_table)]
    result = run(cli, "rollback", "--database", database_url)
    assert result.returncode == 0, result.stderr
    assert "0099_create_scratch" not in applied_ids(database_url)


@pytest.mark.parametrize(("answer", "rolled_back"), [("y", True), ("n", False)])
def test_rollback_on_a_terminal_asks_and_follows_the_answer(
    answer: str,
    rolled_back: bool,
    database_url: str,
    migrations_with_scratch_table: Path,
    agentdb_command: list[str],
) -> None:
    Migrator(database_url, migrations_with_scratch_table).apply()
    scratch_rows(database_url, 2)
    controller, terminal = pty.openpty()
    try:
        os.write(controller, f"{answer}\n".encode())  # typed ahead: the terminal buffers it
        result = run(
            [*agentdb_command, "--migrations", str(migrations_with_scratch_table)],
            "rollback",
            "--database",
            database_url,
            stdin=terminal,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert "messaging.scratch 2 rows" in result.stderr and "[y/N]" in result.stderr
    assert ("0099_create_scratch" not in applied_ids(database_url)) is rolled_back
    if rolled_back:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 1
        assert result.stderr.strip().endswith("not confirmed: nothing was rolled back")


# migrate, status -----------------------------------------------------------------------------


def test_migrate_prints_a_slow_statement_while_it_runs_and_when_it_ends(
    database_url: str, tmp_path: Path, agentdb_command: list[str]
) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, copy)
    (copy / "0099_sleep.sql").write_text("-- a slow statement\nSELECT pg_sleep(1.5);\n")
    (copy / "0099_sleep.rollback.sql").write_text("SELECT 1;\n")
    result = run(
        [*agentdb_command, "--migrations", str(copy)],
        "migrate",
        "--slow-after",
        "0.2",
        "--database",
        database_url,
    )
    assert result.returncode == 0, result.stderr
    # (yoyo prints what a SELECT of a migration returns: those lines are left out)
    shown = ("  still", "  finished", "applied")
    lines = [line for line in result.stdout.splitlines() if line.startswith(shown)]
    assert lines[0] == "  still running after 0.2 s: SELECT pg_sleep(1.5);"
    assert lines[1].startswith("  finished after ")
    assert lines[1].endswith(" s: SELECT pg_sleep(1.5);")
    assert lines[2] == "applied  0099_sleep"


def test_status_on_a_database_never_migrated_lists_all_pending_and_writes_nothing(
    empty_database_url: str, agentdb_command: list[str]
) -> None:
    before = relations(empty_database_url)
    result = run(agentdb_command, "status", "--database", empty_database_url)
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()[1:]
    forward = sorted(p.stem for p in MIGRATIONS.glob("*.sql") if ".rollback" not in p.name)
    assert [row.split()[0] for row in rows] == forward
    assert all(row.split()[1] == "pending" for row in rows)
    assert relations(empty_database_url) == before


def test_status_of_a_migrated_database_writes_nothing(
    database_url: str, agentdb_command: list[str]
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE public._agentdb_migration_checksum")  # status would recreate it
    before = relations(database_url)
    result = run(agentdb_command, "status", "--database", database_url)
    assert result.returncode == 0, result.stderr
    assert "pending" not in result.stdout
    assert relations(database_url) == before


# db url, db start ----------------------------------------------------------------------------


def test_db_url_masks_the_password_unless_asked(agentdb_command: list[str]) -> None:
    env = clean_env(DATABASE_URL="postgresql://app:s%40cret@db.internal:5433/assistant")
    masked = run(agentdb_command, "db", "url", env=env)
    assert masked.returncode == 0, masked.stderr
    assert masked.stdout.strip() == "postgresql://app:***@db.internal:5433/assistant"
    shown = run(agentdb_command, "db", "url", "--show-password", env=env)
    assert shown.stdout.strip() == "postgresql://app:s%40cret@db.internal:5433/assistant"


def test_db_url_of_db_settings_is_a_postgresql_url(agentdb_command: list[str]) -> None:
    env = clean_env(
        DB_HOST="db.internal", DB_PORT="6432", DB_NAME="assistant", DB_USER="app", DB_PASSWORD="pw"
    )
    result = run(agentdb_command, "db", "url", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "postgresql://app:***@db.internal:6432/assistant"
    conninfo = run(agentdb_command, "db", "url", env=clean_env(DATABASE_URL="dbname=x host=/tmp"))
    assert conninfo.stdout.strip() == "postgresql:///x?host=/tmp"


def test_db_start_says_whether_it_started_the_server_or_found_it_running(
    tmp_path: Path, agentdb_command: list[str]
) -> None:
    data = tmp_path / "pgdata"
    env = clean_env(AGENTDB_PGDATA=str(data))
    try:
        first = run(agentdb_command, "db", "start", env=env)
        assert first.returncode == 0, first.stderr
        assert first.stdout.startswith("started (pid ")
        assert f") in {data}\n" in first.stdout
        second = run(agentdb_command, "db", "start", env=env)
        assert second.returncode == 0, second.stderr
        assert second.stdout.startswith("already running (pid ")
        assert second.stdout.splitlines()[1] == first.stdout.splitlines()[1]  # the same URL
    finally:
        run(agentdb_command, "db", "stop", env=env)


# seed ----------------------------------------------------------------------------------------

SEED_SIZE = ("--owners", "2", "--chats", "4", "--messages", "20", "--todos", "3")
SEED_REST = ("--executions", "2", "--sessions", "1")


def count_chats(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM messaging.chats").fetchone()
        assert row is not None
        return int(row[0])


def test_seed_says_it_adds_to_existing_data_and_reset_empties_the_seeded_tables(
    database_url: str, agentdb_command: list[str]
) -> None:
    seed = [*agentdb_command, "seed", *SEED_SIZE, *SEED_REST, "--database", database_url]
    first = run(seed)
    assert first.returncode == 0, first.stderr
    assert "adding to the existing data" not in first.stdout
    second = run(seed)
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("adding to the existing data (4 chats already there;")
    assert count_chats(database_url) == 8

    reset = run(seed, "--reset")
    assert reset.returncode == 0, reset.stderr
    first_line = reset.stdout.splitlines()[0]
    assert first_line.startswith("reset: removed the rows of ")
    for removed in ("messaging.chats 8", "messaging.messages 40", "tasks.todos 6"):
        assert removed in first_line
    assert first_line.endswith("emptied with them: tool_calls, memories")
    assert count_chats(database_url) == 4


# every error is one line ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["migrate"], {"DB_HOST": "localhost", "DB_PORT": "fifty"}, "DB_PORT"),
        (["status"], {"DATABASE_URL": "mysql://app@localhost/assistant"}, "DATABASE_URL"),
        (["migrate", "--database", "mysql://app@localhost/assistant"], {}, "--database"),
        (["--migrations", "/nonexistent/migrations", "status"], {}, "--migrations"),
        (["status"], {"AGENTDB_MIGRATIONS": "/nonexistent/migrations"}, "AGENTDB_MIGRATIONS"),
        (["status"], {"DATABASE_URL": "postgresql://app@127.0.0.1:1/x"}, "DATABASE_URL"),
        (["status"], {}, "DATABASE_URL"),  # nothing configured, the embedded server off
        (["rollback", "--count", "many"], {}, "--count"),
        (["inspect", "--stale-after", "0"], {}, "--stale-after"),
        (["purge-deleted", "--older-than", "soon"], {}, "--older-than"),
    ],
)
def test_every_error_is_one_line_naming_the_setting_at_fault(
    args: list[str], env: dict[str, str], named: str, agentdb_command: list[str]
) -> None:
    result = run(agentdb_command, *args, env=clean_env(**env))
    error = one_line_error(result)
    assert named in error
    assert "Traceback" not in result.stderr


def test_a_missing_migrations_folder_is_named_and_nothing_is_written(
    tmp_path: Path, agentdb_command: list[str], empty_database_url: str
) -> None:
    before = relations(empty_database_url)
    missing = tmp_path / "missing"
    result = run(
        agentdb_command, "--migrations", str(missing), "migrate", "--database", empty_database_url
    )
    assert one_line_error(result) == f"agentdb: error: --migrations: {missing} does not exist"
    assert relations(empty_database_url) == before
