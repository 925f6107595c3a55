"""What the speed of the service rests on, checked as rules (never timed: timing is `make bench`'s job)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import grpc
from google.protobuf.internal import api_implementation

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc
from session_grpc.testing import free_port


ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("session-grpc")


def test_protobuf_runs_on_the_upb_backend():
    # The pure-Python backend is several times slower at parsing and serializing every message.
    assert api_implementation.Type() == "upb"


async def test_serve_with_two_workers_shares_one_port_and_stops_cleanly(database_url):
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "SESSION_HOST": "127.0.0.1",
        "SESSION_EXPIRY_INTERVAL": "0",
        "SESSION_SHUTDOWN_GRACE": "2s",
    }
    process = await asyncio.create_subprocess_exec(
        str(SCRIPT), "serve", "--workers", "2", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output = b""
    try:
        while output.count(b"serving session.v1") < 2:  # both workers up
            line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
            assert line, f"the server exited before both workers served:\n{output.decode()}"
            output += line
        created = []
        for _ in range(8):
            # a channel of its own per call: a new connection, which the kernel gives to either worker
            async with grpc.aio.insecure_channel(
                f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
            ) as channel:
                reply = await session_pb2_grpc.SessionServiceStub(channel).CreateSession(
                    pb.CreateSessionRequest(user_id="workers"), timeout=5
                )
                created.append(reply.session.session_id)
        assert len(set(created)) == 8
        assert len(_children(process.pid)) == 2
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(process.communicate(), timeout=30)
        output += rest
    assert process.returncode == 0, output.decode()
    assert output.decode().count("INFO session_grpc.server: stopped") == 2, output.decode()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid and "spawn_main" in (entry / "cmdline").read_text():
                found.append(int(entry.name))
    return found


async def test_bench_quick_mode_runs_every_workload_end_to_end(tmp_path):
    """`python -m bench --quick` (what `make bench` runs, shrunk) must keep working."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench", "--quick", "--no-peer", "--no-chart", "--reps", "1", "--out", str(tmp_path),
        "--loadgen", "python",  # the Go one: tests/test_go_loadgen.py
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=180)
    assert process.returncode == 0, output.decode()[-3000:]
    result = json.loads((tmp_path / "quick-latest.json").read_text())
    workloads = {row["workload"] for row in result["results"]}
    assert {"add_message", "get_session", "add_message_open", "chat_turns", "list_big_user", "stream_large",
            "add_messages", "fork", "truncate"} <= workloads
    targets = {row["target"] for row in result["results"]}
    assert {"session-grpc", "reference", "no-op"} <= targets
    assert all(row["errors"] == 0 for row in result["results"]), [r for r in result["results"] if r["errors"]]
    assert all("cpu_cores" in row for row in result["results"])
