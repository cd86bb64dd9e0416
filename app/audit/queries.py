"""Query functions of schema `audit`: the trail, an owner's erasure, the retention purge.

SQL constants first, then the functions in the order of the public API. `list_audit_events`
never commits. `erase_owner` and `purge_deleted` are one transaction each (`conn.transaction()`:
on an autocommit connection they commit; inside `db.session()` they are a savepoint of the
caller's transaction). Both find their tables in the catalog, so a table added by a later
migration is covered without a change here, and both are meant for the schema owner or a
login of agentdb_worker: under agentdb_app, row-level security would hide other owners' rows,
and audit.record_event() refuses the role (AccessDeniedError), so nothing is kept.

`purge_in_batches` is the retention purge of tables that grow without bound (the agents'
finished executions and tool calls): many short transactions of one statement each, audited
once, for the same roles.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, LiteralString, NamedTuple
from uuid import UUID

from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

from app.audit.models import AuditEvent, AuditListInput, ErasureReport, PurgeInput
from app.database.errors import InvalidInputError, database_errors
from app.database.pagination import Page, check_limit, encode_cursor, newest_first_start, page_of
from app.database.rows import column_list, model_rows, returned
from app.database.transactions import in_transaction
from app.database.validation import as_uuid, validated

# SQL --------------------------------------------------------------------------------------

AUDIT_EVENT_COLUMNS = column_list(
    AuditEvent,
    "id, occurred_at, db_role, actor, owner_id, schema_name, table_name, row_id, operation, "
    "changed_columns, details",
)

# Three keyset pages, newest first, one per leading filter: owner_id →
# idx_events_owner_id_occurred_at, table_name → idx_events_table_name_occurred_at, neither →
# idx_events_occurred_at. `since` bounds that index's occurred_at in every one (COALESCE to
# -infinity, not an OR, so it stays an index condition and the scan stops there). The cursor
# is the last row's (occurred_at, id); the first page starts at ('infinity', the largest uuid).
SELECT_AUDIT_EVENTS_PAGE_BY_OWNER = (
    "SELECT "
    + AUDIT_EVENT_COLUMNS
    + """
FROM audit.events
WHERE owner_id = %(owner_id)s
  AND (%(table_name)s::text IS NULL OR table_name = %(table_name)s)
  AND occurred_at >= COALESCE(%(since)s::timestamptz, '-infinity')
  AND (occurred_at, id) < (%(before_occurred_at)s, %(before_id)s)
ORDER BY occurred_at DESC, id DESC
LIMIT %(limit)s
"""
)

# A generic plan of this one (a prepared statement) guesses every table equally common and
# walks idx_events_occurred_at, filtering: for a rare table, the whole trail. So it is never
# prepared (prepare=False): each run is planned for its table and takes the table's index.
SELECT_AUDIT_EVENTS_PAGE_BY_TABLE = (
    "SELECT "
    + AUDIT_EVENT_COLUMNS
    + """
FROM audit.events
WHERE table_name = %(table_name)s
  AND occurred_at >= COALESCE(%(since)s::timestamptz, '-infinity')
  AND (occurred_at, id) < (%(before_occurred_at)s, %(before_id)s)
ORDER BY occurred_at DESC, id DESC
LIMIT %(limit)s
"""
)

SELECT_AUDIT_EVENTS_PAGE = (
    "SELECT "
    + AUDIT_EVENT_COLUMNS
    + """
FROM audit.events
WHERE occurred_at >= COALESCE(%(since)s::timestamptz, '-infinity')
  AND (occurred_at, id) < (%(before_occurred_at)s, %(before_id)s)
