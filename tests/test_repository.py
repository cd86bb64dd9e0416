"""The repository explains itself, and the wheel carries what an installation needs.

- Nothing refers to a design document kept outside the repository.
- Every repository path that README.md, the docstrings and comments of app/ and the migration
  files mention exists in the checkout (each extractor is checked on a planted bad reference).
- The wheel holds the library and its migrations, but not the benchmarks (app/bench/).
"""

from __future__ import annotations

import ast
import fnmatch
import io
import re
import subprocess
import sys
import tokenize
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = ROOT / "database" / "migrations"

# Spelled in two parts so that this file does not mention it either.
OUTSIDE_DOCUMENT = "DESIGN" + ".md"

# A path from the repository root (./scripts/migrate, app/bench/orm.py, database/migrations/,
# app/**/*.py) or a bare module file name (models.py). Not the tail of a longer path, URL or
# dotted name; it ends on a word character, `*` or `/`, so the full stop after it is dropped.
PATH_REFERENCE = re.compile(
    r"""
    (?<![\w./\\-])
    (?:\./)?
    (
        (?:app|tests|scripts|database)/[\w.*/-]*[\w*/]
      | (?:app|tests|scripts|database)/
      | [\w-]+\.py\b
    )
    """,
    re.VERBOSE,
)

# Applied migrations are never edited, so these references stay in their text: 0010 re-states
# the schema comments of 0003 that made them, and its rollback puts 0003's texts back verbatim.
FROZEN_REFERENCES = {
    "0003_create_schemas.sql": {
        "app/messaging.py",
        "app/tasks.py",
        "app/agents.py",
        "app/telegram.py",
        "app/worker.py",
        "app/integrations/aiogram.py",
    },
    "0010_update_schema_and_stamp_comments.rollback.sql": {
        "app/messaging.py",
        "app/tasks.py",
        "app/agents.py",
        "app/telegram.py",
        "app/worker.py",
        "app/integrations/aiogram.py",
    },
}

# Every comment on an object created after initdb (FirstNormalObjectId): what \d+ shows.
SELECT_USER_OBJECT_COMMENTS = """
SELECT description FROM pg_catalog.pg_description WHERE objoid >= 16384
"""


def git_files(*options: str) -> list[Path]:
    """Files git lists in the checkout (with `options`) that exist in the working tree."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z", *options],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    return [ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()]


@cache
def checkout_file_names() -> frozenset[str]:
    """Base names of the checkout's files, tracked or not, leaving out what git ignores."""
    return frozenset(path.name for path in git_files("--cached", "--others", "--exclude-standard"))


def referenced_paths(text: str) -> list[str]:
    """The repository paths `text` mentions, in order."""
    return PATH_REFERENCE.findall(text)


def exists_in_checkout(reference: str) -> bool:
    """A path exists from the root, a glob matches something, a bare file name is somewhere."""
    if "*" in reference:
        return any(ROOT.glob(reference.rstrip("/")))
    if "/" not in reference:
        return reference in checkout_file_names()
    return (ROOT / reference).exists()


def missing_references(text: str) -> list[str]:
    return [path for path in referenced_paths(text) if not exists_in_checkout(path)]


def python_prose(source: str) -> str:
    """The comments and docstrings of a module (every bare string statement), not its code."""
    comments = [
        token.string
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    ]
    docstrings = [
        node.value.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    ]
    return "\n".join(comments + docstrings)


def is_binary(data: bytes) -> bool:
    return b"\0" in data


def test_the_path_extractor_finds_each_kind_of_reference_and_only_those() -> None:
    sample = (
        "Queried by app/scheduler.py (run ./scripts/migrate; see `tests/conftest.py`, app/**/*.py "
        "and database/migrations/*.sql, then app/messaging/.) with models.py; app.messaging is "
        "a module and https://example.com/app/page.py a URL, not paths."
    )
    assert referenced_paths(sample) == [
        "app/scheduler.py",
        "scripts/migrate",
        "tests/conftest.py",
        "app/**/*.py",
        "database/migrations/*.sql",
        "app/messaging/",
        "models.py",
    ]
    assert missing_references(sample) == ["app/scheduler.py"]
    assert missing_references("kept in app/nowhere/ and nowhere_at_all.py") == [
        "app/nowhere/",
        "nowhere_at_all.py",
    ]


def test_python_prose_is_the_comments_and_docstrings_not_the_code() -> None:
    source = (
        '"""Uses tests/missing_docstring.py."""\n'
        "PATH = 'app/string_constant.py'  # see app/missing_comment.py\n"
        "def f() -> None:\n"
        '    """Reads scripts/missing_function."""\n'
    )
    assert sorted(missing_references(python_prose(source))) == [
        "app/missing_comment.py",
        "scripts/missing_function",
        "tests/missing_docstring.py",
    ]


def test_no_tracked_file_refers_to_a_design_document_outside_the_repository() -> None:
    offenders = []
    for path in git_files():
        data = path.read_bytes()
        if is_binary(data):
            continue
        for number, line in enumerate(data.decode(errors="replace").splitlines(), start=1):
            if OUTSIDE_DOCUMENT in line:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_every_path_the_readme_mentions_exists() -> None:
    assert missing_references((ROOT / "README.md").read_text()) == []


def test_every_path_the_docstrings_and_comments_of_app_mention_exists() -> None:
    modules = sorted((ROOT / "app").rglob("*.py"))
    assert modules
    offenders = [
        f"{module.relative_to(ROOT)}: {path}"
        for module in modules
        for path in missing_references(python_prose(module.read_text()))
    ]
    assert offenders == []


def test_every_path_the_migration_files_mention_exists_unless_frozen_in_an_applied_file() -> None:
    files = sorted(MIGRATIONS.glob("*.sql"))
    assert files
    offenders = [
        f"{file.name}: {path}"
        for file in files
        for path in missing_references(file.read_text())
        if path not in FROZEN_REFERENCES.get(file.name, set())
    ]
    assert offenders == []


def test_every_comment_in_a_migrated_database_names_only_paths_that_exist(
    migrated_conn: psycopg.Connection[Any],
) -> None:
    comments = [row[0] for row in migrated_conn.execute(SELECT_USER_OBJECT_COMMENTS)]
    assert any("app.messaging" in comment for comment in comments)
    offenders = [path for comment in comments for path in missing_references(comment)]
    assert offenders == []


def test_the_wheel_carries_the_library_and_its_migrations_but_not_the_benchmarks(
    tmp_path: Path,
) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), ROOT],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("agentdb-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert [name for name in names if name.startswith("app/bench/")] == []
    assert "app/messaging/queries.py" in names
    assert fnmatch.filter(names, "app/_migrations/0001_*.sql")
    packaged = {name.removeprefix("app/_migrations/") for name in names}
    assert {path.name for path in MIGRATIONS.glob("*.sql")} <= packaged
