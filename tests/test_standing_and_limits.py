"""Token mode at the boundary: account standing on every write (a suspended user may still read),
and the limit on calls in flight per principal. RPC lists come from the policy table."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest


from session_grpc._proto.account.v1 import account_pb2
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc
from session_grpc.accounts import AccountSettings
from session_grpc.auth import AuthSettings
from session_grpc.devservices import DevAccountService, DevAuthService, DevToken, start
from session_grpc.policy import POLICIES, Kind
from session_grpc.server import channel_options
from session_grpc.settings import Settings

from . import rpcs
from .conftest import test_settings
from .helpers import expect_failure, failure, serving


@pytest.fixture
async def dev() -> AsyncIterator[tuple[DevAccountService, DevAuthService, int]]:
    active = account_pb2.ACCOUNT_STATUS_ACTIVE
    accounts = DevAccountService({name: account_pb2.Account(user_id=name, status=active) for name in ("carol", "dave")})
    expires = time.time() + 3600
    auth = DevAuthService({f"{name}-token": DevToken(user_id=name, scopes=(), expire_time=expires) for name in ("carol", "dave")})
    server, port = await start(accounts, auth=auth)
    yield accounts, auth, port
    await server.stop(0)


def token_server(database_url: str, port: int, **overrides: object):
    address = f"127.0.0.1:{port}"
    return serving(
        test_settings(
            database_url, auth_mode="token", auth=AuthSettings(address=address),
            # Every answer is asked afresh (no cache), so a suspension shows at once.
            account=AccountSettings(address=address, positive_ttl=0.0, negative_ttl=0.0), **overrides,
        )
    )


async def carols_session(channel: grpc.aio.Channel, user: str = "carol") -> str:
    method = rpcs.SESSIONS + "CreateSession"
    created = await rpcs.call(channel, method, rpcs.request(method, user), f"{user}-token")
    sid = created.session.session_id
    await rpcs.call(channel, rpcs.MEMORIES + "CreateMemory", rpcs.request(rpcs.MEMORIES + "CreateMemory", sid), f"{user}-token")
    await rpcs.call(channel, ADD, rpcs.request(ADD, sid), f"{user}-token")
    return sid


ADD = "/session.v1.MessageService/AddMessage"
GET = "/session.v1.SessionService/GetSession"


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
        # A budget for GetBudget to read (these accounts have no admin to set it through SetBudget).
        await sql.execute("INSERT INTO budgets (user_id, daily_tokens, day, month) "
                          "VALUES ('carol', 1000000, current_date, date_trunc('month', current_date))")
        accounts.accounts["carol"].status = status
        user_rpcs = rpcs.methods(Kind.OWNS_SESSION) + rpcs.methods(Kind.ACTS_FOR)
        writes = [m for m in user_rpcs if POLICIES[m].writes and POLICIES[m].standing]
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


# ---- calls in flight per principal ---------------------------------------------------------


async def until(condition, what: str) -> None:
    """Wait for `condition()` (an awaitable) to hold; a bound only so a broken rule cannot hang the suite."""
    for _ in range(1500):
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


async def test_a_principal_over_its_in_flight_share_is_resource_exhausted_while_others_are_served(
    database_url, dev, sql
):
    _, _, port = dev
    async with token_server(database_url, port, max_calls_per_principal=4) as (_, channel):
        carols, daves = await carols_session(channel), await carols_session(channel, "dave")
        lock = sql.transaction()
        await lock.start()
        await sql.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", carols)
        burst = [asyncio.ensure_future(rpcs.call(channel, ADD, rpcs.request(ADD, carols), "carol-token")) for _ in range(10)]

        async def four_waiting_and_six_refused() -> bool:
            await sql.execute("SELECT pg_stat_clear_snapshot()")  # read once per transaction otherwise
            waiting = await sql.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return waiting == 4 and sum(task.done() for task in burst) == 6

        await until(four_waiting_and_six_refused, "4 of carol's calls running (blocked on the row lock), 6 refused")
        refused = [task.exception() for task in burst if task.done()]
        assert all(isinstance(error, grpc.aio.AioRpcError) for error in refused)
        assert {error.code() for error in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert {(f.reason, f.quota_subject) for f in map(failure, refused)} == {("TOO_MANY_CALLS_IN_FLIGHT", "user:carol")}
        # Her share counts every call of hers, reads too; another user is served meanwhile.
        with pytest.raises(grpc.aio.AioRpcError) as read:
            await rpcs.call(channel, GET, rpcs.request(GET, carols), "carol-token")
        assert read.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await rpcs.call(channel, ADD, rpcs.request(ADD, daves), "dave-token")
        await lock.rollback()
        assert len(await asyncio.gather(*[task for task in burst if not task.done()])) == 4
        await rpcs.call(channel, GET, rpcs.request(GET, carols), "carol-token")  # her slots are free again
    assert await sql.fetchval("SELECT message_count FROM sessions WHERE id = $1", carols) == 1 + 4


async def test_connections_past_the_limit_are_refused(database_url):
    async with serving(test_settings(database_url, max_connections=1)) as (server, first):
        await rpc.SessionServiceStub(first).GetServiceStats(pb.GetServiceStatsRequest(), timeout=10)
        # A subchannel pool of its own, or grpc would share the first channel's connection.
        own = [("grpc.use_local_subchannel_pool", 1)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=own) as second:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await rpc.SessionServiceStub(second).GetServiceStats(pb.GetServiceStatsRequest(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        await rpc.SessionServiceStub(first).GetServiceStats(pb.GetServiceStatsRequest(), timeout=10)


def test_concurrency_settings_come_from_the_environment_and_reach_the_transport():
    settings = Settings.from_env(
        {"SESSION_MAX_CONCURRENT_STREAMS": "7", "SESSION_MAX_CONNECTIONS": "3", "SESSION_MAX_CALLS_PER_PRINCIPAL": "5",
         "SESSION_MAX_PENDING_CALLS": "11"}
    )
    assert settings.max_calls_per_principal == 5
    options = dict(channel_options(settings))
    assert options["grpc.max_concurrent_streams"] == 7
    assert options["grpc.max_allowed_incoming_connections"] == 3
    assert (options["grpc.server.max_pending_requests"], options["grpc.server.max_pending_requests_hard_limit"]) == (11, 33)
    assert "grpc.max_allowed_incoming_connections" not in dict(channel_options(Settings(max_connections=0)))


async def test_the_python_client_retries_a_write_refused_for_too_many_calls_in_flight(database_url, dev, sql):
    from session_client import RetryPolicy, SessionClient

    _, _, port = dev
    async with token_server(database_url, port, max_calls_per_principal=1) as (server, channel):
        sid = await carols_session(channel)
        lock = sql.transaction()
        await lock.start()
        await sql.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", sid)
        holder = asyncio.ensure_future(rpcs.call(channel, ADD, rpcs.request(ADD, sid), "carol-token"))

        async def holder_running() -> bool:
            await sql.execute("SELECT pg_stat_clear_snapshot()")
            return await sql.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ) == 1

        await until(holder_running, "carol's one allowed call running")
        retry = RetryPolicy(initial_backoff=0.02, max_backoff=0.1, max_attempts=10_000, total_deadline=60)
        async with SessionClient(
            f"127.0.0.1:{server.port}", token="carol-token", insecure_token=True, retry=retry, timeout=None
        ) as carol:
            ending = asyncio.ensure_future(carol.end_session(sid))  # a write without a request_id

            async def refused() -> bool:
                labels = {"grpc_service": "session.v1.SessionService", "grpc_method": "EndSession",
                          "grpc_code": "RESOURCE_EXHAUSTED"}
                return (server.observability.registry.get_sample_value("session_grpc_server_handled_total", labels) or 0) >= 2

            await until(refused, "EndSession refused (and tried again)")
            await lock.rollback()
            await holder
            ended = await ending
        assert ended.status == pb.SESSION_STATUS_ENDED


async def test_calls_past_the_stream_limit_of_a_connection_wait_in_the_client_and_none_is_lost(database_url, sql):
    """With 4 streams per connection and 4 calls blocked in the server, 8 more wait in the client
    (grpc queues them); once the block clears every call ends OK or, when grpc's client starts a
    stream just as another ends, UNAVAILABLE (REFUSED_STREAM: it never ran). Never CANCELLED, and
    the messages stored are exactly the calls that succeeded."""
    async with serving(test_settings(database_url, max_concurrent_streams=4)) as (server, channel):
        stub = rpc.SessionServiceStub(channel)
        messages = rpc.MessageServiceStub(channel)
        sid = (await stub.CreateSession(pb.CreateSessionRequest(user_id="u"))).session.session_id
        lock = sql.transaction()
        await lock.start()
        await sql.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", sid)
        burst = [
            asyncio.ensure_future(messages.AddMessage(pb.AddMessageRequest(session_id=sid, role=pb.ROLE_USER, content="x")))
            for _ in range(12)
        ]

        async def four_running() -> bool:
            await sql.execute("SELECT pg_stat_clear_snapshot()")
            return await sql.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ) == 4

        await until(four_running, "4 calls running in the server")
        assert server.drain.in_flight == 4 and not any(task.done() for task in burst)
        await lock.rollback()
        outcomes = await asyncio.gather(*burst, return_exceptions=True)
    codes = [grpc.StatusCode.OK if isinstance(o, pb.AddMessageResponse) else o.code() for o in outcomes]
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    assert await sql.fetchval("SELECT message_count FROM sessions WHERE id = $1", sid) == codes.count(grpc.StatusCode.OK)


async def test_a_burst_of_two_thousand_concurrent_calls_is_served_not_shed(database_url):
    """gRPC core sheds calls it has received but Python has not taken up yet past
    grpc.server.max_pending_requests (CANCELLED: the client cannot tell whether it ran). With
    gRPC's default of 1000 about 10 % of such a burst was lost; SESSION_MAX_PENDING_CALLS raises it."""
    async with serving(test_settings(database_url)) as (server, first):
        own = [("grpc.use_local_subchannel_pool", 1)]  # a second connection, within the stream limit of each
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=own) as second:
            sid = (await rpc.SessionServiceStub(first).CreateSession(pb.CreateSessionRequest(user_id="u"))).session.session_id
            stubs = [rpc.SessionServiceStub(channel) for channel in (first, second)]
            outcomes = await asyncio.gather(
                *[stubs[i % 2].GetSession(pb.GetSessionRequest(session_id=sid), timeout=120) for i in range(2000)],
                return_exceptions=True,
            )
    failures = [o.code() for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert failures == []


async def test_a_create_session_asks_about_its_user_once(database_url, dev):
    """The named user of CreateSession and the calling user are one account for a user
    principal: the boundary checks it once (no second lookup, no second fail-open count)."""
    accounts, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        before = accounts.calls
        method = rpcs.SESSIONS + "CreateSession"
        await rpcs.call(channel, method, rpcs.request(method, "carol"), "carol-token")
        assert accounts.calls - before == 1
