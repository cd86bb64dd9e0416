"""The `agentdb` command: migrations, the embedded server, psql, roles and erasure."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from app.database import embedded
from app.database.config import ENV_VARIABLES, DatabaseConfig
from app.database.errors import AgentDBError, translate
from app.database.migrations import (
    SLOW_STATEMENT_SECONDS,
    MigrationError,
    Migrator,
    default_migrations_dir,
    new_migration,
    verify,
)
from app.database.validation import as_uuid

if TYPE_CHECKING:
    from uuid import UUID

    from app.audit import ErasureReport

# The group roles of `agentdb grant` (created by migration 0011), by option.
GROUP_ROLES = {"app": "agentdb_app", "worker": "agentdb_worker", "readonly": "agentdb_readonly"}

# Whether the role exists, may log in, and is a member of the group already (directly: a
# superuser "has" every role, which pg_has_role would report); and whether the group exists.
SELECT_GRANT_TARGET = """
SELECT role.rolcanlogin,
       pg_catalog.to_regrole(%(group)s) IS NOT NULL,
       EXISTS (
           SELECT FROM pg_catalog.pg_auth_members AS membership
           WHERE membership.member = role.oid
             AND membership.roleid = pg_catalog.to_regrole(%(group)s)
       )
FROM pg_catalog.pg_roles AS role
WHERE role.rolname = %(role)s
"""

# The role names vary: both are quoted by sql.Identifier (the group from GROUP_ROLES).
GRANT_GROUP_ROLE = sql.SQL("GRANT {group} TO {role}")

# A grant changes a row of pg_auth_members: the event names that catalog as its table.
RECORD_GRANT = """
SELECT audit.record_event('grant', 'pg_catalog', 'pg_auth_members', NULL, %(details)s)
"""

# The tables `agentdb seed` fills. `--reset` empties them, and (CASCADE) the tables whose
# foreign keys reference them, which PostgreSQL names in a notice each.
SEEDED_TABLES = (
    "messaging.chats",
    "messaging.messages",
    "tasks.todos",
    "agents.executions",
    "telegram.sessions",
)
TRUNCATE_SEEDED_TABLES = """
TRUNCATE messaging.chats, messaging.messages, tasks.todos, agents.executions, telegram.sessions
CASCADE
"""
CASCADE_NOTICE = re.compile(r'truncate cascades to table "([^"]+)"')

# The tables a rollback file drops: `DROP TABLE [IF EXISTS] a.b[, c.d]`.
DROP_TABLE = re.compile(
    r"\bDROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?([\w.\"]+(?:\s*,\s*[\w.\"]+)*)", re.IGNORECASE
)
SQL_COMMENT = re.compile(r"--[^\n]*")

ROLLBACK_HELP = """\
Rolls back the last applied migration (or --count N, --to ID, --all).

