"""The `agentdb` command: migrations, the embedded server, psql."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import psycopg
from pydantic import SecretStr

from app.database import embedded
from app.database.config import DatabaseConfig
from app.database.errors import AgentDBError
from app.database.migrations import MigrationError, Migrator, new_migration, verify


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
    bench.add_argument("which", choices=["search", "layer"])
    bench.add_argument(
        "--quick", action="store_true", help="a small size that runs in about a minute"
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
    return parser


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


def _bench(args: argparse.Namespace) -> int:
    if args.which == "layer":
        from app.bench import layer

        print(layer.run(layer.QUICK if args.quick else layer.FULL))
        return 0
    from app.bench import search

    print(search.run(count=5_000, queries=100) if args.quick else search.run())
    return 0


def _psql(args: argparse.Namespace) -> int:
    from app.database.migrations import _client_env

    target, env = _client_env(_conninfo(args))
    psql = str(embedded.binary("psql"))
    os.execve(psql, [psql, "-d", target, *args.psql_args], env)
