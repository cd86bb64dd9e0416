"""DatabaseConfig: where the database is and how the pool talks to it."""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from app.database import embedded
from app.database.errors import InvalidInputError

logger = logging.getLogger("agentdb")

POSTGRESQL_SCHEMES = ("postgresql", "postgres")

# The environment variables from_env reads, by the config field each one sets.
ENV_VARIABLES = {
    "url": "DATABASE_URL",
    "host": "DB_HOST",
    "port": "DB_PORT",
    "database": "DB_NAME",
    "username": "DB_USER",
    "password": "DB_PASSWORD",
}
EMBEDDED_VARIABLE = "AGENTDB_EMBEDDED"
REPLICAS_VARIABLE = "DATABASE_REPLICA_URLS"
DIRECT_VARIABLE = "AGENTDB_DIRECT_URL"


def libpq_url(url: str) -> str:
    """`url` with a SQLAlchemy/yoyo driver suffix removed (`postgresql+psycopg://` → `postgresql://`)."""
    scheme, _, rest = url.partition("://")
    if "+" in scheme and rest:
        return scheme.split("+", 1)[0] + "://" + rest
    return url


def redact_url(url: str) -> str:
    """`url` with any password replaced by `***`, for messages and logs."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "***"
    if password is None:
        return url
    netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def check_url(url: str) -> str:
    """`url` if libpq can use it: a `postgresql://` URL (a `+driver` suffix is dropped) or a
    `key=value` conninfo string; ValueError otherwise (never echoing a password)."""
    plain = libpq_url(url.strip())
    scheme = plain.partition("://")[0].lower() if "://" in plain else None
    if scheme is not None and scheme not in POSTGRESQL_SCHEMES:
        raise ValueError(
            f"not a PostgreSQL URL (postgresql://user:password@host:port/database): "
            f"{redact_url(url)!r}"
        )
    try:
        conninfo_to_dict(plain)
    except ProgrammingError:
        shown = redact_url(url) if scheme else "…"
        raise ValueError(
            f"not a PostgreSQL URL or conninfo string (postgresql://user:password@host:port/"
            f"database, or 'host=… dbname=…'): {shown!r}"
        ) from None
    return plain


class DatabaseConfig(BaseModel):
    """Connection and pool settings. Either `url`, or the parts (host, port, database, …).

    An invalid setting raises InvalidInputError naming it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: SecretStr | None = Field(default=None, description="libpq URL; wins over the parts")
    host: str = "localhost"
    port: int = Field(default=5432, ge=1, le=65535, strict=True)
    database: str = "agentdb"
    username: str = "postgres"
    password: SecretStr | None = None
    use_embedded: bool = Field(
        default=False,
        description="no url: start the embedded server (in .pgdata/) when the manager opens",
    )

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
    replica_urls: tuple[SecretStr, ...] = Field(
        default=(), description="streaming standbys that db.read_session() reads on"
    )
    max_replica_lag: float = Field(
        default=5.0, gt=0, description="seconds a replica may lag behind and still be read"
    )
    replica_check_interval: float = Field(
        default=1.0, gt=0, description="seconds between checks of the replicas' health and lag"
    )
    direct_url: SecretStr | None = Field(
        default=None,
        description="the server itself when `url` is a transaction pooler: the worker LISTENs here",
    )

    def __init__(self, **settings: Any) -> None:
        try:
            super().__init__(**settings)
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            field = ".".join(str(part) for part in first["loc"]) or "config"
            message = first["msg"].removeprefix("Value error, ")
            raise InvalidInputError(f"{field}: {message}", field=field) from None

    @field_validator("url", "direct_url", mode="after")
    @classmethod
    def _url_is_postgresql(cls, url: SecretStr | None) -> SecretStr | None:
        if url is None:
            return None
        return SecretStr(check_url(url.get_secret_value()))

    @field_validator("replica_urls", mode="after")
    @classmethod
    def _replica_urls_are_postgresql(cls, urls: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        return tuple(SecretStr(check_url(url.get_secret_value())) for url in urls)

    @model_validator(mode="after")
    def _pool_sizes_are_ordered(self) -> DatabaseConfig:
        if self.min_pool_size > self.max_pool_size:
            raise ValueError("min_pool_size must not exceed max_pool_size")
        return self

    @classmethod
    def from_env(cls, **overrides: Any) -> DatabaseConfig:
        """The config the environment gives: `DATABASE_URL`, else the `DB_*` variables, else
        the embedded server. The variables are `DB_HOST`, `DB_PORT`, `DB_NAME`, `DB_USER`
        and `DB_PASSWORD`; the embedded server is announced by a log line and started when
        the manager opens, off the event loop. `url=` or the parts given here win and never
        start it.

        With `AGENTDB_EMBEDDED=0` and nothing configured, InvalidInputError names DATABASE_URL;
        a bad variable (a `DB_PORT` that is not a port) is an InvalidInputError naming it.
        `DATABASE_REPLICA_URLS` (comma-separated URLs of streaming standbys) sets
        `replica_urls` unless given here, and `AGENTDB_DIRECT_URL` sets `direct_url` (the
        server itself, when `DATABASE_URL` is a transaction pooler such as PgBouncer).
        """
        # Where the caller says the database is, the environment's place is moot.
        settings = {} if set(overrides) & set(ENV_VARIABLES) else _settings_from_env()
        replicas = os.environ.get(REPLICAS_VARIABLE, "").strip()
        if replicas and "replica_urls" not in overrides:
            settings["replica_urls"] = [url.strip() for url in replicas.split(",") if url.strip()]
        direct = os.environ.get(DIRECT_VARIABLE, "").strip()
        if direct and "direct_url" not in overrides:
            settings["direct_url"] = direct
        try:
            return cls(**{**settings, **overrides})
        except InvalidInputError as error:
            variable = ENV_VARIABLES.get(error.field or "")
            if (error.field or "").startswith("replica_urls") and "replica_urls" not in overrides:
                variable = REPLICAS_VARIABLE
            if error.field == "direct_url" and "direct_url" not in overrides:
                variable = DIRECT_VARIABLE
            if variable is None or error.field in overrides:
                raise
            message = str(error).removeprefix(f"{error.field}: ")
            raise InvalidInputError(f"{variable}: {message}", field=variable) from None

    def replica_conninfos(self) -> list[str]:
        """The libpq connection strings of the replicas (with their passwords: never log)."""
        return [self._with_options(url.get_secret_value()) for url in self.replica_urls]

    def direct_conninfo(self) -> str | None:
        """The libpq connection string of `direct_url` (with its password: never log), or
        None when none is given."""
        if self.direct_url is None:
            return None
        return self._with_options(self.direct_url.get_secret_value())

    def _with_options(self, base: str, **parts: Any) -> str:
        """`base` (a URL or conninfo) with `parts` and this config's connection options."""
        return make_conninfo(
            base,
            **parts,
            connect_timeout=max(2, round(self.connect_timeout)),
            application_name=self.application_name,
        )

    def conninfo(self) -> str:
        """The libpq connection string (it contains the password: never log it). On an
        embedded config this starts the server (blocking: async code opens a manager instead)."""
        if self.url is None and self.use_embedded:
            return self.resolved().conninfo()
        if self.url is not None:
            base = self.url.get_secret_value()
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
        return self._with_options(base, **parts)

    def resolved(self) -> DatabaseConfig:
        """This config with the embedded server's URL filled in (starting the server), or
        itself when it names its database."""
        if self.url is not None or not self.use_embedded:
            return self
        return self.model_copy(update={"url": SecretStr(embedded.start())})

    def describe(self) -> str:
        """Where this config points, without the password."""
        if self.url is None and self.use_embedded:
            return f"the embedded server in {embedded.default_data_dir()}"
        return describe_conninfo(self.conninfo())


def describe_conninfo(conninfo: str) -> str:
    """Where `conninfo` points (`dbname=… host=… port=… user=…`), without its password or
    the connection options every config adds."""
    info = conninfo_to_dict(conninfo)
    for hidden in ("password", "connect_timeout", "application_name"):
        info.pop(hidden, None)
    return " ".join(f"{key}={value}" for key, value in sorted(info.items()))


def _settings_from_env() -> dict[str, Any]:
    url = os.environ.get(ENV_VARIABLES["url"])
    if url:
        return {"url": url}
    parts: dict[str, Any] = {}
    for field, variable in ENV_VARIABLES.items():
        value = os.environ.get(variable)
        if field != "url" and value:
            parts[field] = value
    if "port" in parts:
        parts["port"] = _port(parts["port"])
    if parts:
        return parts
    if os.environ.get(EMBEDDED_VARIABLE, "").strip() == "0":
        raise InvalidInputError(
            f"DATABASE_URL: not set (nor DB_HOST, DB_PORT, DB_NAME, DB_USER, DB_PASSWORD), and "
            f"{EMBEDDED_VARIABLE}=0 turns the embedded server off: set DATABASE_URL",
            field="DATABASE_URL",
        )
    logger.warning(
        "agentdb: DATABASE_URL is not set: using the embedded PostgreSQL in %s "
        "(set %s=0 to refuse)",
        embedded.default_data_dir(),
        EMBEDDED_VARIABLE,
    )
    return {"use_embedded": True}


def _port(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise InvalidInputError(
            f"DB_PORT: not a port number (1 to 65535): {value!r}", field="DB_PORT"
        ) from None


def database_url_from_env() -> str:
    """The libpq URL or conninfo the command-line tools use, resolved like `from_env`."""
    return DatabaseConfig.from_env().conninfo()
