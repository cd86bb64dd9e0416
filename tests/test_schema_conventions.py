"""The schema conventions of README's "Writing a migration", checked in pg_catalog.

Each rule is one query that lists the objects breaking it, one `offender` string per row
(`schema.table`, `schema.table.column` or `schema.table: constraint`), and one test that
asserts the list is empty, so a failure names every offender at once. The queries look only
at the agentdb schemas (APP_SCHEMAS), never at public or at yoyo's bookkeeping tables.

The last test proves the queries can fail: it builds a table that breaks every rule inside a
transaction that is rolled back, and expects each query to name it.

Relies on the `migrated_conn` fixture (tests/conftest.py): a sync psycopg connection, in
autocommit mode, to a database with every migration applied.
"""

from __future__ import annotations

from typing import Any, LiteralString

import psycopg
import pytest

APP_SCHEMAS = ["messaging", "tasks", "agents", "telegram", "knowledge"]

# Queries run with psycopg parameters, so a literal percent sign would have to be written
# twice; they use regular expressions (~) instead of LIKE to avoid it.

TABLES_NOT_PLURAL_SNAKE_CASE = """
SELECT n.nspname || '.' || c.relname AS offender
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname::text = ANY (%(schemas)s::text[])
  AND c.relkind IN ('r', 'p')
  AND c.relname !~ '^[a-z][a-z0-9]*(_[a-z0-9]+)*s$'
ORDER BY offender
"""

COLUMNS_NOT_SNAKE_CASE = """
SELECT n.nspname || '.' || c.relname || '.' || a.attname AS offender
FROM pg_catalog.pg_attribute AS a
JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname::text = ANY (%(schemas)s::text[])
  AND c.relkind IN ('r', 'p')
  AND a.attnum > 0
  AND NOT a.attisdropped
  AND a.attname !~ '^[a-z][a-z0-9]*(_[a-z0-9]+)*$'
ORDER BY offender
"""

# The primary key must be exactly (id), id a uuid defaulting to gen_random_uuid().
TABLES_WITHOUT_UUID_PRIMARY_KEY_NAMED_PK_TABLE = """
SELECT n.nspname || '.' || c.relname AS offender
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_constraint AS pk ON pk.conrelid = c.oid AND pk.contype = 'p'
LEFT JOIN pg_catalog.pg_attribute AS a
    ON a.attrelid = c.oid AND a.attname = 'id' AND NOT a.attisdropped
LEFT JOIN pg_catalog.pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname::text = ANY (%(schemas)s::text[])
  AND c.relkind IN ('r', 'p')
  AND (pk.conname IS DISTINCT FROM 'pk_' || c.relname
       OR pk.conkey IS DISTINCT FROM ARRAY[a.attnum]
       OR a.atttypid IS DISTINCT FROM 'uuid'::regtype
       OR pg_catalog.pg_get_expr(d.adbin, d.adrelid) IS DISTINCT FROM 'gen_random_uuid()')
ORDER BY offender
"""

CREATED_AT_UPDATED_AT_NOT_TIMESTAMPTZ_NOT_NULL_DEFAULT_NOW = """
SELECT n.nspname || '.' || c.relname || '.' || required.column_name AS offender
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
CROSS JOIN (VALUES ('created_at'), ('updated_at')) AS required (column_name)
LEFT JOIN pg_catalog.pg_attribute AS a
    ON a.attrelid = c.oid AND a.attname = required.column_name AND NOT a.attisdropped
LEFT JOIN pg_catalog.pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname::text = ANY (%(schemas)s::text[])
  AND c.relkind IN ('r', 'p')
  AND (a.attnum IS NULL
       OR a.atttypid <> 'timestamptz'::regtype
       OR NOT a.attnotnull
       OR a.attgenerated <> ''
       OR pg_catalog.pg_get_expr(d.adbin, d.adrelid) IS DISTINCT FROM 'now()')
ORDER BY offender
"""

