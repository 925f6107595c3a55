"""Network partitions: the database, the account service or the auth service stops answering
without closing a socket (reliability/blackhole.py between them and the server), then the path
heals.

What must hold: calls end by their deadlines (DEADLINE_EXCEEDED, or UNAVAILABLE where a shorter
bound applies: a connection that cannot be opened, the account and auth services' own deadlines),
never hang; health turns NOT_SERVING while the database cannot be reached; after the heal the pool
serves again without a restart; every acknowledged write is stored exactly once, and every failed
one, retried with its request_id, once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc
from session_grpc.accounts import AccountSettings
from session_grpc.auth import AuthSettings
from session_grpc.devservices import DevAccountService, DevAuthService, load_accounts, load_tokens, start
from session_grpc.server import build_server, running
from session_grpc.settings import Settings

from .blackhole import BlackHoleProxy, postgres_upstream, through
from .scenarios import Outcome, Writers, _open_sessions, drops_its_databases, fresh_database, verify

ACCOUNTS = Path(__file__).resolve().parents[1] / "devservices" / "accounts.json"
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


@drops_its_databases
async def database_partition(
    server_url: str, *, writers: int = 16, before: float = 3.0, partition: float = 8.0, after: float = 5.0,
    deadline: float = 2.0,
) -> Outcome:
    """Writers with a `deadline` per call; the database path is black-holed for `partition` s.
    One more call, sent without a deadline at the cut, must be ended by the server's own
    SESSION_DEFAULT_DEADLINE (1.5 x `deadline` here)."""
    outcome = Outcome("database partition (black hole)")
    url = await fresh_database(server_url)
    proxy = BlackHoleProxy(postgres_upstream(url))
    await proxy.start()
    settings = Settings(
        port=0, host="127.0.0.1", database_url=through(url, proxy.port), expiry_interval=0, health_interval=0.5,
        db_connect_timeout=1.0, db_pool_timeout=1.0, shutdown_grace=2.0, default_deadline=1.5 * deadline,
    )
    server = build_server(settings)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            # More pooled connections than writers, as on any server between bursts: at the cut some
            # sit idle in the pool, and the health check takes one of those (a silent one).
            stats = rpc.SessionServiceStub(channel)
            await asyncio.gather(*(stats.GetServiceStats(pb.GetServiceStatsRequest()) for _ in range(writers + 4)))
            load = Writers(channel, await _open_sessions(channel, writers), outcome, timeout=deadline)
            load.start()
            await asyncio.sleep(before)
            proxy.cut()
            outcome.faults += 1
            cut_at = time.monotonic()
            not_serving_after = None
            unbounded = asyncio.ensure_future(_without_deadline(stats, settings.default_deadline + 5))
            while time.monotonic() - cut_at < partition:
                status = (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status
                if status == NOT_SERVING and not_serving_after is None:
                    not_serving_after = time.monotonic() - cut_at
                    outcome.not_serving_seen = True
                await asyncio.sleep(0.1)
            proxy.heal()
            healed_at = time.monotonic()
            while time.monotonic() - healed_at < after:
                await asyncio.sleep(0.05)
                if load.last_ack > healed_at and outcome.recovery_seconds is None:
                    outcome.recovery_seconds = load.last_ack - healed_at
            code, took = await unbounded
            if code not in ("DEADLINE_EXCEEDED", "UNAVAILABLE"):
                outcome.failed[f"NO_DEADLINE_CALL_{code}"] += 1
            await load.stop()
            await load.retry_unacked()
            await server.check_health()
            if (await health.Check(health_pb2.HealthCheckRequest())).status != SERVING:
                outcome.failed["HEALTH_NOT_BACK"] += 1
            if not outcome.not_serving_seen:
                outcome.failed["HEALTH_STAYED_SERVING"] += 1
        await verify(url, load, outcome)
        outcome.notes = (
            f"{writers} writers, {deadline:g} s deadline per call, {partition:g} s partition; health "
            f"NOT_SERVING {'after %.1f s' % not_serving_after if not_serving_after is not None else 'never'}; "
            f"a call without a deadline ended {code} after {took:.1f} s (SESSION_DEFAULT_DEADLINE "
            f"{settings.default_deadline:g} s)"
        )
    finally:
        await server.stop(grace=1)
        await proxy.close()
    return outcome


async def _without_deadline(stats: rpc.SessionServiceStub, give_up: float) -> tuple[str, float]:
    """The code a call sent without a deadline ended with, and when; HUNG if it outlived `give_up`."""
    started = time.monotonic()
    try:
        await asyncio.wait_for(stats.GetServiceStats(pb.GetServiceStatsRequest()), give_up)
        code = "OK"
    except grpc.aio.AioRpcError as error:
        code = error.code().name
    except TimeoutError:
        code = "HUNG"
    return code, time.monotonic() - started


@drops_its_databases
async def service_partition(
    server_url: str, *, service: str, clients: int = 8, before: float = 2.0, partition: float = 4.0,
    after: float = 3.0,
) -> Outcome:
    """Token mode with the account check failing closed; the path to the account (or the auth)
    service is black-holed. Calls create sessions with a request_id each; the caches are kept
    short (0.5 s) so every phase asks the service. Calls must end by that service's deadline
    with UNAVAILABLE, the other service's path untouched."""
    assert service in ("account", "auth")
    outcome = Outcome(f"{service} service partition (black hole)")
    url = await fresh_database(server_url)
    dev_accounts = DevAccountService(load_accounts(ACCOUNTS))
    account_server, account_port = await start(dev_accounts)
    auth_server, auth_port = await start(DevAccountService({}), auth=DevAuthService(load_tokens(ACCOUNTS)))
    proxy = BlackHoleProxy(("127.0.0.1", account_port if service == "account" else auth_port))
    await proxy.start()
    account_address = f"127.0.0.1:{proxy.port if service == 'account' else account_port}"
    auth_address = f"127.0.0.1:{proxy.port if service == 'auth' else auth_port}"
    settings = Settings(
        port=0, host="127.0.0.1", database_url=url, expiry_interval=0, auth_mode="token",
        auth=AuthSettings(address=auth_address, cache_ttl=0.5, negative_ttl=0.5),
        account=AccountSettings(address=account_address, positive_ttl=0.5, negative_ttl=0.5, fail_open=False),
        allow_plaintext=True, page_token_secret=uuid.uuid4().hex,
    )
    acked: dict[str, str] = {}
    unacked: list[tuple[str, str]] = []
    tokens = ["alice-token", "bob-token"]
    users = ["alice", "bob"]
    try:
        async with running(settings, grace=1) as server, grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            sessions = rpc.SessionServiceStub(channel)
            stop = asyncio.Event()

            async def create(index: int) -> None:
                md = (("authorization", f"Bearer {tokens[index % 2]}"),)
                while not stop.is_set():
                    request_id = str(uuid.uuid4())
                    outcome.attempted += 1
                    started = time.monotonic()
                    try:
                        await sessions.CreateSession(
                            pb.CreateSessionRequest(user_id=users[index % 2], request_id=request_id),
                            metadata=md, timeout=3,
                        )
                        acked[request_id] = users[index % 2]
                        outcome.acknowledged += 1
                    except grpc.aio.AioRpcError as error:
                        outcome.failed[error.code().name] += 1
                        outcome.slowest_failure = max(outcome.slowest_failure, time.monotonic() - started)
                        unacked.append((users[index % 2], request_id))
                    await asyncio.sleep(0.02)

            tasks = [asyncio.create_task(create(i)) for i in range(clients)]
            await asyncio.sleep(before)
            proxy.cut()
            outcome.faults += 1
            await asyncio.sleep(partition)
            proxy.heal()
            healed_at = time.monotonic()
            before_heal = outcome.acknowledged
            while time.monotonic() - healed_at < after:
                await asyncio.sleep(0.05)
                if outcome.acknowledged > before_heal and outcome.recovery_seconds is None:
                    outcome.recovery_seconds = time.monotonic() - healed_at
            stop.set()
            await asyncio.gather(*tasks)
            for user, request_id in unacked:  # retried with the same request_id
                await sessions.CreateSession(
                    pb.CreateSessionRequest(user_id=user, request_id=request_id),
                    metadata=(("authorization", f"Bearer {tokens[users.index(user)]}"),), timeout=5,
                )
                outcome.retried += 1
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT request_id::text AS rid FROM sessions")
        finally:
            await conn.close()
        stored = [row["rid"] for row in rows]
        outcome.duplicates = len(stored) - len(set(stored))
        outcome.lost = sum(1 for rid in [*acked, *(rid for _, rid in unacked)] if rid not in set(stored))
        deadline = (settings.account if service == "account" else settings.auth).deadline
        outcome.notes = f"{clients} clients; the {service} service's deadline is {deadline:g} s"
    finally:
        await proxy.close()
        await account_server.stop(0)
        await auth_server.stop(0)
    return outcome
