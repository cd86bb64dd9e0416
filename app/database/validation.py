"""Input validation shared by the domain modules: run before any SQL, so bad input writes
nothing and fails with an `InvalidInputError` that names the field."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, ValidationError

from app.database.errors import InvalidInputError

M = TypeVar("M", bound=BaseModel)


class InputModel(BaseModel):
    """Base of the input models: unknown fields are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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


def _json_object(value: Mapping[str, Any]) -> dict[str, Any]:
    if not _is_plain_json(value):
        _check_json(value, "")
    # pydantic's dict validation made a new dict already; copy only another kind of Mapping.
    return value if type(value) is dict else dict(value)


def _json_value(value: Any) -> Any:
    if not _is_plain_json(value):
        _check_json(value, "")
    return value


def _is_plain_json(value: Any) -> bool:
    """True for JSON made of dict, list, str, int, float, bool and None that jsonb accepts.

    The common case, checked without building a path for every key; False sends the value
    to `_check_json`, which accepts any other Mapping or sequence it can and names the
    problem when there is one. It never accepts what `_check_json` refuses.
    """
    kind = type(value)
    if kind is str:
        return "\x00" not in value and (value.isascii() or _encodable(value))
    if kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or "\x00" in key or not (key.isascii() or _encodable(key)):
                return False
            if type(item) is str:  # the usual value, checked here rather than in a call
                if "\x00" in item or not (item.isascii() or _encodable(item)):
                    return False
            elif not _is_plain_json(item):
                return False
        return True
    if kind is list or kind is tuple:
        return all(_is_plain_json(item) for item in value)
    return False


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_json(value: Any, path: str) -> None:
    """PostgreSQL's jsonb refuses \\u0000 and non-finite numbers; json.dumps refuses the rest."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(
                f"{path or 'value'} contains a NUL character (jsonb cannot store \\u0000)"
            )
        _check_encodable(value, path or "value")
    elif isinstance(value, bool) or value is None or isinstance(value, int):
        return
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path or 'value'} is {value} (JSON has no NaN or infinity)")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path}{key!r}: JSON object keys must be strings")
            if "\x00" in key:
                raise ValueError(f"{path}: key {key!r} contains a NUL character")
            _check_encodable(key, f"{path} key".strip())
            _check_json(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]")
    else:
        raise ValueError(f"{path or 'value'}: {type(value).__name__} is not JSON")


Text = Annotated[str, AfterValidator(_no_nul)]
"""Any text PostgreSQL can store: no NUL characters."""

NonBlankText = Annotated[str, AfterValidator(_not_blank), AfterValidator(_no_nul)]
"""Text that is not only white space (an error message, a search query)."""

Title = Annotated[
    str, StringConstraints(max_length=500), AfterValidator(_not_blank), AfterValidator(_no_nul)
]
"""A title: 1 to 500 characters, not only white space."""

Name = Annotated[
    str, StringConstraints(max_length=200), AfterValidator(_not_blank), AfterValidator(_no_nul)
]
"""A short name (agent, model, worker): 1 to 200 characters, not blank."""

JsonObject = Annotated[dict[str, Any], AfterValidator(_json_object)]
"""A JSON object that jsonb accepts: string keys, no NUL characters, finite numbers."""

JsonValue = Annotated[Any, AfterValidator(_json_value)]
"""Any JSON value that jsonb accepts."""


def as_uuid(value: Any, field: str) -> UUID:
    """`value` as a UUID (a UUID or its string form), or InvalidInputError naming `field`."""
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise InvalidInputError(f"{field}: not a UUID: {value!r}", field=field) from None