# tgtype bits: 1 = FOR EACH ROW, 2 = BEFORE, 16 = UPDATE.
TABLES_WITHOUT_UPDATED_AT_TRIGGER = """
SELECT n.nspname || '.' || c.relname AS offender
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname::text = ANY (%(schemas)s::text[])
  AND c.relkind IN ('r', 'p')
  AND NOT EXISTS (
      SELECT 1
      FROM pg_catalog.pg_trigger AS t
      WHERE t.tgrelid = c.oid
        AND t.tgname = 'trg_' || c.relname || '_updated_at'
        AND t.tgfoid = 'public.agentdb_set_updated_at()'::regprocedure
        AND t.tgtype::integer & 19 = 19
        AND t.tgenabled <> 'D'
  )
ORDER BY offender
"""

BOOLEAN_COLUMNS_WITHOUT_IS_OR_HAS_PREFIX = """
SELECT n.nspname || '.' || c.relname || '.' || a.attname AS offender
FROM pg_catalog.pg_attribute AS a
JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname::text = ANY (%(schemas)s::text[])
  AND c.relkind IN ('r', 'p')
  AND a.attnum > 0
  AND NOT a.attisdropped
  AND a.atttypid = 'boolean'::regtype
  AND a.attname !~ '^(is|has)_'
ORDER BY offender
"""

FOREIGN_KEYS_NOT_NAMED_FK_TABLE_REFERENCED_TABLE = """
SELECT n.nspname || '.' || c.relname || ': ' || con.conname AS offender
FROM pg_catalog.pg_constraint AS con
JOIN pg_catalog.pg_class AS c ON c.oid = con.conrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_class AS referenced ON referenced.oid = con.confrelid
WHERE n.nspname::text = ANY (%(schemas)s::text[])
  AND con.contype = 'f'
  AND con.conname <> 'fk_' || c.relname || '_' || referenced.relname
ORDER BY offender
"""

FOREIGN_KEY_COLUMNS_NOT_ENDING_IN_ID = """
SELECT n.nspname || '.' || c.relname || '.' || a.attname AS offender
FROM pg_catalog.pg_constraint AS con
JOIN pg_catalog.pg_class AS c ON c.oid = con.conrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
CROSS JOIN LATERAL unnest(con.conkey) AS key (attnum)
JOIN pg_catalog.pg_attribute AS a ON a.attrelid = con.conrelid AND a.attnum = key.attnum
WHERE n.nspname::text = ANY (%(schemas)s::text[])
  AND con.contype = 'f'
  AND a.attname !~ '_id$'
ORDER BY offender
"""

# The column that points at the referenced table's id is {referenced_singular}_id, with an
# optional prefix (parent_chat_id). Singular: "ies" -> "y", else drop a final "s".
FOREIGN_KEY_COLUMNS_NOT_NAMED_AFTER_REFERENCED_SINGULAR = """
SELECT n.nspname || '.' || c.relname || '.' || a.attname AS offender
FROM pg_catalog.pg_constraint AS con
JOIN pg_catalog.pg_class AS c ON c.oid = con.conrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_class AS referenced ON referenced.oid = con.confrelid
CROSS JOIN LATERAL unnest(con.conkey, con.confkey) AS key (attnum, referenced_attnum)
JOIN pg_catalog.pg_attribute AS a
    ON a.attrelid = con.conrelid AND a.attnum = key.attnum
JOIN pg_catalog.pg_attribute AS referenced_a
    ON referenced_a.attrelid = con.confrelid AND referenced_a.attnum = key.referenced_attnum
WHERE n.nspname::text = ANY (%(schemas)s::text[])
  AND con.contype = 'f'
  AND referenced_a.attname = 'id'
  AND a.attname !~ (
      '(^|_)'
      || regexp_replace(regexp_replace(referenced.relname, 'ies$', 'y'), 's$', '')
      || '_id$'
  )
ORDER BY offender
"""

# A unique constraint is backed by a unique index of the same name; UNION removes the pair.
UNIQUE_CONSTRAINTS_AND_INDEXES_NOT_NAMED_UQ_TABLE = """
SELECT n.nspname || '.' || c.relname || ': ' || i.relname AS offender
FROM pg_catalog.pg_index AS x
JOIN pg_catalog.pg_class AS i ON i.oid = x.indexrelid
JOIN pg_catalog.pg_class AS c ON c.oid = x.indrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname::text = ANY (%(schemas)s::text[])
  AND x.indisunique
  AND NOT x.indisprimary
  AND NOT starts_with(i.relname, 'uq_' || c.relname || '_')
UNION
SELECT n.nspname || '.' || c.relname || ': ' || con.conname AS offender
FROM pg_catalog.pg_constraint AS con
JOIN pg_catalog.pg_class AS c ON c.oid = con.conrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname::text = ANY (%(schemas)s::text[])
  AND con.contype = 'u'
  AND NOT starts_with(con.conname, 'uq_' || c.relname || '_')
ORDER BY offender
"""

