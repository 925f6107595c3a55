"""What the per-role totals (migration 0016) buy GetSessionSummary and cost AddMessage.

    python -m bench.role_totals            # 50,000 messages, 5 repetitions (about 3 minutes)
    python -m bench.role_totals --quick    # a smoke test

An embedded PostgreSQL in a temporary folder, migrated to head, one session-grpc server. Two
measurements:

- GetSessionSummary on a session of 50,000 messages and on one of 1 message (seeded with SQL, the
  trigger keeping their totals), one call after another: the same cost at both sizes is the point.
- AddMessage at c=1 and c=32 driven by the Go load generator (bench/goload; the Python one when Go
  is missing), with the totals' trigger on and off (ALTER TABLE messages DISABLE TRIGGER
  session_role_totals_added between repetitions, which are interleaved so that a change in the
  box's load touches both alike): the throughput, and the CPU per call of the server and of
  PostgreSQL, where the trigger runs.

- The append statement alone (storage/messages.py's ADD_MESSAGES, one message), 1,000 times in a
  row on one connection, trigger on and off interleaved: PostgreSQL's CPU per append, read from
  the backend's /proc entry. No gRPC, no client, no other calls: the trigger's own cost, with far
  less noise than the end-to-end rows on a shared box.

Record the load average with any figure (printed at the start and the end).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import uuid
from typing import Any

import asyncpg
import grpc

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc

from . import goload, loadgen, procstat, report, seed
from .run import (
    RESULTS, Bench, Config, database_server, new_sessions, prepare, request_for, server_env, start_process, wait_ready,
)

TRIGGERS = ("session_role_totals_added",)


async def set_triggers(url: str, enabled: bool) -> None:
    conn = await asyncpg.connect(url)
    try:
        for name in TRIGGERS:
            await conn.execute(f"ALTER TABLE messages {'ENABLE' if enabled else 'DISABLE'} TRIGGER {name}")
    finally:
        await conn.close()


async def statement_cpu(url: str, reps: int, count: int) -> dict[str, list[float]]:
    """PostgreSQL CPU microseconds per append statement, trigger on and off (`reps` each, interleaved)."""
    from session_grpc.storage import messages as storage_messages

    conn = await asyncpg.connect(url)
    found: dict[str, list[float]] = {"trigger on": [], "trigger off": []}
    try:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        ids = [str(uuid.uuid4()) for _ in range(32)]
        await conn.execute(
            "INSERT INTO sessions (id, user_id, status) SELECT unnest($1::uuid[]), 'statement-user', 'active'", ids
        )

        async def append(n: int) -> None:
            await conn.fetch(
                storage_messages.ADD_MESSAGES, [str(uuid.uuid4())], ids[n % len(ids)], ["user"], ["chat"],
                [seed.USER_CONTENT], ["12"], ["0.00015"], ["{}"], [None], None, None, 0, None, [None], [None], [None],
            )

        for n in range(200):  # warm the plan cache and the trigger's
            await append(n)
        for _ in range(reps):
            for variant in found:
                await set_triggers(url, variant == "trigger on")
                before = procstat.cpu_seconds(backend)
                for n in range(count):
                    await append(n)
                found[variant].append((procstat.cpu_seconds(backend) - before) / count * 1e6)
        await set_triggers(url, True)
    finally:
        await conn.close()
    return found


def per_call(row: dict[str, Any], group: str) -> float | None:
    """CPU microseconds of `group` per call (cores busy / calls per second)."""
    cores = row.get("cpu_cores", {}).get(group, {}).get("median")
    rate = row["throughput"]["median"]
    return cores / rate * 1e6 if cores is not None and rate else None


async def run(cfg: Config, messages_count: int) -> None:
    load_before = os.getloadavg()
    print(f"# {report.machine()} load average {load_before[0]:.2f}", flush=True)
    builder = goload.Builder()
    why = goload.missing()
    with database_server() as (url, data_dir):
        urls = await prepare(url)
        bench = Bench(cfg, urls["session"], procstat.postmaster_pid(data_dir))
        conn = await asyncpg.connect(urls["session"])
        try:
            long_session = await seed.long_session(conn, "long-user", messages_count)
            one_session = await seed.long_session(conn, "one-user", 1)
            await seed.analyze(conn)
        finally:
            await conn.close()
        server = start_process("session-grpc", ["-m", "session_grpc", "serve"], server_env(urls["session"]))
        try:
            await wait_ready(server, health=True)
            print(report.header(), flush=True)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                sessions = session_pb2_grpc.SessionServiceStub(channel)
                messages = session_pb2_grpc.MessageServiceStub(channel)
                for label, sid in ((f"{messages_count:,} messages", long_session), ("1 message", one_session)):
                    request = pb.GetSessionSummaryRequest(session_id=sid)
                    await bench.timed("get_session_summary", "session-grpc", label, server.pid,
                                      lambda r=request: sessions.GetSessionSummary(r))
                rows: dict[tuple[str, int], dict[str, Any]] = {}
                for concurrency in (1, 32):
                    reps: dict[str, list[loadgen.RunStats]] = {"trigger on": [], "trigger off": []}
                    cpus: dict[str, list[dict[str, float]]] = {"trigger on": [], "trigger off": []}
                    for _ in range(cfg.reps):
                        for variant in reps:
                            await set_triggers(urls["session"], variant == "trigger on")
                            ids = await new_sessions(sessions, concurrency)
                            if why is None:
                                stats, cpu = await goload.run(
                                    builder.binary(), server.port,
                                    ["-rpc", "add_message", "-sessions", ",".join(ids), "-content", seed.USER_CONTENT,
                                     "-warmup", f"{cfg.warmup}s", "-duration", f"{cfg.duration}s"],
                                    lambda go_pid: bench.meter(server.pid, loadgen_pid=go_pid),
                                )
                            else:
                                meter = bench.meter(server.pid)
                                stats = await loadgen.closed_loop(
                                    [lambda r=request_for(s): messages.AddMessage(r) for s in ids],
                                    cfg.duration, cfg.warmup, on_measure_start=meter.start,
                                )
                                cpu = meter.stop()
                            reps[variant].append(stats)
                            cpus[variant].append(cpu)
                    for variant in reps:
                        rows[(variant, concurrency)] = bench.record(
                            "add_message", variant, f"c={concurrency}", reps[variant], cpus[variant]
                        )
                await set_triggers(urls["session"], True)
        finally:
            server.stop()
            builder.close()
        cpu = await statement_cpu(urls["session"], cfg.reps, 1000 if not cfg.quick else 100)
    print(f"\n# load generator: {'go' if why is None else 'python (' + why + ')'}")
    print("# PostgreSQL CPU per append statement alone (us; median [min-max] of the repetitions):")
    for variant, values in cpu.items():
        print(f"#   {variant}: {statistics.median(values):.0f} [{min(values):.0f}-{max(values):.0f}]")
    print("# CPU microseconds per AddMessage (server / PostgreSQL), throughput ratio on / off:")
    for concurrency in (1, 32):
        on, off = rows[("trigger on", concurrency)], rows[("trigger off", concurrency)]
        print(
            f"#   c={concurrency}: on {per_call(on, 'server') or 0:.0f} / {per_call(on, 'postgres') or 0:.0f} us, "
            f"off {per_call(off, 'server') or 0:.0f} / {per_call(off, 'postgres') or 0:.0f} us, "
            f"throughput {on['throughput']['median'] / off['throughput']['median']:.2f} x"
        )
    print(f"# load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.role_totals", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.quick:
        cfg = Config.quick_mode(reps=2, timed_count=20)
        count = 3_000
    else:
        cfg = Config(reps=args.reps)
        count = 50_000
    asyncio.run(run(cfg, count))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
