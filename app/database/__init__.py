"""Connections, transactions, errors, the embedded server and migrations."""

from app.database.config import DatabaseConfig
from app.database.errors import (
    AccessDeniedError,
    AgentDBError,
    ConflictError,
    DatabaseUnavailableError,
    ForeignKeyError,
    InvalidInputError,
    NotFoundError,
    QueryTimeoutError,
    SchemaNotMigratedError,
    TransactionAbortedError,
    TransactionRetryError,
)
from app.database.manager import DatabaseManager
from app.database.pagination import Page

__all__ = [
    "AccessDeniedError",
    "AgentDBError",
    "ConflictError",
    "DatabaseConfig",
    "DatabaseManager",
    "DatabaseUnavailableError",
    "ForeignKeyError",
    "InvalidInputError",
    "NotFoundError",
    "Page",
    "QueryTimeoutError",
    "SchemaNotMigratedError",
    "TransactionAbortedError",
    "TransactionRetryError",
]
