"""Input validation shared by the domain modules: run before any SQL, so bad input writes
nothing and fails with an `InvalidInputError` that names the field."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, TypeVar
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from app.database.errors import InvalidInputError

M = TypeVar("M", bound=BaseModel)


class InputModel(BaseModel):
    """Base of the input models: unknown fields are errors, instances are frozen, and a
    value that fails validation raises InvalidInputError naming its field (also when a
    caller builds one, such as a `MessageCreate` for add_messages)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise invalid_input(error) from None


def validated(model: type[M], /, **data: Any) -> M:
    """`model(**data)`, with a validation failure raised as InvalidInputError naming the field."""
    try:
        return model(**data)
    except ValidationError as error:
        raise invalid_input(error) from None


def invalid_input(error: ValidationError) -> InvalidInputError:
    """The InvalidInputError for the first problem pydantic found."""
    first = error.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or error.title
    message = first["msg"].removeprefix("Value error, ")
    return InvalidInputError(f"{field}: {message}", field=field)


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters (PostgreSQL text cannot hold \\x00)")
    if not value.isascii():
        _check_encodable(value, "")
    return value


def _check_encodable(value: str, path: str) -> None:
    """PostgreSQL stores UTF-8: a lone surrogate (e.g. '\\ud800') has no encoding."""
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        where = f"{path} is " if path else ""
        raise ValueError(
            f"{where}not valid Unicode: lone surrogate at position {error.start}"
        ) from None


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


MAX_JSON_DEPTH = 64
"""How deeply JSON may nest (objects in arrays in objects …). PostgreSQL's parser runs out
of stack far deeper; a cyclic structure is refused as too deep instead of recursing forever."""

MAX_JSON_INTEGER = 2**63 - 1
"""The largest JSON integer (in magnitude) accepted: a bigint. Larger ones lose precision in
most JSON readers, and Python cannot even print ones of more than 4,300 digits."""


def _json_object(value: Mapping[str, Any]) -> dict[str, Any]:
    if not _is_plain_json(value, 0):
        _check_json(value, "", 0)
    # pydantic's dict validation made a new dict already; copy only another kind of Mapping.
    return value if type(value) is dict else dict(value)


def _json_value(value: Any) -> Any:
    if not _is_plain_json(value, 0):
        _check_json(value, "", 0)
    return value


def _is_plain_json(value: Any, depth: int) -> bool:
    """True for JSON made of dict, list, str, int, float, bool and None that jsonb accepts.

    The common case, checked without building a path for every key; False sends the value
    to `_check_json`, which accepts any other Mapping or sequence it can and names the
    problem when there is one. It never accepts what `_check_json` refuses.
    """
    kind = type(value)
    if kind is str:
        return "\x00" not in value and (value.isascii() or _encodable(value))
    if kind is bool or value is None:
        return True
    if kind is int:
        return bool(-MAX_JSON_INTEGER <= value <= MAX_JSON_INTEGER)
    if kind is float:
        return math.isfinite(value)
    if depth >= MAX_JSON_DEPTH:
        return False
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or "\x00" in key or not (key.isascii() or _encodable(key)):
                return False
            # The usual values, checked here rather than in a call.
            item_kind = type(item)
            if item_kind is str:
                if "\x00" in item or not (item.isascii() or _encodable(item)):
                    return False
            elif item_kind is int:
                if not -MAX_JSON_INTEGER <= item <= MAX_JSON_INTEGER:
                    return False
            elif item_kind is bool or item is None:
                continue
            elif not _is_plain_json(item, depth + 1):
                return False
        return True
    if kind is list or kind is tuple:
        return all(_is_plain_json(item, depth + 1) for item in value)
    return False


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_json(value: Any, path: str, depth: int) -> None:
    """PostgreSQL's jsonb refuses \\u0000 and non-finite numbers; json.dumps refuses the rest;
    depth and integer size are bounded (MAX_JSON_DEPTH, MAX_JSON_INTEGER)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(
                f"{path or 'value'} contains a NUL character (jsonb cannot store \\u0000)"
            )
        _check_encodable(value, path or "value")
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not -MAX_JSON_INTEGER <= value <= MAX_JSON_INTEGER:
            raise ValueError(
                f"{path or 'value'} is an integer beyond ±(2^63 - 1) (store it as a string)"
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path or 'value'} is {value} (JSON has no NaN or infinity)")
    elif depth >= MAX_JSON_DEPTH:
        raise ValueError(
            f"{path or 'value'} nests deeper than {MAX_JSON_DEPTH} levels (or refers to itself)"
        )
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path}{key!r}: JSON object keys must be strings")
            if "\x00" in key:
                raise ValueError(f"{path}: key {key!r} contains a NUL character")
            _check_encodable(key, f"{path} key".strip())
            _check_json(item, f"{path}.{key}" if path else key, depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]", depth + 1)
    else:
        raise ValueError(f"{path or 'value'}: {type(value).__name__} is not JSON")


Text = Annotated[StrictStr, AfterValidator(_no_nul)]
"""Any text PostgreSQL can store: a str (never bytes or a number), no NUL characters."""

NonBlankText = Annotated[StrictStr, AfterValidator(_not_blank), AfterValidator(_no_nul)]
"""Text that is not only white space (an error message, a search query)."""

Title = Annotated[
    StrictStr,
    StringConstraints(max_length=500),
    AfterValidator(_not_blank),
    AfterValidator(_no_nul),
]
"""A title: 1 to 500 characters, not only white space."""

Name = Annotated[
    StrictStr,
    StringConstraints(max_length=200),
    AfterValidator(_not_blank),
    AfterValidator(_no_nul),
]
"""A short name (agent, model, worker): 1 to 200 characters, not blank."""

JsonObject = Annotated[dict[str, Any], AfterValidator(_json_object)]
"""A JSON object that jsonb accepts: string keys, no NUL characters, finite numbers."""

JsonValue = Annotated[Any, AfterValidator(_json_value)]
"""Any JSON value that jsonb accepts."""


# Strict scalars: one validator per rule, used by every domain. pydantic's lax mode would
# take True for 1, b"…" (16 bytes) for a UUID and 1700000000 for a datetime; these refuse them.


def _uuid(value: Any) -> UUID:
    if type(value) is UUID:
        return value
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            raise ValueError(f"not a UUID: {value[:100]!r}") from None
    if isinstance(value, UUID):
        return value
    raise ValueError(f"must be a UUID or its text, not {type(value).__name__}")


def _aware_datetime(value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise ValueError(
            f"must be a datetime with a time zone, not {type(value).__name__} "
            "(a number is not a timestamp here)"
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must have a time zone (a naive datetime is ambiguous)")
    return value


def _duration(value: Any) -> timedelta:
    if not isinstance(value, timedelta):
        raise ValueError(f"must be a timedelta, not {type(value).__name__}")
    if abs(value) > MAX_DURATION:
        raise ValueError(f"must be within {MAX_DURATION.days} days")
    return value


MAX_DURATION = timedelta(days=365 * 1000)
"""The longest timedelta accepted: PostgreSQL's timestamps end in 294276 AD, and `now()`
plus a longer interval would be out of range."""

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

Uuid = Annotated[UUID, PlainValidator(_uuid)]
"""A UUID, or its text; never bytes or an integer."""

Timestamp = Annotated[datetime, PlainValidator(_aware_datetime)]
"""A timezone-aware datetime; never a number, a string or a naive datetime."""

Duration = Annotated[timedelta, PlainValidator(_duration)]
"""A timedelta (never a number of seconds) of at most MAX_DURATION either way."""

Flag = StrictBool
"""True or False; never 1, "yes" or None."""

Int32 = Annotated[StrictInt, Field(ge=INT32_MIN, le=INT32_MAX)]
"""An int (never a bool, float or numeric string) that fits PostgreSQL's integer."""

