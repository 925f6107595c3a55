"""PostgreSQL failover under load: a pg_auto_failover formation (monitor, primary, synchronous
secondary), the service on the multi-host URL with target_session_attrs=read-write, AddMessage
writers retrying UNAVAILABLE with their request_id; the primary is killed (keeper and PostgreSQL,
SIGKILL). The secondary is promoted, the service reconnects by itself, health goes NOT_SERVING
and back to SERVING, and every acknowledged write is there once.

    python -m reliability.failover [--writers 8] [--before 3] [--after 5]

runs it alone (what `make chaos-failover` and CI do); `make chaos` runs it too.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from session_grpc import localpg
from session_grpc.localpg.autofailover import Formation, formation
from session_grpc.server import build_server
from session_grpc.settings import Settings
from session_grpc.testing import create_database

from .scenarios import Outcome, Writers, _open_sessions, verify

SERVING = health_pb2.HealthCheckResponse.SERVING


class HealthTimeline:
    """Health polled every 50 ms, kept as (time, status); `after(moment)` reads when it first left
    SERVING after `moment` and when it came back."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.health = health_pb2_grpc.HealthStub(channel)
        self.seen: list[tuple[float, int | None]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            try:
                status: int | None = (await self.health.Check(health_pb2.HealthCheckRequest(), timeout=1)).status
            except grpc.aio.AioRpcError:
                status = None
            self.seen.append((time.monotonic(), status))
            await asyncio.sleep(0.05)

    def after(self, moment: float) -> tuple[float | None, float | None]:
        left = next((at for at, status in self.seen if at >= moment and status != SERVING), None)
        back = None if left is None else next((at for at, status in self.seen if at > left and status == SERVING), None)
        return left, back

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def primary_failover(
    cluster: Formation, *, writers: int = 8, before: float = 3.0, after: float = 5.0, give_up: float = 90.0
) -> Outcome:
    """The scenario on a running formation (its first node the primary)."""
    outcome = Outcome("PostgreSQL failover (pg_auto_failover)")
    primary = cluster.nodes[0]
    direct = await create_database(primary.url, "session_grpc_failover")
    database = direct.rsplit("/", 1)[1]
    url = cluster.multi_host_url(database)
    settings = Settings(
        port=0, host="127.0.0.1", database_url=url, expiry_interval=0, health_interval=0.2,
        db_connect_timeout=1.0, db_pool_timeout=1.0, shutdown_grace=2.0, db_pool_size=10,
    )
    server = build_server(settings)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            load = Writers(channel, await _open_sessions(channel, writers), outcome, retry_unavailable=True)
            timeline = HealthTimeline(channel)
            load.start()
            timeline.start()
            await asyncio.sleep(before)
            acknowledged_before = outcome.acknowledged
            await asyncio.to_thread(cluster.kill, primary)
            outcome.faults += 1
            killed = time.monotonic()
            while time.monotonic() - killed < give_up:
                await asyncio.sleep(0.05)
                if load.last_ack > killed and timeline.after(killed)[1] is not None:
                    outcome.recovery_seconds = load.last_ack - killed
                    break
            load_back = None if outcome.recovery_seconds is None else killed + outcome.recovery_seconds
            await asyncio.sleep(after)
            await load.stop()
            await load.retry_unacked(budget=60)
            await timeline.stop()
            states = await cluster.states()
            left, back = timeline.after(killed)
            outcome.not_serving_seen = left is not None
            if left is None:
                outcome.failed["HEALTH_STAYED_SERVING"] += 1
            if back is None:
                outcome.failed["HEALTH_NOT_BACK"] += 1
            outcome.notes = (
                f"{writers} writers; {acknowledged_before} acknowledged before the kill, "
                f"{outcome.acknowledged - acknowledged_before} after; health NOT_SERVING "
                f"{_since(left, killed)} after the kill, SERVING again after {_since(back, killed)}; "
                f"first acknowledged write on the new primary after {_since(load_back, killed)}; "
                "states after (reported/goal): "
                + ", ".join(f"{name} {state[0]}/{state[1]}" for name, state in sorted(states.items()))
            )
        await verify(url, load, outcome)
    finally:
        await server.stop(grace=1)
    return outcome


def _since(moment: float | None, start: float) -> str:
    return "never" if moment is None else f"{moment - start:.1f} s"


async def run(writers: int, before: float, after: float) -> Outcome:
    async with formation() as cluster:
        return await primary_failover(cluster, writers=writers, before=before, after=after)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--before", type=float, default=3.0)
    parser.add_argument("--after", type=float, default=5.0)
    args = parser.parse_args()
    missing = localpg.missing("pg_autoctl", "pg_basebackup")
    if missing:
        print(f"skipped: {missing}")
        return 0
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("session_grpc.access").setLevel(logging.CRITICAL)
    from .chaos import table

    outcome = asyncio.run(run(args.writers, args.before, args.after))
    print(table([outcome]))
    print(f"- {outcome.name}: {outcome.notes}")
    broken = outcome.lost + outcome.duplicates + outcome.counter_mismatches + outcome.failed_but_stored
    broken += outcome.failed["INTERNAL"] + outcome.failed["HEALTH_STAYED_SERVING"] + outcome.failed["HEALTH_NOT_BACK"]
    return 1 if broken or outcome.recovery_seconds is None else 0


if __name__ == "__main__":
    raise SystemExit(main())
