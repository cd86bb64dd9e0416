"""apply / rollback / status / verify / new, on top of yoyo's API.

yoyo runs each `.sql` file (in one transaction unless it says `-- transactional: false`) and
marks it in `_yoyo_migration`. What we add:
- a PostgreSQL advisory lock around all of it, held by a connection of its own, so two
  migrators never interleave and a killed one leaves no lock behind;
- the sha256 of every applied file in `public._agentdb_migration_checksum`, so a file edited
  after it was applied is reported instead of silently ignored;
- errors that name the file and the statement that failed;
- `verify`: proof on a throwaway database that every file is idempotent and reversible.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from yoyo import read_migrations
from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend
from yoyo.connections import DatabaseURI
from yoyo.exceptions import BadMigration
from yoyo.migrations import Migration, MigrationList

from app.database import embedded

__all__ = [
    "MigrationError",
    "MigrationStatus",
    "Migrator",
    "default_migrations_dir",
    "new_migration",
    "schema_snapshot",
    "verify",
]

DOMAIN_SCHEMAS = ("messaging", "tasks", "agents", "telegram")

# Any constant bigint works; this one is 'agentdb' in ASCII, so it is recognisable in pg_locks.
ADVISORY_LOCK_KEY = 0x6167656E746462

# Polled, never waited for inside a statement: a waiting statement keeps a transaction open,
# and CREATE INDEX CONCURRENTLY in the lock holder waits for every open transaction, so the
# two would wait for each other where PostgreSQL cannot see it.
TRY_MIGRATION_LOCK = "SELECT pg_catalog.pg_try_advisory_lock(%s)"
LOCK_POLL_SECONDS = 0.25
LOCK_WAIT_SECONDS = 600

CREATE_CHECKSUM_TABLE = """
CREATE TABLE IF NOT EXISTS public._agentdb_migration_checksum (
    migration_id text PRIMARY KEY,
    sha256 text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
)
"""

SELECT_CHECKSUMS = "SELECT migration_id, sha256 FROM public._agentdb_migration_checksum"

# Checksums an applied migration may have recorded before one of its files was changed on
# purpose: a database holding one is not drifted, and records the file as it is now.
# 0001's rollback was `DROP EXTENSION IF EXISTS vector`, which failed for an owner of the
# schemas who is not the extension's and dropped a vector a superuser had installed; it now
# drops vector only if the migrations installed it (see its header and migration 0000).
EARLIER_CHECKSUMS = {
    "0001_create_vector_extension": {
        "e13e86533521a0439b4a5994679e1ff7e4eb375372ec98f9bb2e90a3ea521101",
    },
}

UPSERT_CHECKSUM = """
INSERT INTO public._agentdb_migration_checksum (migration_id, sha256)
VALUES (%s, %s)
ON CONFLICT (migration_id) DO UPDATE SET sha256 = excluded.sha256, recorded_at = now()
"""

DELETE_CHECKSUM = "DELETE FROM public._agentdb_migration_checksum WHERE migration_id = %s"

# yoyo keeps its tables in the connection's current schema and records applied_at_utc as a
# timestamp without time zone, in UTC; we read its table where it put it.
SELECT_APPLIED = "SELECT migration_id, applied_at_utc FROM _yoyo_migration"

# `status` reads without writing: yoyo creates its tables on connect, so status looks for them
# first (yoyo's on the search_path, where yoyo puts and finds them; ours in public).
SELECT_BOOKKEEPING_TABLES = """
SELECT pg_catalog.to_regclass('_yoyo_migration') IS NOT NULL,
       pg_catalog.to_regclass('public._agentdb_migration_checksum') IS NOT NULL
"""

# How long a migration statement runs before `on_slow_statement` hears of it.
SLOW_STATEMENT_SECONDS = 5.0

SELECT_DOMAIN_SCHEMAS = "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname = ANY(%s)"

# schema_snapshot ---------------------------------------------------------------------------
# Each statement describes one kind of object, one text line per object, from pg_catalog: what
# the migrations made (schemas, relations with their options and privileges, columns, constraints,
# indexes, functions, triggers, policies, types, statistics objects, default privileges,
# extensions, comments). Objects made by initdb (oid below 16384, FirstNormalObjectId), objects
# an extension owns and the bookkeeping tables are left out. Owners are left out (the role that
# migrates owns everything), and so are column options a server build may add on its own: of
# the attribute options only n_distinct and n_distinct_inherited are settable, and kept.

SET_EMPTY_SEARCH_PATH = "SET search_path = ''"

# The migration bookkeeping: yoyo's tables and our checksum table.
BOOKKEEPING_TABLES = [
    "_yoyo_migration",
    "_yoyo_log",
    "_yoyo_version",
    "yoyo_lock",
    "_agentdb_migration_checksum",
]

SNAPSHOT_SCHEMAS = """
SELECT pg_catalog.concat_ws(' ', 'schema', pg_catalog.quote_ident(n.nspname),
    'acl=' || ARRAY(SELECT a::text FROM pg_catalog.unnest(n.nspacl) AS a ORDER BY 1)::text)