# Only contype 'c': PostgreSQL 18 also lists NOT NULL constraints (contype 'n') here, under
# names of its own choosing.
CHECK_CONSTRAINTS_NOT_NAMED_CK_TABLE = """
SELECT n.nspname || '.' || c.relname || ': ' || con.conname AS offender
FROM pg_catalog.pg_constraint AS con
JOIN pg_catalog.pg_class AS c ON c.oid = con.conrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname::text = ANY (%(schemas)s::text[])
  AND con.contype = 'c'
  AND NOT starts_with(con.conname, 'ck_' || c.relname || '_')
ORDER BY offender
"""

NON_UNIQUE_INDEXES_NOT_NAMED_IDX_TABLE = """
SELECT n.nspname || '.' || c.relname || ': ' || i.relname AS offender
FROM pg_catalog.pg_index AS x
JOIN pg_catalog.pg_class AS i ON i.oid = x.indexrelid
JOIN pg_catalog.pg_class AS c ON c.oid = x.indrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname::text = ANY (%(schemas)s::text[])
  AND NOT x.indisunique
  AND NOT starts_with(i.relname, 'idx_' || c.relname || '_')
ORDER BY offender
"""

# Deleting or re-keying a referenced row looks up the referencing rows by the foreign key's
# columns; without an index whose first column is the key's first column that is a
# sequential scan per row. A partial index counts only when its predicate is the key
# column IS NOT NULL, which the lookup's `column = $1` implies; any other predicate has no
# WHERE in the lookup to match it. indkey is 0-based, conkey 1-based.
FOREIGN_KEYS_WITHOUT_INDEX_ON_LEADING_COLUMN = """
SELECT n.nspname || '.' || c.relname || ': ' || con.conname AS offender
FROM pg_catalog.pg_constraint AS con
JOIN pg_catalog.pg_class AS c ON c.oid = con.conrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname::text = ANY (%(schemas)s::text[])
  AND con.contype = 'f'
  AND NOT EXISTS (
      SELECT 1
      FROM pg_catalog.pg_index AS x
      WHERE x.indrelid = con.conrelid
        AND x.indkey[0] = con.conkey[1]
        AND (
            x.indpred IS NULL
            OR pg_catalog.pg_get_expr(x.indpred, x.indrelid) = (
                SELECT '(' || pg_catalog.quote_ident(a.attname) || ' IS NOT NULL)'
                FROM pg_catalog.pg_attribute AS a
                WHERE a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
            )
        )
        AND x.indisvalid
  )
ORDER BY offender
"""

ENUM_TYPES = """
SELECT n.nspname || '.' || t.typname AS offender
FROM pg_catalog.pg_type AS t
JOIN pg_catalog.pg_namespace AS n ON n.oid = t.typnamespace
WHERE n.nspname::text = ANY (%(schemas)s::text[])
  AND t.typtype = 'e'
ORDER BY offender
"""

DELETED_AT_NOT_NULLABLE_TIMESTAMPTZ = """
SELECT n.nspname || '.' || c.relname || '.' || a.attname AS offender
FROM pg_catalog.pg_attribute AS a
JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname::text = ANY (%(schemas)s::text[])
  AND c.relkind IN ('r', 'p')
  AND a.attname = 'deleted_at'
  AND NOT a.attisdropped
  AND (a.atttypid <> 'timestamptz'::regtype OR a.attnotnull)
ORDER BY offender
"""

# A schema that does not exist counts as uncommented, so a misspelt APP_SCHEMAS entry fails
# here instead of making every other query vacuously pass.
SCHEMAS_WITHOUT_COMMENT = """
SELECT s.schema_name AS offender
FROM unnest(%(schemas)s::text[]) AS s (schema_name)
LEFT JOIN pg_catalog.pg_namespace AS n ON n.nspname::text = s.schema_name
WHERE coalesce(btrim(pg_catalog.obj_description(n.oid, 'pg_namespace')), '') = ''
ORDER BY offender
"""

