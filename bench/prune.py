"""`make bench-prune`: how fast the retention prune job removes rows, and what it costs AddMessage.

    python -m bench.prune            # 300 sessions x 1,000 messages, 270,000 of them pruned
    python -m bench.prune --quick    # 40 sessions x 500 messages: a smoke test

An embedded PostgreSQL in a temporary folder, one server process (`session_grpc serve`, the prune
job off), and the prune run by `session-grpc prune` in a process of its own (the same pass the
server's job runs; SESSION_PRUNE_BATCH as set, default 500). The app "pruned" is seeded with SQL
(sessions of 1,000 messages, gapless, counters that match, through the real triggers) and given
max_messages_per_session 100. Then, with W closed-loop AddMessage writers (half on sessions of the
pruned app, which the prune locks batch by batch, half on sessions of an app without a policy):
1. AddMessage alone for --seconds: p50 / p99;
2. the same writers while the prune pass runs, until it ends: p50 / p99, and the pass's rows/s.
Record the load average with any figure (it is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path

import asyncpg
import grpc

from session_grpc import migrations
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc

from .loadgen import RunStats
from .run import RESULTS, database_server, request_for, server_env, start_process, wait_ready, with_database

SEED = """
WITH made AS (
    INSERT INTO sessions (id, user_id, status, app_name, message_count, total_tokens, total_cost,
                          create_time, update_time, last_activity_time)
    SELECT gen_random_uuid(), 'prune-user-' || (g % 50), 'active', 'pruned', $2::bigint, $2::bigint * 30,
           $2::bigint * 0.0003, now() - interval '1 day', now() - interval '1 day', now() - interval '1 day'
    FROM generate_series(1, $1::int) g
    RETURNING id, user_id
)
INSERT INTO messages (id, session_id, user_id, sequence, role, message_type, content, tokens_used, cost, create_time)
SELECT gen_random_uuid(), m.id, m.user_id, g, CASE WHEN g % 2 = 1 THEN 'user' ELSE 'assistant' END, 'chat',
       'a message of the prune benchmark, about as long as a short chat turn', 30, 0.0003,
       now() - interval '1 day' + make_interval(secs => g)
FROM made m, generate_series(1, $2::int) g
"""
KEEP = 100


async def seed(url: str, sessions: int, per_session: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        for start in range(0, sessions, 20):  # 20 sessions per statement: bounded memory for the trigger's table
            await conn.execute(SEED, min(20, sessions - start), per_session)
        await conn.execute("INSERT INTO retention_policies (app_name, max_messages_per_session) VALUES ('pruned', $1)",
                           KEEP)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def writers(channel: grpc.aio.Channel, targets: list[str], stop: asyncio.Event, latencies: list[float]) -> int:
    stub = session_pb2_grpc.MessageServiceStub(channel)
    errors = 0

    async def one(session_id: str) -> None:
        nonlocal errors
        request = request_for(session_id)
        while not stop.is_set():
            started = time.perf_counter()
            try:
                await stub.AddMessage(request, timeout=30)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(one(target) for target in targets))
    return errors


def stats(latencies: list[float], seconds: float, errors: int) -> dict[str, float]:
    return RunStats(len(latencies), seconds, latencies, errors).summary()


async def run(args: argparse.Namespace) -> dict[str, object]:
    sessions, per_session = (40, 500) if args.quick else (args.sessions, args.messages)
    result: dict[str, object] = {"sessions": sessions, "messages_per_session": per_session, "keep": KEEP,
                                 "batch": args.batch, "writers": args.writers, "loadavg_start": os.getloadavg()}
    with database_server() as (server_url, _):
        admin = await asyncpg.connect(server_url)
        await admin.execute('CREATE DATABASE "prune_bench"')
        await admin.close()
        url = with_database(server_url, "prune_bench")
        await migrations.upgrade(url)
        started = time.perf_counter()
        await seed(url, sessions, per_session)
        result["seed_seconds"] = round(time.perf_counter() - started, 1)
        RESULTS.mkdir(parents=True, exist_ok=True)
        server = start_process("prune-server", ["-m", "session_grpc", "serve"],
                               {**server_env(url), "SESSION_PRUNE_INTERVAL": "0"})
        try:
            await wait_ready(server, health=True)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = session_pb2_grpc.SessionServiceStub(channel)
                targets = []
                for i in range(args.writers):
                    app = "pruned" if i % 2 == 0 else "free"
                    made = await stub.CreateSession(pb.CreateSessionRequest(user_id=f"writer-{i}", app_name=app))
                    targets.append(made.session.session_id)

                # 1. AddMessage alone.
                alone: list[float] = []
                stop = asyncio.Event()
                load = asyncio.create_task(writers(channel, targets, stop, alone))
                await asyncio.sleep(1.0)  # warm-up
                alone.clear()
                began = time.perf_counter()
                await asyncio.sleep(args.seconds)
                stop.set()
                errors = await load
                result["add_message_alone"] = stats(alone, time.perf_counter() - began, errors)

                # 2. The same writers while a prune pass runs.
                during: list[float] = []
                stop = asyncio.Event()
                load = asyncio.create_task(writers(channel, targets, stop, during))
                await asyncio.sleep(1.0)
                during.clear()
                result["loadavg_before_prune"] = os.getloadavg()
                env = {**os.environ, "DATABASE_URL": url, "SESSION_PRUNE_BATCH": str(args.batch)}
                began = time.perf_counter()
                prune = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "session_grpc", "prune", env=env,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                )
                output, _ = await prune.communicate()
                elapsed = time.perf_counter() - began
                stop.set()
                errors = await load
                result["loadavg_after_prune"] = os.getloadavg()
                text = output.decode()
                found = re.search(r"removed (\d+) rows in all \((\d+) batches, ([\d.]+) s\)", text)
                if prune.returncode != 0 or found is None:
                    raise RuntimeError(f"prune failed ({prune.returncode}): {text}")
                removed, passed = int(found.group(1)), float(found.group(3))
                # The pass's own time (the command's, less its start-up) gives rows/s; the writers were
                # measured over the command's whole run.
                result["prune"] = {"rows": removed, "batches": int(found.group(2)), "pass_seconds": passed,
                                   "command_seconds": round(elapsed, 2), "rows_per_second": round(removed / passed)}
                result["add_message_during_prune"] = stats(during, elapsed, errors)
        finally:
            server.process.terminate()
            server.process.wait(30)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 sessions x 500 messages")
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--messages", type=int, default=1000, help="messages per seeded session")
    parser.add_argument("--batch", type=int, default=500, help="SESSION_PRUNE_BATCH")
    parser.add_argument("--writers", type=int, default=8, help="closed-loop AddMessage callers")
    parser.add_argument("--seconds", type=float, default=10.0, help="AddMessage alone, measured")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = Path(RESULTS) / ("prune-quick.json" if args.quick else "prune.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
