"""`agentdb inspect`: the database's health on one screen, read from the catalog.

Row counts (live and soft-deleted) and sizes per table, index sizes and validity, the
execution queue by agent and status, stale runs, and the migration head with any drift.
Everything is read in one read-only, repeatable-read transaction: inspecting writes nothing
and sees one moment of the database. One function, `inspect_database`, returns a typed
result that both outputs (the terminal tables and `--json`) are made from.

Row counts are exact (`count(*)`) for a table whose planner estimate (`pg_class.reltuples`)
is below `exact_below` rows or that has no estimate yet (never vacuumed or analyzed); above
it they are the estimate, and the soft-deleted share comes from the statistics of
`deleted_at` (its null fraction). `is_exact` says which a count is.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict

from app.database.errors import translate
from app.database.migrations import Migrator

__all__ = [
    "DatabaseInspection",
    "IndexHealth",
    "MigrationHealth",
    "QueueGroup",
    "StaleRun",
    "TableHealth",
    "inspect_database",
    "print_inspection",
]

# The schemas the migrations create: the tables of these are agentdb's.
AGENTDB_SCHEMAS = ("messaging", "tasks", "agents", "telegram", "knowledge", "audit")

# Below this estimate a table is counted exactly; a count(*) of 100,000 narrow rows takes a
# few tens of milliseconds, of a large table seconds or minutes.
EXACT_COUNT_BELOW = 100_000

SELECT_SERVER = """
SELECT pg_catalog.current_database(),
       pg_catalog.current_setting('server_version'),
       pg_catalog.pg_database_size(pg_catalog.current_database()),
       pg_catalog.now()
"""

# The user tables of `schemas` (or only those named in `tables`, as schema.table), their
# sizes, the planner's row estimate, and whether they have deleted_at with its null fraction.
SELECT_TABLES = """
SELECT namespace.nspname,
       class.relname,
       pg_catalog.pg_table_size(class.oid),
       pg_catalog.pg_indexes_size(class.oid),
       pg_catalog.pg_total_relation_size(class.oid),
       class.reltuples,
       EXISTS (
           SELECT FROM pg_catalog.pg_attribute AS attribute
           WHERE attribute.attrelid = class.oid
             AND attribute.attname = 'deleted_at'
             AND NOT attribute.attisdropped
       ),
       (
           SELECT stats.null_frac
           FROM pg_catalog.pg_stats AS stats
           WHERE stats.schemaname = namespace.nspname
             AND stats.tablename = class.relname
             AND stats.attname = 'deleted_at'
             AND NOT stats.inherited
       )
FROM pg_catalog.pg_class AS class
JOIN pg_catalog.pg_namespace AS namespace ON namespace.oid = class.relnamespace
WHERE class.relkind IN ('r', 'p')
  AND namespace.nspname = ANY(%(schemas)s)
  AND (%(tables)s::text[] IS NULL OR namespace.nspname || '.' || class.relname = ANY(%(tables)s))
ORDER BY namespace.nspname, class.relname
"""

# Identifiers from the catalog (SELECT_TABLES), quoted by sql.Identifier.
COUNT_ROWS = sql.SQL("SELECT count(*), NULL::bigint FROM {table}")
COUNT_LIVE_AND_DELETED_ROWS = sql.SQL(
    "SELECT count(*) FILTER (WHERE deleted_at IS NULL),"
    " count(*) FILTER (WHERE deleted_at IS NOT NULL)"
    " FROM {table}"
)

# Largest first; an index left invalid by a failed CREATE INDEX CONCURRENTLY has
# indisvalid = false (the planner never uses it, writes still maintain it).
SELECT_INDEXES = """
SELECT namespace.nspname || '.' || index.relname,
       namespace.nspname || '.' || tab.relname,
       pg_catalog.pg_relation_size(index.oid),
       pg_index.indisvalid
