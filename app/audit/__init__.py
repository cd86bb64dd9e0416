"""Schema `audit`: the append-only trail of changes, an owner's erasure, the retention purge.

The audit triggers record every update, soft delete and delete of user content, and these
functions record every erasure and purge, in audit.events: who (role and actor), whose data,
which table and row, which columns — never the content. `models` holds the row models,
`queries` the SQL and the functions; everything is importable from `app.audit` directly.
"""

from app.audit.models import AUDIT_OPERATIONS, AuditEvent, AuditOperation, ErasureReport
from app.audit.queries import erase_owner, list_audit_events, purge_deleted

__all__ = [
    "AUDIT_OPERATIONS",
    "AuditEvent",
    "AuditOperation",
    "ErasureReport",
    "erase_owner",
    "list_audit_events",
    "purge_deleted",
]
