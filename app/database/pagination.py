"""Keyset pages: `Page[T]` and its opaque cursor.

A cursor holds the sort key of the last row of a page and the list it came from (its
`scope`: the list's name and the key that selects it, such as the chat of a message page),
so a cursor handed to another list is refused instead of silently paging the wrong rows.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel

from app.database.errors import InvalidInputError

T = TypeVar("T")

MAX_PAGE_SIZE = 1000


class Page(BaseModel, Generic[T]):
    """One page of a list; pass `next_cursor` back to get the next one (None: no more)."""

    items: list[T]
    next_cursor: str | None = None


FIRST_PAGE_AT = "infinity"
LAST_UUID = UUID(int=(1 << 128) - 1)

MAX_CURSOR_LENGTH = 1000
"""Longer than any cursor agentdb makes: a longer one is refused before it is decoded."""


def newest_first_start(cursor: str | None, scope: str) -> tuple[datetime | str, UUID]:
    """Where a newest-first page keyed on (timestamp, id) starts: after the cursor's row, or
    for the first page before everything ('infinity', the largest uuid)."""
    if cursor is None:
        return FIRST_PAGE_AT, LAST_UUID
    at, row_id = decode_cursor(cursor, scope, aware_datetime, UUID)
    return at, row_id


def aware_datetime(text: str) -> datetime:
    """A cursor's ISO timestamp, which must carry its time zone."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError("timestamp without a time zone")
    return value


def encode_cursor(scope: str, *values: Any) -> str:
    """An opaque cursor of the list `scope`, holding the sort key of a page's last row."""
    payload = json.dumps([scope, *(str(value) for value in values)], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, scope: str, *types: Callable[[str], Any]) -> tuple[Any, ...]:
    """The sort key in `cursor`, each part converted by the matching entry of `types`;
    InvalidInputError naming `cursor` unless it is a cursor of the list `scope`."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR_LENGTH:
        shown = type(cursor).__name__ if not isinstance(cursor, str) else f"{len(cursor)} chars"
        raise InvalidInputError(f"cursor: not a cursor of this list ({shown})", field="cursor")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, TypeError, UnicodeError, RecursionError) as error:
        raise InvalidInputError(
            f"cursor: not a cursor of this list ({type(error).__name__})", field="cursor"
        ) from None
    if (
        not isinstance(values, list)
        or len(values) != len(types) + 1
        or not all(isinstance(value, str) for value in values)
    ):
        raise InvalidInputError("cursor: not a cursor of this list (wrong shape)", field="cursor")
    if values[0] != scope:
        raise InvalidInputError(
            "cursor: belongs to another list (pass a cursor only to the list, with the same "
            "key, that returned it)",
            field="cursor",
        )
    try:
        return tuple(convert(value) for convert, value in zip(types, values[1:], strict=True))
    except (ValueError, TypeError, OverflowError) as error:
        raise InvalidInputError(
            f"cursor: not a cursor of this list ({error})", field="cursor"
        ) from None


def check_limit(limit: int) -> int:
    """`limit` if it is a page size we serve (1 … MAX_PAGE_SIZE; an int, never a bool)."""
    if type(limit) is not int or not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInputError(
            f"limit: must be an integer from 1 to {MAX_PAGE_SIZE}", field="limit"
        )
    return limit


def page_of(rows: Sequence[T], limit: int, cursor_of: Callable[[T], str]) -> Page[T]:
    """A page from `limit + 1` fetched rows: the extra row only says that more exist."""
    items = list(rows[:limit])
    more = len(rows) > limit
    # Page, not Page[T]: parametrizing with the class's own type variable is the class
    # itself, after a lookup that costs more than the validation.
    return Page(items=items, next_cursor=cursor_of(items[-1]) if more else None)
