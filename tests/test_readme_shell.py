"""The README's shell examples print what the README shows.

Every ```console block of README.md is a session at a prompt: a line starting with `$ ` is a
command, the lines after it (up to the next `$ ` line) are what it prints, stdout and stderr
together as a terminal shows them. The blocks run in README order, from the repository root,
against one throwaway database that starts empty (so the first block's `./scripts/migrate`
applies everything, and later blocks see what earlier ones did), with no other database
setting and the embedded fallback off. ```sh blocks are illustrations and hold no prompts.

What the README shows is compared with what the command printed after both are normalized,
only for what varies from run to run or machine to machine:
- a timestamp (`2026-01-31 12:00:00`, with fractions or a zone) reads `<timestamp>`;
- a UUID reads `<uuid>`; a size (`8192 bytes`, `16 kB`, `3 MB`) reads `<size>`;
- `pid 1234` reads `pid <pid>`, a `port=5432` or `:5432` after a host reads `<port>`;
- `PostgreSQL 18.1` (and a distribution's suffix, `(Debian 15.20-0+deb12u1)`) reads
  `PostgreSQL <version>`;
- the throwaway database's name reads `agentdb`;
- runs of spaces, and of a table's rule characters (`─━═`), count as one (a table's columns
  are as wide as their values), and trailing spaces are ignored.
A line that is only `…` in the README stands for any number of printed lines.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SETTINGS = ("DATABASE_URL", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD")

NORMALIZATIONS = [
    (
        re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}(?::?\d{2})?)?"),
        "<timestamp>",
    ),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"\b\d+ (?:bytes|kB|MB|GB|TB)\b"), "<size>"),
    (re.compile(r"\bpid \d+"), "pid <pid>"),
    (re.compile(r"(?<=port=)\d+|(?<=[a-z0-9\]]:)\d{2,5}(?=/)"), "<port>"),
    (re.compile(r"\bPostgreSQL \d+(?:\.\d+)*(?: \([^)]*\))?"), "PostgreSQL <version>"),
    (re.compile(r"[─━═]+"), "─"),
    (re.compile(r" +"), " "),
]


def console_blocks() -> list[str]:
    return re.findall(r"```console\n(.*?)```", README.read_text(), flags=re.DOTALL)


def sessions(block: str) -> list[tuple[str, list[str]]]:
    """(command, the lines it prints) for each prompt of a block."""
    result: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            result.append((line[2:], []))
        else:
            assert result, f"output before any prompt in a console block: {line!r}"
            result[-1][1].append(line)
    return result


def normalize(line: str, database: str) -> str:
    line = line.replace(database, "agentdb")
    for pattern, replacement in NORMALIZATIONS:
        line = pattern.sub(replacement, line)
    return line.rstrip()


def matches(shown: list[str], printed: list[str]) -> bool:
    """Whether the printed lines are the shown ones, a `…` line standing for any lines."""
    pattern = "".join(
        r"(?:[^\n]*\n)*?" if line == "…" else re.escape(line) + r"\n" for line in shown
    )
    return re.fullmatch(pattern, "".join(line + "\n" for line in printed)) is not None


def test_sh_blocks_hold_no_prompts() -> None:
    """A shell example with output is a ```console block, so this test runs it."""
    sh = re.findall(r"```(?:sh|shell|bash)\n(.*?)```", README.read_text(), flags=re.DOTALL)
    prompts = [line for block in sh for line in block.splitlines() if line.startswith("$ ")]
    assert prompts == []


def test_the_readme_shell_examples_print_what_the_readme_shows(
    empty_database_url: str, tmp_path: Path
) -> None:
    blocks = console_blocks()
    assert blocks, "README.md has no ```console block"
    database = str(conninfo_to_dict(empty_database_url)["dbname"])
    env = {key: value for key, value in os.environ.items() if key not in SETTINGS}
    env.update(
        DATABASE_URL=empty_database_url,
        AGENTDB_EMBEDDED="0",
        AGENTDB_PGDATA=str(tmp_path / "never-started"),
        AGENTDB_EXTRAS="dev,aiogram",  # the install ./scripts/test made: no re-install
        COLUMNS="100",
    )
    env.pop("AGENTDB_MIGRATIONS", None)
    for block in blocks:
        for command, shown in sessions(block):
            result = subprocess.run(
                ["bash", "-c", command],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=300,
            )
            printed = [normalize(line, database) for line in result.stdout.splitlines()]
            expected = [normalize(line, database) for line in shown]
            assert matches(expected, printed), (
                f"README.md: `$ {command}` prints (normalized):\n"
                + "\n".join(printed)
                + "\n\nbut the README shows:\n"
                + "\n".join(expected)
            )