ORDER BY occurred_at DESC, id DESC
LIMIT %(limit)s
"""
)

# The tables erasure and purge work on: every ordinary or partitioned table (a partition is
# reached through its parent) with a column of this name and type, outside the system
# schemas, the audit trail and public (yoyo's bookkeeping); with the tables each one's
# foreign keys reference, to order the deletes.
SELECT_TABLES_WITH_COLUMN = """
SELECT rel.oid,
       ns.nspname,
       rel.relname,
       ARRAY(
           SELECT DISTINCT con.confrelid
           FROM pg_catalog.pg_constraint AS con
           WHERE con.conrelid = rel.oid
             AND con.contype = 'f'
             AND con.confrelid <> rel.oid
       )
FROM pg_catalog.pg_attribute AS att
JOIN pg_catalog.pg_class AS rel ON rel.oid = att.attrelid
JOIN pg_catalog.pg_namespace AS ns ON ns.oid = rel.relnamespace
WHERE att.attname = %(column)s
  AND att.atttypid = %(type)s::pg_catalog.regtype
  AND att.attnum > 0
  AND NOT att.attisdropped
  AND rel.relkind IN ('r', 'p')
  AND NOT rel.relispartition
  AND ns.nspname NOT IN ('pg_catalog', 'information_schema', 'audit', 'public')
  AND ns.nspname !~ '^pg_'
