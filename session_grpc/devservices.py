"""A small, real account service for local use and tests, serving accounts from a JSON file.

    python -m session_grpc.devservices --accounts devservices/accounts.json [--port 8210]

Then run session-grpc with SESSION_ACCOUNT_ADDRESS=localhost:8210. The file holds
{"accounts": [{"user_id": "alice", "status": "active", "display_name": "...", "email": "..."}]}
with status one of active, suspended, deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from pathlib import Path

import grpc
from grpc_reflection.v1alpha import reflection

from ._proto.account.v1 import account_pb2, account_pb2_grpc

log = logging.getLogger(__name__)

STATUSES = {
    "active": account_pb2.ACCOUNT_STATUS_ACTIVE,
    "suspended": account_pb2.ACCOUNT_STATUS_SUSPENDED,
    "deleted": account_pb2.ACCOUNT_STATUS_DELETED,
}


def load_accounts(path: Path) -> dict[str, account_pb2.Account]:
    entries = json.loads(path.read_text())["accounts"]
    return {
        entry["user_id"]: account_pb2.Account(
            user_id=entry["user_id"],
            status=STATUSES[entry.get("status", "active")],
            display_name=entry.get("display_name", ""),
            email=entry.get("email", ""),
        )
        for entry in entries
    }


class DevAccountService(account_pb2_grpc.AccountServiceServicer):
    """Answers GetAccount from a dict. `delay` and `unavailable_next` let fault tests make it
    slow or failing; `calls` counts the lookups it served."""

    def __init__(self, accounts: dict[str, account_pb2.Account]) -> None:
        self.accounts = accounts
        self.calls = 0
        self.delay = 0.0
        self.unavailable_next = 0

    async def GetAccount(self, request: account_pb2.GetAccountRequest, context: grpc.aio.ServicerContext):
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.unavailable_next > 0:
            self.unavailable_next -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "temporarily unavailable")
        if not request.user_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "user_id is required")
        account = self.accounts.get(request.user_id)
        if account is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no account {request.user_id!r}")
        return account_pb2.GetAccountResponse(account=account)


async def start(service: DevAccountService, host: str = "127.0.0.1", port: int = 0) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    account_pb2_grpc.add_AccountServiceServicer_to_server(service, server)
    reflection.enable_server_reflection(
        (account_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name, reflection.SERVICE_NAME), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound


async def _main(args: argparse.Namespace) -> None:
    service = DevAccountService(load_accounts(args.accounts))
    server, port = await start(service, args.host, args.port)
    log.info("dev account service with %d accounts on %s:%d", len(service.accounts), args.host, port)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description="A development account service from a JSON file.")
    parser.add_argument("--accounts", type=Path, required=True, help="JSON file of accounts")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8210)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
