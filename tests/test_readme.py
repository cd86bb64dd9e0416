"""The README's example runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def block_with(text: str) -> str:
    """The one README Python block that contains `text`."""
    (block,) = [block for block in python_blocks() if text in block]
    return block


def run_block(block: str, database_url: str) -> list[str]:
    """The lines a README block prints, run as written by this Python against the database."""
    env = {**os.environ, "DATABASE_URL": database_url}
    result = subprocess.run(
        [sys.executable, "-c", block],
        capture_output=True,
        text=True,
        env=env,
        cwd=README.parent,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_the_readme_example_runs_as_written_against_a_real_database(database_url: str) -> None:
    lines = run_block(block_with("DatabaseManager(DatabaseConfig.from_env())"), database_url)
    assert lines[0] == "[('user', 'buy milk'), ('assistant', 'Added milk.')]"
    assert lines[1] == "done True"
    assert lines[2].startswith("not found:")
    assert lines[3] == "healthy: True"


def test_the_readme_aiogram_lines_build_a_dispatcher_on_postgres_storage() -> None:
    bot = block_with("PostgresStorage.from_url")
    check = (
        "\nfrom app.integrations.aiogram import PostgresEventIsolation"
        "\nassert dp.storage is storage"
        "\nassert isinstance(dp.fsm.events_isolation, PostgresEventIsolation)"
        "\nprint('ok')"
    )
    # The storage connects on first use: building the dispatcher needs no server.
    result = subprocess.run(
        [sys.executable, "-c", bot + check], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_readme_handlers_run_under_the_worker_command(
    tmp_path: Path, database_url: str, agentdb_command: list[str]
) -> None:
    """The "Running agents" module, as written (with a stand-in for the model call), under
    `agentdb worker …:HANDLERS`, until SIGTERM."""
    import signal
    import time

    import psycopg

    package = tmp_path / "myapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    stand_in = "async def call_the_model(text):\n    return text.upper()\n\n\n"
    (package / "agents.py").write_text(stand_in + block_with("HANDLERS = {"))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO agents.executions (agent_name, input) "
            "VALUES ('summarizer', '{\"text\": \"hello\"}')"
        )
        worker = subprocess.Popen(
            [
                *agentdb_command,
                "worker",
                "myapp.agents:HANDLERS",
                "--database",
                database_url,
                "--poll-interval",
                "0.2",
            ],
            cwd=tmp_path,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            for _ in range(300):
                row = conn.execute("SELECT status, output, model FROM agents.executions").fetchone()
                if row is not None and row[0] == "succeeded":
                    break
                time.sleep(0.05)
        finally:
            worker.send_signal(signal.SIGTERM)
            _, log = worker.communicate(timeout=30)
    assert worker.returncode == 0, log
    assert row == ("succeeded", {"summary": "HELLO"}, "gpt-4o-mini"), log
    assert "succeeded" in log and "worker" in log


def test_the_readme_memory_example_reinforces_recalls_and_finds_the_chunk(
    database_url: str,
) -> None:
    lines = run_block(block_with("knowledge.remember("), database_url)
    assert lines[0] == "reinforced 1"
    assert lines[1] == "['the user prefers window seats.', 'The user is vegetarian']"
    assert lines[2] == "The lease ends in March."
