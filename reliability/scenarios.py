"""Load, fault and shutdown scenarios: many writers with request_ids while something breaks,
then a check that every acknowledged write exists exactly once and nothing was written twice.

The test suite runs them small; `make chaos` (reliability/chaos.py) runs them larger.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc
from session_grpc.testing import EmbeddedCluster
from session_grpc.server import SessionServer, build_server, running
from session_grpc.settings import Settings
from session_grpc.testing import create_database, drop_database, free_port

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Outcome:
    name: str
    attempted: int = 0
    acknowledged: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    faults: int = 0
    slowest_failure: float = 0.0
    recovery_seconds: float | None = None
    not_serving_seen: bool = False
    retried: int = 0
    lost: int = 0
    duplicates: int = 0
    counter_mismatches: int = 0
    failed_but_stored: int = 0
    bad_inputs: int = 0
    wrong_codes: int = 0
    exit_code: int | None = None
    database: str = field(default="", repr=False)
    notes: str = ""
    """Figures of this scenario that have no column (printed under the table)."""
    is_peer: bool = False
    """A row of another system (ADK's own session service) shown for comparison: its losses are
    reported, not counted against session-grpc in make chaos's exit status."""

    def row(self) -> dict[str, object]:
        return {
            "scenario": self.name,
            "attempted": self.attempted,
            "acknowledged": self.acknowledged,
            "failed by code": dict(self.failed) or "-",
            "faults": self.faults,
            "slowest failure s": round(self.slowest_failure, 3),
            "recovery s": "-" if self.recovery_seconds is None else round(self.recovery_seconds, 3),
            "retried": self.retried,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "counter mismatches": self.counter_mismatches,
            "failed but stored": self.failed_but_stored,
            "bad inputs": self.bad_inputs,
            "wrong codes": self.wrong_codes,
        }


RETRY_BACKOFF = (0.01, 0.5)
"""First and largest backoff, seconds, of a writer retrying UNAVAILABLE (full jitter: a random
wait up to the current backoff, which doubles after each try)."""


class Writers:
    """`count` writers, each appending to its own session with a fresh request_id per message.

    With retry_unavailable, a writer retries an UNAVAILABLE call with the same request_id at
    once, after a jittered backoff, as a client library does; every other failure (and the last
    UNAVAILABLE before stop) is left for retry_unacked. Either way every failed call is followed
    by exactly one retry (outcome.retried). `timeout` is each call's deadline."""

    def __init__(
        self, channel: grpc.aio.Channel, session_ids: list[str], outcome: Outcome, *,
        retry_unavailable: bool = False, timeout: float = 3.0,
    ) -> None:
        self.messages = rpc.MessageServiceStub(channel)
        self.timeout = timeout
        self.session_ids = session_ids
        self.outcome = outcome
        self.retry_unavailable = retry_unavailable
        self.acked: dict[str, tuple[str, int]] = {}
        self.unacked: list[tuple[str, str]] = []
        self.last_ack = 0.0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._write(sid)) for sid in self.session_ids]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _write(self, session_id: str) -> None:
        n = 0
        request_id: str | None = None
        backoff = RETRY_BACKOFF[0]
        while not self._stop.is_set():
            if request_id is None:
                n += 1
                request_id, backoff = str(uuid.uuid4()), 0.0
            else:
                self.outcome.retried += 1
            started = time.monotonic()
            self.outcome.attempted += 1
            try:
                response = await self.messages.AddMessage(
                    pb.AddMessageRequest(
                        session_id=session_id, role=pb.ROLE_USER, content=f"{session_id[:8]}-{n}",
                        tokens_used=3, cost="0.001", request_id=request_id,
                    ),
                    timeout=self.timeout,
                )
                self.acked[request_id] = (session_id, response.message.sequence)
                self.outcome.acknowledged += 1
                self.last_ack = time.monotonic()
                request_id = None
            except grpc.aio.AioRpcError as error:
                self.outcome.failed[error.code().name] += 1
                self.outcome.slowest_failure = max(self.outcome.slowest_failure, time.monotonic() - started)
                if self.retry_unavailable and error.code() == grpc.StatusCode.UNAVAILABLE:
                    await asyncio.sleep(random.uniform(0, backoff) if backoff else 0)
                    backoff = min(2 * backoff, RETRY_BACKOFF[1]) if backoff else RETRY_BACKOFF[0]
                    continue
                self.unacked.append((session_id, request_id))
                request_id = None
                await asyncio.sleep(0.05)
        if request_id is not None:
            self.unacked.append((session_id, request_id))

    async def retry_unacked(self, budget: float = 30.0) -> None:
        """Clients retry what failed, with the same request_id, until it goes through."""
        deadline = time.monotonic() + budget
        for session_id, request_id in self.unacked:
            while True:
                try:
                    await self.messages.AddMessage(
                        pb.AddMessageRequest(
                            session_id=session_id, role=pb.ROLE_USER, content="retry", tokens_used=3,
                            cost="0.001", request_id=request_id,
                        ),
                        timeout=self.timeout,
                    )
                    self.outcome.retried += 1
                    break
                except grpc.aio.AioRpcError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)


