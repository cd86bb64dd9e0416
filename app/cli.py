"""The `agentdb` command: migrations, the embedded server, psql, roles and erasure."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from app.database import embedded
from app.database.config import DatabaseConfig
from app.database.errors import AgentDBError, translate
from app.database.migrations import MigrationError, Migrator, new_migration, verify
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
    except psycopg.Error as error:
        return _fail(f"{type(error).__name__}: {str(error).strip().splitlines()[0]}")
    except KeyboardInterrupt:
        return _fail("interrupted")


def _fail(message: str) -> int:
    print(f"agentdb: error: {message}", file=sys.stderr)
    return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentdb", description=__doc__)
    parser.add_argument(
        "--migrations",
        type=Path,
        default=None,
        help="migrations directory (default: database/migrations, or $AGENTDB_MIGRATIONS)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, help: str, run: object, *, database: bool = True
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
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
        "rollback", "roll back applied migrations (default: the last one)", _rollback
    )
    which = rollback.add_mutually_exclusive_group()
    which.add_argument("--count", type=int, default=None, help="how many to roll back")
    which.add_argument("--to", metavar="ID", help="roll back everything applied after ID")
    which.add_argument("--all", action="store_true", help="roll back every applied migration")

    command("status", "list migrations: applied (when) or pending; flag edited files", _status)

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

    seed = command("seed", "fill the database with a realistic demo data set", _seed)
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


def _migrator(args: argparse.Namespace) -> Migrator:
    return Migrator(_conninfo(args), args.migrations)


def _migrate(args: argparse.Namespace) -> int:
    migrator = _migrator(args)
    applied = migrator.apply(
        accept_drift=args.accept_drift, on_applied=lambda id: print(f"applied  {id}", flush=True)
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
    done = migrator.rollback(
        count=count, to=args.to, on_rolled_back=lambda id: print(f"rolled back  {id}", flush=True)
    )
    print(f"{len(done)} rolled back" if done else "nothing to roll back")
    return 0


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
    if os.environ.get("DATABASE_URL") or os.environ.get("DB_HOST"):
        if args.action == "url":
            print(_conninfo(args))
            return 0
        return _fail("DATABASE_URL / DB_HOST is set: the embedded server is not used")
    if args.action == "start" or args.action == "url":
        print(embedded.start())
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
    config = _config(args)
    created = asyncio.run(seed(config, size, progress=sys.stderr.isatty()))
    print("seeded " + ", ".join(f"{count} {kind}" for kind, count in created.items()))
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
