"""Row factories that build Pydantic row models without re-validating what PostgreSQL
already guarantees (types, NOT NULL, CHECK constraints): `model_construct`, not `__init__`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from psycopg.rows import BaseRowFactory, RowMaker
from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


def model_rows(model: type[M]) -> BaseRowFactory[M]:
    """A psycopg row factory returning `model` instances built from the columns by name."""

    def factory(cursor: Any) -> RowMaker[M]:
        names = [column.name for column in cursor.description or ()]
        construct = model.model_construct

        def make_row(values: Sequence[Any]) -> M:
            return construct(**dict(zip(names, values, strict=True)))

        return make_row

    return factory


T = TypeVar("T")


def returned(row: T | None) -> T:
    """The row of an INSERT … RETURNING, which always returns one."""
    if row is None:
        raise RuntimeError("INSERT … RETURNING returned no row")
    return row
