"""Schema `telegram`: a bot's sessions with its users, which are also aiogram 3 FSM storage.

A session is identified by a `SessionKey`: the six parts of aiogram's `StorageKey` (bot,
chat, user, forum topic, business connection, destiny), so an aiogram `BaseStorage` maps onto
`set_state` / `get_state` / `set_data` / `get_data` / `update_data` one to one. `models` holds
the key, row and input models, `queries` the SQL and the functions; everything is importable
from `app.telegram` directly. Every function takes the caller's connection and never commits.
"""

from app.telegram.models import SessionKey, SessionUpsert, TelegramSession
from app.telegram.queries import (
    MERGE_DATA,
    UPSERT_SESSION,
    deactivate_session,
    get_data,
    get_session,
    get_state,
    get_value,
    link_chat,
    list_active_sessions,
    purge_inactive_sessions,
    set_data,
    set_state,
    update_data,
    upsert_session,
)

__all__ = [
    "MERGE_DATA",
    "UPSERT_SESSION",
    "SessionKey",
    "SessionUpsert",
    "TelegramSession",
    "deactivate_session",
    "get_data",
    "get_session",
    "get_state",
    "get_value",
    "link_chat",
    "list_active_sessions",
    "purge_inactive_sessions",
    "set_data",
    "set_state",
    "update_data",
    "upsert_session",
]