TABLES_WITHOUT_COMMENT = """
SELECT n.nspname || '.' || c.relname AS offender
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname::text = ANY (%(schemas)s::text[])
  AND c.relkind IN ('r', 'p', 'v', 'm')
  AND coalesce(btrim(pg_catalog.obj_description(c.oid, 'pg_class')), '') = ''
ORDER BY offender
"""

COLUMNS_WITHOUT_COMMENT = """
SELECT n.nspname || '.' || c.relname || '.' || a.attname AS offender
FROM pg_catalog.pg_attribute AS a
JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname::text = ANY (%(schemas)s::text[])
  AND c.relkind IN ('r', 'p', 'v', 'm')
  AND a.attnum > 0
  AND NOT a.attisdropped
  AND coalesce(btrim(pg_catalog.col_description(c.oid, a.attnum)), '') = ''
ORDER BY offender
"""

FUNCTIONS_WITHOUT_COMMENT = """
SELECT p.oid::regprocedure::text AS offender
FROM pg_catalog.pg_proc AS p
JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
WHERE (n.nspname::text = ANY (%(schemas)s::text[])
       OR p.oid = 'public.agentdb_set_updated_at()'::regprocedure)
  AND coalesce(btrim(pg_catalog.obj_description(p.oid, 'pg_proc')), '') = ''
ORDER BY offender
"""

# metadata / data / input hold free-form application data that code reads as a dict:
# NOT NULL DEFAULT '{}' and a CHECK that it is an object spare every reader a None and a
# list case.
JSON_OBJECT_COLUMNS_NOT_NOT_NULL_OBJECTS = """
SELECT n.nspname || '.' || c.relname || '.' || a.attname AS offender
FROM pg_catalog.pg_attribute AS a
JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname::text = ANY (%(schemas)s::text[])
  AND c.relkind IN ('r', 'p')
  AND a.attname IN ('metadata', 'data', 'input')
  AND NOT a.attisdropped
  AND a.atttypid = 'jsonb'::regtype
  AND (NOT a.attnotnull
       OR pg_catalog.pg_get_expr(d.adbin, d.adrelid) IS DISTINCT FROM '''{}''::jsonb'
       OR NOT EXISTS (
           SELECT 1
           FROM pg_catalog.pg_constraint AS con
           WHERE con.conrelid = c.oid
             AND con.contype = 'c'
             AND con.conkey = ARRAY[a.attnum]
             AND strpos(
                     pg_catalog.pg_get_constraintdef(con.oid),
                     'jsonb_typeof(' || a.attname || ') = ''object'''
                 ) > 0
       ))
ORDER BY offender
"""

TIMESTAMP_COLUMNS_WITHOUT_TIME_ZONE = """
SELECT n.nspname || '.' || c.relname || '.' || a.attname AS offender
FROM pg_catalog.pg_attribute AS a
JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname::text = ANY (%(schemas)s::text[])
  AND c.relkind IN ('r', 'p')
  AND a.attnum > 0
  AND NOT a.attisdropped
  AND a.atttypid = 'timestamp'::regtype
ORDER BY offender
"""

# char(n) pads with spaces, name and "char" are internal types, and varchar without a
# length is text under another name.
TEXT_COLUMNS_NOT_TEXT_OR_BOUNDED_VARCHAR = """
SELECT n.nspname || '.' || c.relname || '.' || a.attname
       || ': ' || pg_catalog.format_type(a.atttypid, a.atttypmod) AS offender
FROM pg_catalog.pg_attribute AS a
JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname::text = ANY (%(schemas)s::text[])
  AND c.relkind IN ('r', 'p')
  AND a.attnum > 0
  AND NOT a.attisdropped
  AND (a.atttypid IN ('bpchar'::regtype, 'name'::regtype, '"char"'::regtype)
       OR (a.atttypid = 'varchar'::regtype AND a.atttypmod = -1))
ORDER BY offender
"""

