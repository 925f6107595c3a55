"""`make chaos`: the load, fault and fuzz scenarios at a larger size than the test suite, on an
embedded PostgreSQL of its own, printed as a table (and as Markdown with --markdown).

    python -m reliability.chaos [--quick] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import tempfile
import time
from pathlib import Path

from session_grpc.testing import EmbeddedCluster

from session_grpc import localpg

from . import adk, failover, history, partition, replicas, scenarios, shutdown

COLUMNS = [
    "scenario", "attempted", "acknowledged", "failed by code", "faults", "slowest failure s", "recovery s",
    "retried", "bad inputs", "wrong codes", "lost", "duplicates", "failed but stored", "counter mismatches",
]


async def run(quick: bool) -> list[scenarios.Outcome]:
    scale = 0.3 if quick else 1.0
    outcomes = await _on_embedded(scale)
    missing = localpg.missing("pg_autoctl", "pg_basebackup")
    if missing:
        print(f"PostgreSQL failover scenario skipped: {missing}")
    else:
        outcomes.append(await failover.run(writers=16, before=5 * scale, after=8 * scale))
    return outcomes


async def _on_embedded(scale: float) -> list[scenarios.Outcome]:
    with tempfile.TemporaryDirectory(prefix="session-grpc-chaos-") as folder:
        cluster = EmbeddedCluster(Path(folder) / "pg")
        try:
            return [
                await scenarios.concurrent_writers(cluster.url, hot_writers=24, cold_sessions=48, seconds=20 * scale),
                await history.rewinds_racing_appends(cluster.url, seconds=20 * scale),
                await scenarios.database_outage(
                    cluster, writers=16, before=5 * scale, outage=8 * scale, after=8 * scale
                ),
                await scenarios.database_outage(
                    cluster, writers=16, before=5 * scale, outage=2 * scale, after=5 * scale, mode="fast",
                    cycles=10, between=2 * scale,
                ),
                await scenarios.database_outage(
                    cluster, writers=16, before=5 * scale, outage=2 * scale, after=5 * scale, mode="smart",
                    smart_for=5 * scale,
                ),
                await scenarios.terminated_backends(
                    cluster, writers=16, before=5 * scale, rounds=20, interval=0.5, after=5 * scale
                ),
                await scenarios.shutdown_under_load(cluster.url, writers=16, before=5 * scale),
                await shutdown.shutdown_behind_health(cluster.url, clients=16, drain_delay=0, before=5 * scale),
                await shutdown.shutdown_behind_health(cluster.url, clients=16, drain_delay=2, before=5 * scale),
                await replicas.replica_killed(cluster.url, writers=16, before=5 * scale, after=8 * scale, pool_size=10),
                await partition.database_partition(
                    cluster.url, writers=16, before=3 * scale, partition=8 * scale, after=5 * scale
                ),
                await partition.service_partition(
                    cluster.url, service="account", before=2 * scale, partition=5 * scale, after=3 * scale
                ),
                await partition.service_partition(
                    cluster.url, service="auth", before=2 * scale, partition=5 * scale, after=3 * scale
                ),
                await scenarios.fuzzing(cluster.url, examples=int(6000 * scale)),
                *await adk.adk_appenders(cluster.url, appenders=16, rounds=int(20 * scale) or 1),
            ]
        finally:
            cluster.close()


def table(outcomes: list[scenarios.Outcome]) -> str:
    rows = [[str(o.row()[c]) for c in COLUMNS] for o in outcomes]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a third of the size, for a smoke run")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("session_grpc.access").setLevel(logging.CRITICAL)  # the faults' failed calls, by the thousand
    started = time.monotonic()
    outcomes = asyncio.run(run(args.quick))
    text = table(outcomes)
    elapsed = time.monotonic() - started
    notes = "".join(f"\n- {o.name}: {o.notes}" for o in outcomes if o.notes)
    footer = f"\n{notes}\n\n{len(outcomes)} scenarios in {elapsed:.0f}s on {platform.node()} ({platform.machine()})"
    print(text + footer)
    if args.markdown:
        args.markdown.write_text(text + footer + "\n")
    ours = [o for o in outcomes if not o.is_peer]
    broken = sum(o.lost + o.duplicates + o.counter_mismatches + o.wrong_codes + o.failed_but_stored for o in ours)
    broken += sum(
        o.failed["INTERNAL"] + o.failed["HEALTH_STAYED_SERVING"] + o.failed["HEALTH_NOT_BACK"] + o.failed["SCRIPT_FAILED"]
        for o in ours
    )
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
