"""Row factories that build Pydantic row models without re-validating what PostgreSQL
already guarantees (types, NOT NULL, CHECK constraints).

A row model's fields are exactly its statement's columns, so a row needs none of
`model_construct`'s work (aliases, defaults, extras): the factory sets the instance's
`__dict__` and fields-set directly, which is what `model_construct` ends with. Models with
private attributes, a post-init hook or extra fields, or a statement whose columns are not
exactly the model's fields, go through `model_construct`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from psycopg.rows import BaseRowFactory, RowMaker
from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_new = object.__new__
# BaseModel's slots, set the way model_construct sets them (object.__setattr__), a little
# faster through the slot descriptors themselves.
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def model_rows(model: type[M]) -> BaseRowFactory[M]:
    """A psycopg row factory returning `model` instances built from the columns by name."""
    fields = sorted(model.model_fields)
    plain = (
        not model.__private_attributes__
        and not model.__pydantic_post_init__
        and not model.__pydantic_root_model__
        and model.model_config.get("extra") != "allow"
    )
    makers: dict[tuple[str, ...], RowMaker[M]] = {}

    def factory(cursor: Any) -> RowMaker[M]:
        names = column_names(cursor)
        maker = makers.get(names)
        if maker is None:
            maker = makers[names] = _row_maker(model, names, plain and sorted(names) == fields)
        return maker

    return factory


def column_names(cursor: Any) -> tuple[str, ...]:
    """The names of the current result's columns, read from the result itself (building
    `cursor.description` makes a Column object per column on every execute)."""
    result = cursor.pgresult
    if result is None:
        return ()
    return tuple(result.fname(i).decode() for i in range(result.nfields))


def _row_maker(model: type[M], names: tuple[str, ...], direct: bool) -> RowMaker[M]:
    if not direct:
        construct = model.model_construct

        def construct_row(values: Sequence[Any]) -> M:
            return construct(**dict(zip(names, values, strict=True)))

        return construct_row

    fields_set = frozenset(names)

    def make_row(values: Sequence[Any]) -> M:
        row: M = _new(model)
        row.__dict__.update(zip(names, values))  # noqa: B905 (a value per column)
        _set_fields_set(row, set(fields_set))
        _set_extra(row, None)
        _set_private(row, None)
        return row

    return make_row


T = TypeVar("T")


def returned(row: T | None) -> T:
    """The row of an INSERT … RETURNING, which always returns one."""
    if row is None:
        raise RuntimeError("INSERT … RETURNING returned no row")
    return row