# json has no equality operator, so the updated_at trigger's NEW IS DISTINCT FROM OLD fails
# on any table with a json column; jsonb also indexes and compares properly.
JSON_COLUMNS = """
SELECT n.nspname || '.' || c.relname || '.' || a.attname AS offender
FROM pg_catalog.pg_attribute AS a
JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname::text = ANY (%(schemas)s::text[])
  AND c.relkind IN ('r', 'p')
  AND a.attnum > 0
  AND NOT a.attisdropped
  AND a.atttypid = 'json'::regtype
ORDER BY offender
"""


def find_offenders(conn: psycopg.Connection[Any], query: LiteralString) -> list[str]:
    """Run one rule's query over the agentdb schemas and return the offenders it names."""
    rows = conn.execute(query, {"schemas": APP_SCHEMAS}).fetchall()
    return [row[0] for row in rows]


def test_every_table_name_is_plural_snake_case(migrated_conn: psycopg.Connection[Any]) -> None:
    offenders = find_offenders(migrated_conn, TABLES_NOT_PLURAL_SNAKE_CASE)
    assert not offenders, offenders


def test_every_column_name_is_snake_case(migrated_conn: psycopg.Connection[Any]) -> None:
    offenders = find_offenders(migrated_conn, COLUMNS_NOT_SNAKE_CASE)
    assert not offenders, offenders


def test_every_table_has_uuid_primary_key_named_pk_table(
    migrated_conn: psycopg.Connection[Any],
) -> None:
    offenders = find_offenders(migrated_conn, TABLES_WITHOUT_UUID_PRIMARY_KEY_NAMED_PK_TABLE)
    assert not offenders, offenders


def test_every_table_has_created_at_and_updated_at_timestamptz_not_null_default_now(
    migrated_conn: psycopg.Connection[Any],
) -> None:
    offenders = find_offenders(
        migrated_conn, CREATED_AT_UPDATED_AT_NOT_TIMESTAMPTZ_NOT_NULL_DEFAULT_NOW
    )
    assert not offenders, offenders


def test_every_table_has_before_update_trigger_calling_agentdb_set_updated_at(
    migrated_conn: psycopg.Connection[Any],
) -> None:
    offenders = find_offenders(migrated_conn, TABLES_WITHOUT_UPDATED_AT_TRIGGER)
    assert not offenders, offenders


def test_every_boolean_column_starts_with_is_or_has(
    migrated_conn: psycopg.Connection[Any],
) -> None:
    offenders = find_offenders(migrated_conn, BOOLEAN_COLUMNS_WITHOUT_IS_OR_HAS_PREFIX)
    assert not offenders, offenders


def test_every_foreign_key_is_named_fk_table_referenced_table(
    migrated_conn: psycopg.Connection[Any],
) -> None:
    offenders = find_offenders(migrated_conn, FOREIGN_KEYS_NOT_NAMED_FK_TABLE_REFERENCED_TABLE)
    assert not offenders, offenders


def test_every_foreign_key_column_ends_in_id(migrated_conn: psycopg.Connection[Any]) -> None:
    offenders = find_offenders(migrated_conn, FOREIGN_KEY_COLUMNS_NOT_ENDING_IN_ID)
    assert not offenders, offenders


def test_every_column_referencing_an_id_is_named_referenced_singular_id(
    migrated_conn: psycopg.Connection[Any],
) -> None:
    offenders = find_offenders(
        migrated_conn, FOREIGN_KEY_COLUMNS_NOT_NAMED_AFTER_REFERENCED_SINGULAR
    )
    assert not offenders, offenders


def test_every_unique_constraint_and_unique_index_is_named_uq_table(
    migrated_conn: psycopg.Connection[Any],
) -> None:
    offenders = find_offenders(migrated_conn, UNIQUE_CONSTRAINTS_AND_INDEXES_NOT_NAMED_UQ_TABLE)
    assert not offenders, offenders


def test_every_check_constraint_is_named_ck_table(
    migrated_conn: psycopg.Connection[Any],
) -> None:
    offenders = find_offenders(migrated_conn, CHECK_CONSTRAINTS_NOT_NAMED_CK_TABLE)
    assert not offenders, offenders