Count32 = Annotated[StrictInt, Field(ge=0, le=INT32_MAX)]
"""A non-negative int that fits PostgreSQL's integer (token counts, attempts)."""

Int64 = Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX)]
"""An int (never a bool) that fits PostgreSQL's bigint (Telegram ids)."""


def as_uuid(value: Any, field: str) -> UUID:
    """`value` as a UUID (a UUID or its text), or InvalidInputError naming `field`."""
    if type(value) is UUID:
        return value
    try:
        return _uuid(value)
    except ValueError as error:
        raise InvalidInputError(f"{field}: {error}", field=field) from None


def as_int(value: Any, field: str, *, minimum: int, maximum: int) -> int:
    """`value` if it is an int (not a bool) from `minimum` to `maximum`, else
    InvalidInputError naming `field`."""
    if type(value) is not int or not minimum <= value <= maximum:
        raise InvalidInputError(
            f"{field}: must be an integer from {minimum} to {maximum}, not {value!r}"[:300],
            field=field,
        )
    return value


def as_sequence(value: Any, field: str) -> list[Any]:
    """`value` as a list if it is a sequence (a list, tuple, …; not a string, bytes, a
    mapping or None), else InvalidInputError naming `field`."""
    if type(value) is list:
        return value
    if isinstance(value, str | bytes | bytearray | Mapping) or not hasattr(value, "__iter__"):
        raise InvalidInputError(
            f"{field}: must be a sequence (a list or tuple), not {type(value).__name__}",
            field=field,
        )
    return list(value)


def check_update_fields(updates: Any, allowed: Sequence[str], function: str) -> None:
    """InvalidInputError unless `updates` (the argument of a partial update such as
    update_todo) is a mapping whose keys are all in `allowed`: naming `updates`, or the first
    key that is not a field `function` can set."""
    if not isinstance(updates, Mapping):
        raise InvalidInputError(
            f"updates: must be a mapping of field names to values, not {type(updates).__name__}",
            field="updates",
        )
    for name in updates:
        if name not in allowed:
            raise InvalidInputError(
                f"{name}: not a field {function} can set (allowed: {', '.join(allowed)})",
                field=str(name),
            )


def validated_batch(
    items: Any, adapter: TypeAdapter[list[Any]], built: type[BaseModel], field: str
) -> list[Any]:
    """`items` as a list, each item either an instance of `built` (validated when it was
    made, kept as it is) or a mapping validated by `adapter` (all of them in one call, which
    costs about half of building a model per item); the first problem is raised as
    InvalidInputError naming the item's index and field (`messages[3].content`)."""
    rows: list[Any] = as_sequence(items, field)
    unchecked = [index for index, row in enumerate(rows) if not isinstance(row, built)]
    if unchecked:
        try:
            checked = adapter.validate_python([rows[index] for index in unchecked])
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            position, *path = first["loc"]
            name = f"{field}[{unchecked[int(position)]}]" + "".join(f".{part}" for part in path)
            message = first["msg"].removeprefix("Value error, ")
            raise InvalidInputError(f"{name}: {message}", field=name) from None
        for index, row in zip(unchecked, checked, strict=True):
            rows[index] = row
    return rows
