"""Token mode at the boundary: account standing on every write (a suspended user may still read),
and the limit on calls in flight per principal. RPC lists come from the policy table."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import pytest

from session_grpc._proto.account.v1 import account_pb2
from session_grpc.accounts import AccountSettings
from session_grpc.auth import AuthSettings
from session_grpc.devservices import DevAccountService, DevAuthService, DevToken, start
from session_grpc.policy import POLICIES, Kind

from . import rpcs
from .conftest import test_settings
from .helpers import expect_failure, serving


@pytest.fixture
async def dev() -> AsyncIterator[tuple[DevAccountService, DevAuthService, int]]:
    accounts = DevAccountService({"carol": account_pb2.Account(user_id="carol", status=account_pb2.ACCOUNT_STATUS_ACTIVE)})
    auth = DevAuthService({"carol-token": DevToken(user_id="carol", scopes=(), expire_time=time.time() + 3600)})
    server, port = await start(accounts, auth=auth)
    yield accounts, auth, port
    await server.stop(0)


def token_server(database_url: str, port: int, **overrides: object):  # type: ignore[no-untyped-def]
    address = f"127.0.0.1:{port}"
    return serving(
        test_settings(
            database_url, auth_mode="token", auth=AuthSettings(address=address),
            # Every answer is asked afresh (no cache), so a suspension shows at once.
            account=AccountSettings(address=address, positive_ttl=0.0, negative_ttl=0.0), **overrides,
        )
    )


async def carols_session(channel: grpc.aio.Channel) -> str:
    method = rpcs.SESSIONS + "CreateSession"
    created = await rpcs.call(channel, method, rpcs.request(method, "carol"), "carol-token")
    sid = created.session.session_id
    await rpcs.call(channel, rpcs.MEMORIES + "CreateMemory", rpcs.request(rpcs.MEMORIES + "CreateMemory", sid), "carol-token")
    add = "/session.v1.MessageService/AddMessage"
    await rpcs.call(channel, add, rpcs.request(add, sid), "carol-token")
    return sid


def target(method: str, sid: str) -> str:
    return sid if POLICIES[method].kind is Kind.OWNS_SESSION else "carol"


@pytest.mark.parametrize(
    "status,code,reason",
    [
        (account_pb2.ACCOUNT_STATUS_SUSPENDED, grpc.StatusCode.PERMISSION_DENIED, "USER_SUSPENDED"),
        (account_pb2.ACCOUNT_STATUS_DELETED, grpc.StatusCode.FAILED_PRECONDITION, "USER_NOT_FOUND"),
    ],
    ids=["suspended", "deleted"],
)
async def test_a_suspended_or_deleted_user_with_a_valid_token_may_read_but_not_write(
    database_url, dev, sql, status, code, reason
):
    accounts, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        sid = await carols_session(channel)
        accounts.accounts["carol"].status = status
        user_rpcs = rpcs.methods(Kind.OWNS_SESSION) + rpcs.methods(Kind.ACTS_FOR)
        writes = [m for m in user_rpcs if POLICIES[m].writes]
        reads = [m for m in user_rpcs if not POLICIES[m].writes]
        assert writes and reads
        for method in writes:
            failure = await expect_failure(rpcs.call(channel, method, rpcs.request(method, target(method, sid)), "carol-token"))
            assert (failure.code, failure.reason) == (code, reason), method
        for method in reads:
            await rpcs.call(channel, method, rpcs.request(method, target(method, sid)), "carol-token")
    assert await sql.fetchval("SELECT count(*) FROM sessions") == 1
    row = await sql.fetchrow("SELECT title, status, message_count FROM sessions WHERE id = $1", sid)
    assert tuple(row) == ("", "active", 1), "nothing changed after the suspension"
    assert await sql.fetchval("SELECT conversation_summary FROM memories WHERE session_id = $1", sid) == ""
