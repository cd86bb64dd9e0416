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
def _watching_slow_statements(
    report: SlowStatementReport | None, after: float
) -> Iterator[None]:
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
                and recorded[migration.id] != file_checksum(migration)
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
            if migration.id not in recorded or accept:
                # Applied by plain yoyo (no checksum yet), or drift accepted: record the file as is.
                conn.execute(UPSERT_CHECKSUM, [migration.id, current])
            elif recorded[migration.id] != current:
                drifted.append(migration.id)
        if drifted:
            raise MigrationError(
                "checksum drift: applied migration(s) edited after they were applied: "
                + ", ".join(f"{m}.sql" for m in drifted)
                + " (restore the file and put the change in a new migration;"
                " --accept-drift records the files as they are now)"
            )


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
    """On a throwaway database of the server at `conninfo`: apply all; re-run every forward file
    verbatim in psql (no error, identical schema); roll all back (domain schemas gone); apply
    again (schema identical to the first apply). Raises MigrationError on the first failure."""
    name = f"agentdb_verify_{secrets.token_hex(4)}"
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
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
    """`pg_dump --schema-only` of everything but the migration bookkeeping tables."""
    target, env = _client_env(conninfo)
    result = subprocess.run(
        [
            str(embedded.binary("pg_dump")),
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "--restrict-key=agentdb",
            "--exclude-table=public._yoyo_*",
            "--exclude-table=public.yoyo_lock",
            "--exclude-table=public._agentdb_migration_checksum",
            "-d",
            target,
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    if result.returncode != 0:
        raise MigrationError(f"pg_dump failed: {result.stderr.strip()}")
    return result.stdout


def _diff(before: str, after: str) -> str:
    import difflib

    lines = difflib.unified_diff(
        before.splitlines(), after.splitlines(), "first apply", "now", lineterm="", n=1
    )
    return "\n".join(list(lines)[:60])
