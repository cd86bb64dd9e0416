"""A row model's column list, and row factories that build row models without
re-validating what PostgreSQL already guarantees (types, NOT NULL, CHECK constraints).

Each row model's column list is written once, as a constant checked by `column_list` against
the model's fields, and every statement returning that model is built from it. A row
model's fields are then exactly its statement's columns, so a row needs none of
`model_construct`'s work (aliases, defaults, extras): the factory sets the instance's
`__dict__` and fields-set directly, which is what `model_construct` ends with. A statement
whose columns are not the model's fields is a bug, and fails loudly at its first row.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from typing import Any, LiteralString, TypeVar

import orjson
from psycopg.rows import BaseRowFactory, RowMaker
from pydantic import BaseModel

from app.database.errors import AgentDBError

M = TypeVar("M", bound=BaseModel)

_new = object.__new__
# BaseModel's slots, set the way model_construct sets them (object.__setattr__), a little
# faster through the slot descriptors themselves.
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


class StatementColumnsError(AgentDBError):
    """A statement's columns are not its row model's fields (a bug in agentdb, not input)."""


# The name a select-list item gives its column: the last word (`x AS name`, `t.name`, `name`).
_OUTPUT_NAME = re.compile(r"(?:^|[\s.])([a-z_][a-z0-9_]*)$")


def column_list(model: type[BaseModel], columns: LiteralString) -> LiteralString:
    """`columns`, the select list of `model` (`"id, owner_id, …"`), once it is checked to
    name each of the model's fields exactly once; otherwise TypeError when the module is
    imported. Statements build on it: `"SELECT " + CHAT_COLUMNS + " FROM …"`."""
    names = [_output_name(item) for item in columns.split(",")]
    if sorted(names) != sorted(model.model_fields):
        missing = sorted(set(model.model_fields) - set(names))
        extra = sorted(set(names) - set(model.model_fields))
        raise TypeError(
            f"the column list of {model.__name__} does not match its fields: "
            f"missing {missing}, not fields {extra}, duplicates {len(names) != len(set(names))}"
        )
    return columns


def _output_name(item: str) -> str:
    match = _OUTPUT_NAME.search(item.strip())
    return match.group(1) if match else item.strip()


def model_rows(model: type[M]) -> BaseRowFactory[M]:
    """A psycopg row factory returning `model` instances built from the columns by name.

    The first result whose columns are not exactly the model's fields raises
    StatementColumnsError naming the difference.
    """
    fields = sorted(model.model_fields)
    if (
        model.__private_attributes__
        or model.__pydantic_post_init__
        or model.__pydantic_root_model__
        or model.model_config.get("extra") == "allow"
    ):
        raise TypeError(f"{model.__name__} is not a plain row model")
    makers: dict[tuple[str, ...], RowMaker[M]] = {}

    def factory(cursor: Any) -> RowMaker[M]:
        names = column_names(cursor)
        maker = makers.get(names)
        if maker is None:
            if sorted(names) != fields:
                raise StatementColumnsError(
                    f"a statement returning {model.__name__} rows has columns {list(names)}, "
                    f"not the model's fields {fields}"
                )
            maker = makers[names] = _row_maker(model, names)
        return maker

    return factory


def row_maker(model: type[M], names: Sequence[str]) -> RowMaker[M]:
    """A maker of `model` rows from values in the order of `names`, which must be exactly
    the model's fields (StatementColumnsError otherwise): for rows that hold a model among
    other columns. Made once per model and column order: row factories call it on every
    execute."""
    return _checked_row_maker(model, tuple(names))


@functools.lru_cache(maxsize=256)
def _checked_row_maker(model: type[M], names: tuple[str, ...]) -> RowMaker[M]:
    if sorted(names) != sorted(model.model_fields):
        raise StatementColumnsError(
            f"a statement returning {model.__name__} values has columns {list(names)}, "
            f"not the model's fields {sorted(model.model_fields)}"
        )
    return _row_maker(model, names)


def column_names(cursor: Any) -> tuple[str, ...]:
    """The names of the current result's columns, read from the result itself (building
    `cursor.description` makes a Column object per column on every execute)."""
    result = cursor.pgresult
    if result is None:
        return ()
    return tuple(result.fname(i).decode() for i in range(result.nfields))


def _row_maker(model: type[M], names: tuple[str, ...]) -> RowMaker[M]:
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


# A run of 19 digits: an integer that orjson may read as a float (beyond 64 bits, which jsonb
# allows), or a long fraction. Such text goes to the standard library's parser.
_LONG_NUMBER = re.compile(rb"\d{19}")


def load_json(data: str | bytes) -> Any:
    """`json.loads(data)`, the same value, mostly through orjson (ten times faster on the
    small objects rows hold: metadata, FSM data, inputs). What orjson would read otherwise
    goes to `json`: integers beyond 64 bits (orjson makes them floats) and numbers beyond a
    double (orjson refuses them; `json` reads infinity)."""
    if isinstance(data, str):  # psycopg's loaders pass bytes; the signature allows text
        data = data.encode()
    if _LONG_NUMBER.search(data):
        return json.loads(data)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


# Types orjson would write its own way are handed back (to no `default`: a TypeError), so that
# json.dumps writes them, or refuses them, as it always did: subclasses of str, int, dict and
# list (enums among them), datetimes and dataclasses.
_DUMP_OPTIONS = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def dump_json(value: Any) -> bytes | str:
    """`json.dumps(value)`, the same JSON value, mostly through orjson (twenty times faster
    on the small objects the query functions send). What orjson refuses (integers beyond
    64 bits, keys that are not strings, the types above) goes to `json`. orjson writes a
    UUID, an Enum and NaN where json.dumps would refuse them or write what jsonb refuses;
    the query functions never send them (JsonObject and JsonValue refuse them first)."""
    try:
        return orjson.dumps(value, option=_DUMP_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value)