FROM pg_catalog.pg_index
JOIN pg_catalog.pg_class AS index ON index.oid = pg_index.indexrelid
JOIN pg_catalog.pg_class AS tab ON tab.oid = pg_index.indrelid
JOIN pg_catalog.pg_namespace AS namespace ON namespace.oid = tab.relnamespace
WHERE namespace.nspname = ANY(%(schemas)s)
ORDER BY pg_catalog.pg_relation_size(index.oid) DESC, 1
"""

SELECT_QUEUE_TABLE = "SELECT pg_catalog.to_regclass('agents.executions') IS NOT NULL"

# One row per agent and status; for queued runs, the earliest run_after of those already due
# (how long the longest-waiting run has waited; a run backing off to a later time is not late).
SELECT_QUEUE = """
SELECT agent_name,
       status,
       count(*),
       min(run_after) FILTER (WHERE status = 'queued' AND run_after <= pg_catalog.now())
FROM agents.executions
GROUP BY agent_name, status
ORDER BY agent_name, status
"""

# Running runs whose worker has not been heard of for `stale_after` (the worker's own test for
# taking a run back), oldest heartbeat first, with how many there are in all.
SELECT_STALE_RUNS = """
SELECT id,
       agent_name,
       worker_id,
       heartbeat_at,
       attempt,
       count(*) OVER ()
FROM agents.executions
WHERE status = 'running'
  AND coalesce(heartbeat_at, started_at) < pg_catalog.now() - %(stale_after)s