ORDER BY ns.nspname, rel.relname
"""

# For this transaction only: the audit triggers record no event per row (for a role outside
# agentdb_app), since the whole operation is recorded as one event with its counts. Set back
# to 'off' before returning, so the caller's later changes in the same transaction are audited.
SET_BULK_OPERATION = "SELECT pg_catalog.set_config('agentdb.bulk_operation', %s, true)"

# The only statements whose identifiers vary: the schema and table come from the catalog
# (SELECT_TABLES_WITH_COLUMN) and are quoted by sql.Identifier.
DELETE_OWNER_ROWS = sql.SQL("DELETE FROM {schema}.{table} WHERE owner_id = %(owner_id)s")

# A full scan of each table: rows soft-deleted long ago are what no partial index
# (WHERE deleted_at IS NULL) holds. now() is the transaction's start: one cutoff for all tables.
DELETE_SOFT_DELETED_ROWS = sql.SQL(
    "DELETE FROM {schema}.{table} WHERE deleted_at < now() - %(older_than)s::interval"
)

# An erasure spans every table, so its event names none ('*'); its details hold the counts.
RECORD_ERASURE = """
SELECT audit.record_event('erase', '*', '*', %(owner_id)s, %(details)s)
"""

RECORD_PURGE = """
SELECT audit.record_event(
    'purge',
    %(schema_name)s,
    %(table_name)s,
    NULL,
    jsonb_build_object('deleted', %(deleted)s::bigint,
                       'cutoff', now() - %(older_than)s::interval)
)
"""

# The cutoff of a purge in batches, taken once on the server's clock (the rows' timestamps
# are the server's): every batch and the event use the same one.
SELECT_PURGE_CUTOFF = "SELECT now() - %(older_than)s::interval"

# The event of a purge in batches: its counts (`details`) and the cutoff it used.
RECORD_BATCHED_PURGE = """
SELECT audit.record_event(
    'purge',
    %(schema_name)s,
    %(table_name)s,
    NULL,
    %(details)s::jsonb || jsonb_build_object('cutoff', %(cutoff)s::timestamptz)
)
"""

AUDIT_EVENT_ROW = model_rows(AuditEvent)


class CatalogTable(NamedTuple):
    """A table found by SELECT_TABLES_WITH_COLUMN."""

    oid: int
    schema: str
    table: str
    referenced: list[int]
    """The oids of the tables its foreign keys reference (itself left out)."""

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"


# Query functions --------------------------------------------------------------------------


@database_errors
async def list_audit_events(
    conn: AsyncConnection[Any],
    *,
    owner_id: UUID | None = None,
    table_name: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[AuditEvent]:
    """Audit events matching every filter given (at or after `since`), newest first.

    Under agentdb_app, row-level security shows only the session's owner's events."""
    data = validated(AuditListInput, owner_id=owner_id, table_name=table_name, since=since)
    check_limit(limit)
    since_key = data.since.isoformat() if data.since is not None else ""
    scope = f"audit_events:{data.owner_id or ''}:{data.table_name or ''}:{since_key}"
    before_occurred_at, before_id = newest_first_start(cursor, scope)
    params = {
        "owner_id": data.owner_id,
        "table_name": data.table_name,
        "since": data.since,
        "before_occurred_at": before_occurred_at,
        "before_id": before_id,
        "limit": limit + 1,
    }
    prepare: bool | None = None
    if data.owner_id is not None:
        query = SELECT_AUDIT_EVENTS_PAGE_BY_OWNER
    elif data.table_name is not None:
        query, prepare = SELECT_AUDIT_EVENTS_PAGE_BY_TABLE, False
    else:
        query = SELECT_AUDIT_EVENTS_PAGE
    async with conn.cursor(row_factory=AUDIT_EVENT_ROW) as db_cursor:
        await db_cursor.execute(query, params, prepare=prepare)
        rows = await db_cursor.fetchall()
    return page_of(
        rows, limit, lambda event: encode_cursor(scope, event.occurred_at.isoformat(), event.id)
    )


@database_errors
async def erase_owner(conn: AsyncConnection[Any], owner_id: UUID) -> ErasureReport:
    """Hard-delete every row of `owner_id` in every table with an owner_id; one audit event.

    One transaction; tables that reference others go first, so no foreign key action has
    to remove or update a row of the owner that a later delete would remove anyway. The
    per-row audit triggers stay quiet; one 'erase' event records the counts (no content).
    Rows a concurrent transaction inserts for the owner and commits while this runs can
    survive it: stop the owner's writers first, or run it again.
    """
    owner_id = as_uuid(owner_id, "owner_id")
    async with conn.transaction():
        tables = _referencing_first(await _tables_with(conn, "owner_id", "uuid"))
        params = {"owner_id": owner_id}
        deleted = await _delete_from_each(conn, tables, DELETE_OWNER_ROWS, params)
        event = conn.cursor()
        async with conn.pipeline():
            await event.execute(RECORD_ERASURE, {**params, "details": Jsonb({"deleted": deleted})})
            await conn.execute(SET_BULK_OPERATION, ["off"])
        (event_id,) = returned(await event.fetchone())
    return ErasureReport(owner_id=owner_id, deleted=deleted, event_id=event_id)


@database_errors
async def purge_deleted(conn: AsyncConnection[Any], *, older_than: timedelta) -> dict[str, int]:
    """Hard-delete rows soft-deleted more than `older_than` ago; return the rows per table.
    Every table with a deleted_at is purged and counted ("schema.table", 0 included).

    One transaction; one 'purge' event per table that lost rows (its count and the cutoff),
    none per row. Rows referencing a purged row follow their foreign key's ON DELETE action
    (a purged chat takes its messages along; only what was itself due is counted).
    """
    data = validated(PurgeInput, older_than=older_than)
    async with conn.transaction():
        tables = _referencing_first(await _tables_with(conn, "deleted_at", "timestamptz"))
        params = {"older_than": data.older_than}
        purged = await _delete_from_each(conn, tables, DELETE_SOFT_DELETED_ROWS, params)
        async with conn.pipeline():
            for table in tables:
                if purged[table.name]:
                    event = {
                        "schema_name": table.schema,
                        "table_name": table.table,
                        "deleted": purged[table.name],
                        "older_than": data.older_than,
                    }
                    await conn.execute(RECORD_PURGE, event)
            await conn.execute(SET_BULK_OPERATION, ["off"])
    return purged


async def purge_in_batches(
    conn: AsyncConnection[Any],
    batch: LiteralString,
    *,
    older_than: timedelta,
    batch_size: int,
    schema_name: str,
    table_name: str,
    counts: Sequence[str],
) -> list[int]:
    """Run the delete statement `batch` until one run deletes fewer than `batch_size` rows;
    the totals of its counts. Each run is its own short transaction (bulk mode on: no audit
    event per row); the last one also records one 'purge' event with the totals and the cutoff
    (none when nothing was deleted).

    `batch` takes %(cutoff)s, %(after)s and %(batch_size)s and returns one row: the largest
    key it deleted (NULL when none), then one count per name in `counts` (the first is the
    rows of `table_name`). The next run starts at that key (`after`), so no batch re-reads the
    dead index entries the earlier ones left. For the schema owner or agentdb_worker. A
    connection inside a transaction (`db.session()`) is refused before any SQL runs: every
    batch would then hold its locks until the caller's commit, the one long lock this avoids.
    """
    if in_transaction(conn):
        raise InvalidInputError(
            "conn: the purge commits each batch itself: pass a connection in autocommit "
            "(db.connection()), not one inside a transaction (db.session())",
            field="conn",
        )
    cursor = await conn.execute(SELECT_PURGE_CUTOFF, {"older_than": older_than})
    (cutoff,) = returned(await cursor.fetchone())
    params: dict[str, Any] = {"cutoff": cutoff, "after": "-infinity", "batch_size": batch_size}
    totals = [0] * len(counts)
    while True:
        async with conn.transaction():
            cursor = conn.cursor()
            async with conn.pipeline():
                await conn.execute(SET_BULK_OPERATION, ["on"])
                await cursor.execute(batch, params)
            last, *deleted = returned(await cursor.fetchone())
            totals = [total + count for total, count in zip(totals, deleted, strict=True)]
            if last is not None:
                params["after"] = last
            if deleted[0] < batch_size:
                if any(totals):
                    event = {
                        "schema_name": schema_name,
                        "table_name": table_name,
                        "details": Jsonb(dict(zip(counts, totals, strict=True))),
                        "cutoff": cutoff,
                    }
                    await conn.execute(RECORD_BATCHED_PURGE, event)
                return totals


# Helpers ----------------------------------------------------------------------------------


async def _tables_with(
    conn: AsyncConnection[Any], column: str, type_name: str
) -> list[CatalogTable]:
    cursor = await conn.execute(SELECT_TABLES_WITH_COLUMN, {"column": column, "type": type_name})
    return [CatalogTable(*row) for row in await cursor.fetchall()]


async def _delete_from_each(
    conn: AsyncConnection[Any],
    tables: Sequence[CatalogTable],
    statement: sql.SQL,
    params: dict[str, Any],
) -> dict[str, int]:
    """Bulk mode on, then `statement` on each table in order, all in one pipeline (one round
    trip); the rows each deleted, by table name."""
    cursors = [conn.cursor() for _ in tables]
    async with conn.pipeline():
        await conn.execute(SET_BULK_OPERATION, ["on"])
        for table, cursor in zip(tables, cursors, strict=True):
            query = statement.format(
                schema=sql.Identifier(table.schema), table=sql.Identifier(table.table)
            )
            await cursor.execute(query, params)
    return {table.name: cursor.rowcount for table, cursor in zip(tables, cursors, strict=True)}


def _referencing_first(tables: Sequence[CatalogTable]) -> list[CatalogTable]:
    """`tables` ordered so that each comes after every table of the list that references it
    (its foreign keys' referrers); ties in catalog order. A cycle of foreign keys is broken at
    its first table in catalog order (the keys' ON DELETE actions then settle the rest)."""
    oids = {table.oid for table in tables}
    referrers: dict[int, set[int]] = {table.oid: set() for table in tables}
    for table in tables:
        for referenced in table.referenced:
            if referenced in oids:
                referrers[referenced].add(table.oid)
    ordered: list[CatalogTable] = []
    done: set[int] = set()
    pending = list(tables)
    while pending:
        ready = [table for table in pending if referrers[table.oid] <= done] or pending[:1]
        ordered.extend(ready)
        done.update(table.oid for table in ready)
        pending = [table for table in pending if table.oid not in done]
    return ordered