When the rollback would drop tables that hold rows, it asks first on a terminal, and refuses
without --yes otherwise (a script, a pipe), naming the tables and their rows. The tables are
those a `DROP TABLE` of the .rollback.sql files about to run names, among the tables of
agentdb's schemas that exist; rows are counted exactly, or estimated on large tables (~).
Other data a rollback removes (a dropped column) is not counted.
"""

SEED_HELP = """\
Fills the database with a realistic demo data set. It adds to the data already there (every
run adds another data set); --reset first empties the tables it fills (messaging.chats,
messaging.messages, tasks.todos, agents.executions, telegram.sessions) and, with them, every
table that references them (agents.tool_calls, knowledge.memories), printing the rows removed.
"""

# `--older-than` of purge-deleted: a number of days, hours or minutes.
DURATION = re.compile(r"([0-9]{1,7})([dhm])")
DURATION_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `agentdb` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if argv[:1] == ["psql"]:  # everything after `psql` belongs to psql, options included
        args = parser.parse_args(["psql"])
        args.psql_args = argv[1:]
    else:
        args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
        return result
    except (MigrationError, embedded.EmbeddedServerError, AgentDBError) as error:
        return _fail(str(error))
    except psycopg.OperationalError as error:
        return _fail(f"{_config_source(args)}: cannot connect: {_first_line(error)}")
    except psycopg.Error as error:
        return _fail(f"{type(error).__name__}: {_first_line(error)}")
    except KeyboardInterrupt:
        return _fail("interrupted")
    except OSError as error:
        return _fail(_first_line(error))
    except Exception as error:  # a bug: still one line, the traceback only when asked for
        if os.environ.get("AGENTDB_DEBUG"):
            raise
        return _fail(f"{type(error).__name__}: {_first_line(error)} (AGENTDB_DEBUG=1 shows where)")


def _fail(message: str) -> int:
    print(f"agentdb: error: {message}", file=sys.stderr)
    return 1


def _config_source(args: argparse.Namespace) -> str:
    """Where the command's database setting came from, for an error to name."""
    if getattr(args, "database", None):
        return "--database"
    for name in ENV_VARIABLES.values():
        if os.environ.get(name):
            return name
    return f"the embedded server in {embedded.default_data_dir()}"


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake reported in one line like every other error."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("agentdb").strip()
        self.exit(
            2,
            f"agentdb: error: {where + ': ' if where else ''}{message} (see {self.prog} --help)\n",
        )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("agentdb")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="agentdb", description=__doc__)
    parser.add_argument("--version", action="version", version=f"agentdb {_version()}")
    parser.add_argument(
        "--migrations",
        type=Path,
        default=None,
        help="migrations directory (default: database/migrations, or $AGENTDB_MIGRATIONS)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, help: str, run: object, *, database: bool = True, description: str = ""
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help,
            description=description or help,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if database:
            sub.add_argument(
                "--database",
                metavar="URL",
                help="target database (default: $DATABASE_URL, $DB_* or the embedded server)",
            )
        sub.set_defaults(run=run)
        return sub

    migrate = command("migrate", "apply pending migrations", _migrate)
    migrate.add_argument(
        "--accept-drift",
        action="store_true",
        help="record edited applied files as they are now instead of refusing",
    )

    rollback = command(
        "rollback",
        "roll back applied migrations (default: the last one)",
        _rollback,
        description=ROLLBACK_HELP,
    )
    which = rollback.add_mutually_exclusive_group()
    which.add_argument("--count", type=int, default=None, help="how many to roll back")
    which.add_argument("--to", metavar="ID", help="roll back everything applied after ID")
    which.add_argument("--all", action="store_true", help="roll back every applied migration")
    rollback.add_argument(
        "--yes", action="store_true", help="drop tables that hold rows without asking"
    )
    for sub in (migrate, rollback):
        sub.add_argument(
            "--slow-after",
            type=float,
            default=SLOW_STATEMENT_SECONDS,
            metavar="S",
            help="print each statement running longer than this, with its time "
            f"(default {SLOW_STATEMENT_SECONDS:g}s)",
        )

    command(
        "status",
        "list migrations: applied (when) or pending; flag edited files (writes nothing)",
        _status,
    )

    inspect = command(
        "inspect",
        "one screen of health: rows and sizes, invalid indexes, the queue, stale runs, drift",
        _inspect,
    )
    inspect.add_argument(
        "--stale-after",
        type=float,
        default=30.0,
        metavar="S",
        help="a running execution with no heartbeat for this long is stale (default 30s)",
    )
    inspect.add_argument("--json", action="store_true", help="print it as JSON, for scripts")

    new = command(
        "new", "create the next-numbered migration and its rollback", _new, database=False
    )
    new.add_argument("name", help="what it does, e.g. add_todo_tags")

    command(
        "verify",
        "prove on a throwaway database that every migration is idempotent and reversible",
        _verify,
    )

    db = command("db", "the embedded PostgreSQL in .pgdata/", _db, database=False)
    db.add_argument("action", choices=["start", "stop", "status", "url"])
    db.add_argument(
        "--show-password",
        action="store_true",
        help="url: print the password instead of ***",
    )

    command("psql", "run psql on the database (arguments go to psql)", _psql, database=False)

    bench = command(
        "bench", "benchmarks on a throwaway server (bench-results/)", _bench, database=False
    )
    bench.add_argument(
        "which", choices=["search", "layer", "aiogram", "queue", "knowledge", "throughput"]
    )
    bench.add_argument(
        "--quick", action="store_true", help="a small size that runs in about a minute"
    )
    bench.add_argument(
        "--owners",
        action="store_true",
        help="search: completeness for small owners of a large table, not the ef_search curve",
    )

    seed = command(
        "seed",
        "add a realistic demo data set to the database (--reset empties its tables first)",
        _seed,
        description=SEED_HELP,
    )
    for name, default, help in (
        ("owners", 20, "users who own chats"),
        ("chats", 200, "chats, long-tailed per owner"),
        ("messages", 10_000, "messages, long-tailed per chat"),
        ("todos", 500, "todos"),
        ("executions", 300, "agent executions (most worked off)"),
        ("sessions", 100, "Telegram sessions"),
    ):
        seed.add_argument(
            f"--{name}", type=int, default=default, help=f"{help} (default {default})"
        )
    seed.add_argument("--embeddings", action="store_true", help="give messages embeddings")
    seed.add_argument("--random-seed", type=int, default=42, help="same seed, same data")
    seed.add_argument(
        "--reset",
        action="store_true",
        help="first empty the seeded tables and those referencing them (see above)",
    )

    grant = command(
        "grant", "make a login role a member of agentdb_app, _worker or _readonly", _grant
    )
    grant.add_argument("login_role", metavar="LOGIN_ROLE", help="an existing role with LOGIN")
    group = grant.add_mutually_exclusive_group(required=True)
    for option, role in GROUP_ROLES.items():
        group.add_argument(
            f"--{option}", dest="group", action="store_const", const=role, help=f"join {role}"
        )

    erase = command(
        "erase-owner", "hard-delete every row of one owner, in every table (audited)", _erase
    )
    erase.add_argument("owner_id", metavar="UUID", help="the owner to erase")
    erase.add_argument("--yes", action="store_true", help="confirm: this cannot be undone")

    purge = command(
        "purge-deleted",
        "hard-delete rows soft-deleted longer ago than --older-than (audited)",
        _purge,
    )
    purge.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 30d, 12h or 90m")

    executions = command(
        "purge-executions",
        "hard-delete executions and tool calls finished longer ago than --older-than (audited)",
        _purge_executions,
    )
    executions.add_argument(
        "--older-than", required=True, metavar="AGE", help="e.g. 30d, 12h or 90m"
    )
    executions.add_argument(
        "--batch-size", type=int, default=1000, help="rows per transaction (default 1000)"
    )

    sessions = command(
        "purge-sessions",
        "delete Telegram sessions not written or seen for --older-than (audited)",
        _purge_sessions,
    )
    sessions.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 90d, 12h or 90m")
    worker = command(
        "worker",
        "run agent executions with the handlers of MODULE:HANDLERS until SIGTERM or SIGINT",
        _worker,
    )
    worker.add_argument(
        "handlers",
        metavar="MODULE:HANDLERS",
        help="an importable module and the name in it of the dict agent name -> async handler",
    )
    worker.add_argument("--concurrency", type=int, default=4, help="runs at once (default 4)")
    worker.add_argument(
        "--agents", default=None, help="comma-separated agent names (default: the handlers')"
    )
    worker.add_argument("--worker-id", default=None, help="default: host:pid")
    for option, seconds, what in (
        ("--stale-after", 30.0, "take back runs not heard of for this long"),
        ("--heartbeat-interval", 5.0, "renew the heartbeat of running executions this often"),
        ("--poll-interval", 1.0, "look for executions at least this often"),
        ("--shutdown-grace", 30.0, "on SIGTERM, let running handlers finish this long"),
    ):
        worker.add_argument(
            option, type=float, default=seconds, metavar="S", help=f"{what} (default {seconds}s)"
        )
    return parser


def _worker(args: argparse.Namespace) -> int:
    import asyncio
    import importlib
    import logging
    import signal

    from app.database import DatabaseManager
    from app.worker import run_worker

    module_name, _, attribute = args.handlers.partition(":")
    if not module_name or not attribute:
        return _fail(
            f"MODULE:HANDLERS: {args.handlers!r} is not module:name (e.g. bot.agents:HANDLERS)"
        )
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        return _fail(f"MODULE:HANDLERS: cannot import {module_name!r}: {error}")
    handlers = getattr(module, attribute, None)
    if not isinstance(handlers, dict):
        return _fail(f"MODULE:HANDLERS: {module_name}.{attribute} is not a dict of handlers")
    agents = (
        [name.strip() for name in args.agents.split(",") if name.strip()] if args.agents else None
    )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = _config(args)

    async def work() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with DatabaseManager(config) as db:
            await run_worker(
                db,
                handlers,
                concurrency=args.concurrency,
                agent_names=agents,
                worker_id=args.worker_id,
                poll_interval=args.poll_interval,
                heartbeat_interval=args.heartbeat_interval,
                stale_after=args.stale_after,
                shutdown_grace=args.shutdown_grace,
                stop=stop,
            )

    asyncio.run(work())
    return 0


def _conninfo(args: argparse.Namespace) -> str:
    return _config(args).conninfo()


def _config(args: argparse.Namespace) -> DatabaseConfig:
    """The configuration of `--database URL`, else of the environment (DatabaseConfig.from_env)."""
    url: str | None = getattr(args, "database", None)
    if not url:
        return DatabaseConfig.from_env()
    try:
        return DatabaseConfig(url=SecretStr(url))
    except AgentDBError as error:
        message = str(error).removeprefix("url: ")
        raise AgentDBError(f"--database: {message}") from None


def _migrations_dir(args: argparse.Namespace) -> Path:
    """`--migrations`, else `$AGENTDB_MIGRATIONS`, else the default; an error naming the
    option or variable when it is not a directory."""
    directory: Path | None = args.migrations
    if directory is not None:
        source = "--migrations"
    elif os.environ.get("AGENTDB_MIGRATIONS"):
        source = "AGENTDB_MIGRATIONS"
    else:
        source = "the migrations directory"
    directory = directory or default_migrations_dir()
    if not directory.is_dir():
        what = "does not exist" if not directory.exists() else "is not a directory"
        raise MigrationError(f"{source}: {directory} {what}")
    return directory


def _migrator(args: argparse.Namespace) -> Migrator:
    directory = _migrations_dir(args)
    return Migrator(_conninfo(args), directory)


def _print_slow_statement(statement: str, seconds: float, finished: bool) -> None:
    if finished:
        print(f"  finished after {seconds:.1f} s: {statement}", flush=True)
    else:
        print(f"  still running after {seconds:g} s: {statement}", flush=True)


def _migrate(args: argparse.Namespace) -> int:
    migrator = _migrator(args)
    applied = migrator.apply(
        accept_drift=args.accept_drift,
        on_applied=lambda id: print(f"applied  {id}", flush=True),
        on_slow_statement=_print_slow_statement,
        slow_after=args.slow_after,
    )
    total = len(migrator.migrations())
    if applied:
        print(f"{len(applied)} applied; {total} migrations, all applied")
    else:
        print(f"nothing to apply: {total} migrations, all applied")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    migrator = _migrator(args)
    count = None if args.all or args.to else (args.count if args.count is not None else 1)
    if count is not None and count < 1:
        return _fail("--count must be at least 1")
    refusal: list[str] = []

    def confirm(rollback_files: list[Path]) -> bool:
        holding = _tables_holding_rows(migrator.conninfo, _dropped_tables(rollback_files))
        if not holding or args.yes:
            return True
        what = ", ".join(holding)
        if sys.stdin.isatty():
            print(
                f"rolling back {len(rollback_files)} migration(s) drops {len(holding)} "
                f"table(s) holding rows: {what}\ndrop them? [y/N] ",
                end="",
                file=sys.stderr,
                flush=True,
            )
            if sys.stdin.readline().strip().lower() in ("y", "yes"):
                return True
            refusal.append("not confirmed: nothing was rolled back")
            return False
        refusal.append(
            f"rollback would drop {len(holding)} table(s) holding rows ({what}):"
            " pass --yes to confirm; nothing was rolled back"
        )
        return False

    done = migrator.rollback(
        count=count,
        to=args.to,
        on_rolled_back=lambda id: print(f"rolled back  {id}", flush=True),
        confirm=confirm,
        on_slow_statement=_print_slow_statement,
        slow_after=args.slow_after,
    )
    if refusal:
        return _fail(refusal[0])
    print(f"{len(done)} rolled back" if done else "nothing to roll back")
    return 0


def _dropped_tables(rollback_files: list[Path]) -> list[str]:
    """schema.table of every `DROP TABLE` in these files (comments ignored)."""
    tables = []
    for path in rollback_files:
        if not path.exists():
            continue
        text = SQL_COMMENT.sub("", path.read_text())
        for match in DROP_TABLE.finditer(text):
            tables += [name.strip().replace('"', "").lower() for name in match[1].split(",")]
    return tables


def _tables_holding_rows(conninfo: str, tables: list[str]) -> list[str]:
    """`schema.table (N rows)` for each of `tables` that exists and holds rows."""
    from app.database.inspect import table_health

    if not tables:
        return []
    with psycopg.connect(conninfo) as conn:
        conn.read_only = True
        health = table_health(conn, tables)
    holding = []
    for table in health:
        rows = table.rows + (table.deleted_rows or 0)
        if rows:
            mark = "" if table.is_exact else "~"
            holding.append(f"{table.name} {mark}{rows:,} row{'' if rows == 1 else 's'}")
    return holding


def _status(args: argparse.Namespace) -> int:
    rows = _migrator(args).status()
    width = max((len(row.id) for row in rows), default=10)
    print(f"{'migration':<{width}}  applied at (UTC)")
    drifted = []
    for row in rows:
        if row.applied_at is None:
            state = "pending"
        else:
            state = row.applied_at.strftime("%Y-%m-%d %H:%M:%S")
        if row.is_drifted:
            state += "  DRIFT: file edited after it was applied"
            drifted.append(row.id)
        if row.is_missing_file:
            state += "  (file missing)"
        print(f"{row.id:<{width}}  {state}")
    if drifted:
        return _fail("checksum drift in " + ", ".join(f"{id}.sql" for id in drifted))
    return 0


def _new(args: argparse.Namespace) -> int:
    forward, rollback = new_migration(args.name, args.migrations)
    print(f"created {forward}\ncreated {rollback}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    verify(_conninfo(args), args.migrations, log=lambda line: print(line, flush=True))
    print("verify: ok")
    return 0


def _db(args: argparse.Namespace) -> int:
    configured = [name for name in ENV_VARIABLES.values() if os.environ.get(name)]
    if configured:
        if args.action == "url":
            print(_display_url(_config(args), show_password=args.show_password))
            return 0
        return _fail(f"{configured[0]} is set: the embedded server is not used")
    if args.action == "url":
        print(embedded.start())
    elif args.action == "start":
        before = embedded.status()
        url = embedded.start()
        if before.pid is not None:
            print(f"already running (pid {before.pid}) in {before.data_dir}")
        else:
            after = embedded.status()
            print(f"started (pid {after.pid}) in {after.data_dir}")
        print(url)
    elif args.action == "stop":
        print("stopped" if embedded.stop() else "not running")
    else:
        status = embedded.status()
        if status.pid is not None:
            print(f"running (pid {status.pid}) in {status.data_dir}\n{status.url}")
        elif status.is_initialized:
            print(f"stopped; data in {status.data_dir}")
        else:
            print(f"not initialized ({status.data_dir} does not exist yet)")
    return 0


def _display_url(config: DatabaseConfig, *, show_password: bool) -> str:
    """A `postgresql://` URL of the configured database, its password `***` unless asked."""
    params: dict[str, Any]
    if config.url is not None:
        params = conninfo_to_dict(config.url.get_secret_value())
    else:
        params = {
            "host": config.host,
            "port": config.port,
            "dbname": config.database,
            "user": config.username,
        }
        if config.password is not None:
            params["password"] = config.password.get_secret_value()
    return _postgresql_url(params, show_password=show_password)


def _postgresql_url(params: dict[str, Any], *, show_password: bool) -> str:
    """libpq parameters as a URL: user, password, host and port in the authority (a socket
    directory or several hosts go in the query string, as libpq reads them), the rest as query."""
    params = {key: str(value) for key, value in params.items()}
    user = params.pop("user", "")
    password = params.pop("password", None)
    host = params.pop("host", "")
    port = params.pop("port", "")
    dbname = params.pop("dbname", "")
    authority = quote(user, safe="")
    if password is not None:
        authority += ":" + (quote(password, safe="") if show_password else "***")
    if authority:
        authority += "@"
    query = {}
    if host and not host.startswith("/") and "," not in host:
        authority += f"[{host}]" if ":" in host else host
        if port:
            authority += f":{port}"
    else:
        query = {key: value for key, value in (("host", host), ("port", port)) if value}
    query.update(params)
    url = f"postgresql://{authority}/{quote(dbname, safe='')}"
    if query:
        url += "?" + "&".join(f"{key}={quote(value, safe='/')}" for key, value in query.items())
    return url


# Whether the tables seed fills exist (a database never migrated gets a clear error), and how
# many rows the first of them holds (the message that seed adds to existing data).
SELECT_SEEDED_ROWS = """
SELECT pg_catalog.to_regclass('messaging.chats') IS NOT NULL
"""
COUNT_SEEDED_CHATS = "SELECT count(*) FROM messaging.chats"


def _reset_seeded_tables(conninfo: str) -> None:
    """Empty the seeded tables (and those referencing them), printing what was removed."""
    from app.database.inspect import table_health

    cascaded: list[str] = []
    with psycopg.connect(conninfo) as conn:
        conn.add_notice_handler(
            lambda notice: cascaded.extend(CASCADE_NOTICE.findall(notice.message_primary or ""))
        )
        try:
            row = conn.execute(SELECT_SEEDED_ROWS).fetchone()
            if row is None or not row[0]:
                raise AgentDBError("messaging.chats does not exist: run `agentdb migrate`")
            health = table_health(conn, SEEDED_TABLES, exact_below=2**62)
            conn.execute(TRUNCATE_SEEDED_TABLES)
            conn.commit()
        except psycopg.Error as error:
            raise translate(error) from None
    removed = ", ".join(f"{t.name} {t.rows + (t.deleted_rows or 0)}" for t in health)
    also = f"; emptied with them: {', '.join(cascaded)}" if cascaded else ""
    print(f"reset: removed the rows of {removed}{also}")


def _count_seeded_chats(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        conn.read_only = True
        row = conn.execute(SELECT_SEEDED_ROWS).fetchone()
        if row is None or not row[0]:
            raise AgentDBError("messaging.chats does not exist: run `agentdb migrate`")
        counted = conn.execute(COUNT_SEEDED_CHATS).fetchone()
        return int(counted[0]) if counted else 0


def _seed(args: argparse.Namespace) -> int:
    import asyncio

    from app.seed import SeedSize, seed

    counts = [args.owners, args.chats, args.messages, args.todos, args.executions, args.sessions]
    if min(counts) < 0 or args.owners < 1 or args.chats < 1:
        return _fail("sizes must not be negative, and --owners and --chats at least 1")
    size = SeedSize(
        owners=args.owners,
        chats=args.chats,
        messages=args.messages,
        todos=args.todos,
        executions=args.executions,
        sessions=args.sessions,
        with_embeddings=args.embeddings,
        random_seed=args.random_seed,
    )
    config = _config(args).resolved()
    conninfo = config.conninfo()
    if args.reset:
        _reset_seeded_tables(conninfo)
    else:
        existing = _count_seeded_chats(conninfo)
        if existing:
            print(
                f"adding to the existing data ({existing} chats already there;"
                " --reset empties the seeded tables first)"
            )
    created = asyncio.run(seed(config, size, progress=sys.stderr.isatty()))
    print("seeded " + ", ".join(f"{count} {kind}" for kind, count in created.items()))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from app.database.inspect import inspect_database

    if args.stale_after <= 0:
        return _fail("--stale-after: must be more than 0 seconds")
    directory = _migrations_dir(args)
    inspection = inspect_database(
        _conninfo(args), stale_after=timedelta(seconds=args.stale_after), migrations_dir=directory
    )
    if args.json:
        print(inspection.model_dump_json(indent=2))
    else:
        from app.database.inspect import print_inspection

        print_inspection(inspection)
    return 0


def _grant(args: argparse.Namespace) -> int:
    role: str = args.login_role
    group: str = args.group
    with psycopg.connect(_conninfo(args), autocommit=True) as conn:
        target = conn.execute(SELECT_GRANT_TARGET, {"role": role, "group": group}).fetchone()
        if target is None:
            return _fail(f"role {role!r} does not exist: create it first (CREATE ROLE … LOGIN)")
        can_login, group_exists, is_member = target
        if not group_exists:
            return _fail(f"role {group} does not exist: run `agentdb migrate`")
        if not can_login:
            return _fail(f"role {role!r} is not a login role (it has NOLOGIN)")
        if is_member:
            print(f"{role} is already a member of {group}")
            return 0
        grant = GRANT_GROUP_ROLE.format(group=sql.Identifier(group), role=sql.Identifier(role))
        try:
            with conn.transaction():  # the grant and its audit event, or neither
                conn.execute(grant)
                conn.execute(RECORD_GRANT, {"details": Jsonb({"role": role, "group": group})})
        except psycopg.Error as error:  # no right to grant, no audit schema: say so
            raise translate(error) from None
    print(f"granted {group} to {role}")
    return 0


def _erase(args: argparse.Namespace) -> int:
    import asyncio

    owner_id = as_uuid(args.owner_id, "owner_id")
    if not args.yes:
        return _fail(
            f"erase-owner deletes every row of owner {owner_id} for good: pass --yes to confirm"
        )
    report = asyncio.run(_erase_owner(_config(args), owner_id))
    _print_counts(report.deleted)
    total = sum(report.deleted.values())
    print(f"erased owner {owner_id}: {total} rows (audit event {report.event_id})")
    return 0


async def _erase_owner(config: DatabaseConfig, owner_id: UUID) -> ErasureReport:
    from app.audit import erase_owner
    from app.database import DatabaseManager

    async with DatabaseManager(config) as db, db.connection() as conn:
        return await erase_owner(conn, owner_id)


def _purge(args: argparse.Namespace) -> int:
    import asyncio

    older_than = _age(args.older_than)
    if isinstance(older_than, str):
        return _fail(older_than)
    purged = asyncio.run(_purge_deleted(_config(args), older_than))
    _print_counts(purged)
    print(f"purged {sum(purged.values())} rows soft-deleted more than {args.older_than} ago")
    return 0


def _purge_executions(args: argparse.Namespace) -> int:
    import asyncio

    older_than = _age(args.older_than)
    if isinstance(older_than, str):
        return _fail(older_than)
    if not 1 <= args.batch_size <= 100_000:
        return _fail(f"--batch-size: must be from 1 to 100000, got {args.batch_size}")
    purged = asyncio.run(_purge_finished(_config(args), older_than, args.batch_size))
    _print_counts(purged)
    print(
        f"purged {purged['agents.executions']} executions and {purged['agents.tool_calls']} "
        f"tool calls finished more than {args.older_than} ago"
    )
    return 0


def _purge_sessions(args: argparse.Namespace) -> int:
    import asyncio

    older_than = _age(args.older_than)
    if isinstance(older_than, str):
        return _fail(older_than)
    deleted = asyncio.run(_purge_inactive_sessions(_config(args), older_than))
    print(f"purged {deleted} Telegram sessions inactive for more than {args.older_than}")
    return 0


def _age(text: str) -> timedelta | str:
    """`--older-than`'s value as a timedelta, or the one-line error to print."""
    match = DURATION.fullmatch(text.strip())
    if match is None:
        return (
            f"--older-than: {text!r} is not a number of days, hours or minutes (e.g. 30d, 12h, 90m)"
        )
    older_than = timedelta(**{DURATION_UNITS[match[2]]: int(match[1])})
    if older_than <= timedelta(0):
        return "--older-than: must be more than 0"
    return older_than


async def _purge_inactive_sessions(config: DatabaseConfig, older_than: timedelta) -> int:
    from app.database import DatabaseManager
    from app.telegram import purge_inactive_sessions

    async with DatabaseManager(config) as db, db.connection() as conn:
        return await purge_inactive_sessions(conn, older_than=older_than)


async def _purge_finished(
    config: DatabaseConfig, older_than: timedelta, batch_size: int
) -> dict[str, int]:
    """The finished tool calls first (their own count), then the executions (taking along
    the calls of theirs that were younger or still running)."""
    from app.agents import purge_finished_executions
    from app.agents.tools import purge_finished_tool_calls
    from app.database import DatabaseManager

    async with DatabaseManager(config) as db, db.connection() as conn:
        calls = await purge_finished_tool_calls(conn, older_than=older_than, batch_size=batch_size)
        executions = await purge_finished_executions(
            conn, older_than=older_than, batch_size=batch_size
        )
    return {"agents.tool_calls": calls, "agents.executions": executions}


async def _purge_deleted(config: DatabaseConfig, older_than: timedelta) -> dict[str, int]:
    from app.audit import purge_deleted
    from app.database import DatabaseManager

    async with DatabaseManager(config) as db, db.connection() as conn:
        return await purge_deleted(conn, older_than=older_than)


def _print_counts(counts: dict[str, int]) -> None:
    width = max((len(table) for table in counts), default=5)
    for table, count in counts.items():
        print(f"{table:<{width}}  {count}")


def _bench(args: argparse.Namespace) -> int:
    if args.which == "layer":
        from app.bench import layer

        print(layer.run(layer.QUICK if args.quick else layer.FULL))
        return 0
    if args.which == "queue":
        from app.bench import queue

        print(queue.run(queue.QUICK if args.quick else queue.FULL))
        return 0
    if args.which == "knowledge":
        from app.bench import knowledge

        print(knowledge.run(knowledge.QUICK if args.quick else knowledge.FULL))
        return 0
    if args.which == "throughput":
        from app.bench import throughput

        print(throughput.run(throughput.QUICK if args.quick else throughput.FULL))
        return 0
    if args.which == "aiogram":
        from app.bench import aiogram

        print(aiogram.run(aiogram.QUICK if args.quick else aiogram.FULL))
        return 0
    from app.bench import search

    if args.owners:
        print(search.run_owners(count=20_000, queries=20) if args.quick else search.run_owners())
    else:
        print(search.run(count=5_000, queries=100) if args.quick else search.run())
    return 0


def _psql(args: argparse.Namespace) -> int:
    from app.database.migrations import _client_env

    target, env = _client_env(_conninfo(args))
    psql = str(embedded.binary("psql"))
    os.execve(psql, [psql, "-d", target, *args.psql_args], env)
