"""A rolling restart seen by clients that honour health: two server processes behind clients
that balance over both and watch `grpc.health.v1` (gRPC's own client-side health checking); one
of them gets SIGTERM under load.

Without SESSION_SHUTDOWN_DRAIN_DELAY the server turns NOT_SERVING and refuses or closes at once,
before the clients have heard: calls already on their way get UNAVAILABLE, and those grpc core
holds unstarted when the listener closes get CANCELLED (grpc/grpc#41785). With the delay the
server keeps serving while health says NOT_SERVING, the clients move their calls to the other
server, and by the time it refuses and closes nothing arrives any more.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc

from session_grpc.testing import free_port

from .scenarios import Outcome, Writers, _open_sessions, _wait_for_port, fresh_database, verify

ROOT = Path(__file__).resolve().parents[1]

HEALTH_AWARE = json.dumps(
    {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
)
"""Service config of a client that honours health: round robin over the healthy servers only."""


class Fleet:
    """One writer per client channel (as separate client processes would be), one outcome."""

    def __init__(self, channels: list[grpc.aio.Channel], session_ids: list[str], outcome: Outcome) -> None:
        self.writers = [Writers(channel, [sid], outcome) for channel, sid in zip(channels, session_ids, strict=True)]

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


async def shutdown_behind_health(
    server_url: str, *, clients: int = 16, drain_delay: float = 2.0, before: float = 3.0, after: float = 2.0,
    grace: float = 5.0,
) -> Outcome:
    """`clients` writers, each its own channel balancing over servers A and B and honouring
    health; SIGTERM to A after `before` s; writing goes on until `after` s past A's exit; then
    failed calls are retried with their request_ids and every write is checked."""
    outcome = Outcome(f"SIGTERM, clients honour health, drain delay {drain_delay:g}s")
    url = await fresh_database(server_url)
    ports = [free_port(), free_port()]
    a, b = (_server(url, port, drain_delay, grace) for port in ports)
    options = [("grpc.service_config", HEALTH_AWARE), ("grpc.use_local_subchannel_pool", 1)]
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(clients)]
    try:
        for port in ports:
            await _wait_for_port(port)
        fleet = Fleet(channels, await _open_sessions(channels[0], clients), outcome)
        fleet.start()
        await asyncio.sleep(before)
        a.send_signal(signal.SIGTERM)
        outcome.faults += 1
        outcome.exit_code = await asyncio.to_thread(a.wait, drain_delay + grace + 10)
        await asyncio.sleep(after)
        await fleet.stop()
        await fleet.retry_unacked()
        await verify(url, fleet, outcome)  # type: ignore[arg-type]
    finally:
        for channel in channels:
            await channel.close()
        for process in (a, b):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.to_thread(process.wait, 30)
                except subprocess.TimeoutExpired:
                    process.kill()
    return outcome
