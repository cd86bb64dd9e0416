"""DatabaseConfig: where the database is and how the pool talks to it."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from app.database import embedded


def libpq_url(url: str) -> str:
    """`url` with a SQLAlchemy/yoyo driver suffix removed (`postgresql+psycopg://` → `postgresql://`)."""
    scheme, _, rest = url.partition("://")
    if "+" in scheme and rest:
        return scheme.split("+", 1)[0] + "://" + rest
    return url


def redact_url(url: str) -> str:
    """`url` with any password replaced by `***`, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class DatabaseConfig(BaseModel):
    """Connection and pool settings. Either `url`, or the parts (host, port, database, …)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: SecretStr | None = Field(default=None, description="libpq URL; wins over the parts")
    host: str = "localhost"
    port: int = Field(default=5432, ge=1, le=65535)
    database: str = "agentdb"
    username: str = "postgres"
    password: SecretStr | None = None

    min_pool_size: int = Field(default=1, ge=0)
    max_pool_size: int = Field(default=10, ge=1)
    connect_timeout: float = Field(default=10.0, gt=0, description="seconds to open a connection")
    pool_timeout: float = Field(default=30.0, gt=0, description="seconds to wait for a free one")
    statement_timeout: float | None = Field(
        default=None, gt=0, description="seconds a statement may run (None: server default)"
    )
    application_name: str = "agentdb"
    prepare_threshold: int | None = Field(
        default=5, description="executions before a statement is prepared; None behind PgBouncer"
    )

    @model_validator(mode="after")
    def _pool_sizes_are_ordered(self) -> DatabaseConfig:
        if self.min_pool_size > self.max_pool_size:
            raise ValueError("min_pool_size must not exceed max_pool_size")
        return self

    @classmethod
    def from_env(cls, **overrides: Any) -> DatabaseConfig:
        """`DATABASE_URL`, else the `DB_HOST`/`DB_PORT`/`DB_NAME`/`DB_USER`/`DB_PASSWORD` parts,
        else the embedded server (started on demand)."""
        return cls(**{**_settings_from_env(), **overrides})

    def conninfo(self) -> str:
        """The libpq connection string (it contains the password: never log it)."""
        if self.url is not None:
            base = libpq_url(self.url.get_secret_value())
            parts: dict[str, Any] = {}
        else:
            base = ""
            parts = {
                "host": self.host,
                "port": self.port,
                "dbname": self.database,
                "user": self.username,
            }
            if self.password is not None:
                parts["password"] = self.password.get_secret_value()
        return make_conninfo(
            base,
            **parts,
            connect_timeout=max(1, round(self.connect_timeout)),
            application_name=self.application_name,
        )

    def describe(self) -> str:
        """Where this config points, without the password."""
        info = conninfo_to_dict(self.conninfo())
        info.pop("password", None)
        return " ".join(f"{key}={value}" for key, value in sorted(info.items()))


def _settings_from_env() -> dict[str, Any]:
    url = os.environ.get("DATABASE_URL")
    if url:
        return {"url": url}
    parts = {
        "host": os.environ.get("DB_HOST"),
        "port": os.environ.get("DB_PORT"),
        "database": os.environ.get("DB_NAME"),
        "username": os.environ.get("DB_USER"),
        "password": os.environ.get("DB_PASSWORD"),
    }
    if any(value for value in parts.values()):
        return {key: value for key, value in parts.items() if value}
    return {"url": embedded.start()}


def database_url_from_env() -> str:
    """The libpq URL or conninfo the command-line tools use, resolved like `from_env`."""
    return DatabaseConfig.from_env().conninfo()