def test_every_non_unique_index_is_named_idx_table(
    migrated_conn: psycopg.Connection[Any],
) -> None:
    offenders = find_offenders(migrated_conn, NON_UNIQUE_INDEXES_NOT_NAMED_IDX_TABLE)
    assert not offenders, offenders


def test_every_foreign_key_has_an_index_led_by_its_first_column(
    migrated_conn: psycopg.Connection[Any],
) -> None:
    offenders = find_offenders(migrated_conn, FOREIGN_KEYS_WITHOUT_INDEX_ON_LEADING_COLUMN)
    assert not offenders, offenders


def test_no_enum_types_in_app_schemas(migrated_conn: psycopg.Connection[Any]) -> None:
    offenders = find_offenders(migrated_conn, ENUM_TYPES)
    assert not offenders, offenders


def test_every_deleted_at_is_nullable_timestamptz(
    migrated_conn: psycopg.Connection[Any],
) -> None:
    offenders = find_offenders(migrated_conn, DELETED_AT_NOT_NULLABLE_TIMESTAMPTZ)
    assert not offenders, offenders


def test_every_schema_exists_and_has_a_comment(migrated_conn: psycopg.Connection[Any]) -> None:
    offenders = find_offenders(migrated_conn, SCHEMAS_WITHOUT_COMMENT)
    assert not offenders, offenders


def test_every_table_has_a_comment(migrated_conn: psycopg.Connection[Any]) -> None:
    offenders = find_offenders(migrated_conn, TABLES_WITHOUT_COMMENT)
    assert not offenders, offenders


def test_every_column_has_a_comment(migrated_conn: psycopg.Connection[Any]) -> None:
    offenders = find_offenders(migrated_conn, COLUMNS_WITHOUT_COMMENT)
    assert not offenders, offenders


def test_every_function_has_a_comment(migrated_conn: psycopg.Connection[Any]) -> None:
    offenders = find_offenders(migrated_conn, FUNCTIONS_WITHOUT_COMMENT)
    assert not offenders, offenders


def test_every_metadata_data_input_jsonb_column_is_a_not_null_object(
    migrated_conn: psycopg.Connection[Any],
) -> None:
    offenders = find_offenders(migrated_conn, JSON_OBJECT_COLUMNS_NOT_NOT_NULL_OBJECTS)
    assert not offenders, offenders


def test_every_timestamp_column_has_a_time_zone(migrated_conn: psycopg.Connection[Any]) -> None:
    offenders = find_offenders(migrated_conn, TIMESTAMP_COLUMNS_WITHOUT_TIME_ZONE)
    assert not offenders, offenders


def test_every_text_column_is_text_or_varchar_with_length(
    migrated_conn: psycopg.Connection[Any],
) -> None:
    offenders = find_offenders(migrated_conn, TEXT_COLUMNS_NOT_TEXT_OR_BOUNDED_VARCHAR)
    assert not offenders, offenders


def test_no_column_is_json_rather_than_jsonb(migrated_conn: psycopg.Connection[Any]) -> None:
    offenders = find_offenders(migrated_conn, JSON_COLUMNS)
    assert not offenders, offenders


# A table, type and function that break every rule above at once. They exist only inside a
# transaction that is rolled back.
CREATE_RULE_BREAKERS: list[LiteralString] = [
    """
    CREATE TABLE messaging.badthing (
        "Flag" boolean,
        label char(3),
        note varchar,
        seen timestamp,
        payload json,
        data jsonb,
        deleted_at timestamp NOT NULL DEFAULT now(),
        parent uuid REFERENCES messaging.chats (id),
        CONSTRAINT positive_label CHECK (label <> ''),
        UNIQUE (note)
    )
    """,
    "CREATE INDEX ON messaging.badthing (seen)",
    # Led by the foreign key, but partial on another column: the key's lookup cannot use it.
    "CREATE INDEX idx_badthing_parent ON messaging.badthing (parent) WHERE note IS NOT NULL",
    "CREATE TYPE messaging.badthing_mood AS ENUM ('ok')",
    "CREATE FUNCTION messaging.badthing_fn() RETURNS integer LANGUAGE sql AS 'SELECT 1'",
    "COMMENT ON SCHEMA telegram IS NULL",
]

