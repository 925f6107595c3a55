"""The change feed under load (issue 12): `python -m bench.feed [--quick]`, also `make bench-feed`.

Two server processes on one database: watchers on A, writers through B (so every change crosses
processes through PostgreSQL's NOTIFY). 200 watchers on 20 sessions (10 per session), messages
appended at a steady rate. Measured:

- latency: from AddMessage acknowledged (the writer got its answer) to a watcher receiving that
  message; p50 / p99 over every delivery. Both clocks are this process's. A negative value means the
  watcher had it before the writer had its answer (both leave the servers at about the same time);
- server A's RSS per watcher: (RSS with the watchers open - RSS before) / watchers;
- exactness across a forced reconnect: halfway through, A's listening connection is terminated
  (pg_terminate_backend: A must reconnect by itself and read again) and half the watchers hang up
  and resume from their last cursor; at the end every watcher must have every message of its
  session exactly once, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc

from . import procstat
from .run import RESULTS, database_server, prepare, server_env, start_process, wait_ready


@dataclass
class Watcher:
    session_id: str
    cursor: int = 0
    sequences: list[int] = field(default_factory=list)
    received: dict[int, float] = field(default_factory=dict)
    call: Any = None


async def _follow(stub: session_pb2_grpc.SessionServiceStub, watcher: Watcher, ready: asyncio.Event | None) -> None:
    request = pb.WatchSessionRequest(session_id=watcher.session_id, after_change_id=watcher.cursor)
    watcher.call = stub.WatchSession(request)
    async for response in watcher.call:
        now = time.perf_counter()
        watcher.cursor = response.cursor
        if ready is not None:
            ready.set()
            ready = None
        if response.HasField("change") and response.change.kind == pb.CHANGE_KIND_MESSAGE_ADDED:
            sequence = response.change.message.sequence
            watcher.sequences.append(sequence)
            watcher.received[sequence] = now


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(sessions: int, per_session: int, messages: int, rate: float) -> dict[str, Any]:
    load_before = os.getloadavg()
    with database_server() as (url, _):
        urls = await prepare(url)
        a = start_process("feed-watchers", ["-m", "session_grpc", "serve"], server_env(urls["session"]))
        b = start_process("feed-writers", ["-m", "session_grpc", "serve"], server_env(urls["session"]))
        try:
            await wait_ready(a, health=True)
            await wait_ready(b, health=True)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{a.port}") as ca, \
                    grpc.aio.insecure_channel(f"127.0.0.1:{b.port}") as cb:
                watch_stub = session_pb2_grpc.SessionServiceStub(ca)
                write_sessions = session_pb2_grpc.SessionServiceStub(cb)
                write_messages = session_pb2_grpc.MessageServiceStub(cb)
                ids = [
                    (await write_sessions.CreateSession(pb.CreateSessionRequest(user_id=f"feed-{n}"))).session.session_id
                    for n in range(sessions)
                ]
                await asyncio.sleep(1.0)
                rss_before = sum(procstat.rss_bytes(p) for p in procstat.tree(a.pid))
                watchers = [Watcher(ids[n % sessions]) for n in range(sessions * per_session)]
                readies = [asyncio.Event() for _ in watchers]
                tasks = {id(w): asyncio.create_task(_follow(watch_stub, w, r)) for w, r in zip(watchers, readies)}
                await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
                await asyncio.sleep(1.0)
                rss_after = sum(procstat.rss_bytes(p) for p in procstat.tree(a.pid))

                acked: dict[tuple[str, int], float] = {}
                interval = 1.0 / rate

                async def write(k: int) -> None:
                    session_id = ids[k % sessions]
                    reply = await write_messages.AddMessage(pb.AddMessageRequest(
                        session_id=session_id, role=pb.ROLE_USER, content=f"feed {k}",
                    ))
                    acked[(session_id, reply.message.sequence)] = time.perf_counter()

                async def force_reconnect() -> dict[str, int]:
                    admin = await asyncpg.connect(urls["session"])
                    try:
                        killed = await admin.fetchval(
                            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                        )
                    finally:
                        await admin.close()
                    resumed = 0
                    for watcher in watchers[::2]:
                        watcher.call.cancel()
                        await asyncio.gather(tasks[id(watcher)], return_exceptions=True)
                        tasks[id(watcher)] = asyncio.create_task(_follow(watch_stub, watcher, None))
                        resumed += 1
                    return {"listeners_terminated": killed, "watchers_resumed": resumed}

                writes = []
                reconnect: dict[str, int] = {}
                started = time.perf_counter()
                for k in range(messages):
                    writes.append(asyncio.create_task(write(k)))
                    if k == messages // 2:
                        reconnect = await force_reconnect()
                    await asyncio.sleep(max(0.0, started + (k + 1) * interval - time.perf_counter()))
                await asyncio.gather(*writes)
                per_session_count = {sid: sum(1 for (s, _) in acked if s == sid) for sid in ids}
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and any(
                    len(w.sequences) < per_session_count[w.session_id] for w in watchers
                ):
                    await asyncio.sleep(0.1)
                for watcher in watchers:
                    watcher.call.cancel()
                await asyncio.gather(*tasks.values(), return_exceptions=True)
        finally:
            a.stop()
            b.stop()
    exact = sum(w.sequences == list(range(1, per_session_count[w.session_id] + 1)) for w in watchers)
    missed = sum(max(0, per_session_count[w.session_id] - len(set(w.sequences))) for w in watchers)
    duplicated = sum(len(w.sequences) - len(set(w.sequences)) for w in watchers)
    latencies = [
        (w.received[seq] - acked[(w.session_id, seq)]) * 1000
        for w in watchers for seq in w.received if (w.session_id, seq) in acked
    ]
    result = {
        "sessions": sessions, "watchers": len(watchers), "messages": messages, "rate_per_s": rate,
        "deliveries": len(latencies),
        "latency_ms": {
            "p50": statistics.median(latencies), "p99": _percentile(latencies, 0.99),
            "max": max(latencies), "min": min(latencies),
        },
        "server_rss_mb": {"before": rss_before / 2**20, "with_watchers": rss_after / 2**20},
        "rss_per_watcher_kb": (rss_after - rss_before) / len(watchers) / 1024,
        "reconnect": reconnect,
        "watchers_exact": exact, "missed": missed, "duplicated": duplicated,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.feed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 sessions x 5 watchers, 100 messages")
    parser.add_argument("--rate", type=float, default=100.0, help="messages per second, all sessions together")
    args = parser.parse_args(argv)
    sessions, per_session, messages = (4, 5, 100) if args.quick else (20, 10, 2000)
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(measure(sessions, per_session, messages, args.rate))
    print(json.dumps(result, indent=2))
    (RESULTS / f"feed-{'quick' if args.quick else 'latest'}.json").write_text(json.dumps(result, indent=2))
    lat = result["latency_ms"]
    print(
        f"# feed: {result['watchers']} watchers on {result['sessions']} sessions, {result['messages']} messages at "
        f"{result['rate_per_s']:.0f}/s through another process: ack -> watcher p50 {lat['p50']:.2f} ms, "
        f"p99 {lat['p99']:.2f} ms; {result['rss_per_watcher_kb']:.1f} KiB RSS per watcher; across the forced "
        f"reconnect {result['missed']} missed, {result['duplicated']} duplicated "
        f"({result['watchers_exact']}/{result['watchers']} watchers exact); load average "
        f"{result['load_average_before'][0]:.2f} before, {result['load_average_after'][0]:.2f} after"
    )
    return 0 if result["missed"] == 0 and result["duplicated"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
