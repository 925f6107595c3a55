"""The `session-grpc` command: serve and migrate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from dataclasses import replace

from . import embedded, migrations, workers
from .server import serve
from .settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="session-grpc", description="The session store gRPC service.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the gRPC server (settings from the environment)")
    serve_cmd.add_argument("--migrate", action="store_true", help="apply migrations before serving")
    serve_cmd.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="server processes sharing the port with SO_REUSEPORT, for machines with more cores (default 1)",
    )
    migrate_cmd = commands.add_parser("migrate", help="apply or roll back Alembic migrations")
    migrate_cmd.add_argument("action", choices=["upgrade", "downgrade"], nargs="?", default="upgrade")
    migrate_cmd.add_argument("revision", nargs="?", default=None, help="default: head for upgrade, -1 for downgrade")
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env()
    except SettingsError as error:
        parser.error(str(error))

    if args.command == "serve":
        settings = replace(settings, migrate_on_start=settings.migrate_on_start or args.migrate)
        if args.workers > 1:
            return workers.serve(settings, args.workers)
        serve(settings)
        return 0

    with contextlib.ExitStack() as stack:
        url = settings.database_url or stack.enter_context(embedded.postgres(settings.embedded_data_dir))
        if args.action == "upgrade":
            asyncio.run(migrations.upgrade(url, args.revision or "head"))
        else:
            asyncio.run(migrations.downgrade(url, args.revision or "-1"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