async def verify(url: str, writers: Writers, outcome: Outcome) -> None:
    """Every acknowledged write stored once, with the sequence it was acknowledged with; every
    retried one stored once; counters equal to the rows; sequences gapless."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT request_id::text AS rid, session_id::text AS sid, sequence FROM messages")
        by_request: dict[str, list[tuple[str, int]]] = {}
        for row in rows:
            by_request.setdefault(row["rid"], []).append((row["sid"], row["sequence"]))
        outcome.duplicates = sum(len(v) - 1 for v in by_request.values() if len(v) > 1)
        outcome.lost = sum(1 for rid, where in writers.acked.items() if by_request.get(rid) != [where])
        outcome.lost += sum(1 for _, rid in writers.unacked if rid not in by_request and outcome.retried)
        if not outcome.retried:  # after retries every failed call is rightly stored
            outcome.failed_but_stored = sum(1 for _, rid in writers.unacked if rid in by_request)
        sessions = await conn.fetch(
            """SELECT s.message_count, count(m.id) AS n, coalesce(max(m.sequence), 0) AS top,
                      s.total_cost, coalesce(sum(m.cost), 0) AS cost
               FROM sessions s LEFT JOIN messages m ON m.session_id = s.id GROUP BY s.id"""
        )
        outcome.counter_mismatches = sum(
            1 for s in sessions if not (s["message_count"] == s["n"] == s["top"] and s["total_cost"] == s["cost"])
        )
    finally:
        await conn.close()


_made_here: ContextVar[list[tuple[str, str]] | None] = ContextVar("made_here", default=None)


async def fresh_database(server_url: str) -> str:
    """A new migrated database for one scenario; dropped when the scenario (marked
    drops_its_databases) ends, so test and chaos runs leave nothing behind on a shared server."""
    url = await create_database(server_url, "session_grpc_chaos")
    made = _made_here.get()
    if made is not None:
        made.append((server_url, url))
    return url


S = TypeVar("S")


def drops_its_databases(scenario: Callable[..., Awaitable[S]]) -> Callable[..., Awaitable[S]]:
    """Drop (WITH FORCE) every database `scenario` made with fresh_database, however it ends."""

    @functools.wraps(scenario)
    async def run(*args: Any, **kwargs: Any) -> S:
        made: list[tuple[str, str]] = []
        token = _made_here.set(made)
        try:
            return await scenario(*args, **kwargs)
        finally:
            _made_here.reset(token)
            for server_url, url in made:
                try:
                    await drop_database(server_url, url)
                except (OSError, asyncpg.PostgresError) as error:  # the server may be down after a fault
                    print(f"could not drop scratch database {make_url(url).database}: {error}", file=sys.stderr)

    return run


@asynccontextmanager
async def in_process_server(url: str) -> AsyncIterator[tuple[SessionServer, grpc.aio.Channel]]:
    settings = Settings(port=0, host="127.0.0.1", database_url=url, expiry_interval=0)
    async with running(settings, grace=1) as server:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield server, channel


async def _open_sessions(channel: grpc.aio.Channel, count: int) -> list[str]:
    stub = rpc.SessionServiceStub(channel)
    return [
        (await stub.CreateSession(pb.CreateSessionRequest(user_id=f"chaos-{i}"))).session.session_id
        for i in range(count)
    ]


OUTAGES = {
    "immediate": "database crash",
    "fast": "database fast shutdown",
    "smart": "database smart shutdown",
}
"""pg_ctl stop modes database_outage knows, and the scenario name each gets.

