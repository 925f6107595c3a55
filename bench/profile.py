"""Flame graphs of the session-grpc server under load, taken with py-spy.

    python -m bench.profile --seconds 10 --out bench/results/profiles

starts an embedded PostgreSQL and the server, drives add_message (c=8),
get_session (c=8) and list_messages (latest 20, c=8), and records one SVG flame
graph per workload with `py-spy record` attached to the server process (py-spy
comes with `make bench`; it needs ptrace rights, which root has).

    python -m bench.profile --stream 50000 --seconds 10

profiles StreamMessages instead: a 50,000-message session read over and over by the Go load
generator (bench/goload), one message per response, then batched.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import grpc

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc

from . import goload, loadgen, procstat, seed
from .run import RESULTS, database_server, new_sessions, prepare, request_for, server_env, start_process, wait_ready


async def profile(seconds: float, out: Path, concurrency: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with database_server() as (url, _):
        urls = await prepare(url)
        server = start_process("session-grpc-profiled", ["-m", "session_grpc", "serve"], server_env(urls["session"]))
        try:
            await wait_ready(server, health=True)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                sessions = session_pb2_grpc.SessionServiceStub(channel)
                messages = session_pb2_grpc.MessageServiceStub(channel)
                ids = await new_sessions(sessions, concurrency)
                for sid in ids:
                    for _ in range(30):
                        await messages.AddMessage(request_for(sid))
                workloads = {
                    "add_message": [lambda r=request_for(s): messages.AddMessage(r) for s in ids],
                    "get_session": [
                        lambda r=pb.GetSessionRequest(session_id=s): sessions.GetSession(r) for s in ids
                    ],
                    "list_messages_latest": [
                        lambda r=pb.ListMessagesRequest(session_id=s, order_by="sequence desc", page_size=20): (
                            messages.ListMessages(r)
                        )
                        for s in ids
                    ],
                }
                for name, ops in workloads.items():
                    target = out / f"{name}.svg"
                    recorder = flame_graph(spy, server.pid, seconds, target)
                    stats = await loadgen.closed_loop(ops, seconds + 0.5, 0.3)
                    _, err = recorder.communicate()
                    print(f"{name}: {stats.throughput:.0f} calls/s, p50 {stats.percentile(50) * 1e3:.2f} ms -> "
                          f"{target if recorder.returncode == 0 else err.decode()[-300:]}")
        finally:
            server.stop()


def flame_graph(spy: str, pid: int, seconds: float, target: Path) -> subprocess.Popen[bytes]:
    """py-spy recording `pid` for `seconds` into the flame graph `target` (wait with communicate())."""
    return subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
         "--rate", "250", "--format", "flamegraph", "--output", str(target), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def profile_stream(seconds: float, out: Path, count: int) -> None:
    """StreamMessages of a `count`-message session (seeded as the bench seeds its long session) read
    back to back by the Go load generator, one message per response and then batched: one flame
    graph each (stream.svg, stream_batched.svg), and each stream's messages per server CPU-second."""
    out.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    builder = goload.Builder()
    with database_server() as (url, _):
        urls = await prepare(url)
        conn = await asyncpg.connect(urls["session"])
        try:
            sid = await seed.long_session(conn, "long-user", count)
        finally:
            await conn.close()
        server = start_process("session-grpc-profiled", ["-m", "session_grpc", "serve"], server_env(urls["session"]))
        try:
            await wait_ready(server, health=True)
            binary = builder.binary()
            for name, extra in (("stream", []), ("stream_batched", ["-batched"])):
                target = out / f"{name}.svg"
                recorder = flame_graph(spy, server.pid, seconds, target)
                streamed, cpu = 0, 0.0
                while recorder.poll() is None:
                    meter = procstat.CpuMeter([procstat.Group("server", lambda: procstat.tree(server.pid))])
                    stats, used = await goload.run(
                        binary, server.port, ["-rpc", "stream", "-sessions", sid, *extra], lambda _pid: meter
                    )
                    streamed, cpu = streamed + stats.calls, cpu + used["server"]
                _, err = recorder.communicate()
                print(f"{name}: {streamed / cpu if cpu else 0:,.0f} messages per server CPU-second -> "
                      f"{target if recorder.returncode == 0 else err.decode()[-300:]}")
        finally:
            server.stop()
            builder.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS / "profiles")
    parser.add_argument("--stream", type=int, metavar="MESSAGES", default=0,
                        help="profile StreamMessages of a session of this many messages instead (Go client)")
    args = parser.parse_args()
    if args.stream:
        asyncio.run(profile_stream(args.seconds, args.out, args.stream))
    else:
        asyncio.run(profile(args.seconds, args.out, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