ORDER BY coalesce(heartbeat_at, started_at)
LIMIT %(limit)s
"""
STALE_RUNS_SHOWN = 20


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True)


class TableHealth(_Result):
    """One table: its rows (live, and soft-deleted where it has deleted_at) and sizes."""

    name: str
    rows: int
    deleted_rows: int | None
    is_exact: bool
    table_bytes: int
    index_bytes: int
    total_bytes: int


class IndexHealth(_Result):
    """One index: its size and whether the planner may use it."""

    name: str
    table: str
    bytes: int
    is_valid: bool


class QueueGroup(_Result):
    """Executions of one agent in one status."""

    agent_name: str
    status: str
    count: int
    oldest_queued_at: datetime | None


class StaleRun(_Result):
    """A running execution whose heartbeat is older than the threshold."""

    id: UUID
    agent_name: str
    worker_id: str | None
    heartbeat_at: datetime | None
    attempt: int


class MigrationHealth(_Result):
    """The applied head, what is pending, and applied files edited since (drift)."""

    head: str | None
    applied: int
    pending: list[str]
    drifted: list[str]
    missing_files: list[str]


class DatabaseInspection(_Result):
    """Everything `agentdb inspect` shows (`--json` prints this model as JSON)."""

    database: str
    server_version: str
    database_bytes: int
    inspected_at: datetime
    tables: list[TableHealth]
    indexes: list[IndexHealth]
    invalid_indexes: list[str]
    queue: list[QueueGroup]
    stale_after_seconds: float
    stale_runs: list[StaleRun]
    stale_run_count: int
    migrations: MigrationHealth


def inspect_database(
    conninfo: str,
    *,
    stale_after: timedelta = timedelta(seconds=30),
    migrations_dir: Path | None = None,
    exact_below: int = EXACT_COUNT_BELOW,
) -> DatabaseInspection:
    """Read the health of the database at `conninfo` (writes nothing); AgentDBError on failure."""
    try:
        migrations = _migration_health(Migrator(conninfo, migrations_dir))
        with psycopg.connect(conninfo) as conn:
            conn.read_only = True
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            row = conn.execute(SELECT_SERVER).fetchone()
            assert row is not None
            database, version, database_bytes, now = row
            tables = table_health(conn, exact_below=exact_below)
            indexes = [
                IndexHealth(name=name, table=table, bytes=size, is_valid=valid)
                for name, table, size, valid in conn.execute(
                    SELECT_INDEXES, {"schemas": list(AGENTDB_SCHEMAS)}
                )
            ]
            queue, stale, stale_count = _queue(conn, stale_after)
    except psycopg.Error as error:
        raise translate(error) from None
    return DatabaseInspection(
        database=database,
        server_version=version,
        database_bytes=database_bytes,
        inspected_at=now,
        tables=tables,
        indexes=indexes,
        invalid_indexes=[index.name for index in indexes if not index.is_valid],
        queue=queue,
        stale_after_seconds=stale_after.total_seconds(),
        stale_runs=stale,
        stale_run_count=stale_count,
        migrations=migrations,
    )


def table_health(
    conn: psycopg.Connection[Any],
    tables: Sequence[str] | None = None,
    *,
    exact_below: int = EXACT_COUNT_BELOW,
) -> list[TableHealth]:
    """Rows and sizes of agentdb's tables (or of those of `tables`, as schema.table, that
    exist), counted exactly below `exact_below` estimated rows, else estimated."""
    rows = conn.execute(
        SELECT_TABLES,
        {"schemas": list(AGENTDB_SCHEMAS), "tables": list(tables) if tables is not None else None},
    ).fetchall()
    result = []
    for schema, name, table_bytes, index_bytes, total_bytes, estimate, soft, null_frac in rows:
        if estimate < exact_below:  # also -1: no estimate yet
            statement = COUNT_LIVE_AND_DELETED_ROWS if soft else COUNT_ROWS
            counted = conn.execute(statement.format(table=sql.Identifier(schema, name))).fetchone()
            assert counted is not None
            live, deleted = counted
            exact = True
        else:
            total = round(estimate)
            deleted = round(total * (1 - null_frac)) if soft and null_frac is not None else None
            live = total - (deleted or 0)
            exact = False
        result.append(
            TableHealth(
                name=f"{schema}.{name}",
                rows=live,
                deleted_rows=deleted,
                is_exact=exact,
                table_bytes=table_bytes,
                index_bytes=index_bytes,
                total_bytes=total_bytes,
            )
        )
    return result


def _queue(
    conn: psycopg.Connection[Any], stale_after: timedelta
) -> tuple[list[QueueGroup], list[StaleRun], int]:
    exists = conn.execute(SELECT_QUEUE_TABLE).fetchone()
    if exists is None or not exists[0]:
        return [], [], 0
    groups = [
        QueueGroup(agent_name=agent, status=status, count=count, oldest_queued_at=oldest)
        for agent, status, count, oldest in conn.execute(SELECT_QUEUE)
    ]
    stale_rows = conn.execute(
        SELECT_STALE_RUNS, {"stale_after": stale_after, "limit": STALE_RUNS_SHOWN}
    ).fetchall()
    stale = [
        StaleRun(id=id, agent_name=agent, worker_id=worker, heartbeat_at=beat, attempt=attempt)
        for id, agent, worker, beat, attempt, _ in stale_rows
    ]
    return groups, stale, stale_rows[0][5] if stale_rows else 0


def _migration_health(migrator: Migrator) -> MigrationHealth:
    statuses = migrator.status()
    applied = [row for row in statuses if row.applied_at is not None]
    files = [row for row in applied if not row.is_missing_file]
    return MigrationHealth(
        head=files[-1].id if files else (applied[-1].id if applied else None),
        applied=len(applied),
        pending=[row.id for row in statuses if row.applied_at is None],
        drifted=[row.id for row in statuses if row.is_drifted],
        missing_files=[row.id for row in statuses if row.is_missing_file],
    )


# The terminal view ---------------------------------------------------------------------------

LARGEST_INDEXES_SHOWN = 5


def print_inspection(inspection: DatabaseInspection, console: Any = None) -> None:
    """Print `inspection` as a few rich tables (one screen), to `console` or stdout."""
    from rich.console import Console
    from rich.table import Table

    if console is not None:
        out = console
    else:  # a pipe gets the width of a wide terminal rather than rich's default of 80
        out = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    migrations = inspection.migrations
    drift = (
        f"[red]DRIFT: {', '.join(migrations.drifted)} edited after applied[/red]"
        if migrations.drifted
        else "no drift"
    )
    pending = f"{len(migrations.pending)} pending" if migrations.pending else "none pending"
    missing = (
        f", files missing for {', '.join(migrations.missing_files)}"
        if migrations.missing_files
        else ""
    )
    out.print(
        f"database [bold]{inspection.database}[/bold]: PostgreSQL {inspection.server_version}, "
        f"{_size(inspection.database_bytes)}"
    )
    out.print(
        f"migrations: head {migrations.head or '(none applied)'}, {migrations.applied} applied, "
        f"{pending}, {drift}{missing}"
    )

    if not inspection.tables:
        out.print("no agentdb tables here: run `agentdb migrate`")
        return
    tables = Table(title="tables (~ estimated)", title_justify="left")
    for column in ("table", "rows", "soft-deleted", "table size", "index size", "total"):
        tables.add_column(column, justify="left" if column == "table" else "right")
    for table in inspection.tables:
        mark = "" if table.is_exact else "~"
        deleted = "" if table.deleted_rows is None else f"{mark}{table.deleted_rows:,}"
        tables.add_row(
            table.name,
            f"{mark}{table.rows:,}",
            deleted,
            _size(table.table_bytes),
            _size(table.index_bytes),
            _size(table.total_bytes),
        )
    out.print(tables)

    invalid = [index for index in inspection.indexes if not index.is_valid]
    largest = [index for index in inspection.indexes if index.is_valid][:LARGEST_INDEXES_SHOWN]
    indexes = Table(
        title=f"indexes: {len(inspection.indexes)}, "
        + (f"[red]{len(invalid)} INVALID[/red]" if invalid else "none invalid")
        + f"; the {len(largest)} largest",
        title_justify="left",
    )
    for column in ("index", "table", "size", "valid"):
        indexes.add_column(column, justify="right" if column == "size" else "left")
    for index in invalid + largest:
        valid = "yes" if index.is_valid else "[red]NO[/red] (rebuild: REINDEX … CONCURRENTLY)"
        indexes.add_row(index.name, index.table, _size(index.bytes), valid)
    out.print(indexes)

    queue = Table(title="queue (agents.executions)", title_justify="left")
    for column in ("agent", "status", "runs", "oldest due since (UTC)"):
        queue.add_column(column, justify="right" if column == "runs" else "left")
    for group in inspection.queue:
        queue.add_row(
            group.agent_name,
            group.status,
            f"{group.count:,}",
            _time(group.oldest_queued_at),
        )
    if inspection.queue:
        out.print(queue)
    else:
        out.print("queue (agents.executions): empty")

    stale_title = (
        f"stale runs (running, no heartbeat for {inspection.stale_after_seconds:g} s): "
        f"{inspection.stale_run_count}"
    )
    if not inspection.stale_runs:
        out.print(stale_title)
        return
    stale = Table(title=f"[red]{stale_title}[/red]", title_justify="left")
    for column in ("execution", "agent", "worker", "last heartbeat (UTC)", "attempt"):
        stale.add_column(column)
    for run in inspection.stale_runs:
        stale.add_row(
            str(run.id),
            run.agent_name,
            run.worker_id or "",
            _time(run.heartbeat_at),
            str(run.attempt),
        )
    out.print(stale)


def _size(count: int) -> str:
    """Bytes as pg_size_pretty prints them (bytes, kB, MB, GB, TB; 1024 each)."""
    size = float(count)
    for unit in ("bytes", "kB", "MB", "GB"):
        if abs(size) < 10 * 1024 or unit == "GB":
            return f"{size:.0f} {unit}"
        size /= 1024
    return f"{size:.0f} TB"


def _time(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else ""
