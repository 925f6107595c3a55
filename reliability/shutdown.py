"""A rolling restart seen by clients that honour health: two server processes, 16 clients that
each check both servers' health every second (as a load balancer's health checks do) and send
their calls round robin to the servers that said SERVING; one server gets SIGTERM under load.

Without SESSION_SHUTDOWN_DRAIN_DELAY the server turns NOT_SERVING and starts refusing at once,
before the clients' next check: the calls they send meanwhile fail with UNAVAILABLE, and those
grpc core holds unstarted when the listener closes with CANCELLED (grpc/grpc#41785). With a delay
longer than the clients' check interval the server keeps serving while health says NOT_SERVING,
every client moves to the other server, and by the time it refuses and closes nothing arrives.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc
from session_grpc.testing import free_port

from .scenarios import Outcome, Writers, _open_sessions, _wait_for_port, drops_its_databases, fresh_database, verify

ROOT = Path(__file__).resolve().parents[1]


class HealthAwareStub:
    """AddMessage sent round robin to the servers that answered SERVING at their last health
    check; each server is checked every `interval` seconds (from a random start, as independent
    load balancers would)."""

    def __init__(self, channels: list[grpc.aio.Channel], interval: float) -> None:
        self.stubs = [rpc.MessageServiceStub(channel) for channel in channels]
        self.health = [health_pb2_grpc.HealthStub(channel) for channel in channels]
        self.healthy = list(range(len(channels)))
        self.interval = interval
        self._turn = itertools.count()
        self._checker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._checker = asyncio.create_task(self._check())

    async def close(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            await asyncio.gather(self._checker, return_exceptions=True)

    async def _check(self) -> None:
        await asyncio.sleep(random.uniform(0, self.interval))
        while True:
            healthy = []
            for index, stub in enumerate(self.health):
                try:
                    status = (await stub.Check(health_pb2.HealthCheckRequest(), timeout=self.interval)).status
                except grpc.aio.AioRpcError:
                    continue
                if status == health_pb2.HealthCheckResponse.SERVING:
                    healthy.append(index)
            self.healthy = healthy or self.healthy
            await asyncio.sleep(self.interval)

    def AddMessage(self, request: pb.AddMessageRequest, **kwargs):  # noqa: N802
        return self.stubs[self.healthy[next(self._turn) % len(self.healthy)]].AddMessage(request, **kwargs)


class Fleet:
    """One writer per client (as separate client processes would be), one outcome."""

    def __init__(self, clients: list[HealthAwareStub], channel: grpc.aio.Channel, session_ids: list[str],
                 outcome: Outcome) -> None:
        self.writers = [Writers(channel, [sid], outcome) for sid in session_ids]
        for writer, client in zip(self.writers, clients, strict=True):
            writer.messages = client

    def start(self) -> None:
        for writer in self.writers:
            writer.start()

    async def stop(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.writers))

    async def retry_unacked(self) -> None:
        await asyncio.gather(*(w.retry_unacked() for w in self.writers))

    @property
    def acked(self) -> dict[str, tuple[str, int]]:
        return {rid: where for w in self.writers for rid, where in w.acked.items()}

    @property
    def unacked(self) -> list[tuple[str, str]]:
        return [item for w in self.writers for item in w.unacked]


def _server(url: str, port: int, drain_delay: float, grace: float) -> subprocess.Popen[str]:
    env = {
        **os.environ, "DATABASE_URL": url, "PORT": str(port), "SESSION_HOST": "127.0.0.1",
        "SESSION_SHUTDOWN_GRACE": f"{grace}s", "SESSION_SHUTDOWN_DRAIN_DELAY": f"{drain_delay}s",
        "SESSION_EXPIRY_INTERVAL": "0",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "session_grpc", "serve"], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )


@drops_its_databases
async def shutdown_behind_health(
    server_url: str, *, clients: int = 16, drain_delay: float = 2.0, check_interval: float = 1.0,
    before: float = 3.0, after: float = 2.0, grace: float = 5.0,
) -> Outcome:
    """`clients` writers behind HealthAwareStubs over servers A and B; SIGTERM to A after
    `before` s; writing goes on until `after` s past A's exit; then failed calls are retried with
    their request_ids and every write is checked."""
    outcome = Outcome(f"SIGTERM, clients honour health, drain delay {drain_delay:g}s")
    url = await fresh_database(server_url)
    ports = [free_port(), free_port()]
    a, b = (_server(url, port, drain_delay, grace) for port in ports)
    channels = [
        [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
         for port in ports]
        for _ in range(clients)
    ]
    balanced = [HealthAwareStub(pair, check_interval) for pair in channels]
    try:
        for port in ports:
            await _wait_for_port(port)
        for client in balanced:
            client.start()
        fleet = Fleet(balanced, channels[0][1], await _open_sessions(channels[0][1], clients), outcome)
        fleet.start()
        await asyncio.sleep(before)
        a.send_signal(signal.SIGTERM)
        outcome.faults += 1
        outcome.exit_code = await asyncio.to_thread(a.wait, drain_delay + grace + 10)
        await asyncio.sleep(after)
        await fleet.stop()
        await fleet.retry_unacked()
        await verify(url, fleet, outcome)
        if drain_delay > check_interval:  # every client has moved before A refuses: no code is right
            outcome.wrong_codes = sum(outcome.failed.values())
        outcome.notes = (
            f"{clients} clients checking health every {check_interval:g} s; server exit status {outcome.exit_code}"
        )
    finally:
        for client in balanced:
            await client.close()
        for channel in itertools.chain.from_iterable(channels):
            await channel.close()
        for process in (a, b):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.to_thread(process.wait, 30)
                except subprocess.TimeoutExpired:
                    process.kill()
    return outcome
