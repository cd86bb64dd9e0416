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


def test_the_readme_example_runs_as_written_against_a_real_database(database_url: str) -> None:
    (example,) = python_blocks()
    env = {**os.environ, "DATABASE_URL": database_url}
    result = subprocess.run(
        [sys.executable, "-c", example],
        capture_output=True,
        text=True,
        env=env,
        cwd=README.parent,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "[('user', 'buy milk'), ('assistant', 'Added milk.')]"
    assert lines[1] == "done True"
    assert lines[2].startswith("not found:")
    assert lines[3] == "healthy: True"
