"""`agentdb seed` fills a database with demo data through the public API."""

from __future__ import annotations

import subprocess

import psycopg

COUNT_ROWS = """
SELECT (SELECT count(*) FROM messaging.chats),
       (SELECT count(DISTINCT owner_id) FROM messaging.chats),
       (SELECT count(*) FROM messaging.messages),
       (SELECT count(*) FROM tasks.todos),
       (SELECT count(*) FROM agents.executions),
       (SELECT count(DISTINCT status) FROM agents.executions),
       (SELECT count(*) FROM telegram.sessions),
       (SELECT max(n) FROM (SELECT count(*) AS n FROM messaging.messages GROUP BY chat_id) AS c),
       (SELECT min(n) FROM (SELECT count(*) AS n FROM messaging.messages GROUP BY chat_id) AS c)
"""


def test_seed_writes_the_requested_sizes_with_long_tailed_chats(
    database_url: str, agentdb_command: list[str]
) -> None:
    sizes = ["--owners", "5", "--chats", "20", "--messages", "600", "--todos", "15"]
    sizes += ["--executions", "20", "--sessions", "8"]
    result = subprocess.run(
        [*agentdb_command, "seed", "--database", database_url, *sizes],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("seeded ")
    with psycopg.connect(database_url) as conn:
        row = conn.execute(COUNT_ROWS).fetchone()
    assert row is not None
    chats, owners, messages, todos, executions, statuses, sessions, longest, shortest = row
    assert (chats, owners, messages, todos, executions, sessions) == (20, 5, 600, 15, 20, 8)
    assert statuses >= 2  # some queued, most worked off
    assert longest >= 5 * shortest  # a few long conversations, many short ones


def test_seed_refuses_negative_sizes(database_url: str, agentdb_command: list[str]) -> None:
    result = subprocess.run(
        [*agentdb_command, "seed", "--database", database_url, "--messages", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "must not be negative" in result.stderr
