"""README "Scaling out" stays true: its list of the keys Citus would need changed is exactly
what pg_catalog says of a migrated database (every primary key, unique constraint, unique
index and foreign key of a table with an owner_id column that does not include owner_id),
and its table of what each table becomes names every table of the domain schemas. A table
added later with such a key, or a row removed from the README, fails here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NamedTuple

import psycopg

README = Path(__file__).resolve().parents[1] / "README.md"

KEYS_HEADER = "| table | constraint | kind | today | under Citus |"
TABLES_HEADER = "| table | under Citus |"

# The test's own catalog reading (nothing of app/ is used): owner-scoped tables are the
# ordinary or partitioned tables with an owner_id column, outside the system schemas and
# public (yoyo's bookkeeping); a partition is reached through its parent.
OWNER_SCOPED_KEYS = """
WITH owner_tables AS (
    SELECT rel.oid, ns.nspname || '.' || rel.relname AS name, att.attnum AS owner_attnum
    FROM pg_catalog.pg_class AS rel
    JOIN pg_catalog.pg_namespace AS ns ON ns.oid = rel.relnamespace
    JOIN pg_catalog.pg_attribute AS att
      ON att.attrelid = rel.oid AND att.attname = 'owner_id' AND NOT att.attisdropped
    WHERE rel.relkind IN ('r', 'p')
      AND NOT rel.relispartition
      AND ns.nspname NOT IN ('pg_catalog', 'information_schema', 'public')
      AND ns.nspname !~ '^pg_'
)
SELECT owner_tables.name,
       con.conname,
       CASE con.contype WHEN 'p' THEN 'primary key'
                        WHEN 'u' THEN 'unique'
                        ELSE 'foreign key' END
FROM owner_tables
JOIN pg_catalog.pg_constraint AS con ON con.conrelid = owner_tables.oid
WHERE con.contype IN ('p', 'u', 'f')
  AND NOT owner_tables.owner_attnum = ANY(con.conkey)
UNION ALL
SELECT owner_tables.name, index_rel.relname, 'unique index'
FROM owner_tables
JOIN pg_catalog.pg_index AS ind ON ind.indrelid = owner_tables.oid
JOIN pg_catalog.pg_class AS index_rel ON index_rel.oid = ind.indexrelid
WHERE ind.indisunique
  AND NOT owner_tables.owner_attnum = ANY(ind.indkey::smallint[])
  AND NOT EXISTS (
      SELECT FROM pg_catalog.pg_constraint AS con
      WHERE con.conindid = ind.indexrelid AND con.contype IN ('p', 'u', 'x')
  )
ORDER BY 1, 2
"""

DOMAIN_TABLES = """
SELECT ns.nspname || '.' || rel.relname
FROM pg_catalog.pg_class AS rel
JOIN pg_catalog.pg_namespace AS ns ON ns.oid = rel.relnamespace
WHERE rel.relkind IN ('r', 'p')
  AND NOT rel.relispartition
  AND ns.nspname NOT IN ('pg_catalog', 'information_schema', 'public')
  AND ns.nspname !~ '^pg_'
