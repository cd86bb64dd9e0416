"""`agentdb inspect` and app.database.inspect against a real server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from app.database.inspect import DatabaseInspection, TableHealth, inspect_database
from app.database.migrations import default_migrations_dir

OWNER = "00000000-0000-4000-8000-000000000001"

# Three chats, one soft-deleted; five messages in the first; two todos with the same title.
SEED = """
INSERT INTO messaging.chats (id, owner_id, title, deleted_at) VALUES
    ('10000000-0000-4000-8000-000000000001', %(owner)s, 'one', NULL),
    ('10000000-0000-4000-8000-000000000002', %(owner)s, 'two', NULL),
    ('10000000-0000-4000-8000-000000000003', %(owner)s, 'gone', now());
INSERT INTO messaging.messages (chat_id, owner_id, role, content)
SELECT '10000000-0000-4000-8000-000000000001', %(owner)s, 'user', 'hello ' || n
FROM generate_series(1, 5) AS n;
INSERT INTO tasks.todos (owner_id, title) VALUES (%(owner)s, 'same'), (%(owner)s, 'same');
"""

# A run that stopped beating a minute ago, one that beat just now, and queued work.
SEED_QUEUE = """
INSERT INTO agents.executions (agent_name, status, started_at, heartbeat_at, worker_id, attempt)
VALUES ('planner', 'running', now() - interval '2 minutes', now() - interval '1 minute',
        'host:1', 1),
       ('planner', 'running', now(), now(), 'host:2', 1);
INSERT INTO agents.executions (agent_name) VALUES ('planner'), ('coder'), ('coder');
"""


def settings_free_env() -> dict[str, str]:
    names = ("DATABASE_URL", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD")
    env = {key: value for key, value in os.environ.items() if key not in names}
    return {**env, "AGENTDB_EMBEDDED": "0", "COLUMNS": "160"}


def run_inspect(command: list[str], url: str, *args: str) -> str:
    result = subprocess.run(
        [*command, "inspect", "--database", url, *args],
        capture_output=True,
        text=True,
        env=settings_free_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def seeded_url(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        psycopg.ClientCursor(conn).execute(SEED, {"owner": OWNER})  # several statements
        conn.execute(SEED_QUEUE)
    return database_url


def table(inspection: DatabaseInspection, name: str) -> TableHealth:
    (found,) = [t for t in inspection.tables if t.name == name]
    return found


def test_row_counts_are_exact_live_and_soft_deleted(seeded_url: str) -> None:
    inspection = inspect_database(seeded_url)
    chats = table(inspection, "messaging.chats")
    assert (chats.rows, chats.deleted_rows, chats.is_exact) == (2, 1, True)
    messages = table(inspection, "messaging.messages")
    assert (messages.rows, messages.deleted_rows) == (5, 0)
    executions = table(inspection, "agents.executions")
    assert (executions.rows, executions.deleted_rows) == (5, None)  # no deleted_at column
    assert chats.total_bytes >= chats.table_bytes + chats.index_bytes > 0


def test_large_tables_are_estimated_from_the_statistics(seeded_url: str) -> None:
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute("ANALYZE messaging.chats")
    inspection = inspect_database(seeded_url, exact_below=1)  # every analyzed table is "large"
    chats = table(inspection, "messaging.chats")
    assert chats.is_exact is False
    assert (chats.rows, chats.deleted_rows) == (2, 1)  # ANALYZE read all three rows


def test_an_index_left_by_a_failed_create_index_concurrently_shows_as_invalid(
    seeded_url: str, agentdb_command: list[str]
) -> None:
    with (
        psycopg.connect(seeded_url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.UniqueViolation),
    ):
        conn.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_todos_title ON tasks.todos (title)")
    inspection = inspect_database(seeded_url)
    assert inspection.invalid_indexes == ["tasks.idx_todos_title"]
    others = [index for index in inspection.indexes if index.name != "tasks.idx_todos_title"]
    assert others and all(index.is_valid for index in others)
    shown = run_inspect(agentdb_command, seeded_url)
    assert "1 INVALID" in shown
    (line,) = [line for line in shown.splitlines() if "tasks.idx_todos_title" in line]
    assert "NO" in line


def test_the_queue_by_agent_and_status_and_the_stale_runs(seeded_url: str) -> None:
    inspection = inspect_database(seeded_url, stale_after=timedelta(seconds=30))
    groups = {(g.agent_name, g.status): g.count for g in inspection.queue}
    assert groups == {("coder", "queued"): 2, ("planner", "queued"): 1, ("planner", "running"): 2}
    queued = [g for g in inspection.queue if g.status == "queued"]
    assert all(g.oldest_queued_at is not None for g in queued)
    assert inspection.stale_run_count == 1
    assert [run.worker_id for run in inspection.stale_runs] == ["host:1"]
    hours = inspect_database(seeded_url, stale_after=timedelta(hours=1))
    assert hours.stale_runs == [] and hours.stale_run_count == 0


def test_the_migration_head_and_drift(seeded_url: str, tmp_path: Path) -> None:
    migrations = default_migrations_dir()
    forward = sorted(p.stem for p in migrations.glob("*.sql") if ".rollback" not in p.name)
    clean = inspect_database(seeded_url).migrations
    assert (clean.head, clean.applied, clean.pending, clean.drifted) == (
        forward[-1],
        len(forward),
        [],
        [],
    )
    copy = tmp_path / "migrations"
    shutil.copytree(migrations, copy)
    edited = copy / f"{forward[3]}.sql"
    edited.write_text(edited.read_text() + "\n-- an afterthought\n")
    assert inspect_database(seeded_url, migrations_dir=copy).migrations.drifted == [forward[3]]


def test_json_parses_and_matches_the_inspection(
    seeded_url: str, agentdb_command: list[str]
) -> None:
    printed = json.loads(run_inspect(agentdb_command, seeded_url, "--json", "--stale-after", "30"))
    direct = inspect_database(seeded_url).model_dump(mode="json")
    assert set(printed) == set(direct)
    for key in ("database", "invalid_indexes", "queue", "stale_run_count", "migrations"):
        assert printed[key] == direct[key], key
    rows = {t["name"]: (t["rows"], t["deleted_rows"], t["is_exact"]) for t in printed["tables"]}
    assert rows["messaging.chats"] == (2, 1, True)
    assert printed["stale_runs"][0]["worker_id"] == "host:1"
    assert [i["name"] for i in printed["indexes"]] == [i["name"] for i in direct["indexes"]]


def test_the_terminal_view_shows_the_tables_queue_and_stale_runs(
    seeded_url: str, agentdb_command: list[str]
) -> None:
    shown = run_inspect(agentdb_command, seeded_url, "--stale-after", "30")
    (chats,) = [line for line in shown.splitlines() if "messaging.chats " in line]
    cells = [cell.strip() for cell in chats.split("│")]
    assert cells[1:4] == ["messaging.chats", "2", "1"]  # table, rows, soft-deleted
    assert "stale runs (running, no heartbeat for 30 s): 1" in shown
    assert "host:1" in shown and "host:2" not in shown
    assert "migrations: head " in shown and "no drift" in shown


def test_inspect_writes_nothing_and_reports_a_database_never_migrated(
    empty_database_url: str, agentdb_command: list[str]
) -> None:
    inspection = inspect_database(empty_database_url)
    assert inspection.tables == [] and inspection.queue == []
    assert inspection.migrations.head is None and inspection.migrations.pending
    assert "run `agentdb migrate`" in run_inspect(agentdb_command, empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        found = conn.execute("SELECT pg_catalog.to_regclass('_yoyo_migration')").fetchone()
    assert found == (None,)