FROM pg_catalog.pg_namespace AS n
WHERE (n.oid >= 16384 OR n.nspname = 'public')
  AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
"""

# Tables, views, materialized views, sequences and foreign tables, with what ALTER TABLE sets.
SNAPSHOT_RELATIONS = """
SELECT pg_catalog.concat_ws(' ', 'relation', c.oid::pg_catalog.regclass::text,
    'kind=' || c.relkind::text, 'persistence=' || c.relpersistence::text,
    'rls=' || c.relrowsecurity, 'force_rls=' || c.relforcerowsecurity,
    'replica_identity=' || c.relreplident::text,
    'options=' || ARRAY(SELECT o FROM pg_catalog.unnest(c.reloptions) AS o ORDER BY 1)::text,
    'acl=' || ARRAY(SELECT a::text FROM pg_catalog.unnest(c.relacl) AS a ORDER BY 1)::text,
    'partition_key=' || pg_catalog.pg_get_partkeydef(c.oid),
    'partition_of=' || pg_catalog.pg_get_expr(c.relpartbound, c.oid),
    'view=' || CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END,
    'sequence=' || (
        SELECT pg_catalog.concat_ws(',', s.seqtypid::pg_catalog.regtype::text, s.seqstart,
            s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle)
        FROM pg_catalog.pg_sequence AS s
        WHERE s.seqrelid = c.oid
    ))
FROM pg_catalog.pg_class AS c
WHERE c.oid >= 16384
  AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND c.relpersistence <> 't'
  AND c.relname <> ALL(%(bookkeeping)s)
  AND c.relnamespace <> 'pg_toast'::pg_catalog.regnamespace
  AND NOT EXISTS (
      SELECT 1 FROM pg_catalog.pg_depend AS d
      WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
        AND d.objid = c.oid
        AND d.deptype = 'e'
  )
"""

# Columns in their order (dropped ones left out), with type, default, nullability, generation.
SNAPSHOT_COLUMNS = """
SELECT pg_catalog.concat_ws(' ', 'column', c.oid::pg_catalog.regclass::text,
    pg_catalog.quote_ident(a.attname),
    'position=' || pg_catalog.row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
    pg_catalog.format_type(a.atttypid, a.atttypmod),
    CASE WHEN a.attnotnull THEN 'not null' END,
    'default=' || pg_catalog.pg_get_expr(ad.adbin, ad.adrelid),
    'identity=' || NULLIF(a.attidentity::text, ''),
    'generated=' || NULLIF(a.attgenerated::text, ''),
    'collation=' || CASE WHEN a.attcollation <> t.typcollation
                         THEN a.attcollation::pg_catalog.regcollation::text END,
    'storage=' || a.attstorage::text,
    'compression=' || NULLIF(a.attcompression::text, ''),
    'statistics=' || NULLIF(a.attstattarget, -1),
    'options=' || NULLIF(ARRAY(
        SELECT o FROM pg_catalog.unnest(a.attoptions) AS o
        WHERE o LIKE 'n\\_distinct%%' ORDER BY 1
    )::text, '{}'),
    'acl=' || ARRAY(SELECT x::text FROM pg_catalog.unnest(a.attacl) AS x ORDER BY 1)::text)
FROM pg_catalog.pg_attribute AS a
JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
LEFT JOIN pg_catalog.pg_attrdef AS ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
WHERE c.oid >= 16384
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
  AND c.relname <> ALL(%(bookkeeping)s)
  AND a.attnum > 0
  AND NOT a.attisdropped
  AND NOT EXISTS (
      SELECT 1 FROM pg_catalog.pg_depend AS d
      WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
        AND d.objid = c.oid
        AND d.deptype = 'e'
  )
