"""The `session-grpc` command: serve, migrate, expire, prune, check, export, import.

Settings come from the environment (see README, "Configuration"). Without
DATABASE_URL every subcommand uses the embedded PostgreSQL in
SESSION_EMBEDDED_DATA_DIR, like `make run` does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

# Set before grpc is first imported (below), which reads it. This process forks only to exec
# (pg_ctl stopping the embedded PostgreSQL) and starts workers with "spawn", so gRPC's fork
# handlers have nothing to protect; left on, they log "Other threads are currently calling into
# gRPC, skipping fork() handlers" at every shutdown.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from . import embedded, migrations, workers  # noqa: E402
from .server import serve  # noqa: E402
from .settings import Settings, SettingsError, format_duration, parse_duration  # noqa: E402

EXIT_OK = 0
EXIT_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="session-grpc",
        description="The session store gRPC service. Settings are read from the environment "
        "(PORT, DATABASE_URL, SESSION_*); without DATABASE_URL an embedded PostgreSQL is used.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_cmd = commands.add_parser(
        "serve", help="run the gRPC server until SIGTERM/SIGINT",
        description="Run the gRPC server (what `make run` does) until SIGTERM or SIGINT, then drain and exit 0.",
    )
    serve_cmd.add_argument("--migrate", action="store_true", help="apply migrations before serving")
    serve_cmd.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="server processes sharing the port with SO_REUSEPORT, for machines with more cores (default 1)",
    )

    migrate_cmd = commands.add_parser(
        "migrate", help="apply, roll back or show Alembic migrations",
        description="upgrade: apply migrations up to REVISION (default head). "
        "downgrade: roll back to REVISION (default -1, one step). "
        "current: print the database's revision and whether it is the head.",
    )
    migrate_cmd.add_argument("action", choices=["upgrade", "downgrade", "current"], nargs="?", default="upgrade")
    migrate_cmd.add_argument("revision", nargs="?", default=None, help="default: head for upgrade, -1 for downgrade")

    expire_cmd = commands.add_parser(
        "expire", help="move ACTIVE sessions idle for too long to EXPIRED, once",
        description="Move ACTIVE sessions idle for longer than --idle to EXPIRED and print how many. "
        "The server also does this itself every SESSION_EXPIRY_INTERVAL.",
    )
    expire_cmd.add_argument(
        "--idle", default=None, metavar="DURATION",
        help="idle time, e.g. 30m, 24h, 2d (default: SESSION_EXPIRY_IDLE, 24h)",
    )

    prune_cmd = commands.add_parser(
        "prune", help="apply the apps' retention policies once (or, with --dry-run, show what that would remove)",
        description="Apply every app's retention policy once, in batches of SESSION_PRUNE_BATCH rows, and print "
        "what was removed per app and rule. The server also does this itself every SESSION_PRUNE_INTERVAL; one "
        "pass runs at a time (an advisory lock): when another is running this exits 1 having done nothing. "
        "--dry-run removes nothing and prints what a pass starting now would remove.",
    )
    prune_cmd.add_argument("--dry-run", action="store_true", help="remove nothing; print what would be removed")
    export_cmd = commands.add_parser(
        "export", help="write everything of a user as JSON Lines (docs/export-format.md)",
        description="Write everything stored of one user (sessions, messages, memories, state, budget, usage) "
        "as JSON Lines in the format of docs/export-format.md, page by page, to --out or standard output.",
    )
    export_cmd.add_argument("--user", required=True, help="the user id")
    export_cmd.add_argument("--out", default="-", metavar="FILE", help="where to write (default: standard output)")
    import_cmd = commands.add_parser(
        "import", help="restore a user from an export, in one transaction; never overwrites",
        description="Store an export (docs/export-format.md) in one transaction: the same ids, sequences, totals "
        "and times. Refuses, storing nothing, when any of its ids already exists or the file is damaged.",
    )
    import_cmd.add_argument("file", nargs="?", default="-", help="the export (default: standard input)")

    commands.add_parser(
        "check", help="check that the database, the account service and the auth service answer",
        description="Print whether the database answers (and at which schema revision), whether the account "
        "service answers a lookup and whether the auth service accepts a connection (each only when "
        "configured). Exit 0 when everything configured answers and the schema is at head, 1 otherwise.",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        idle = parse_duration(args.idle, "--idle") if getattr(args, "idle", None) is not None else None
    except SettingsError as error:
        parser.error(str(error))
    if idle is not None and idle <= 0:
        parser.error("--idle must be greater than 0")

    if args.command == "serve":
        settings = replace(settings, migrate_on_start=settings.migrate_on_start or args.migrate)
        if args.workers > 1:
            return workers.serve(settings, args.workers)
        serve(settings)
        return EXIT_OK
    with embedded.database(settings) as settings:
        if args.command == "migrate":
            return asyncio.run(_migrate(settings.sqlalchemy_url, args.action, args.revision))
        if args.command == "expire":
            return asyncio.run(_expire(settings, idle or settings.expiry_idle))
        if args.command == "prune":
            return asyncio.run(_prune(settings, args.dry_run))
        if args.command == "export":
            return asyncio.run(_export(settings, args.user, args.out))
        if args.command == "import":
            return asyncio.run(_import(settings, args.file))
        return asyncio.run(_check(settings))


async def _migrate(url: str, action: str, revision: str | None) -> int:
    if action == "upgrade":
        await migrations.upgrade(url, revision or "head")
    elif action == "downgrade":
        await migrations.downgrade(url, revision or "-1")
    print(await _revision(url))
    return EXIT_OK


async def _revision(url: str) -> str:
    at, heads = await migrations.current(url)
    head = ", ".join(heads)
    if not at:
        return f"database at no revision; head is {head}"
    if at == heads:
        return f"database at {', '.join(at)} (head)"
    return f"database at {', '.join(at)}; head is {head}"


async def _expire(settings: Settings, idle_seconds: float) -> int:
    from .storage import sessions
    from .storage.database import Database, create_engine

    db = Database(create_engine(settings), settings.default_deadline)
    try:
        count = await db.run(sessions.expire_sessions, timedelta(seconds=idle_seconds))
    finally:
        await db.close()
    print(f"expired {count} sessions idle for more than {format_duration(idle_seconds)}")
    return EXIT_OK


async def _prune(settings: Settings, dry: bool) -> int:
    from . import pruning
    from .domain.retention import Rule
    from .storage.database import Database, create_engine

    db = Database(create_engine(settings), settings.default_deadline)
    started = time.monotonic()
    try:
        report = await (pruning.dry_run(db) if dry else pruning.prune(db, settings.prune_batch))
    finally:
        await db.close()
    if report is None:
        print("another prune pass is running (it holds the advisory lock); nothing done")
        return EXIT_FAILED
    verb = "would remove" if dry else "removed"
    apps = sorted({app for app, _ in report.removed})
    for app in apps:
        for rule in Rule:
            count = report.removed.get((app, rule), 0)
            if count:
                what = "sessions" if rule is Rule.CLOSED_SESSION_TTL else "messages"
                print(f"{app}\t{rule.value}\t{verb} {count} {what}")
    print(f"{'dry run: ' if dry else ''}{verb} {report.total} rows in all"
          + ("" if dry else f" ({report.batches} batches, {time.monotonic() - started:.2f} s)"))
    return EXIT_OK


IMPORT_DEADLINE = 3600.0
"""How long one import's transaction may take."""


