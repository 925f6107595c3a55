"""Token mode: authentication through the auth service (cached, failing closed) and the
authorization matrix (RPCs from the policy table, tests/rpcs.py), all over real channels to the dev auth service; TLS and mutual TLS."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc
from session_grpc.auth import AuthSettings
from session_grpc.devservices import DevAccountService, DevAuthService, DevToken, load_accounts, load_tokens, start
from session_grpc.policy import POLICIES, Kind
from session_grpc.server import SessionServer, build_server

from . import rpcs
from .certs import make_pki
from .conftest import test_settings
from .helpers import RpcFailure, expect_failure, serving

ACCOUNTS = Path(__file__).resolve().parents[1] / "devservices" / "accounts.json"


class Stubs:
    def __init__(self, channel: grpc.aio.Channel, token: str | None) -> None:
        self.sessions = rpc.SessionServiceStub(channel)
        self.messages = rpc.MessageServiceStub(channel)
        self.memories = rpc.MemoryServiceStub(channel)
        self.usage = rpc.UsageServiceStub(channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()


@pytest.fixture
async def dev() -> AsyncIterator[tuple[DevAuthService, grpc.aio.Server, int]]:
    auth = DevAuthService(load_tokens(ACCOUNTS))
    server, port = await start(DevAccountService(load_accounts(ACCOUNTS)), auth=auth)
    yield auth, server, port
    await server.stop(0)


def token_server(database_url: str, auth_port: int, **auth):
    return serving(
        test_settings(database_url, auth_mode="token", auth=AuthSettings(address=f"127.0.0.1:{auth_port}", **auth))
    )


async def bobs_session(channel: grpc.aio.Channel, memory: bool = False) -> str:
    bob = Stubs(channel, "bob-token")
    sid = (await bob.sessions.CreateSession(pb.CreateSessionRequest(user_id="bob"), metadata=bob.metadata)).session.session_id
    if memory:
        await bob.memories.CreateMemory(pb.CreateMemoryRequest(session_id=sid), metadata=bob.metadata)
    return sid


async def fresh_target(channel: grpc.aio.Channel, method: str) -> str:
    """What `method`'s policy field should name for the call to succeed: a new session of bob's
    (with a memory when the RPC reads one), or bob himself (with a budget when the RPC reads one)."""
    if POLICIES[method].kind is Kind.OWNS_SESSION:
        return await bobs_session(channel, memory=method in rpcs.NEEDS_MEMORY)
    if method in rpcs.NEEDS_RETENTION_POLICY:
        await rpcs.call(channel, "/session.v1.RetentionService/SetRetentionPolicy",
                        rpcs.request("/session.v1.RetentionService/SetRetentionPolicy"), "admin-token")
    if method in rpcs.NEEDS_BUDGET:
        admin = Stubs(channel, "admin-token")
        await admin.usage.SetBudget(
            pb.SetBudgetRequest(budget=pb.Budget(user_id="bob", daily_tokens=1000)), metadata=admin.metadata
        )
    return "bob"


def same_as_missing(failure: RpcFailure, missing: RpcFailure) -> bool:
    return (failure.code, failure.reason, failure.resource_type) == (missing.code, missing.reason, missing.resource_type)


async def test_another_users_session_looks_exactly_like_a_missing_one_for_every_rpc(database_url, dev, sql):
    _, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        sid = await bobs_session(channel)
        assert rpcs.methods(Kind.OWNS_SESSION)
        for method in rpcs.methods(Kind.OWNS_SESSION):
            failure = await expect_failure(rpcs.call(channel, method, rpcs.request(method, sid), "alice-token"))
            missing = await expect_failure(
                rpcs.call(channel, method, rpcs.request(method, str(uuid.uuid4())), "alice-token")
            )
            assert failure.code == grpc.StatusCode.NOT_FOUND, method
            assert same_as_missing(failure, missing), method
    row = await sql.fetchrow("SELECT title, status, message_count FROM sessions WHERE id = $1", sid)
    assert tuple(row) == ("", "active", 0), "nothing of bob's changed"
    assert await sql.fetchval("SELECT count(*) FROM memories") == 0


async def test_a_batched_stream_of_another_users_session_looks_exactly_like_a_missing_one(database_url, dev):
    _, _, port = dev
    method = "/session.v1.MessageService/StreamMessages"
    async with token_server(database_url, port) as (_, channel):
        sid = await bobs_session(channel)
        bob = Stubs(channel, "bob-token")
        await bob.messages.AddMessage(
            pb.AddMessageRequest(session_id=sid, role=pb.ROLE_USER, content="mine"), metadata=bob.metadata
        )
        theirs = pb.StreamMessagesRequest(session_id=sid, batched=True)
        nobodys = pb.StreamMessagesRequest(session_id=str(uuid.uuid4()), batched=True)
        failure = await expect_failure(rpcs.call(channel, method, theirs, "alice-token"))
        missing = await expect_failure(rpcs.call(channel, method, nobodys, "alice-token"))
        assert failure.code == grpc.StatusCode.NOT_FOUND
        assert same_as_missing(failure, missing)
        own = await rpcs.call(channel, method, theirs, "bob-token")
        assert [[m.content for m in response.messages] for response in own] == [["mine"]]


async def test_a_user_naming_another_user_is_permission_denied(database_url, dev):
    _, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        assert rpcs.methods(Kind.ACTS_FOR)
        for method in rpcs.methods(Kind.ACTS_FOR):
            failure = await expect_failure(rpcs.call(channel, method, rpcs.request(method, "bob"), "alice-token"))
            assert failure.code == grpc.StatusCode.PERMISSION_DENIED, method
            assert failure.reason == "OTHER_USER", method


async def test_admin_rpcs_need_the_admin_scope(database_url, dev):
    _, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        assert rpcs.methods(Kind.ADMIN)
        for method in rpcs.methods(Kind.ADMIN):
            failure = await expect_failure(rpcs.call(channel, method, rpcs.request(method), "alice-token"))
            assert failure.code == grpc.StatusCode.PERMISSION_DENIED, method
            assert failure.reason == "ADMIN_REQUIRED", method


async def test_a_user_may_do_everything_with_their_own_sessions(database_url, dev):
    _, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        for method in rpcs.methods(Kind.OWNS_SESSION) + rpcs.methods(Kind.ACTS_FOR):
            target = await fresh_target(channel, method)
            await rpcs.call(channel, method, rpcs.request(method, target), "bob-token")  # raises on any failure


async def test_an_admin_may_do_everything_with_every_session(database_url, dev):
    _, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        for method in rpcs.methods():
            target = await fresh_target(channel, method)
            await rpcs.call(channel, method, rpcs.request(method, target), "admin-token")


async def test_a_user_who_leaves_user_id_empty_acts_for_themselves(database_url, dev):
    _, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        await bobs_session(channel)
        alice = Stubs(channel, "alice-token")
        created = await alice.sessions.CreateSession(pb.CreateSessionRequest(title="mine"), metadata=alice.metadata)
        assert created.session.user_id == "alice"
        listed = await alice.sessions.ListSessions(pb.ListSessionsRequest(), metadata=alice.metadata)
        assert [s.session_id for s in listed.sessions] == [created.session.session_id]
        assert listed.total_size == 1


async def test_a_user_lists_only_their_own_sessions_in_any_app(database_url, dev):
    _, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        alice, bob = Stubs(channel, "alice-token"), Stubs(channel, "bob-token")
        for stubs, user in ((alice, "alice"), (bob, "bob")):
            for app in ("shared", "default"):
                await stubs.sessions.CreateSession(
                    pb.CreateSessionRequest(user_id=user, app_name=app), metadata=stubs.metadata
                )
        for app in ("shared", "default", ""):
            listed = await alice.sessions.ListSessions(pb.ListSessionsRequest(app_name=app), metadata=alice.metadata)
            assert {s.user_id for s in listed.sessions} == {"alice"}, app
            assert listed.total_size == (2 if app == "" else 1), app
            failure = await expect_failure(
                alice.sessions.ListSessions(pb.ListSessionsRequest(user_id="bob", app_name=app), metadata=alice.metadata)
            )
            assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "OTHER_USER"), app


@pytest.mark.parametrize(
    "token,expected",
    [(None, "no token"), ("not-a-token", "bad token"), ("expired-token", "expired token")],
)
async def test_calls_without_a_valid_token_are_unauthenticated(database_url, dev, sql, token, expected):
    _, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        sid = await bobs_session(channel)
        for method in rpcs.methods():
            target = sid if POLICIES[method].kind is Kind.OWNS_SESSION else "bob"
            failure = await expect_failure(rpcs.call(channel, method, rpcs.request(method, target), token))
            assert failure.code == grpc.StatusCode.UNAUTHENTICATED, (expected, method)
    assert await sql.fetchval("SELECT count(*) FROM sessions") == 1


async def test_a_malformed_authorization_header_is_unauthenticated(database_url, dev):
    _, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        stub = rpc.SessionServiceStub(channel)
        for value in ("alice-token", "Basic YWxpY2U=", "Bearer "):
            failure = await expect_failure(
                stub.GetServiceStats(pb.GetServiceStatsRequest(), metadata=(("authorization", value),))
            )
            assert failure.code == grpc.StatusCode.UNAUTHENTICATED, value


async def test_auth_service_down_is_unavailable_never_open(database_url, dev):
    _, auth_server, port = dev
    async with token_server(database_url, port) as (_, channel):
        await auth_server.stop(0)
        for method in rpcs.methods(Kind.ADMIN):
            failure = await expect_failure(rpcs.call(channel, method, rpcs.request(method), "admin-token"))
            assert failure.code == grpc.StatusCode.UNAVAILABLE, method


async def test_health_and_reflection_need_no_token(database_url, dev):
    _, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_verified_tokens_are_cached_until_the_cache_ttl(database_url, dev):
    auth, _, port = dev
    async with token_server(database_url, port, cache_ttl=0.5) as (_, channel):
        admin = Stubs(channel, "admin-token")
        for _ in range(5):
            await admin.sessions.GetServiceStats(pb.GetServiceStatsRequest(), metadata=admin.metadata)
        assert auth.calls == 1
        await asyncio.sleep(0.6)
        await admin.sessions.GetServiceStats(pb.GetServiceStatsRequest(), metadata=admin.metadata)
        assert auth.calls == 2


@pytest.fixture(params=["UTC", "Asia/Tokyo", "America/Los_Angeles"])
def host_time_zone(request: pytest.FixtureRequest) -> Iterator[str]:
    """The server process runs in this local time zone (token expiry must not depend on it)."""
    previous = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    try:
        yield request.param
    finally:
        if previous is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = previous
        time.tzset()


async def test_a_valid_token_is_accepted_whatever_the_hosts_time_zone(database_url, dev, host_time_zone):
    auth, _, port = dev
    auth.tokens["hour-token"] = DevToken(user_id="alice", scopes=(), expire_time=time.time() + 3600)
    async with token_server(database_url, port) as (_, channel):
        alice = Stubs(channel, "hour-token")
        await alice.sessions.CreateSession(pb.CreateSessionRequest(user_id="alice"), metadata=alice.metadata)


async def test_a_cached_token_is_not_trusted_past_its_own_expiry(database_url, dev, host_time_zone):
    auth, _, port = dev
    async with token_server(database_url, port, cache_ttl=60) as (_, channel):
        # Made once the server is up, with room for a loaded machine's first call (it once took
        # longer than a 0.5 s token lived); the second call comes after the token's end.
        expire_time = time.time() + 2
        auth.tokens["short-token"] = DevToken(user_id="", scopes=("sessions.admin",), expire_time=expire_time)
        short = Stubs(channel, "short-token")
        await short.sessions.GetServiceStats(pb.GetServiceStatsRequest(), metadata=short.metadata)
        await asyncio.sleep(max(0.0, expire_time - time.time()) + 0.1)
        failure = await expect_failure(
            short.sessions.GetServiceStats(pb.GetServiceStatsRequest(), metadata=short.metadata)
        )
        assert failure.code == grpc.StatusCode.UNAUTHENTICATED
        assert auth.calls == 2


async def test_two_authorization_headers_are_unauthenticated(database_url, dev):
    auth, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        stub = rpc.SessionServiceStub(channel)
        for second in ("Bearer alice-token", "Bearer admin-token", "Basic YWxpY2U="):
            failure = await expect_failure(
                stub.GetServiceStats(
                    pb.GetServiceStatsRequest(),
                    metadata=(("authorization", "Bearer admin-token"), ("authorization", second)),
                )
            )
            assert failure.code == grpc.StatusCode.UNAUTHENTICATED, second
    assert auth.calls == 0, "refused before asking the auth service"


async def test_rejected_tokens_are_remembered_for_the_negative_ttl(database_url, dev):
    auth, _, port = dev
    async with token_server(database_url, port, negative_ttl=0.5) as (_, channel):
        garbage = Stubs(channel, "not-a-token")
        for _ in range(5):
            failure = await expect_failure(
                garbage.sessions.ListSessions(pb.ListSessionsRequest(), metadata=garbage.metadata)
            )
            assert failure.code == grpc.StatusCode.UNAUTHENTICATED
        assert auth.calls == 1
        auth.tokens["not-a-token"] = DevToken(user_id="", scopes=("sessions.admin",), expire_time=time.time() + 60)
        await asyncio.sleep(0.6)
        await garbage.sessions.GetServiceStats(pb.GetServiceStatsRequest(), metadata=garbage.metadata)
        assert auth.calls == 2


@pytest.mark.parametrize("token,code", [("not-a-token", grpc.StatusCode.UNAUTHENTICATED), ("admin-token", None)])
async def test_concurrent_calls_with_one_uncached_token_share_one_verification(database_url, dev, token, code):
    auth, _, port = dev
    auth.delay = 0.1
    async with token_server(database_url, port) as (_, channel):
        caller = Stubs(channel, token)
        calls = [caller.sessions.GetServiceStats(pb.GetServiceStatsRequest(), metadata=caller.metadata) for _ in range(50)]
        results = await asyncio.gather(*calls, return_exceptions=True)
    assert auth.calls == 1
    assert [r.code() if isinstance(r, grpc.aio.AioRpcError) else None for r in results] == [code] * 50


async def test_a_cancelled_first_caller_never_decides_the_verification_of_the_others(database_url, dev):
    auth, _, port = dev
    auth.delay = 0.5
    async with token_server(database_url, port, deadline=5.0) as (_, channel):
        admin = Stubs(channel, "admin-token")
        leader = asyncio.ensure_future(
            admin.sessions.GetServiceStats(pb.GetServiceStatsRequest(), metadata=admin.metadata, timeout=0.2)
        )
        while auth.calls < 1:
            await asyncio.sleep(0.005)
        waiters = [admin.sessions.GetServiceStats(pb.GetServiceStatsRequest(), metadata=admin.metadata) for _ in range(3)]
        assert (await expect_failure(leader)).code == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.gather(*waiters)  # all verified by the one lookup the leader started
    assert auth.calls == 1


# ---- TLS -------------------------------------------------------------------------------------


@asynccontextmanager
async def tls_server(database_url: str, folder: Path, mutual: bool) -> AsyncIterator[tuple[SessionServer, object]]:
    ca, server_pem, client_pem = make_pki(folder)
    settings = test_settings(
        database_url, tls_cert=server_pem.cert, tls_key=server_pem.key, tls_client_ca=ca.cert if mutual else None
    )
    server = build_server(settings)
    await server.start()
    try:
        yield server, (ca, client_pem)
    finally:
        await server.stop(grace=0)


async def _ping(port: int, credentials: grpc.ChannelCredentials) -> None:
    async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as channel:
        await rpc.SessionServiceStub(channel).GetServiceStats(pb.GetServiceStatsRequest(), timeout=5)


async def test_tls_serves_clients_that_trust_the_ca_and_refuses_plaintext(database_url, tmp_path):
    async with tls_server(database_url, tmp_path, mutual=False) as (server, (ca, _)):
        await _ping(server.port, grpc.ssl_channel_credentials(root_certificates=ca.cert.read_bytes()))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as plain:
            failure = await expect_failure(
                rpc.SessionServiceStub(plain).GetServiceStats(pb.GetServiceStatsRequest(), timeout=2)
            )
            assert failure.code == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_refuses_a_client_without_a_certificate(database_url, tmp_path):
    async with tls_server(database_url, tmp_path, mutual=True) as (server, (ca, client)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _ping(server.port, grpc.ssl_channel_credentials(root_certificates=ca.cert.read_bytes()))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        await _ping(
            server.port,
            grpc.ssl_channel_credentials(
                root_certificates=ca.cert.read_bytes(),
                private_key=client.key.read_bytes(),
                certificate_chain=client.cert.read_bytes(),
            ),
        )
