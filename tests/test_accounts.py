"""CreateSession checks the user with the account service: answers, TTL cache, single flight,
retries on UNAVAILABLE, fail-open (and fail-closed by setting), all over real gRPC channels to
the dev account service running in-process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc
from session_grpc.accounts import AccountSettings
from session_grpc.devservices import DevAccountService, load_accounts, start
from session_grpc.server import SessionServer

from .conftest import test_settings
from .helpers import expect_failure, new_session, serving

ACCOUNTS = Path(__file__).resolve().parents[1] / "devservices" / "accounts.json"


@pytest.fixture
async def accounts() -> AsyncIterator[tuple[DevAccountService, grpc.aio.Server, int]]:
    service = DevAccountService(load_accounts(ACCOUNTS))
    server, port = await start(service)
    yield service, server, port
    await server.stop(0)


@asynccontextmanager
async def session_service(database_url: str, port: int, **account) -> AsyncIterator[tuple[SessionServer, rpc.SessionServiceStub]]:
    settings = test_settings(database_url, account=AccountSettings(address=f"127.0.0.1:{port}", **account))
    async with serving(settings) as (server, channel):
        yield server, rpc.SessionServiceStub(channel)


async def test_active_user_gets_a_session(database_url, accounts):
    _, _, port = accounts
    async with session_service(database_url, port) as (_, sessions):
        assert (await new_session(sessions, "alice")).user_id == "alice"


@pytest.mark.parametrize("user_id", ["nobody", "gone"])
async def test_unknown_or_deleted_user_is_failed_precondition_user_not_found(database_url, accounts, sql, user_id):
    _, _, port = accounts
    async with session_service(database_url, port) as (_, sessions):
        failure = await expect_failure(new_session(sessions, user_id))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.reason == "USER_NOT_FOUND"
    assert await sql.fetchval("SELECT count(*) FROM sessions") == 0


async def test_suspended_user_is_permission_denied_user_suspended(database_url, accounts):
    _, _, port = accounts
    async with session_service(database_url, port) as (_, sessions):
        failure = await expect_failure(new_session(sessions, "mallory"))
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    assert failure.reason == "USER_SUSPENDED"


async def test_cached_answers_make_no_rpc_and_expire_on_time(database_url, accounts):
    service, _, port = accounts
    async with session_service(database_url, port, positive_ttl=0.5) as (_, sessions):
        for _ in range(5):
            await new_session(sessions, "alice")
        assert service.calls == 1
        await asyncio.sleep(0.6)
        await new_session(sessions, "alice")
        assert service.calls == 2


async def test_negative_answers_are_cached_for_the_negative_ttl(database_url, accounts):
    service, _, port = accounts
    async with session_service(database_url, port, negative_ttl=0.5) as (_, sessions):
        for _ in range(3):
            await expect_failure(new_session(sessions, "nobody"))
        assert service.calls == 1
        service.accounts["nobody"] = service.accounts["alice"].__class__(user_id="nobody", status=1)
        await asyncio.sleep(0.6)
        assert (await new_session(sessions, "nobody")).user_id == "nobody"
        assert service.calls == 2


async def test_concurrent_creates_for_one_new_user_share_one_lookup(database_url, accounts, sql):
    service, _, port = accounts
    service.delay = 0.1
    async with session_service(database_url, port) as (_, sessions):
        created = await asyncio.gather(*(new_session(sessions, "bob") for _ in range(100)))
    assert service.calls == 1
    assert len({s.session_id for s in created}) == 100
    assert await sql.fetchval("SELECT count(*) FROM sessions") == 100


async def test_unavailable_answers_are_retried_within_the_deadline(database_url, accounts):
    service, _, port = accounts
    service.unavailable_next = 2
    async with session_service(database_url, port, deadline=1.0) as (server, sessions):
        await new_session(sessions, "alice")
        assert service.calls == 3
        assert server.accounts.counters.fail_open == 0


async def test_stopped_account_service_fails_open_and_is_counted(database_url, accounts):
    _, account_server, port = accounts
    await account_server.stop(0)
    async with session_service(database_url, port) as (server, sessions):
        session = await new_session(sessions, "not-checkable")
        assert session.user_id == "not-checkable"
        assert server.accounts.counters.fail_open == 1


async def test_hanging_account_service_fails_open_within_deadline_plus_100ms(database_url, accounts):
    service, _, port = accounts
    async with session_service(database_url, port, deadline=0.3) as (server, sessions):
        await new_session(sessions, "alice")  # connects the channels
        # The same call with an account service that answers at once: what the box takes for the
        # rest of the call (on a loaded machine that alone can pass 100 ms).
        started = time.monotonic()
        await new_session(sessions, "bob")
        baseline = time.monotonic() - started
        service.delay = 5.0
        started = time.monotonic()
        await new_session(sessions, "someone")
        elapsed = time.monotonic() - started
        assert elapsed - baseline < 0.3 + 0.1, (elapsed, baseline)
        assert server.accounts.counters.fail_open == 1


async def test_fail_closed_setting_turns_an_outage_into_unavailable(database_url, accounts, sql):
    _, account_server, port = accounts
    await account_server.stop(0)
    async with session_service(database_url, port, fail_open=False) as (_, sessions):
        failure = await expect_failure(new_session(sessions, "alice"))
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    assert failure.reason == "ACCOUNT_SERVICE_UNAVAILABLE"
    assert await sql.fetchval("SELECT count(*) FROM sessions") == 0


async def test_outages_are_not_cached(database_url, accounts):
    service, account_server, port = accounts
    service.unavailable_next = 10
    async with session_service(database_url, port, retries=0) as (server, sessions):
        await new_session(sessions, "alice")
        service.unavailable_next = 0
        await new_session(sessions, "alice")
        await new_session(sessions, "alice")
    assert service.calls == 2
    assert server.accounts.counters.fail_open == 1


async def test_cache_is_bounded_and_evicts_the_least_recently_used(database_url, accounts):
    service, _, port = accounts
    async with session_service(database_url, port, cache_size=2) as (_, sessions):
        for user in ("alice", "bob", "alice", "nobody"):
            await new_session(sessions, user) if user != "nobody" else await expect_failure(new_session(sessions, user))
        calls = service.calls
        await new_session(sessions, "alice")  # recently used: still cached
        assert service.calls == calls
        await new_session(sessions, "bob")  # evicted by "nobody"
        assert service.calls == calls + 1


async def test_without_an_account_address_every_user_is_accepted(sessions):
    assert (await new_session(sessions, "anyone-at-all")).user_id == "anyone-at-all"


async def _wait_for_lookups(service: DevAccountService, count: int) -> None:
    """Until the account service has received `count` lookups (the shared one has started)."""
    while service.calls < count:
        await asyncio.sleep(0.005)


@pytest.mark.parametrize(
    "user_id,code,reason",
    [
        ("mallory", grpc.StatusCode.PERMISSION_DENIED, "USER_SUSPENDED"),
        ("nobody", grpc.StatusCode.FAILED_PRECONDITION, "USER_NOT_FOUND"),
    ],
)
async def test_a_cancelled_first_caller_never_decides_the_answer_of_those_sharing_its_lookup(
    database_url, accounts, sql, user_id, code, reason
):
    service, _, port = accounts
    service.delay = 0.5
    async with session_service(database_url, port, deadline=5.0) as (_, sessions):
        leader = asyncio.ensure_future(sessions.CreateSession(pb.CreateSessionRequest(user_id=user_id), timeout=0.2))
        await _wait_for_lookups(service, 1)
        waiters = [asyncio.ensure_future(expect_failure(new_session(sessions, user_id))) for _ in range(3)]
        leader_failure = await expect_failure(leader)
        answers = await asyncio.gather(*waiters)
    assert leader_failure.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert service.calls == 1, "the waiters shared the leader's lookup"
    assert [(a.code, a.reason) for a in answers] == [(code, reason)] * 3
    assert await sql.fetchval("SELECT count(*) FROM sessions") == 0


async def test_a_lookup_whose_only_caller_was_cancelled_still_caches_the_real_answer(database_url, accounts, sql):
    service, _, port = accounts
    service.delay = 0.5
    async with session_service(database_url, port, deadline=5.0) as (server, sessions):
        first = await expect_failure(
            sessions.CreateSession(pb.CreateSessionRequest(user_id="mallory"), timeout=0.2)
        )
        assert first.code == grpc.StatusCode.DEADLINE_EXCEEDED
        while server.accounts.counters.answered < 1:  # the lookup runs on without its caller
            await asyncio.sleep(0.01)
        second = await expect_failure(new_session(sessions, "mallory"))
    assert (second.code, second.reason) == (grpc.StatusCode.PERMISSION_DENIED, "USER_SUSPENDED")
    assert service.calls == 1, "the second call was answered from the cache"
    assert await sql.fetchval("SELECT count(*) FROM sessions") == 0
