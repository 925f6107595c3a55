"""The bench's Go load generator (bench/goload) builds offline and drives a live server: unary
closed loops count the calls they made, a stream is read whole across pages, and the bench can
read the generator's own CPU time (it is measured, not assumed to be zero).

Needs Debian's Go toolchain and gRPC sources, as tests/test_go_client.py does:
    apt-get install golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from bench import goload, procstat
from session_grpc._proto.session.v1 import session_pb2 as pb

from .helpers import new_session

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(goload.missing() is not None, reason=goload.missing() or "")


@pytest.fixture(scope="session")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return goload.build(tmp_path_factory.mktemp("goload"))


def loadgen_meter(pid: int) -> procstat.CpuMeter:
    return procstat.CpuMeter([procstat.Group("loadgen", lambda: [pid])])


async def test_goload_appends_in_a_closed_loop_and_every_counted_call_landed(binary, service, sessions, sql):
    ids = [(await new_session(sessions, "go-load")).session_id for _ in range(4)]
    stats, cpu = await goload.run(
        binary, service.port,
        ["-rpc", "add_message", "-sessions", ",".join(ids), "-concurrency", "8", "-warmup", "0.2s",
         "-duration", "0.5s", "-content", "hi", "-tokens", "3", "-cost", "0.001"],
        loadgen_meter,
    )
    assert stats.errors == 0 and stats.calls > 0 and len(stats.latencies) == stats.calls
    assert 0.5 <= stats.seconds < 1.5
    stored = await sql.fetchval("SELECT count(*) FROM messages WHERE session_id = ANY($1::uuid[])", ids)
    assert stored >= stats.calls, "the window's calls are a part of all the calls made (warm-up and tail too)"
    assert cpu["loadgen"] > 0, "the generator's CPU is read while it still runs (-linger)"


async def test_goload_reads_sessions_in_a_closed_loop(binary, service, sessions):
    sid = (await new_session(sessions, "go-load")).session_id
    stats, _ = await goload.run(
        binary, service.port, ["-rpc", "get_session", "-sessions", sid, "-concurrency", "2", "-warmup", "0.1s",
                               "-duration", "0.3s"],
    )
    assert stats.errors == 0 and stats.calls > 0


async def test_goload_streams_a_whole_session_across_pages(binary, service, sessions, messages):
    sid = (await new_session(sessions, "go-load")).session_id
    batch = [pb.NewMessage(role=pb.ROLE_USER, content=f"m{n}") for n in range(50)]
    for _ in range(5):  # 250 messages: three pages of the default 100
        await messages.AddMessages(pb.AddMessagesRequest(session_id=sid, messages=batch))
    stats, _ = await goload.run(binary, service.port, ["-rpc", "stream", "-sessions", sid])
    assert (stats.calls, stats.errors) == (250, 0)
    assert stats.throughput > 0


async def test_goload_streams_a_whole_session_batched_counting_messages_not_responses(
    binary, service, sessions, messages
):
    sid = (await new_session(sessions, "go-load")).session_id
    batch = [pb.NewMessage(role=pb.ROLE_USER, content=f"m{n}") for n in range(50)]
    for _ in range(5):  # 250 messages: three responses of a page each
        await messages.AddMessages(pb.AddMessagesRequest(session_id=sid, messages=batch))
    stats, _ = await goload.run(binary, service.port, ["-rpc", "stream", "-batched", "-sessions", sid])
    assert (stats.calls, stats.errors) == (250, 0)
    stats, _ = await goload.run(
        binary, service.port, ["-rpc", "stream", "-batched", "-page-size", "7", "-sessions", sid]
    )
    assert (stats.calls, stats.errors) == (250, 0)


async def test_goload_reports_a_failing_rpc_as_errors_not_calls(binary, service):
    stats, _ = await goload.run(
        binary, service.port, ["-rpc", "get_session", "-sessions", "not-a-uuid", "-warmup", "0s", "-duration", "0.2s"],
    )
    assert stats.calls == 0 and stats.errors > 0


async def test_bench_runs_its_point_and_stream_workloads_with_the_go_load_generator(tmp_path):
    """`python -m bench --loadgen go` (shrunk): every go row ran without errors, the stream read the
    whole session, and the generator's CPU was measured."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench", "--quick", "--only", "point,big", "--loadgen", "go", "--no-peer",
        "--no-chart", "--reps", "1", "--out", str(tmp_path),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=600)
    assert process.returncode == 0, output.decode()[-3000:]
    result = json.loads((tmp_path / "quick-latest.json").read_text())
    rows = [row for row in result["results"] if row["workload"].startswith("go ")]
    assert {(row["workload"], row["target"]) for row in rows} == {
        (workload, target) for workload in ("go add_message", "go get_session")
        for target in ("session-grpc", "session-grpc nogroup", "reference", "no-op")
    } | {("go stream_large", "session-grpc"), ("go stream_large", "no-op")}
    assert all(row["errors"] == 0 and row["calls"] > 0 for row in rows), rows
    # Measured (clock ticks of 10 ms: a short, slow row may read 0; all of them together may not)
    assert sum(row["cpu_cores"]["loadgen"]["median"] for row in rows) > 0
    assert not any(row["workload"] in ("add_message", "stream_large") for row in result["results"]), (
        "--loadgen go replaces the Python load generator's rows")
    targets = [t["target"] for t in result["comparisons"]["targets"]]
    assert any(t.startswith("go stream_large >= 20,000") and "batched" in t for t in targets), targets
    assert any(t.startswith("go stream_large unbatched") for t in targets), targets
    # Both streams, a message per response and a page per response, from both servers.
    streams = {row["variant"].split(" ", 2)[2] for row in rows if row["workload"] == "go stream_large"}
    assert streams == {"page_size=100", "page_size=100 batched", "canned", "canned batched"}