async def _export(settings: Settings, user_id: str, out: str) -> int:
    from .storage import export
    from .storage.database import Database, create_engine

    db = Database(create_engine(settings), settings.default_deadline)
    target = sys.stdout if out == "-" else open(out, "w", encoding="utf-8", newline="\n")
    records = -1
    try:
        async for page in export.export_user(db, user_id):
            target.write("".join(line + "\n" for line in page))
            records += len(page)
    finally:
        if target is not sys.stdout:
            target.close()
        await db.close()
    print(f"exported {records - 1} records of user {user_id!r}", file=sys.stderr)
    return EXIT_OK


async def _import(settings: Settings, path: str) -> int:
    import tempfile

    from .domain.errors import DomainError
    from .storage import export
    from .storage.database import Database, create_engine

    with contextlib.ExitStack() as stack:
        if path == "-":  # spooled, so a retried transaction can read it again
            spool = stack.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8", newline="\n"))
            for line in sys.stdin:
                spool.write(line)
        else:
            spool = stack.enter_context(open(path, encoding="utf-8", newline="\n"))

        def lines() -> Iterator[str]:
            spool.seek(0)
            yield from spool

        db = Database(create_engine(settings), max(IMPORT_DEADLINE, settings.default_deadline))
        try:
            done = await db.run(export.import_user, lines)
        except DomainError as error:
            print(f"import refused, nothing stored: {error.message}", file=sys.stderr)
            return EXIT_FAILED
        finally:
            await db.close()
    counts = ", ".join(f"{kind} {count}" for kind, count in done.counts.items())
    print(f"imported user {done.user_id!r}: {counts or 'nothing'}")
    return EXIT_OK