# Each rule's query, and the offender it must name once the rule breakers exist.
RULE_BREAKER_CASES = [
    pytest.param(query, expected, id=name)
    for name, query, expected in [
        ("plural_snake_case_tables", TABLES_NOT_PLURAL_SNAKE_CASE, "messaging.badthing"),
        ("snake_case_columns", COLUMNS_NOT_SNAKE_CASE, "messaging.badthing.Flag"),
        (
            "uuid_primary_key",
            TABLES_WITHOUT_UUID_PRIMARY_KEY_NAMED_PK_TABLE,
            "messaging.badthing",
        ),
        (
            "created_at_updated_at",
            CREATED_AT_UPDATED_AT_NOT_TIMESTAMPTZ_NOT_NULL_DEFAULT_NOW,
            "messaging.badthing.created_at",
        ),
        ("updated_at_trigger", TABLES_WITHOUT_UPDATED_AT_TRIGGER, "messaging.badthing"),
        (
            "boolean_prefix",
            BOOLEAN_COLUMNS_WITHOUT_IS_OR_HAS_PREFIX,
            "messaging.badthing.Flag",
        ),
        (
            "foreign_key_name",
            FOREIGN_KEYS_NOT_NAMED_FK_TABLE_REFERENCED_TABLE,
            "messaging.badthing: badthing_parent_fkey",
        ),
        (
            "foreign_key_column_suffix",
            FOREIGN_KEY_COLUMNS_NOT_ENDING_IN_ID,
            "messaging.badthing.parent",
        ),
        (
            "foreign_key_column_singular",
            FOREIGN_KEY_COLUMNS_NOT_NAMED_AFTER_REFERENCED_SINGULAR,
            "messaging.badthing.parent",
        ),
        (
            "unique_name",
            UNIQUE_CONSTRAINTS_AND_INDEXES_NOT_NAMED_UQ_TABLE,
            "messaging.badthing: badthing_note_key",
        ),
        (
            "check_name",
            CHECK_CONSTRAINTS_NOT_NAMED_CK_TABLE,
            "messaging.badthing: positive_label",
        ),
        (
            "index_name",
            NON_UNIQUE_INDEXES_NOT_NAMED_IDX_TABLE,
            "messaging.badthing: badthing_seen_idx",
        ),
        (
            "foreign_key_index",
            FOREIGN_KEYS_WITHOUT_INDEX_ON_LEADING_COLUMN,
            "messaging.badthing: badthing_parent_fkey",
        ),
        ("enum_types", ENUM_TYPES, "messaging.badthing_mood"),
        ("deleted_at", DELETED_AT_NOT_NULLABLE_TIMESTAMPTZ, "messaging.badthing.deleted_at"),
        ("schema_comment", SCHEMAS_WITHOUT_COMMENT, "telegram"),
        ("table_comment", TABLES_WITHOUT_COMMENT, "messaging.badthing"),
        ("column_comment", COLUMNS_WITHOUT_COMMENT, "messaging.badthing.label"),
        ("function_comment", FUNCTIONS_WITHOUT_COMMENT, "messaging.badthing_fn()"),
        (
            "json_object_columns",
            JSON_OBJECT_COLUMNS_NOT_NOT_NULL_OBJECTS,
            "messaging.badthing.data",
        ),
        ("timestamptz", TIMESTAMP_COLUMNS_WITHOUT_TIME_ZONE, "messaging.badthing.seen"),
        (
            "text_types",
            TEXT_COLUMNS_NOT_TEXT_OR_BOUNDED_VARCHAR,
            "messaging.badthing.label: character(3)",
        ),
        ("jsonb_not_json", JSON_COLUMNS, "messaging.badthing.payload"),
    ]
]


@pytest.mark.parametrize(("query", "expected_offender"), RULE_BREAKER_CASES)
def test_each_rule_query_names_an_object_that_breaks_it(
    migrated_conn: psycopg.Connection[Any], query: LiteralString, expected_offender: str
) -> None:
    with migrated_conn.transaction(force_rollback=True):
        for statement in CREATE_RULE_BREAKERS:
            migrated_conn.execute(statement)
        offenders = find_offenders(migrated_conn, query)
    assert expected_offender in offenders, offenders
