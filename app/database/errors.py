"""The error types callers catch, and the one place psycopg's errors are mapped onto them.

Every message names the field or the constraint at fault. None of them carries a password:
psycopg's own messages name host and database, never credentials.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import psycopg
import psycopg_pool
from psycopg import errors as pg

P = ParamSpec("P")
R = TypeVar("R")


class AgentDBError(Exception):
    """Base of every error agentdb raises on purpose."""

    def __init__(self, message: str, *, field: str | None = None, constraint: str | None = None):
        super().__init__(message)
        self.field = field
        self.constraint = constraint


class NotFoundError(AgentDBError, LookupError):
    """The row to update or delete does not exist (or is soft-deleted)."""


class ConflictError(AgentDBError):
    """A unique violation, a lost lock race, or a state transition that is not allowed."""


class ForeignKeyError(AgentDBError):
    """A referenced row does not exist, or a row is still referenced."""


class InvalidInputError(AgentDBError, ValueError):
    """Input failed validation before any SQL ran, or violated a CHECK / NOT NULL constraint."""


class DatabaseUnavailableError(AgentDBError):
    """The server cannot be reached, or no pooled connection became free in time."""


def translate(error: BaseException) -> AgentDBError:
    """The agentdb error for a psycopg (or pool) error, naming the constraint or column."""
    if isinstance(error, AgentDBError):
        return error
    if isinstance(error, psycopg_pool.PoolTimeout):
        return DatabaseUnavailableError(f"no database connection available: {error}")
    if not isinstance(error, psycopg.Error):
        return AgentDBError(str(error))

    diag = error.diag
    constraint = diag.constraint_name
    column = diag.column_name
    table = diag.table_name
    where = f"{diag.schema_name}.{table}" if diag.schema_name and table else table
    detail = f" ({diag.message_detail})" if diag.message_detail else ""

    if isinstance(error, pg.UniqueViolation):
        return ConflictError(
            f"{constraint}: a row with the same key already exists in {where}{detail}",
            constraint=constraint,
        )
    if isinstance(error, pg.ForeignKeyViolation):
        return ForeignKeyError(
            f"{constraint}: {diag.message_primary}{detail}", constraint=constraint
        )
    if isinstance(error, pg.CheckViolation):
        return InvalidInputError(
            f"{constraint}: the row violates the check constraint of {where}",
            constraint=constraint,
        )
    if isinstance(error, pg.NotNullViolation):
        return InvalidInputError(f"{column}: must not be null ({where})", field=column)
    if isinstance(error, pg.ExclusionViolation):
        return ConflictError(f"{constraint}: {diag.message_primary}", constraint=constraint)
    if isinstance(error, pg.SerializationFailure | pg.DeadlockDetected | pg.LockNotAvailable):
        return ConflictError(f"concurrent update, retry the transaction: {diag.message_primary}")
    if isinstance(error, pg.DataError):
        name = column or constraint
        prefix = f"{name}: " if name else ""
        return InvalidInputError(f"{prefix}{diag.message_primary}", field=column)
    if isinstance(error, psycopg.OperationalError) and not isinstance(error, pg.QueryCanceled):
        return DatabaseUnavailableError(f"database unavailable: {str(error).strip()}")
    return AgentDBError(f"{type(error).__name__}: {diag.message_primary or error}")


def database_errors(function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Decorate a query function so that psycopg errors leave it as agentdb errors."""

    @functools.wraps(function)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await function(*args, **kwargs)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
            raise translate(error) from error

    return wrapper