"""

# Table and domain constraints.
SNAPSHOT_CONSTRAINTS = """
SELECT pg_catalog.concat_ws(' ', 'constraint',
    COALESCE(con.conrelid::pg_catalog.regclass::text, con.contypid::pg_catalog.regtype::text),
    pg_catalog.quote_ident(con.conname), pg_catalog.pg_get_constraintdef(con.oid),
    CASE WHEN NOT con.convalidated THEN 'not validated' END)
FROM pg_catalog.pg_constraint AS con
LEFT JOIN pg_catalog.pg_class AS c ON c.oid = con.conrelid
WHERE con.oid >= 16384
  AND (c.relname IS NULL OR c.relname <> ALL(%(bookkeeping)s))
  AND NOT EXISTS (
      SELECT 1 FROM pg_catalog.pg_depend AS d
      WHERE d.objid IN (con.conrelid, con.contypid)
        AND d.deptype = 'e'
  )
"""

SNAPSHOT_INDEXES = """
SELECT pg_catalog.concat_ws(' ', 'index', pg_catalog.pg_get_indexdef(i.indexrelid),
    CASE WHEN NOT i.indisvalid THEN 'invalid' END,
    CASE WHEN i.indisclustered THEN 'clustered' END,
    CASE WHEN i.indisreplident THEN 'replica identity' END,
    'options=' || ARRAY(SELECT o FROM pg_catalog.unnest(ic.reloptions) AS o ORDER BY 1)::text)
FROM pg_catalog.pg_index AS i
JOIN pg_catalog.pg_class AS ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_class AS c ON c.oid = i.indrelid
WHERE ic.oid >= 16384
  AND c.relname <> ALL(%(bookkeeping)s)
  AND c.relnamespace <> 'pg_toast'::pg_catalog.regnamespace
  AND NOT EXISTS (
      SELECT 1 FROM pg_catalog.pg_depend AS d
      WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
        AND d.objid = c.oid
        AND d.deptype = 'e'
  )
"""

# Functions and procedures by their full definition (language, volatility, cost, settings,
# security), aggregates and window functions by their signature; with their privileges.
SNAPSHOT_FUNCTIONS = """
SELECT pg_catalog.concat_ws(' ', 'function', p.oid::pg_catalog.regprocedure::text,
    CASE WHEN p.prokind IN ('f', 'p') THEN pg_catalog.pg_get_functiondef(p.oid)
         ELSE 'kind=' || p.prokind::text END,
    'acl=' || ARRAY(SELECT a::text FROM pg_catalog.unnest(p.proacl) AS a ORDER BY 1)::text)
FROM pg_catalog.pg_proc AS p
WHERE p.oid >= 16384
  AND NOT EXISTS (
      SELECT 1 FROM pg_catalog.pg_depend AS d
      WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
        AND d.objid = p.oid
        AND d.deptype = 'e'
  )
"""

SNAPSHOT_TRIGGERS = """
SELECT pg_catalog.concat_ws(' ', 'trigger', pg_catalog.pg_get_triggerdef(t.oid),
    'enabled=' || t.tgenabled::text)
FROM pg_catalog.pg_trigger AS t
JOIN pg_catalog.pg_class AS c ON c.oid = t.tgrelid
WHERE NOT t.tgisinternal
  AND c.relname <> ALL(%(bookkeeping)s)
"""

SNAPSHOT_POLICIES = """
SELECT pg_catalog.concat_ws(' ', 'policy', pol.polrelid::pg_catalog.regclass::text,
    pg_catalog.quote_ident(pol.polname),
    CASE WHEN pol.polpermissive THEN 'permissive' ELSE 'restrictive' END,
    'command=' || pol.polcmd::text,
    'roles=' || ARRAY(
        SELECT CASE WHEN r = 0 THEN 'public' ELSE r::pg_catalog.regrole::text END
        FROM pg_catalog.unnest(pol.polroles) AS r ORDER BY 1
    )::text,
    'using=' || pg_catalog.pg_get_expr(pol.polqual, pol.polrelid),
    'check=' || pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid))
