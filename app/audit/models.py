"""Row and input models of schema `audit` (events), and the report of an erasure."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, get_args
from uuid import UUID

from pydantic import BaseModel, Field

from app.database.validation import Duration, InputModel, Name, Timestamp, Uuid

AuditOperation = Literal["insert", "update", "delete", "soft_delete", "erase", "purge", "grant"]
AUDIT_OPERATIONS: tuple[AuditOperation, ...] = get_args(AuditOperation)


# Row models -------------------------------------------------------------------------------


class AuditEvent(BaseModel):
    """A row of audit.events: who changed what of whose data (never the content)."""

    id: UUID
    occurred_at: datetime
    db_role: str
    actor: str | None
    owner_id: UUID | None
    schema_name: str
    table_name: str
    row_id: UUID | None
    operation: AuditOperation
    changed_columns: list[str] | None
    details: dict[str, Any]


class ErasureReport(BaseModel):
    """What `erase_owner` removed: rows per table and the id of the 'erase' event that
    records it. Tables are named "schema.table", in the order erased, those with none
    included."""

    owner_id: UUID
    deleted: dict[str, int]
    event_id: UUID


# Input models -----------------------------------------------------------------------------


class AuditListInput(InputModel):
    owner_id: Uuid | None = None
    table_name: Name | None = None
    since: Timestamp | None = None


class PurgeInput(InputModel):
    older_than: Annotated[Duration, Field(gt=timedelta(0))]