immediate: a crash as far as clients can tell (connections just close). fast: a clean shutdown,
every backend first sends its client a FATAL 57P01 admin_shutdown, also to idle connections.
smart: PostgreSQL refuses new connections (57P03) but waits for the open ones to go, which a
pooled server never does by itself; after `smart_for` seconds it is escalated to fast, as an
operator does."""


async def database_outage(
    cluster: EmbeddedCluster,
    *,
    writers: int = 8,
    before: float = 1.0,
    outage: float = 2.0,
    after: float = 2.0,
    mode: str = "immediate",
    cycles: int = 1,
    between: float = 0.5,
    smart_for: float = 2.0,
) -> Outcome:
    """Steady writes; PostgreSQL stops (`pg_ctl stop -m <mode>`) and comes back, `cycles` times
    with `between` seconds of load in between; clients retry what failed."""
    outcome = Outcome(OUTAGES[mode])

    async def fault(health: health_pb2_grpc.HealthStub) -> None:
        for cycle in range(cycles):
            if cycle:
                await asyncio.sleep(between)
            if mode == "smart":
                await asyncio.to_thread(cluster.stop_smart)
                await asyncio.sleep(smart_for)
            await asyncio.to_thread(cluster.stop, "fast" if mode == "smart" else mode)
            outcome.faults += 1
            down_since = time.monotonic()
            while time.monotonic() - down_since < outage:
                status = (await health.Check(health_pb2.HealthCheckRequest())).status
                outcome.not_serving_seen |= status == health_pb2.HealthCheckResponse.NOT_SERVING
                await asyncio.sleep(0.1)
            await asyncio.to_thread(cluster.start)

    return await _fault_under_load(cluster, outcome, fault, writers=writers, before=before, after=after)


async def terminated_backends(
    cluster: EmbeddedCluster, *, writers: int = 8, before: float = 1.0, rounds: int = 3, interval: float = 0.5,
    after: float = 2.0,
) -> Outcome:
    """Steady writes; `rounds` times, every `interval` seconds, an operator terminates every backend
    of the service's database (`pg_terminate_backend`, FATAL 57P01 to each); clients retry what failed."""
    outcome = Outcome("terminated backends")

    async def fault(health: health_pb2_grpc.HealthStub) -> None:
        for _ in range(rounds):
            outcome.faults += await cluster.terminate_backends(outcome.database)
            status = (await health.Check(health_pb2.HealthCheckRequest())).status
            outcome.not_serving_seen |= status == health_pb2.HealthCheckResponse.NOT_SERVING
            await asyncio.sleep(interval)

    return await _fault_under_load(cluster, outcome, fault, writers=writers, before=before, after=after)