FROM pg_catalog.pg_policy AS pol
JOIN pg_catalog.pg_class AS c ON c.oid = pol.polrelid
WHERE c.relname <> ALL(%(bookkeeping)s)
"""

# Enums, domains, composite and range types (a table's row type and array types come with
# the table and the element type).
SNAPSHOT_TYPES = """
SELECT pg_catalog.concat_ws(' ', 'type', t.oid::pg_catalog.regtype::text,
    'kind=' || t.typtype::text,
    'base=' || CASE WHEN t.typtype = 'd'
                    THEN pg_catalog.format_type(t.typbasetype, t.typtypmod) END,
    CASE WHEN t.typnotnull THEN 'not null' END,
    'default=' || t.typdefault,
    'labels=' || CASE WHEN t.typtype = 'e' THEN ARRAY(
        SELECT e.enumlabel::text FROM pg_catalog.pg_enum AS e
        WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder
    )::text END,
    'acl=' || ARRAY(SELECT a::text FROM pg_catalog.unnest(t.typacl) AS a ORDER BY 1)::text)
FROM pg_catalog.pg_type AS t
LEFT JOIN pg_catalog.pg_class AS c ON c.oid = t.typrelid
WHERE t.oid >= 16384
  AND t.typtype IN ('e', 'd', 'c', 'r', 'm')
  AND (c.relkind IS NULL OR c.relkind = 'c')
  AND NOT EXISTS (
      SELECT 1 FROM pg_catalog.pg_depend AS d
      WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass
        AND d.objid = t.oid
        AND d.deptype = 'e'
  )
"""

SNAPSHOT_STATISTICS = """
SELECT 'statistics ' || pg_catalog.pg_get_statisticsobjdef(s.oid)
FROM pg_catalog.pg_statistic_ext AS s
JOIN pg_catalog.pg_class AS c ON c.oid = s.stxrelid
WHERE c.relname <> ALL(%(bookkeeping)s)
"""

SNAPSHOT_DEFAULT_PRIVILEGES = """
SELECT pg_catalog.concat_ws(' ', 'default privileges',
    'schema=' || COALESCE(dacl.defaclnamespace::pg_catalog.regnamespace::text, '*'),
    'objects=' || dacl.defaclobjtype::text,
    'acl=' || ARRAY(SELECT a::text FROM pg_catalog.unnest(dacl.defaclacl) AS a ORDER BY 1)::text)
FROM pg_catalog.pg_default_acl AS dacl
"""

SNAPSHOT_EXTENSIONS = """
SELECT pg_catalog.concat_ws(' ', 'extension', pg_catalog.quote_ident(e.extname),
    'version=' || e.extversion, 'schema=' || e.extnamespace::pg_catalog.regnamespace::text)
FROM pg_catalog.pg_extension AS e
WHERE e.oid >= 16384
"""

# The COMMENT of every object above (an extension's own objects and initdb's left out).
SNAPSHOT_COMMENTS = """
SELECT pg_catalog.concat_ws(' ', 'comment',
    pg_catalog.pg_describe_object(dsc.classoid, dsc.objoid, dsc.objsubid), '=', dsc.description)
FROM pg_catalog.pg_description AS dsc
LEFT JOIN pg_catalog.pg_class AS c
    ON dsc.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND c.oid = dsc.objoid
WHERE dsc.objoid >= 16384
  AND (c.relname IS NULL OR c.relname <> ALL(%(bookkeeping)s))
  AND NOT EXISTS (
      SELECT 1 FROM pg_catalog.pg_depend AS d
      WHERE d.classid = dsc.classoid
        AND d.objid = dsc.objoid
        AND d.deptype = 'e'
  )
"""

# Those that take the bookkeeping tables' names (%(bookkeeping)s), then those that need none.
SNAPSHOT_TABLE_STATEMENTS = (
    SNAPSHOT_RELATIONS,
    SNAPSHOT_COLUMNS,
    SNAPSHOT_CONSTRAINTS,
    SNAPSHOT_INDEXES,
    SNAPSHOT_TRIGGERS,
    SNAPSHOT_POLICIES,
    SNAPSHOT_STATISTICS,
    SNAPSHOT_COMMENTS,
)
SNAPSHOT_STATEMENTS = (
    SNAPSHOT_SCHEMAS,
    SNAPSHOT_FUNCTIONS,
    SNAPSHOT_TYPES,
    SNAPSHOT_DEFAULT_PRIVILEGES,
    SNAPSHOT_EXTENSIONS,
)


FORWARD_TEMPLATE = Template("""\
-- $title
--
-- What this migration does and why, in a sentence or two.
--
-- Rules (README.md, "Writing a migration"): one logical change per file; the file must be
-- idempotent, so running it again verbatim in psql changes nothing; every object is
-- schema-qualified and gets a COMMENT. An applied file is never edited: a change is a new file.
-- For CREATE INDEX CONCURRENTLY, put `-- transactional: false` on the first line instead.