async def _check(settings: Settings) -> int:
    started = time.monotonic()
    try:
        revision = await asyncio.wait_for(_revision(settings.database_url or ""), settings.db_pool_timeout)
        healthy = revision.endswith("(head)")
        print(f"{'database':<17}{'ok' if healthy else 'NOT AT HEAD'} in {(time.monotonic() - started) * 1e3:.0f} ms: "
              f"{revision}")
    except Exception as error:  # noqa: BLE001 - whatever went wrong, the check failed
        healthy = False
        print(f"{'database':<17}FAILED: {error!r}")
    healthy = await _check_account_service(settings) and healthy
    healthy = await _check_auth_service(settings) and healthy
    return EXIT_OK if healthy else EXIT_FAILED


async def _check_account_service(settings: Settings) -> bool:
    """Ask the account service about a user that does not exist: any answer but a transport failure will do."""
    import grpc

    from ._proto.account.v1 import account_pb2, account_pb2_grpc

    label = f"{'account service':<17}"
    if settings.account is None:
        print(f"{label}not configured (SESSION_ACCOUNT_ADDRESS unset): every user_id is accepted")
        return True
    started = time.monotonic()
    async with grpc.aio.insecure_channel(settings.account.address) as channel:
        try:
            await account_pb2_grpc.AccountServiceStub(channel).GetAccount(
                account_pb2.GetAccountRequest(user_id="session-grpc-check"), timeout=max(settings.account.deadline, 2.0)
            )
        except grpc.aio.AioRpcError as error:
            if error.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                print(f"{label}FAILED at {settings.account.address}: {error.code().name}: {error.details()}")
                return False
    print(f"{label}ok in {(time.monotonic() - started) * 1e3:.0f} ms: {settings.account.address}")
    return True


async def _check_auth_service(settings: Settings) -> bool:
    """The auth service must accept a connection (verifying a token needs a real token, which check has not)."""
    import grpc

    label = f"{'auth service':<17}"
    auth = getattr(settings, "auth", None)
    if auth is None:
        print(f"{label}not configured (SESSION_AUTH_ADDRESS unset)")
        return True
    started = time.monotonic()
    async with grpc.aio.insecure_channel(auth.address) as channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout=max(getattr(auth, "deadline", 2.0), 2.0))
        except TimeoutError:
            print(f"{label}FAILED: no connection to {auth.address}")
            return False
    print(f"{label}ok (connected) in {(time.monotonic() - started) * 1e3:.0f} ms: {auth.address}")
    return True


if __name__ == "__main__":
    sys.exit(main())
