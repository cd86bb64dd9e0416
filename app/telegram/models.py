"""The session key, row and input models of schema `telegram` (sessions)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, Field, StringConstraints

from app.database.validation import (
    INT64_MAX,
    INT64_MIN,
    Duration,
    InputModel,
    Int64,
    JsonObject,
    Name,
    Text,
    validated,
)

Destiny = Annotated[Name, StringConstraints(max_length=100)]
BusinessConnectionId = Name
Username = Annotated[Name, StringConstraints(max_length=64)]
LanguageCode = Annotated[Name, StringConstraints(max_length=35)]
State = Annotated[Text, StringConstraints(max_length=500)]


# Keys and row models ----------------------------------------------------------------------


class SessionKeyInput(InputModel):
    bot_id: Int64
    telegram_chat_id: Int64
    telegram_user_id: Int64
    thread_id: Int64 | None
    business_connection_id: BusinessConnectionId | None
    destiny: Destiny


@dataclass(frozen=True, slots=True)
class SessionKey:
    """The identity of a session: aiogram 3's `StorageKey`, part for part.

    `telegram_chat_id` and `telegram_user_id` are aiogram's `chat_id` and `user_id` (Telegram
    ids, not agentdb ids). Frozen and hashable; invalid parts raise InvalidInputError.
    """

    bot_id: int
    telegram_chat_id: int
    telegram_user_id: int
    thread_id: int | None = None
    business_connection_id: str | None = None
    destiny: str = "default"

    def __post_init__(self) -> None:
        if _is_usual_key(self):
            return
        validated(
            SessionKeyInput,
            bot_id=self.bot_id,
            telegram_chat_id=self.telegram_chat_id,
            telegram_user_id=self.telegram_user_id,
            thread_id=self.thread_id,
            business_connection_id=self.business_connection_id,
            destiny=self.destiny,
        )


def _is_usual_key(key: SessionKey) -> bool:
    """The key of a private chat or group: three bigint ids, no thread, no business
    connection, the default destiny. Every update makes one, so it is checked here without
    pydantic; anything else goes through SessionKeyInput, which accepts all of these too."""
    return (
        type(key.bot_id) is int
        and type(key.telegram_chat_id) is int
        and type(key.telegram_user_id) is int
        and INT64_MIN <= key.bot_id <= INT64_MAX
        and INT64_MIN <= key.telegram_chat_id <= INT64_MAX
        and INT64_MIN <= key.telegram_user_id <= INT64_MAX
        and key.thread_id is None
        and key.business_connection_id is None
        and type(key.destiny) is str
        and key.destiny == "default"
    )


class TelegramSession(BaseModel):
    """A row of telegram.sessions."""

    id: UUID
    bot_id: int
    telegram_chat_id: int
    telegram_user_id: int
    thread_id: int | None
    business_connection_id: str | None
    destiny: str
    chat_id: UUID | None
    username: str | None
    language_code: str | None
    state: str | None
    data: dict[str, Any]
    is_active: bool
    last_seen_at: datetime
    created_at: datetime
    updated_at: datetime

    @property
    def key(self) -> SessionKey:
        """The session's FSM storage key."""
        return SessionKey(
            self.bot_id,
            self.telegram_chat_id,
            self.telegram_user_id,
            self.thread_id,
            self.business_connection_id,
            self.destiny,
        )


# Input models -----------------------------------------------------------------------------


class SessionUpsert(InputModel):
    """What `upsert_session` records of the user besides its key."""

    username: Username | None = None
    language_code: LanguageCode | None = None


Ttl = Annotated[Duration, Field(gt=timedelta(0))]


class StateInput(InputModel):
    state: State | None
    ttl: Ttl | None = None


class DataInput(InputModel):
    data: JsonObject
    ttl: Ttl | None = None


class PatchInput(InputModel):
    patch: JsonObject
    ttl: Ttl | None = None


class ValueNameInput(InputModel):
    name: Text


class PurgeSessionsInput(InputModel):
    older_than: Ttl


class BotInput(InputModel):
    bot_id: Int64