CREATE TABLE IF NOT EXISTS messaging.example_things (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    name varchar(200) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_example_things PRIMARY KEY (id)
);

CREATE INDEX IF NOT EXISTS idx_example_things_name ON messaging.example_things (name);

CREATE OR REPLACE TRIGGER trg_example_things_updated_at
    BEFORE UPDATE ON messaging.example_things
    FOR EACH ROW EXECUTE FUNCTION public.agentdb_set_updated_at();

-- A change with no IF NOT EXISTS form goes in a guarded DO block.
DO $$$$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_constraint
        WHERE conname = 'ck_example_things_name_not_blank'
          AND conrelid = 'messaging.example_things'::regclass
    ) THEN
        ALTER TABLE messaging.example_things
            ADD CONSTRAINT ck_example_things_name_not_blank CHECK (btrim(name) <> '');
    END IF;
END
$$$$;

COMMENT ON TABLE messaging.example_things IS 'What one row is, for a reader of \\d+.';
COMMENT ON COLUMN messaging.example_things.id IS 'Primary key.';
COMMENT ON COLUMN messaging.example_things.name IS 'What it is called; never blank.';
COMMENT ON COLUMN messaging.example_things.created_at IS 'When the row was inserted.';
COMMENT ON COLUMN messaging.example_things.updated_at IS 'Last change; kept by a trigger.';
""")

ROLLBACK_TEMPLATE = Template("""\
-- Rollback of $migration_id.sql: drops exactly what it created, nothing more.
--
-- No CASCADE: fails while an object of a later migration still depends on it.
-- Re-runnable: DROP ... IF EXISTS.

DROP TABLE IF EXISTS messaging.example_things;
""")


class MigrationError(RuntimeError):
    """A migration command failed; the message is one line naming the file at fault."""


@dataclass(frozen=True)
class MigrationStatus:
    id: str
    applied_at: datetime | None
    is_drifted: bool
    is_missing_file: bool = False


def default_migrations_dir() -> Path:
    """`$AGENTDB_MIGRATIONS`, else `database/migrations` of the checkout, else the packaged copy."""
    configured = os.environ.get("AGENTDB_MIGRATIONS")
    if configured:
        return Path(configured).resolve()
    checkout = embedded.project_root() / "database" / "migrations"
    if checkout.is_dir():
        return checkout
    return Path(__file__).resolve().parents[1] / "_migrations"


def file_checksum(migration: Migration) -> str:
    """sha256 of the forward file and its rollback file."""
    digest = hashlib.sha256(Path(migration.path).read_bytes())
    rollback = Path(migration.path).with_suffix(".rollback.sql")
    if rollback.exists():
        digest.update(b"\0rollback\0")
        digest.update(rollback.read_bytes())
    return digest.hexdigest()


# (statement, seconds so far, finished): told once when a statement has run for
# `after` seconds, and again when it ends. Set around an apply or rollback (the statements run
# in the calling thread; the first report comes from a timer thread).
SlowStatementReport = Callable[[str, float, bool], None]
_slow_statement_watch: ContextVar[tuple[float, SlowStatementReport] | None] = ContextVar(
    "agentdb_slow_statement_watch", default=None
)


@contextmanager
def _watching_slow_statements(report: SlowStatementReport | None, after: float) -> Iterator[None]:
    token = _slow_statement_watch.set((after, report) if report is not None else None)
    try:
        yield
    finally:
        _slow_statement_watch.reset(token)


@contextmanager
def _timed(query: Any) -> Iterator[None]:
    """Tell the watch of this context (if any) about `query` once it is slow, and when it ends."""
    watch = _slow_statement_watch.get()
    if watch is None:
        yield
        return
    after, report = watch
    text = _one_line(query, 120)
    started = time.monotonic()
    timer = threading.Timer(after, report, (text, after, False))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        elapsed = time.monotonic() - started
        if elapsed >= after:
            report(text, elapsed, True)


class _StatementCursor(psycopg.Cursor[Any]):
    """Remembers, on the error, which statement of a migration file failed, and reports
    statements that run long (`_timed`)."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> _StatementCursor:
        try:
            with _timed(query):
                super().execute(query, params, **kwargs)
        except psycopg.Error as error:
            error.agentdb_statement = query  # type: ignore[attr-defined]
            raise
        return self