@drops_its_databases
async def _fault_under_load(
    cluster: EmbeddedCluster,
    outcome: Outcome,
    fault: Callable[[health_pb2_grpc.HealthStub], Awaitable[None]],
    *,
    writers: int,
    before: float,
    after: float,
) -> Outcome:
    """`writers` clients append steadily, retrying UNAVAILABLE with the same request_id; after
    `before` seconds `fault` runs; `after` seconds after it ends the clients stop and retry what
    is left; then health must be SERVING again and every write stored exactly once."""
    url = await fresh_database(cluster.url)
    outcome.database = make_url(url).database or ""
    settings = Settings(
        port=0, host="127.0.0.1", database_url=url, expiry_interval=0, health_interval=0.2,
        db_connect_timeout=1.0, db_pool_timeout=1.0, shutdown_grace=2.0,
    )
    server = build_server(settings)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            load = Writers(channel, await _open_sessions(channel, writers), outcome, retry_unavailable=True)
            load.start()
            await asyncio.sleep(before)
            await fault(health)
            back_at = time.monotonic()
            while time.monotonic() - back_at < after:
                await asyncio.sleep(0.05)
                if load.last_ack > back_at and outcome.recovery_seconds is None:
                    outcome.recovery_seconds = load.last_ack - back_at
            await load.stop()
            await load.retry_unacked()
            await server.check_health()
            serving = (await health.Check(health_pb2.HealthCheckRequest())).status
            if serving != health_pb2.HealthCheckResponse.SERVING:
                outcome.failed["HEALTH_NOT_BACK"] += 1
        await verify(url, load, outcome)
    finally:
        await server.stop(grace=1)
    return outcome


@drops_its_databases
async def concurrent_writers(server_url: str, *, hot_writers: int = 16, cold_sessions: int = 32, seconds: float = 5.0) -> Outcome:
    """Many clients on many sessions and on one hot session at once; counters must equal rows."""
    outcome = Outcome("concurrent writers")
    url = await fresh_database(server_url)
    async with in_process_server(url) as (_, channel):
        opened = await _open_sessions(channel, cold_sessions + 1)
        load = Writers(channel, [opened[0]] * hot_writers + opened[1:], outcome)
        load.start()
        await asyncio.sleep(seconds)
        await load.stop()
    await verify(url, load, outcome)
    return outcome


@drops_its_databases
async def fuzzing(server_url: str, *, examples: int = 2000, seed: int | None = None) -> Outcome:
    """Arbitrary requests to every RPC (reliability.fuzz); only documented codes, still SERVING."""
    from .fuzz import Fuzzer

    outcome = Outcome("fuzzing")
    url = await fresh_database(server_url)
    async with in_process_server(url) as (server, channel):
        known = await _open_sessions(channel, 3)
        fuzzer = Fuzzer(f"127.0.0.1:{server.port}", known)
        try:
            report = await asyncio.to_thread(fuzzer.run, examples, seed)
        finally:
            fuzzer.close()
        outcome.bad_inputs = outcome.attempted = sum(report.calls.values())
        outcome.acknowledged = report.codes["OK"]
        outcome.failed = Counter({code: n for code, n in report.codes.items() if code != "OK"})
        outcome.wrong_codes = len(report.violations)
        status = (await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())).status
        if status != health_pb2.HealthCheckResponse.SERVING:
            outcome.wrong_codes += 1
    return outcome


@drops_its_databases
async def shutdown_under_load(server_url: str, *, writers: int = 8, before: float = 1.5, grace: float = 5.0) -> Outcome:
    """Steady writes to a real server process; SIGTERM; every call succeeded (and is stored) or
    failed without having run (UNAVAILABLE from the draining server; CANCELLED for the calls grpc
    core still held unstarted in its queue when the listener closed, grpc/grpc#41785, at most one
    per connected client); the process exits 0."""
    outcome = Outcome("SIGTERM under load")
    url = await fresh_database(server_url)
    port = free_port()
    env = {
        **os.environ, "DATABASE_URL": url, "PORT": str(port), "SESSION_HOST": "127.0.0.1",
        "SESSION_SHUTDOWN_GRACE": f"{grace}s", "SESSION_EXPIRY_INTERVAL": "0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "session_grpc", "serve"], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        await _wait_for_port(port)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            load = Writers(channel, await _open_sessions(channel, writers), outcome)
            load.start()
            await asyncio.sleep(before)
            process.send_signal(signal.SIGTERM)
            outcome.faults += 1
            outcome.exit_code = await asyncio.to_thread(process.wait, grace + 10)
            await asyncio.sleep(0.3)
            await load.stop()
        await verify(url, load, outcome)
    finally:
        if process.poll() is None:
            process.kill()
    return outcome


async def _wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port} after {timeout}s")