ORDER BY 1
"""


class Key(NamedTuple):
    table: str
    constraint: str
    kind: str


def scaling_out_section(text: str) -> str:
    match = re.search(r"^## Scaling out\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert match is not None, 'README has no "## Scaling out" section'
    return match.group(1)


def markdown_table(section: str, header: str) -> list[list[str]]:
    """The cells of the rows of the Markdown table under `header` (backticks removed)."""
    lines = section.splitlines()
    assert header in lines, f'README "Scaling out" has no table headed {header}'
    rows = []
    for line in lines[lines.index(header) + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().strip("`") for cell in line.strip().strip("|").split("|")])
    return rows


def readme_keys(text: str) -> list[Key]:
    return [
        Key(table, constraint, kind)
        for table, constraint, kind, *_ in markdown_table(scaling_out_section(text), KEYS_HEADER)
    ]


def readme_tables(text: str) -> list[str]:
    return [row[0] for row in markdown_table(scaling_out_section(text), TABLES_HEADER)]


def catalog_keys(conn: psycopg.Connection[Any]) -> list[Key]:
    return [Key(*row) for row in conn.execute(OWNER_SCOPED_KEYS).fetchall()]


def differences(listed: list[Key], catalog: list[Key]) -> list[str]:
    """What README's list lacks, and what it lists that the catalog does not have."""
    missing = [
        f"missing from README: | `{key.table}` | `{key.constraint}` | {key.kind} | … |"
        for key in catalog
        if key not in listed
    ]
    extra = [f"listed in README, not in the catalog: {key}" for key in listed if key not in catalog]
    twice = [f"listed twice: {key}" for key in set(listed) if listed.count(key) > 1]
    return missing + extra + twice


def test_readme_lists_every_key_of_an_owner_scoped_table_that_lacks_owner_id(
    migrated_conn: psycopg.Connection[Any],
) -> None:
    catalog = catalog_keys(migrated_conn)
    assert len(catalog) >= 18  # the list is not vacuous
    assert differences(readme_keys(README.read_text()), catalog) == []


def test_the_readme_keys_table_is_in_table_order() -> None:
    listed = readme_keys(README.read_text())
    assert [key.table for key in listed] == sorted(key.table for key in listed)


def test_any_row_removed_from_the_readme_list_is_reported_missing(
    migrated_conn: psycopg.Connection[Any],
) -> None:
    catalog = catalog_keys(migrated_conn)
    text = README.read_text()
    for key in readme_keys(text):
        row = next(
            line
            for line in text.splitlines()
            if line.startswith(f"| `{key.table}` | `{key.constraint}` |")
        )
        problems = differences(readme_keys(text.replace(row + "\n", "")), catalog)
        assert problems == [
            f"missing from README: | `{key.table}` | `{key.constraint}` | {key.kind} | … |"
        ]


def test_a_table_added_later_with_keys_lacking_owner_id_is_reported(
    migrated_conn: psycopg.Connection[Any],
) -> None:
    migrated_conn.execute(
        "CREATE TABLE tasks.reminders ("
        " id uuid CONSTRAINT pk_reminders PRIMARY KEY,"
        " owner_id uuid NOT NULL,"
        " todo_id uuid CONSTRAINT fk_reminders_todos REFERENCES tasks.todos (id),"
        " CONSTRAINT uq_reminders_owner_id_todo_id UNIQUE (owner_id, todo_id))"
    )
    migrated_conn.execute("CREATE UNIQUE INDEX uq_reminders_todo_id ON tasks.reminders (todo_id)")
    problems = differences(readme_keys(README.read_text()), catalog_keys(migrated_conn))
    assert problems == [
        "missing from README: | `tasks.reminders` | `fk_reminders_todos` | foreign key | … |",
        "missing from README: | `tasks.reminders` | `pk_reminders` | primary key | … |",
        "missing from README: | `tasks.reminders` | `uq_reminders_todo_id` | unique index | … |",
    ]  # the unique constraint with owner_id is fine as it is


def test_readme_says_what_every_table_becomes_under_citus(
    migrated_conn: psycopg.Connection[Any],
) -> None:
    tables = [row[0] for row in migrated_conn.execute(DOMAIN_TABLES).fetchall()]
    listed = readme_tables(README.read_text())
    assert sorted(listed) == tables
    assert len(set(listed)) == len(listed)
    owner_scoped = {key.table for key in catalog_keys(migrated_conn)}
    kinds = dict(
        (row[0], row[1])
        for row in markdown_table(scaling_out_section(README.read_text()), TABLES_HEADER)
    )
    for table in owner_scoped:  # an owner's table is distributed by owner_id or a reference
        assert kinds[table].startswith(("distributed by `owner_id`", "reference table")), table