class _Backend(PostgresqlPsycopgBackend):  # type: ignore[misc]
    """yoyo's psycopg 3 backend, connecting with a libpq conninfo instead of its URL parser."""

    def connect(self, dburi: DatabaseURI) -> psycopg.Connection[Any]:
        conn = psycopg.connect(dburi.args["conninfo"], autocommit=True)
        conn.cursor_factory = _StatementCursor
        return conn


def _yoyo_uri(conninfo: str) -> DatabaseURI:
    dbname = conninfo_to_dict(conninfo).get("dbname")
    return DatabaseURI("postgresql+psycopg", None, None, None, None, dbname, {"conninfo": conninfo})


class Migrator:
    """Migration commands against one database (`conninfo`: a libpq URL or key=value string)."""

    def __init__(self, conninfo: str, migrations_dir: Path | None = None) -> None:
        self.conninfo = conninfo
        self.migrations_dir = migrations_dir or default_migrations_dir()

    def migrations(self) -> MigrationList:
        """The migrations in the folder, in order (MigrationError when there is no folder)."""
        if not self.migrations_dir.is_dir():
            raise MigrationError(f"no migrations directory at {self.migrations_dir}")
        return read_migrations(str(self.migrations_dir))

    @contextmanager
    def _locked(self) -> Iterator[tuple[psycopg.Connection[Any], Any]]:
        """The advisory lock, a connection for our bookkeeping, and a yoyo backend."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            _acquire_migration_lock(conn)
            conn.execute(CREATE_CHECKSUM_TABLE)
            backend = _Backend(_yoyo_uri(self.conninfo), "_yoyo_migration")
            try:
                backend.init_database()
                backend.ensure_internal_schema_updated()
                yield conn, backend
            finally:
                backend.connection.close()

    def status(self) -> list[MigrationStatus]:
        """Every migration file, applied or pending, and applied ids whose file is gone.

        Writes nothing: on a database never migrated, every file is pending and no
        bookkeeping table is created (it runs in a read-only transaction, without the lock).
        """
        migrations = self.migrations()
        with psycopg.connect(self.conninfo) as conn:
            conn.read_only = True
            row = conn.execute(SELECT_BOOKKEEPING_TABLES).fetchone()
            has_yoyo, has_checksums = row if row is not None else (False, False)
            applied: dict[str, datetime] = (
                dict(conn.execute(SELECT_APPLIED).fetchall()) if has_yoyo else {}
            )
            recorded: dict[str, str] = (
                dict(conn.execute(SELECT_CHECKSUMS).fetchall()) if has_checksums else {}
            )
        result = []
        for migration in migrations:
            applied_at = applied.pop(migration.id, None)
            drifted = (
                applied_at is not None
                and migration.id in recorded
                and _is_drifted(migration.id, recorded[migration.id], file_checksum(migration))
            )
            result.append(MigrationStatus(migration.id, _utc(applied_at), drifted))
        for missing_id, applied_at in sorted(applied.items()):
            result.append(MigrationStatus(missing_id, _utc(applied_at), False, True))
        return result

    def apply(
        self,
        *,
        accept_drift: bool = False,
        on_applied: Callable[[str], None] | None = None,
        on_slow_statement: SlowStatementReport | None = None,
        slow_after: float = SLOW_STATEMENT_SECONDS,
    ) -> list[str]:
        """Apply pending migrations in order; return their ids.

        Refuses (before applying anything) when an applied file was edited since, unless
        `accept_drift`, which records the files' current checksums instead.
        `on_slow_statement(statement, seconds, finished)` hears of every statement that runs
        longer than `slow_after` seconds: once when it has run that long, once when it ends.
        """
        migrations = self.migrations()
        with (
            self._locked() as (conn, backend),
            _watching_slow_statements(on_slow_statement, slow_after),
        ):
            self._check_drift(conn, backend, migrations, accept_drift)
            done = []
            for migration in backend.to_apply(migrations):
                _run(backend.apply_one, migration)
                conn.execute(UPSERT_CHECKSUM, [migration.id, file_checksum(migration)])
                done.append(migration.id)
                if on_applied:
                    on_applied(migration.id)
            return done

    def rollback(
        self,
        *,
        count: int | None = 1,
        to: str | None = None,
        on_rolled_back: Callable[[str], None] | None = None,
        confirm: Callable[[list[Path]], bool] | None = None,
        on_slow_statement: SlowStatementReport | None = None,
        slow_after: float = SLOW_STATEMENT_SECONDS,
    ) -> list[str]:
        """Roll back the last `count` applied migrations, or all those applied after `to`.

        `confirm(rollback_files)`, called under the migration lock with the `.rollback.sql`
        files about to run (in order), may refuse: then nothing is rolled back.
        """
        migrations = self.migrations()
        if to is not None and to not in {m.id for m in migrations}:
            raise MigrationError(f"--to {to}: no such migration in {self.migrations_dir}")
        with (
            self._locked() as (conn, backend),
            _watching_slow_statements(on_slow_statement, slow_after),
        ):
            candidates = list(backend.to_rollback(migrations))
            if to is not None:
                ids = [m.id for m in candidates]
                if to not in ids:
                    raise MigrationError(f"--to {to}: that migration is not applied")
                candidates = candidates[: ids.index(to)]
            elif count is not None:
                candidates = candidates[:count]
            files = [Path(m.path).with_suffix(".rollback.sql") for m in candidates]
            if candidates and confirm is not None and not confirm(files):
                return []
            done = []
            for migration in candidates:
                _run(backend.rollback_one, migration)
                conn.execute(DELETE_CHECKSUM, [migration.id])
                done.append(migration.id)
                if on_rolled_back:
                    on_rolled_back(migration.id)
            return done

    def _check_drift(
        self, conn: psycopg.Connection[Any], backend: Any, migrations: MigrationList, accept: bool
    ) -> None:
        applied = set(backend.get_applied_migration_hashes())
        recorded = dict(conn.execute(SELECT_CHECKSUMS).fetchall())
        drifted = []
        for migration in migrations:
            if migration.hash not in applied:
                continue
            current = file_checksum(migration)
            stored = recorded.get(migration.id)
            if stored == current:
                continue
            if stored is not None and not accept and _is_drifted(migration.id, stored, current):
                drifted.append(migration.id)
            else:
                # Applied by plain yoyo (no checksum yet), drift accepted, or a checksum from
                # before a file was changed on purpose (EARLIER_CHECKSUMS): record the file.
                conn.execute(UPSERT_CHECKSUM, [migration.id, current])
        if drifted:
            raise MigrationError(
                "checksum drift: applied migration(s) edited after they were applied: "
                + ", ".join(f"{m}.sql" for m in drifted)
                + " (restore the file and put the change in a new migration;"
                " --accept-drift records the files as they are now)"
            )


def _is_drifted(migration_id: str, recorded: str, current: str) -> bool:
    """Whether an applied migration's files differ from those recorded when it ran (a checksum
    from before an intended change, EARLIER_CHECKSUMS, is no drift)."""
    return recorded != current and recorded not in EARLIER_CHECKSUMS.get(migration_id, set())


def _acquire_migration_lock(conn: psycopg.Connection[Any]) -> None:
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while not _fetch_bool(conn, TRY_MIGRATION_LOCK, ADVISORY_LOCK_KEY):
        if time.monotonic() > deadline:
            raise MigrationError(
                f"another migrator has held the migration lock for {LOCK_WAIT_SECONDS} s"
                " (see pg_locks where locktype = 'advisory')"
            )
        time.sleep(LOCK_POLL_SECONDS)


def _fetch_bool(conn: psycopg.Connection[Any], query: Any, *params: Any) -> bool:
    row = conn.execute(query, params).fetchone()
    return bool(row and row[0])


def _run(step: Callable[[Migration], None], migration: Migration) -> None:
    """Run a yoyo apply/rollback of one migration, turning failures into a one-line error."""
    try:
        step(migration)
    except psycopg.Error as error:
        statement = getattr(error, "agentdb_statement", None)
        where = f" at statement `{_one_line(statement)}`" if statement else ""
        reason = error.diag.message_primary or str(error).strip()
        raise MigrationError(f"{Path(migration.path).name} failed{where}: {reason}") from error
    except BadMigration as error:
        raise MigrationError(f"{Path(migration.path).name} cannot be read: {error}") from error


def _one_line(statement: Any, limit: int = 160) -> str:
    text = re.sub(r"\s+", " ", str(statement)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None else None


def new_migration(name: str, migrations_dir: Path | None = None) -> tuple[Path, Path]:
    """Create the next-numbered forward and rollback files from the template."""
    directory = migrations_dir or default_migrations_dir()
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not slug:
        raise MigrationError(f"NAME {name!r}: use letters and digits, e.g. add_todo_tags")
    numbers = [
        int(m.group(1)) for p in directory.glob("*.sql") if (m := re.match(r"(\d+)_", p.name))
    ]
    migration_id = f"{max(numbers, default=0) + 1:04d}_{slug}"
    forward = directory / f"{migration_id}.sql"
    rollback = directory / f"{migration_id}.rollback.sql"
    title = slug.replace("_", " ").capitalize()
    forward.write_text(FORWARD_TEMPLATE.substitute(title=title))
    rollback.write_text(ROLLBACK_TEMPLATE.substitute(migration_id=migration_id))
    return forward, rollback


# verify ------------------------------------------------------------------------------------


def verify(
    conninfo: str, migrations_dir: Path | None = None, log: Callable[[str], None] = print
) -> None:
    """Check the migrations on a throwaway database of the server at `conninfo`.

    Apply all; re-run every forward file verbatim in psql (no error, identical schema); roll
    all back (domain schemas gone); apply again (schema identical to the first apply).
    Raises MigrationError on the first failure."""
    name = f"agentdb_verify_{secrets.token_hex(4)}"
    with psycopg.connect(conninfo, autocommit=True) as admin:
        try:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege:
            role = admin.info.user
            raise MigrationError(
                f"verify needs CREATEDB: role {role} may not create the throwaway database it"
                f" works on (as a superuser: ALTER ROLE {role} CREATEDB)"
            ) from None
        try:
            _verify_on(make_conninfo(conninfo, dbname=name), migrations_dir, log)
        finally:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _verify_on(conninfo: str, migrations_dir: Path | None, log: Callable[[str], None]) -> None:
    migrator = Migrator(conninfo, migrations_dir)
    applied = migrator.apply()
    log(f"applied {len(applied)} migrations")
    first = schema_snapshot(conninfo)

    for migration in migrator.migrations():
        run_psql_file(conninfo, Path(migration.path))
    if schema_snapshot(conninfo) != first:
        raise MigrationError(
            "not idempotent: running the forward files again changed the schema\n"
            + _diff(first, schema_snapshot(conninfo))
        )
    log(f"re-ran {len(applied)} forward files verbatim in psql: no error, schema unchanged")

    rolled_back = migrator.rollback(count=None)
    with psycopg.connect(conninfo) as conn:
        left = [row[0] for row in conn.execute(SELECT_DOMAIN_SCHEMAS, [list(DOMAIN_SCHEMAS)])]
    if left:
        raise MigrationError(f"rollback incomplete: schema(s) {', '.join(left)} still exist")
    log(f"rolled back {len(rolled_back)} migrations: domain schemas gone")

    migrator.apply()
    again = schema_snapshot(conninfo)
    if again != first:
        raise MigrationError(
            "rollback is not exact: re-applying gives another schema\n" + _diff(first, again)
        )
    log("applied again: schema identical to the first apply")


def _client_env(conninfo: str) -> tuple[str, dict[str, str]]:
    """conninfo without the password (that goes in PGPASSWORD, out of `ps`), and the env."""
    params = conninfo_to_dict(conninfo)
    env = dict(os.environ)
    password = params.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = str(password)
    return make_conninfo("", **params), env


def run_psql_file(conninfo: str, path: Path) -> None:
    """Run one file with psql exactly as a person would (autocommit, stop on first error)."""
    target, env = _client_env(conninfo)
    result = subprocess.run(
        [
            str(embedded.binary("psql")),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            target,
            "-f",
            str(path),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    if result.returncode != 0:
        raise MigrationError(
            f"not idempotent: {path.name} fails when run again: {result.stderr.strip()}"
        )


def schema_snapshot(conninfo: str) -> str:
    """A description of every object the migrations create, read from pg_catalog.

    An entry per object, sorted (a function's body spans lines), without the migration
    bookkeeping tables; the same schema gives the same text on any server build."""
    entries: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # Names print schema-qualified whatever the role's search_path.
        conn.execute(SET_EMPTY_SEARCH_PATH)
        bookkeeping = {"bookkeeping": BOOKKEEPING_TABLES}
        for statement in SNAPSHOT_TABLE_STATEMENTS:
            entries.extend(row[0] for row in conn.execute(statement, bookkeeping))
        for statement in SNAPSHOT_STATEMENTS:
            entries.extend(row[0] for row in conn.execute(statement))
    return "\n".join(sorted(entries)) + "\n"


def _diff(before: str, after: str) -> str:
    import difflib

    lines = difflib.unified_diff(
        before.splitlines(), after.splitlines(), "first apply", "now", lineterm="", n=1
    )
    return "\n".join(list(lines)[:60])
