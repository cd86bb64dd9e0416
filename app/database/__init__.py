"""Connections, transactions, errors, the embedded server and migrations."""

from app.database.config import DatabaseConfig
from app.database.errors import (
    AgentDBError,
    ConflictError,
    DatabaseUnavailableError,
    ForeignKeyError,
    InvalidInputError,
    NotFoundError,
)
from app.database.manager import DatabaseManager

__all__ = [
    "AgentDBError",
    "ConflictError",
    "DatabaseConfig",
    "DatabaseManager",
    "DatabaseUnavailableError",
    "ForeignKeyError",
    "InvalidInputError",
    "NotFoundError",
]
