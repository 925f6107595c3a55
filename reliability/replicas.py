"""Stateless replicas: several `session-grpc serve` processes on one database, each on its own
port (as separate hosts would be), and a client that spreads its calls over them.

`Replicas` starts and stops the processes (the tests and `make chaos` use it); `replica_killed`
is the scenario: writers spread round robin over three replicas, one replica is killed
(SIGKILL, no draining), the clients retry UNAVAILABLE with the same request_id on the others,
and nothing acknowledged is lost or written twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from session_grpc.testing import free_port

from .scenarios import Outcome, Writers, _open_sessions, drops_its_databases, fresh_database, verify

ROOT = Path(__file__).resolve().parents[1]
SHARED_SECRET = "page-token-secret-shared-by-the-replicas"
"""SESSION_PAGE_TOKEN_SECRET of every replica: a page token sealed by one opens on the others."""


class Replicas:
    """`count` server processes on `database_url`; `env` adds to (or overrides) their environment.
    Each one's log goes to a file (`logs[i]`), read with `log(i)`."""

    def __init__(self, database_url: str, count: int = 3, env: dict[str, str] | None = None) -> None:
        self.database_url = database_url
        self.ports = [free_port() for _ in range(count)]
        self.extra = env or {}
        self.processes: list[subprocess.Popen[bytes]] = []
        self._folder = tempfile.TemporaryDirectory(prefix="session-grpc-replicas-")
        self.logs = [Path(self._folder.name) / f"replica-{i}.log" for i in range(count)]

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def balanced_channel(self) -> grpc.aio.Channel:
        """One channel over every replica, round robin (gRPC drops a replica that goes away
        from the rotation and keeps trying to reconnect it)."""
        target = "ipv4:" + ",".join(self.addresses)
        return grpc.aio.insecure_channel(target, options=[("grpc.lb_policy_name", "round_robin")])

    def environment(self, index: int) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "PORT": str(self.ports[index]),
            "SESSION_HOST": "127.0.0.1",
            "SESSION_PAGE_TOKEN_SECRET": SHARED_SECRET,
            "SESSION_EXPIRY_INTERVAL": "0",
            "SESSION_HEALTH_INTERVAL": "1s",
            "SESSION_SHUTDOWN_GRACE": "2s",
            # Small pools: three replicas on a shared PostgreSQL (max_connections 100) next to
            # other test runs. Calls beyond the pool wait for a connection (SESSION_DB_POOL_TIMEOUT).
            "SESSION_DB_POOL_SIZE": "4",
            **self.extra,
        }

    async def start(self) -> None:
        for index in range(len(self.ports)):
            with self.logs[index].open("wb") as log:
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "session_grpc", "serve"], env=self.environment(index), cwd=ROOT,
                        stdout=log, stderr=subprocess.STDOUT,
                    )
                )
        await asyncio.gather(*(self._wait_serving(index) for index in range(len(self.ports))))

    async def _wait_serving(self, index: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with grpc.aio.insecure_channel(self.addresses[index]) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.processes[index].poll() is not None:
                    raise RuntimeError(f"replica {index} exited at start-up:\n{self.log(index)}")
                try:
                    answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replica {index} not SERVING after {timeout}s:\n{self.log(index)}")
                await asyncio.sleep(0.1)

    def log(self, index: int) -> str:
        return self.logs[index].read_text(errors="replace")

    def kill(self, index: int) -> None:
        """SIGKILL: the replica vanishes mid-call, without draining (a host lost)."""
        self.processes[index].send_signal(signal.SIGKILL)
        self.processes[index].wait(10)

    async def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                await asyncio.to_thread(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._folder.cleanup()

    async def __aenter__(self) -> Replicas:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()


@drops_its_databases
async def replica_killed(
    server_url: str, *, writers: int = 12, before: float = 2.0, after: float = 3.0, pool_size: int = 4
) -> Outcome:
    """`writers` clients append through one round-robin channel over three replicas, retrying
    UNAVAILABLE with the same request_id; after `before` seconds one replica is killed; `after`
    seconds later the writers stop and retry what is left. Every acknowledged write is stored
    once, nothing twice, counters exact; recovery is the time to the first acknowledgement after
    the kill."""
    outcome = Outcome("replica killed (1 of 3)")
    url = await fresh_database(server_url)
    env = {"SESSION_DB_POOL_SIZE": str(pool_size)}
    async with Replicas(url, 3, env) as replicas, replicas.balanced_channel() as channel:
        load = Writers(channel, await _open_sessions(channel, writers), outcome, retry_unavailable=True)
        load.start()
        await asyncio.sleep(before)
        acknowledged_before = outcome.acknowledged
        await asyncio.to_thread(replicas.kill, 0)
        outcome.faults += 1
        killed_at = time.monotonic()
        while time.monotonic() - killed_at < after:
            await asyncio.sleep(0.02)
            if load.last_ack > killed_at and outcome.recovery_seconds is None:
                outcome.recovery_seconds = load.last_ack - killed_at
        await load.stop()
        await load.retry_unacked()
        outcome.notes = (
            f"{writers} writers round robin over 3 replicas; {acknowledged_before} acknowledged before the kill, "
            f"{outcome.acknowledged - acknowledged_before} after"
        )
    await verify(url, load, outcome)
    return outcome
