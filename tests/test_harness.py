"""The test harness (tests/conftest.py) runs on the server DATABASE_URL names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]

SELECT_SERVER_START = "SELECT pg_catalog.pg_postmaster_start_time()::text"

SELECT_SESSION_DATABASES = """
SELECT datname FROM pg_catalog.pg_database WHERE datname LIKE 'agentdb\\_test\\_%%'
"""

# A test for a pytest session of its own: it prints the start time of the server its fresh
# database is on, and that database's name.
PROBE = """
import psycopg

def test_probe(database_url):
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT pg_catalog.pg_postmaster_start_time()::text, pg_catalog.current_database()"
        ).fetchone()
    print("probe", *row, sep="|")
"""


def session_databases(url: str, prefix: str) -> set[str]:
    """Test databases on the server but this session's (whose clones come and go)."""
    with psycopg.connect(url) as conn:
        names = {row[0] for row in conn.execute(SELECT_SESSION_DATABASES)}
    return {name for name in names if not name.startswith(prefix)}


def test_with_database_url_the_suite_runs_on_that_server_and_leaves_no_database(
    server_url: str, tmp_path: Path, template_url: str, database_prefix: str
) -> None:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    before = session_databases(server_url, database_prefix)
    env: dict[str, Any] = {**os.environ, "DATABASE_URL": server_url}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-s", str(probe)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with psycopg.connect(server_url) as conn:
        started = conn.execute(SELECT_SERVER_START).fetchone()
    header = [line for line in result.stdout.splitlines() if line.startswith("server: ")]
    assert len(header) == 1 and "DATABASE_URL" in header[0], result.stdout
    assert header[0].startswith("server: PostgreSQL ")
    (line,) = [line for line in result.stdout.splitlines() if "probe|" in line]
    server_started, database = line.split("probe|", 1)[1].split("|")
    database = database.split()[0]  # pytest's progress mark may follow on the line
    assert started is not None and server_started == started[0]  # the same server, not another
    assert database.startswith("agentdb_test_") and database not in before
    # Its template and its clones were dropped.
    assert session_databases(server_url, database_prefix) == before
