"""The error types callers catch, and the one place psycopg's errors are mapped onto them.

    AgentDBError
    ├── NotFoundError             the row to update or delete does not exist
    ├── ConflictError             unique violation, a transition not allowed, a fenced call
    ├── ForeignKeyError           a referenced row is missing, or a row is still referenced
    ├── InvalidInputError         bad input, CHECK / NOT NULL, a value too large for the server
    ├── AccessDeniedError         insufficient privilege, a row-level-security check
    ├── SchemaNotMigratedError    a relation or column is missing: run `agentdb migrate`
    ├── TransactionAbortedError   an earlier statement failed: the transaction must roll back
    ├── TransactionRetryError     serialization failure or deadlock: retry it   (retryable)
    ├── QueryTimeoutError         statement or lock timeout, cancellation       (retryable)
    └── DatabaseUnavailableError  cannot connect, pool timeout, connection lost (retryable)

Every message names the field or the constraint at fault. None of them carries a password:
psycopg's own messages name host and database, never credentials.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import psycopg
import psycopg_pool
from psycopg import errors as pg

P = ParamSpec("P")
R = TypeVar("R")


class AgentDBError(Exception):
    """Base of every error agentdb raises on purpose.

    `field` or `constraint` names what is at fault (when something is); `retryable` says
    whether running the same transaction again may succeed (True) or the input or the
    program must change first (False).
    """

    retryable: bool = False

    def __init__(self, message: str, *, field: str | None = None, constraint: str | None = None):
        super().__init__(message)
        self.field = field
        self.constraint = constraint


class NotFoundError(AgentDBError, LookupError):
    """The row to update or delete does not exist (or is soft-deleted)."""


class ConflictError(AgentDBError):
    """A unique violation, or a state transition that is not allowed. Also a fenced call
    from a worker that no longer holds the execution."""


class ForeignKeyError(AgentDBError):
    """A referenced row does not exist, or a row is still referenced."""


class InvalidInputError(AgentDBError, ValueError):
    """The input is not valid; `field` or `constraint` names it. It failed validation before
    any SQL ran, violated a CHECK / NOT NULL constraint, or is a value the server refuses as
    too large."""


class AccessDeniedError(AgentDBError, PermissionError):
    """The database role may not do this (a missing privilege or a row-level-security check)."""


class SchemaNotMigratedError(AgentDBError):
    """A table, column or function the code needs is missing: the database is not migrated."""


class TransactionAbortedError(AgentDBError):
    """An earlier statement of this transaction failed, so it can only roll back. The
    message names that first error (also in `first_error`)."""

    def __init__(self, message: str, *, first_error: AgentDBError | None = None):
        super().__init__(message)
        self.first_error = first_error


class TransactionRetryError(AgentDBError):
    """A serialization failure or a deadlock: run the whole transaction again."""

    retryable = True


class QueryTimeoutError(AgentDBError, TimeoutError):
    """A statement or lock timeout, or a cancelled statement."""

    retryable = True


class DatabaseUnavailableError(AgentDBError):
    """The server cannot be reached (with its reason), no pooled connection became free in
    time, or the connection was lost."""

    retryable = True


# The latest error each connection's transaction raised, so that leaving `db.session()` on an
# aborted transaction can name it. Weak keys: a closed connection takes its entry with it.
_last_errors: weakref.WeakKeyDictionary[Any, AgentDBError] = weakref.WeakKeyDictionary()

# Server errors about a value's size, raised without a column name. A tsvector is only ever
# generated from a `content` column in this schema, so that is the field a too-long one names.
_TOO_LARGE = (pg.ProgramLimitExceeded, pg.StatementTooComplex)


def translate(error: BaseException) -> AgentDBError:
    """The agentdb error for a psycopg (or pool) error, naming the constraint or column."""
    if isinstance(error, AgentDBError):
        return error
    if isinstance(error, psycopg_pool.PoolTimeout | psycopg_pool.TooManyRequests):
        return DatabaseUnavailableError(f"no database connection available: {error}")
    if isinstance(error, psycopg_pool.PoolClosed):
        return DatabaseUnavailableError(f"the connection pool is closed: {error}")
    if not isinstance(error, psycopg.Error):
        return AgentDBError(f"{type(error).__name__}: {error}")

    diag = error.diag
    constraint = diag.constraint_name
    column = diag.column_name
    table = diag.table_name
    where = f"{diag.schema_name}.{table}" if diag.schema_name and table else table
    primary = diag.message_primary or str(error).strip()
    detail = f" ({diag.message_detail})" if diag.message_detail else ""

    if isinstance(error, pg.UniqueViolation):
        return ConflictError(
            f"{constraint}: a row with the same key already exists in {where}{detail}",
            constraint=constraint,
        )
    if isinstance(error, pg.ForeignKeyViolation):
        return ForeignKeyError(f"{constraint}: {primary}{detail}", constraint=constraint)
    if isinstance(error, pg.CheckViolation):
        return InvalidInputError(
            f"{constraint}: the row violates the check constraint of {where}",
            constraint=constraint,
        )
    if isinstance(error, pg.NotNullViolation):
        return InvalidInputError(f"{column}: must not be null ({where})", field=column)
    if isinstance(error, pg.ExclusionViolation):
        return ConflictError(f"{constraint}: {primary}", constraint=constraint)
    if isinstance(error, pg.ReadOnlySqlTransaction):
        return AccessDeniedError(
            f"read-only: {primary} (db.read_session() and standbys only read: write in "
            "db.session())"
        )
    if isinstance(error, pg.InsufficientPrivilege):
        return AccessDeniedError(f"access denied: {primary}")
    if isinstance(error, pg.UndefinedTable | pg.UndefinedColumn | pg.InvalidSchemaName):
        return SchemaNotMigratedError(
            f"the database schema is not up to date ({primary}): run `agentdb migrate`"
        )
    if isinstance(error, pg.SerializationFailure | pg.DeadlockDetected):
        return TransactionRetryError(f"concurrent update, retry the transaction: {primary}")
    if isinstance(error, pg.QueryCanceled | pg.LockNotAvailable):
        return QueryTimeoutError(f"the statement was cancelled: {primary}")
    if isinstance(error, pg.InFailedSqlTransaction):
        return TransactionAbortedError(
            "the transaction is aborted by an earlier error; it can only roll back"
        )
    if isinstance(error, _TOO_LARGE):
        name = column or ("content" if "tsvector" in primary else None)
        return InvalidInputError(f"{name or 'value'}: too large: {primary}", field=name)
    if isinstance(error, pg.DataError):
        name = column or constraint
        return InvalidInputError(f"{name or 'value'}: {primary}", field=column)
    if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        return DatabaseUnavailableError(f"database unavailable: {str(error).strip()}")
    return AgentDBError(f"{type(error).__name__}: {primary}")


def record_error(conn: Any, error: AgentDBError) -> AgentDBError:
    """Remember `error` as the latest of `conn`'s transaction; return it. An error about the
    aborted transaction itself is told the first error instead of replacing it."""
    if isinstance(error, TransactionAbortedError):
        first = _last_errors.get(conn)
        if first is not None and error.first_error is None:
            return aborted_error(first, rolled_back=False)
        return error
    with contextlib.suppress(TypeError):  # not a connection (a test calling with something else)
        _last_errors[conn] = error
    return error


def aborted_error(first: AgentDBError | None, *, rolled_back: bool) -> TransactionAbortedError:
    """The TransactionAbortedError of a transaction that `first` aborted: raised by a later
    statement (`rolled_back=False`) or on leaving `db.session()`, which rolled it back."""
    if rolled_back:
        what = "an earlier error that was caught aborted the transaction, so it was rolled back"
        what += " and nothing of it was kept"
    else:
        what = "the transaction is aborted by an earlier error and can only roll back"
    if first is None:
        return TransactionAbortedError(what)
    return TransactionAbortedError(f"{what}: {type(first).__name__}: {first}", first_error=first)


def last_error(conn: Any) -> AgentDBError | None:
    """The latest error recorded for `conn` (see `record_error`)."""
    return _last_errors.get(conn)


def forget_errors(conn: Any) -> None:
    """Start `conn`'s next transaction with no recorded error."""
    _last_errors.pop(conn, None)


def database_errors(function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Decorate a query function `f(conn, …)` so that psycopg errors leave it as agentdb
    errors (remembered on the connection for `db.session()`), and so that no Python error
    about the arguments escapes raw."""

    @functools.wraps(function)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await function(*args, **kwargs)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
            raise record_error(args[0] if args else None, translate(error)) from error
        except (TypeError, ValueError, OverflowError, RecursionError) as error:
            if isinstance(error, AgentDBError):
                raise
            # Validation names the field of every input it knows; what reaches here is an
            # argument of a shape nothing expected.
            raise InvalidInputError(
                f"{function.__name__}: invalid argument: {type(error).__name__}: {error}",
                field="arguments",
            ) from error

    return wrapper
