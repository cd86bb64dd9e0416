"""Keyset pages: `Page[T]` and its opaque cursor."""

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


def newest_first_start(cursor: str | None) -> tuple[datetime | str, UUID]:
    """Where a newest-first page keyed on (timestamp, id) starts: after the cursor's row, or
    for the first page before everything ('infinity', the largest uuid)."""
    if not cursor:
        return FIRST_PAGE_AT, LAST_UUID
    at, row_id = decode_cursor(cursor, datetime.fromisoformat, UUID)
    return at, row_id


def encode_cursor(*values: Any) -> str:
    """An opaque cursor holding the sort key of the last row of a page."""
    payload = json.dumps([str(value) for value in values], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *types: Callable[[str], Any]) -> tuple[Any, ...]:
    """The sort key in `cursor`, each part converted by the matching entry of `types`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(values, list) or len(values) != len(types):
            raise ValueError("wrong shape")
        return tuple(convert(value) for convert, value in zip(types, values, strict=True))
    except (ValueError, TypeError) as error:
        raise InvalidInputError(
            f"cursor: not a cursor of this list ({error})", field="cursor"
        ) from None


def check_limit(limit: int) -> int:
    """`limit` if it is a page size we serve (1 … MAX_PAGE_SIZE)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
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
