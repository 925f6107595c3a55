"""A small, real account service and auth service for local use and tests, from a JSON file.

    python -m session_grpc.devservices --accounts devservices/accounts.json [--port 8210]

Then run session-grpc with SESSION_ACCOUNT_ADDRESS=localhost:8210 (and, for token mode,
SESSION_AUTH_MODE=token SESSION_AUTH_ADDRESS=localhost:8210, with SESSION_PAGE_TOKEN_SECRET and
SESSION_ALLOW_PLAINTEXT=true; see README). The file holds
{"accounts": [{"user_id": "alice", "status": "active", "display_name": "...", "email": "..."}],
 "tokens": [{"token": "alice-token", "user_id": "alice", "scopes": [], "expires_in": 3600}]}
with status one of active, suspended, deleted; a token with "expires_in" <= 0 is expired.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import timestamp_pb2

from . import reflection
from ._proto.account.v1 import account_pb2, account_pb2_grpc
from ._proto.auth.v1 import auth_pb2, auth_pb2_grpc

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


@dataclass(frozen=True)
class DevToken:
    user_id: str
    scopes: tuple[str, ...]
    expire_time: float


def load_tokens(path: Path) -> dict[str, DevToken]:
    now = time.time()
    return {
        entry["token"]: DevToken(
            user_id=entry.get("user_id", ""),
            scopes=tuple(entry.get("scopes", ())),
            expire_time=now + float(entry.get("expires_in", 3600)),
        )
        for entry in json.loads(path.read_text()).get("tokens", [])
    }


class DevAuthService(auth_pb2_grpc.AuthServiceServicer):
    """Answers VerifyToken from a dict; `calls` counts the verifications it served, `delay` makes
    it slow (fault tests)."""

    def __init__(self, tokens: dict[str, DevToken]) -> None:
        self.tokens = tokens
        self.calls = 0
        self.delay = 0.0

    async def VerifyToken(self, request: auth_pb2.VerifyTokenRequest, context: grpc.aio.ServicerContext):
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        token = self.tokens.get(request.token)
        if token is None or token.expire_time <= time.time():
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown token" if token is None else "the token has expired")
            return auth_pb2.VerifyTokenResponse()  # not reached: abort() raises
        expire = timestamp_pb2.Timestamp()
        expire.FromNanoseconds(int(token.expire_time * 1e9))
        return auth_pb2.VerifyTokenResponse(user_id=token.user_id, scopes=token.scopes, expire_time=expire)


async def start(
    service: DevAccountService, host: str = "127.0.0.1", port: int = 0, auth: DevAuthService | None = None
) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    account_pb2_grpc.add_AccountServiceServicer_to_server(service, server)
    names = [account_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name]
    if auth is not None:
        auth_pb2_grpc.add_AuthServiceServicer_to_server(auth, server)
        names.append(auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name)
    reflection.enable(names, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound


async def _main(args: argparse.Namespace) -> None:
    service = DevAccountService(load_accounts(args.accounts))
    auth = DevAuthService(load_tokens(args.accounts))
    server, port = await start(service, args.host, args.port, auth)
    log.info(
        "dev account and auth services (%d accounts, %d tokens) on %s:%d",
        len(service.accounts), len(auth.tokens), args.host, port,
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description="Development account and auth services from a JSON file.")
    parser.add_argument("--accounts", type=Path, required=True, help="JSON file of accounts and tokens")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8210)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
