"""`make bench`: session-grpc against the limit (reference, no-op) and the peer (ADK), on one box.

Starts an embedded PostgreSQL in a temporary folder, migrates a fresh
database, starts the servers as subprocesses, runs the workloads, prints a
table and writes JSON and a PNG chart under bench/results/.

    python -m bench                 # the full run (about 6-8 minutes on 2 cores)
    python -m bench --quick         # a smoke test of every workload (well under a minute)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from session_grpc import embedded, localpg, migrations
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc
from session_grpc.localpg.bouncer import pgbouncer
from session_grpc.testing import free_port

from . import goload, history, loadgen, memory, procstat, report, seed

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
# The servers run from the server's own virtualenv when make bench says which (BENCH_SERVER_PYTHON),
# so the peer's dependencies never reach them; else from this interpreter.
SERVER_PYTHON = os.environ.get("BENCH_SERVER_PYTHON") or sys.executable
CLIENT_BOUND = 0.85  # share of one core above which the load generator limits the run
QUIET_LOAD = 1.5
"""A run whose 1-minute load average before it is at or above this was taken on a busy machine:
its numbers do not become docs/performance.md's "latest" without --force (issue 14)."""
DOCS = ROOT / "docs" / "performance.md"


@dataclass
class Config:
    quick: bool = False
    reps: int = 3
    duration: float = 2.5
    warmup: float = 0.6
    concurrencies: tuple[int, ...] = (1, 8, 32)
    chat_callers: int = 8
    big_messages: int = 50_000
    big_sessions: int = 10_000
    timed_count: int = 200
    fork_messages: int = 10_000
    peer: bool = True
    token: bool = True
    """The point workloads also against session-grpc in token mode (a cached bearer token)."""
    chart: bool = True
    workers: tuple[int, ...] = (1, 2)
    only: frozenset[str] = frozenset()
    out: Path = RESULTS
    docs: bool = False
    """Write the run into docs/performance.md's "latest" block (and docs/perf/), when quiet enough."""
    force: bool = False
    """Write the docs even from a run on a busy machine (load average >= QUIET_LOAD before it)."""
    loadgen: str = "both"
    """Which load generator drives the point and stream workloads: python, go (bench/goload) or both
    (the Go rows are skipped with a note when Go is missing)."""

    @classmethod
    def quick_mode(cls, **overrides: Any) -> Config:
        base = dict(
            quick=True,
            reps=3,
            duration=0.4,
            warmup=0.15,
            concurrencies=(1, 8),
            chat_callers=2,
            big_messages=3_000,
            big_sessions=500,
            timed_count=10,
            fork_messages=1_000,
            workers=(1,),
        )
        base.update(overrides)
        return cls(**base)


# ---- processes ---------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_process(name: str, args: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> Proc:
    port = free_port()
    full_env = {**os.environ, **(env or {})}
    argv = [SERVER_PYTHON, *[a.replace("{port}", str(port)) for a in args]]
    full_env = {k: v.replace("{port}", str(port)) for k, v in full_env.items()}
    log = open(RESULTS / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    # BENCH_SERVER_ROOT runs the servers from another tree (an older commit, for before/after numbers)
    cwd = cwd or os.environ.get("BENCH_SERVER_ROOT") or ROOT
    process = subprocess.Popen(argv, env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    return Proc(name, process, port)


async def wait_ready(proc: Proc, health: bool, timeout: float = 60.0) -> None:
    """Until the server answers (health SERVING, or a connection at all); a server that exits or
    does not answer in `timeout` seconds fails the run with the end of its log in the message."""
    began = time.monotonic()
    deadline = began + timeout
    async with grpc.aio.insecure_channel(f"127.0.0.1:{proc.port}") as channel:
        while True:
            if proc.process.poll() is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.process.returncode}\n{log_tail(proc)}")
            try:
                if health:
                    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                else:
                    await asyncio.wait_for(channel.channel_ready(), 1)
                    return
            except (grpc.aio.AioRpcError, asyncio.TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{proc.name} did not become ready in {timeout:.0f} s (load average "
                    f"{os.getloadavg()[0]:.2f})\n{log_tail(proc)}"
                )
            await asyncio.sleep(0.1)


def log_tail(proc: Proc, lines: int = 40) -> str:
    """The last lines of a server's log (bench/results/<name>.log), to say why it failed."""
    path = RESULTS / f"{proc.name}.log"
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as error:
        return f"(no log: {error})"
    return f"--- last {len(text)} lines of {path} ---\n" + "\n".join(text) + "\n---"


def supports_workers() -> bool:
    out = subprocess.run(
        [SERVER_PYTHON, "-m", "session_grpc", "serve", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    return "--workers" in out.stdout


# ---- measurement ---------------------------------------------------------------------------------


@dataclass
class Bench:
    config: Config
    database_url: str
    postmaster: int
    results: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)

    def meter(self, server_pid: int | None, loadgen_pid: int | None = None) -> procstat.CpuMeter:
        """CPU meters of the server, PostgreSQL and the load generator (this process, or the Go one)."""
        generator = loadgen_pid or os.getpid()
        groups = [
            procstat.Group(
                "postgres", lambda: [self.postmaster, *procstat.children(self.postmaster)], parent=self.postmaster
            ),
            procstat.Group("loadgen", lambda: [generator]),
        ]
        if server_pid is not None:
            groups.insert(0, procstat.Group("server", lambda: procstat.tree(server_pid)))
        return procstat.CpuMeter(groups)

    def record(
        self,
        workload: str,
        target: str,
        variant: str,
        reps: list[loadgen.RunStats],
        cpus: list[dict[str, float]],
        unit: str = "calls/s",
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        summaries = [r.summary() for r in reps]
        row: dict[str, Any] = {"workload": workload, "target": target, "variant": variant, "unit": unit}
        for key in ("throughput", "p50_ms", "p90_ms", "p99_ms", "mean_ms"):
            row[key] = loadgen.median_and_spread([s[key] for s in summaries])
        row["calls"] = sum(s["calls"] for s in summaries)
        row["errors"] = sum(s["errors"] for s in summaries)
        row["late"] = sum(s["late"] for s in summaries)
        if cpus:
            seconds = [r.seconds for r in reps]
            cpu_share = {
                name: loadgen.median_and_spread([c[name] / s for c, s in zip(cpus, seconds) if s])
                for name in cpus[0]
            }
            row["cpu_cores"] = cpu_share  # CPU seconds per wall second, i.e. cores busy
            if "server" in cpus[0]:
                row["calls_per_server_cpu_s"] = loadgen.median_and_spread(
                    [r.calls / c["server"] for r, c in zip(reps, cpus) if c["server"] > 0]
                )
            row["client_bound"] = cpu_share["loadgen"]["median"] > CLIENT_BOUND
        if extra:
            row.update(extra)
        self.results.append(row)
        print(report.line(row), flush=True)
        return row

    async def closed(
        self,
        workload: str,
        target: str,
        variant: str,
        server_pid: int | None,
        make_ops: Callable[[], Awaitable[list[loadgen.Operation]]],
        duration: float | None = None,
        unit: str = "calls/s",
    ) -> dict[str, Any]:
        reps, cpus = [], []
        for _ in range(self.config.reps):
            ops = await make_ops()
            meter = self.meter(server_pid)
            stats = await loadgen.closed_loop(
                ops, duration or self.config.duration, self.config.warmup, on_measure_start=meter.start
            )
            cpus.append(meter.stop())
            reps.append(stats)
        return self.record(workload, target, variant, reps, cpus, unit=unit)

    async def closed_interleaved(
        self,
        workload: str,
        variant: str,
        targets: list[tuple[str, int | None, Callable[[], Awaitable[list[loadgen.Operation]]]]],
    ) -> None:
        """Like closed(), for several servers, one repetition of each in turn: a change in the
        machine's load during the run then touches every server alike, which keeps the ratios
        between them honest on a shared box."""
        reps: dict[str, list[loadgen.RunStats]] = {name: [] for name, _, _ in targets}
        cpus: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in targets}
        for _ in range(self.config.reps):
            for name, pid, make_ops in targets:
                ops = await make_ops()
                meter = self.meter(pid)
                stats = await loadgen.closed_loop(
                    ops, self.config.duration, self.config.warmup, on_measure_start=meter.start
                )
                cpus[name].append(meter.stop())
                reps[name].append(stats)
        for name, _, _ in targets:
            self.record(workload, name, variant, reps[name], cpus[name])

    async def timed(
        self,
        workload: str,
        target: str,
        variant: str,
        server_pid: int | None,
        op: loadgen.Operation,
        count: int | None = None,
    ) -> dict[str, Any]:
        reps, cpus = [], []
        for _ in range(3):  # warm the caches and prepared statements
            await op()
        for _ in range(self.config.reps):
            meter = self.meter(server_pid)
            meter.start()
            reps.append(await loadgen.timed_calls(op, count or self.config.timed_count))
            cpus.append(meter.stop())
        return self.record(workload, target, variant, reps, cpus)


def request_for(session_id: str, role: int = pb.ROLE_USER, content: str = seed.USER_CONTENT) -> pb.AddMessageRequest:
    tokens, cost = (12, "0.00015") if role == pb.ROLE_USER else (48, "0.0006")
    return pb.AddMessageRequest(session_id=session_id, role=role, content=content, tokens_used=tokens, cost=cost)


async def new_sessions(stub: session_pb2_grpc.SessionServiceStub, count: int, user: str = "bench-user") -> list[str]:
    replies = await asyncio.gather(
        *(stub.CreateSession(pb.CreateSessionRequest(user_id=user, title="bench")) for _ in range(count))
    )
    return [r.session.session_id for r in replies]


# ---- workloads -----------------------------------------------------------------------------------


async def point_workloads(
    bench: Bench,
    servers: list[tuple[str, int, int]],
    real: grpc.aio.Channel,
    concurrencies: tuple[int, ...] | None = None,
    connections: int = 1,
    metadata: dict[str, tuple[tuple[str, str], ...]] | None = None,
) -> None:
    """add_message at each concurrency and get_session hot reads, against each (name, port, pid)
    server, their repetitions interleaved; `metadata` per server name is sent with each call (the
    token-mode server's bearer token).

    With several connections the callers are spread over that many channels (each its own
    TCP connection), which --workers needs: the kernel balances connections, not calls.
    """
    sent = metadata or {}
    cfg = bench.config
    concurrencies = concurrencies or cfg.concurrencies
    creator = session_pb2_grpc.SessionServiceStub(real)  # sessions are made through session-grpc
    channels = {
        name: [
            grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(connections)
        ]
        for name, port, _ in servers
    }
    try:
        messages = {name: [session_pb2_grpc.MessageServiceStub(c) for c in chans] for name, chans in channels.items()}
        readers = {name: [session_pb2_grpc.SessionServiceStub(c) for c in chans] for name, chans in channels.items()}
        for concurrency in concurrencies:

            def adder(name: str, concurrency: int = concurrency):
                async def make_ops() -> list[loadgen.Operation]:
                    ids = await new_sessions(creator, concurrency)
                    stubs = messages[name]
                    md = sent.get(name)
                    return [
                        lambda r=request_for(s), m=stubs[i % connections]: m.AddMessage(r, metadata=md)
                        for i, s in enumerate(ids)
                    ]

                return make_ops

            await bench.closed_interleaved(
                "add_message", f"c={concurrency}", [(name, pid, adder(name)) for name, _, pid in servers]
            )
        hot = await new_sessions(creator, max(concurrencies))
        for concurrency in sorted({1, max(concurrencies)}) if len(concurrencies) > 1 else concurrencies:

            def reader(name: str, concurrency: int = concurrency):
                async def make_reads() -> list[loadgen.Operation]:
                    stubs, md = readers[name], sent.get(name)
                    return [
                        lambda r=pb.GetSessionRequest(session_id=hot[i]), st=stubs[i % connections]: (
                            st.GetSession(r, metadata=md)
                        )
                        for i in range(concurrency)
                    ]

                return make_reads

            await bench.closed_interleaved(
                "get_session", f"c={concurrency}", [(name, pid, reader(name)) for name, _, pid in servers]
            )
    finally:
        for chans in channels.values():
            for channel in chans:
                await channel.close()


async def go_point_workloads(
    bench: Bench, builder: goload.Builder, servers: list[tuple[str, int, int]], real: grpc.aio.Channel
) -> None:
    """The point workloads (AddMessage and GetSession at c=1 and the top concurrency) driven by the
    Go load generator, one goload process per repetition and server, the servers interleaved."""
    cfg = bench.config
    binary = builder.binary()
    creator = session_pb2_grpc.SessionServiceStub(real)
    timing = ["-warmup", f"{cfg.warmup}s", "-duration", f"{cfg.duration}s"]
    adding = ["-rpc", "add_message", "-content", seed.USER_CONTENT, "-tokens", "12", "-cost", "0.00015"]
    hot = await new_sessions(creator, max(cfg.concurrencies))
    for workload, args in (("go add_message", adding), ("go get_session", ["-rpc", "get_session"])):
        for concurrency in sorted({1, max(cfg.concurrencies)}):
            reps: dict[str, list[loadgen.RunStats]] = {name: [] for name, _, _ in servers}
            cpus: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in servers}
            for _ in range(cfg.reps):
                for name, port, pid in servers:
                    ids = await new_sessions(creator, concurrency) if workload == "go add_message" else hot[:concurrency]
                    stats, cpu = await goload.run(
                        binary, port, [*args, *timing, "-sessions", ",".join(ids)],
                        lambda go_pid, pid=pid: bench.meter(pid, loadgen_pid=go_pid),
                    )
                    reps[name].append(stats)
                    cpus[name].append(cpu)
            for name, _, _ in servers:
                bench.record(workload, name, f"c={concurrency}", reps[name], cpus[name])


async def go_stream_large(
    bench: Bench, builder: goload.Builder, real: Proc, noop: Proc, session_id: str, count: int
) -> None:
    """StreamMessages of the `count`-message session to the Go client at the default page size,
    one message per response and (batched) one page per response, next to the no-op server's
    canned stream of as many messages of the same size, likewise both ways (the ceiling of a
    grpc.aio stream, measured the same way), their repetitions interleaved."""
    binary = builder.binary()
    canned = ["-sessions", str(uuid.uuid4()), "-after-sequence", str(count)]
    targets = [
        ("session-grpc", real, ["-sessions", session_id], f"{count} msgs page_size=100"),
        ("session-grpc", real, ["-sessions", session_id, "-batched"], f"{count} msgs page_size=100 batched"),
        ("no-op", noop, canned, f"{count} msgs canned"),
        ("no-op", noop, [*canned, "-batched"], f"{count} msgs canned batched"),
    ]
    reps: dict[str, list[loadgen.RunStats]] = {variant: [] for *_, variant in targets}
    cpus: dict[str, list[dict[str, float]]] = {variant: [] for *_, variant in targets}
    for _ in range(bench.config.reps):
        for name, proc, args, variant in targets:
            stats, cpu = await goload.run(
                binary, proc.port, ["-rpc", "stream", *args],
                lambda go_pid, pid=proc.pid: bench.meter(pid, loadgen_pid=go_pid),
            )
            if stats.calls != count:
                raise RuntimeError(f"goload streamed {stats.calls} messages from {name} ({variant}), not {count}")
            reps[variant].append(stats)
            cpus[variant].append(cpu)
    for name, _, _, variant in targets:
        bench.record("go stream_large", name, variant, reps[variant], cpus[variant], unit="messages/s")


async def open_loop_add(bench: Bench, target: str, port: int, pid: int, real: grpc.aio.Channel, rate: float) -> None:
    cfg = bench.config
    creator = session_pb2_grpc.SessionServiceStub(real)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        messages = session_pb2_grpc.MessageServiceStub(channel)
        reps, cpus = [], []
        for _ in range(cfg.reps):
            ids = await new_sessions(creator, 64)
            requests = [request_for(s) for s in ids]
            meter = bench.meter(pid)
            stats = await loadgen.open_loop(
                lambda i: messages.AddMessage(requests[i % len(requests)]),
                rate,
                cfg.duration,
                on_measure_start=meter.start,
            )
            cpus.append(meter.stop())
            reps.append(stats)
        bench.record("add_message_open", target, f"{rate:.0f}/s", reps, cpus)


async def chat_turns(bench: Bench, pid: int, channel: grpc.aio.Channel) -> None:
    sessions_stub = session_pb2_grpc.SessionServiceStub(channel)
    messages = session_pb2_grpc.MessageServiceStub(channel)
    turns_per_session = 10

    async def make_ops() -> list[loadgen.Operation]:
        ops = []
        for _ in range(bench.config.chat_callers):
            state = {"session": None, "turns": 0}

            async def turn(state: dict[str, Any] = state) -> None:
                if state["session"] is None or state["turns"] >= turns_per_session:
                    created = await sessions_stub.CreateSession(pb.CreateSessionRequest(user_id="chat-user"))
                    state["session"], state["turns"] = created.session.session_id, 0
                sid = state["session"]
                await messages.AddMessage(request_for(sid))
                await messages.ListMessages(pb.ListMessagesRequest(session_id=sid, order_by="sequence desc", page_size=20))
                await messages.AddMessage(request_for(sid, pb.ROLE_ASSISTANT, seed.ASSISTANT_CONTENT))
                await sessions_stub.GetSessionSummary(pb.GetSessionSummaryRequest(session_id=sid))
                state["turns"] += 1

            ops.append(turn)
        return ops

    await bench.closed("chat_turns", "session-grpc", f"c={bench.config.chat_callers}", pid, make_ops, unit="turns/s")


async def stream_large(
    bench: Bench, pid: int, channel: grpc.aio.Channel, sessions: dict[str, str], target: str = "session-grpc",
    count: int = 0,
) -> None:
    """Stream whole sessions, sampling the server's memory. With `count`, the no-op server's
    canned stream of that many messages of the same size instead (the grpc.aio ceiling). The first
    session (and the canned stream) is also streamed batched, a page per response."""
    messages = session_pb2_grpc.MessageServiceStub(channel)
    for index, (label, session_id) in enumerate(sessions.items()):
        ways = ((0, False), (0, True)) if count else ((0, False), (1000, False), (0, True)) if not index else ((0, False),)
        for page_size, batched in ways:
            reps, cpus, peaks, starts = [], [], [], []
            for _ in range(bench.config.reps):
                peak = procstat.rss_bytes(pid)
                starts.append(peak)
                done = False

                async def sample() -> None:
                    nonlocal peak
                    while not done:
                        peak = max(peak, sum(procstat.rss_bytes(p) for p in procstat.tree(pid)))
                        await asyncio.sleep(0.02)

                sampler = asyncio.create_task(sample())
                meter = bench.meter(pid)
                meter.start()
                started = time.perf_counter()
                received = 0
                async for response in messages.StreamMessages(
                    pb.StreamMessagesRequest(
                        session_id=session_id, page_size=page_size, after_sequence=count, batched=batched
                    )
                ):
                    received += len(response.messages) if batched else 1
                elapsed = time.perf_counter() - started
                done = True
                await sampler
                cpus.append(meter.stop())
                peaks.append(peak)
                reps.append(loadgen.RunStats(calls=received, seconds=elapsed, latencies=[elapsed]))
            bench.record(
                "stream_large",
                target,
                (f"{label} page_size={page_size or 100}" if not count else f"{label} canned")
                + (" batched" if batched else ""),
                reps,
                cpus,
                unit="messages/s",
                extra={
                    "server_rss_start_mb": loadgen.median_and_spread([s / 2**20 for s in starts]),
                    "server_rss_peak_mb": loadgen.median_and_spread([p / 2**20 for p in peaks]),
                },
            )


async def list_big_user(bench: Bench, pid: int, channel: grpc.aio.Channel, data: dict[str, Any]) -> None:
    sessions_stub = session_pb2_grpc.SessionServiceStub(channel)
    messages = session_pb2_grpc.MessageServiceStub(channel)
    deep_token = ""
    depth = 0
    while depth + 1000 <= int(bench.config.big_sessions * 0.9):
        page = await sessions_stub.ListSessions(
            pb.ListSessionsRequest(user_id=data["big_user"], page_size=1000, page_token=deep_token)
        )
        deep_token, depth = page.next_page_token, depth + 1000
    if not deep_token:  # quick mode: fewer sessions than one page of 1000
        page = await sessions_stub.ListSessions(
            pb.ListSessionsRequest(user_id=data["big_user"], page_size=int(bench.config.big_sessions * 0.9))
        )
        deep_token, depth = page.next_page_token, int(bench.config.big_sessions * 0.9)
    cases: list[tuple[str, Callable[[], Awaitable[object]]]] = []
    for label, user in (("big user", data["big_user"]), ("small user", data["small_user"])):
        request = pb.ListSessionsRequest(user_id=user)
        cases.append((f"ListSessions first page ({label})", lambda r=request: sessions_stub.ListSessions(r)))
    deep = pb.ListSessionsRequest(user_id=data["big_user"], page_token=deep_token)
    cases.append((f"ListSessions page at {depth} (big user)", lambda: sessions_stub.ListSessions(deep)))
    for label, sid in (("long", data["long_session"]), ("short", data["short_session"])):
        get = pb.GetSessionRequest(session_id=sid)
        latest = pb.ListMessagesRequest(session_id=sid, order_by="sequence desc", page_size=20)
        cases.append((f"GetSession ({label} session)", lambda r=get: sessions_stub.GetSession(r)))
        cases.append((f"ListMessages latest 20 ({label} session)", lambda r=latest: messages.ListMessages(r)))
    # The same cost at both sizes: the summary reads the session's per-role totals (migration 0016)
    for label, sid in ((f"{bench.config.big_messages:,} messages", data["long_session"]),
                       ("1 message", data["one_message_session"])):
        summary = pb.GetSessionSummaryRequest(session_id=sid)
        cases.append((f"GetSessionSummary ({label})", lambda r=summary: sessions_stub.GetSessionSummary(r)))
    middle = pb.ListMessagesRequest(session_id=data["long_session"], page_size=100)
    first = await messages.ListMessages(middle)
    cases.append(("ListMessages first 100 (long session)", lambda: messages.ListMessages(middle)))
    del first
    for label, op in cases:
        await bench.timed("list_big_user", "session-grpc", label, pid, op)


async def peer_workloads(bench: Bench, url: str, equivalents: dict[str, float]) -> None:
    from . import adk_peer

    why = adk_peer.available()
    if why:
        bench.notes.append(f"ADK peer skipped: {why}")
        print(f"# {bench.notes[-1]}", flush=True)
        return
    peer = adk_peer.Peer(url)
    try:
        await peer.service.prepare_tables()
        for concurrency in sorted({1, max(bench.config.concurrencies)}):

            async def make_ops(concurrency: int = concurrency) -> list[loadgen.Operation]:
                return await peer.appenders(concurrency)

            await bench.closed("adk_append_event", "adk (in-process)", f"c={concurrency}", None, make_ops)
        reps, cpus = [], []
        for _ in range(bench.config.reps):
            meter = bench.meter(None)
            meter.start()
            reps.append(await peer.create_sessions(bench.config.timed_count // 2))
            cpus.append(meter.stop())
        bench.record("adk_create_session", "adk (in-process)", "c=1", reps, cpus)
        long_id, big_user = await peer.seed(bench.config.big_messages, bench.config.big_sessions)
        for workload, call in (
            (f"adk_get_session ({bench.config.big_messages} events)", lambda: peer.get_session(long_id)),
            (f"adk_list_sessions ({bench.config.big_sessions} sessions)", lambda: peer.list_sessions(big_user)),
        ):
            if "list" in workload:
                await call()  # warm-up (get_session's cost is all in ADK's Python, warm or not)
            reps, cpus, sizes = [], [], []
            for _ in range(bench.config.reps):
                meter = bench.meter(None)
                meter.start()
                seconds, size = await call()
                cpus.append(meter.stop())
                sizes.append(size)
                reps.append(loadgen.RunStats(calls=1, seconds=seconds, latencies=[seconds]))
            bench.record(workload.split(" ")[0], "adk (in-process)", workload.split(" ", 1)[1], reps, cpus,
                         extra={"items_returned": sizes[0]})
    finally:
        await peer.close()


async def adk_workloads(bench: Bench, peer_url: str, ours_url: str, port: int, pid: int) -> None:
    """ADK's DatabaseSessionService against session_client.adk, the same ADK calls (bench/adk_compare.py)."""
    from . import adk_compare, adk_peer

    why = adk_peer.available()
    if why:
        bench.notes.append(f"ADK comparison skipped: {why}")
        print(f"# {bench.notes[-1]}", flush=True)
        return
    await adk_compare.run(bench, peer_url, ours_url, port, pid)


async def pgbouncer_workloads(
    bench: Bench, real: Proc, url: str, channel: grpc.aio.Channel, procs: list[Proc]
) -> None:
    """The same point workloads against session-grpc connected directly and through pgbouncer in
    transaction pooling mode (SESSION_DB_PGBOUNCER=true: no prepared statements kept, so each
    statement is parsed again in the message that runs it, plus pgbouncer's own hop), their
    repetitions interleaved so the ratio is fair on a shared box."""
    missing = localpg.missing("pgbouncer")
    if missing:
        bench.notes.append(f"pgbouncer comparison skipped: {missing}")
        return
    with pgbouncer(url, pool_mode="transaction", pool_size=20) as bouncer:
        bounced = start_process(
            "session-grpc-pgbouncer", ["-m", "session_grpc", "serve"],
            {**server_env(bouncer.url_for(url)), "SESSION_DB_PGBOUNCER": "true"},
        )
        procs.append(bounced)
        await wait_ready(bounced, health=True)
        await point_workloads(
            bench, [("direct", real.port, real.pid), ("via pgbouncer", bounced.port, bounced.pid)], channel,
        )
        bounced.stop()


# ---- the run -------------------------------------------------------------------------------------


@contextlib.contextmanager
def database_server() -> Iterator[tuple[str, Path]]:
    with tempfile.TemporaryDirectory(prefix="session-bench-") as tmp:
        data_dir = Path(tmp) / "pgdata"
        with embedded.postgres(data_dir) as url:
            yield url, data_dir


def with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name + (f"?{query}" if query else "")


async def prepare(url: str) -> dict[str, str]:
    admin = await asyncpg.connect(url)
    try:
        for name in ("session_bench", "adk_bench", "adk_compare"):
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    urls = {
        "session": with_database(url, "session_bench"),
        "adk": with_database(url, "adk_bench"),
        "adk_compare": with_database(url, "adk_compare"),
    }
    await migrations.upgrade(urls["session"])
    return urls


async def seed_big(url: str, cfg: Config) -> dict[str, str]:
    conn = await asyncpg.connect(url)
    try:
        await seed.big_user(conn, "big-user", cfg.big_sessions)
        await seed.big_user(conn, "small-user", 10)
        data = {
            "big_user": "big-user",
            "small_user": "small-user",
            "long_session": await seed.long_session(conn, "long-user", cfg.big_messages),
            "tenth_session": await seed.long_session(conn, "long-user", cfg.big_messages // 10),
            "short_session": await seed.long_session(conn, "short-user", 40),
            "one_message_session": await seed.long_session(conn, "short-user", 1),
        }
        await seed.analyze(conn)
        return data
    finally:
        await conn.close()


TOKEN_SERVER = "session-grpc token"
BENCH_TOKEN = "bench-token"


def start_token_server(url: str, procs: list[Proc]) -> Proc:
    """session-grpc in token mode (SESSION_AUTH_MODE=token) beside the dev auth service, whose one
    token is bench-user's: the point workloads' sessions are bench-user's, so every call passes
    the owner filter. After the first call the token is in the server's cache: the row measures a
    token-mode call with a cached token, the steady state."""
    accounts = RESULTS / "bench-accounts.json"
    accounts.write_text(json.dumps({
        "accounts": [{"user_id": "bench-user", "status": "active"}],
        "tokens": [{"token": BENCH_TOKEN, "user_id": "bench-user", "scopes": [], "expires_in": 86400}],
    }))
    auth = start_process("devservices", ["-m", "session_grpc.devservices", "--accounts", str(accounts), "--port", "{port}"])
    procs.append(auth)
    env = {
        **server_env(url), "SESSION_AUTH_MODE": "token", "SESSION_AUTH_ADDRESS": f"127.0.0.1:{auth.port}",
        "SESSION_ALLOW_PLAINTEXT": "true", "SESSION_PAGE_TOKEN_SECRET": "bench-page-token-secret-" + "0" * 16,
    }
    token = start_process("session-grpc-token", ["-m", "session_grpc", "serve"], env)
    procs.append(token)
    return token


def server_env(url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "PORT": "{port}",
        "SESSION_HOST": "127.0.0.1",
        "SESSION_EXPIRY_INTERVAL": "0",
        "SESSION_LOG_LEVEL": "WARNING",
        # 20 connections kept open, like the reference server's pool. The default (10 kept,
        # 10 more in bursts) closes and reopens connections all the time above 10 calls in
        # flight: a new PostgreSQL backend per burst call (see docs/performance.md).
        "SESSION_DB_POOL_SIZE": os.environ.get("SESSION_DB_POOL_SIZE", "20"),
        "SESSION_DB_MAX_OVERFLOW": os.environ.get("SESSION_DB_MAX_OVERFLOW", "0"),
        # The service's 1 s connect bound is for production; on a box this loaded a fresh cluster's
        # first connections can take longer, and the server would stay NOT_SERVING (retrying every
        # SESSION_HEALTH_INTERVAL) past wait_ready's minute. The bench measures calls, not connects.
        "SESSION_DB_CONNECT_TIMEOUT": os.environ.get("SESSION_DB_CONNECT_TIMEOUT", "10"),
    }


async def run(cfg: Config) -> dict[str, Any]:
    cfg.out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    load_before = os.getloadavg()
    want = (lambda name: not cfg.only or name in cfg.only)
    python_load = cfg.loadgen in ("python", "both")
    go_load = cfg.loadgen in ("go", "both")
    builder = goload.Builder()
    notes: list[str] = []
    if go_load and (why := goload.missing()):
        go_load = False
        notes.append(f"Go load generator skipped: {why}")
        print(f"# {notes[-1]}", flush=True)
    with database_server() as (url, data_dir):
        urls = await prepare(url)
        bench = Bench(cfg, urls["session"], procstat.postmaster_pid(data_dir), notes=notes)
        print(f"# {report.machine()} load average {load_before[0]:.2f}", flush=True)
        if load_before[0] >= QUIET_LOAD:
            print(f"# load average {load_before[0]:.2f} >= {QUIET_LOAD}: a busy machine; these numbers will not become "
                  "docs/performance.md's latest without --force", flush=True)
        print(report.header(), flush=True)
        procs: list[Proc] = []
        try:
            real = start_process("session-grpc", ["-m", "session_grpc", "serve"], server_env(urls["session"]))
            procs.append(real)
            reference = start_process(
                "reference", ["-m", "bench.reference_server", "--port", "{port}", "--database-url", urls["session"]]
            )
            procs.append(reference)
            noop = start_process("noop", ["-m", "bench.reference_server", "--port", "{port}", "--noop"])
            procs.append(noop)
            # The same server with group commit off, for the point workloads' on/off comparison.
            nogroup = None
            if want("point"):
                nogroup = start_process(
                    "session-grpc-nogroup", ["-m", "session_grpc", "serve"],
                    {**server_env(urls["session"]), "SESSION_GROUP_COMMIT": "off"},
                )
                procs.append(nogroup)
                await wait_ready(nogroup, health=True)
            token = start_token_server(urls["session"], procs) if want("point") and cfg.token and python_load else None
            await wait_ready(real, health=True)
            await wait_ready(reference, health=False)
            await wait_ready(noop, health=False)
            if token is not None:
                await wait_ready(token, health=True)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{real.port}") as channel:
                if want("point"):
                    servers = [("session-grpc", real), ("reference", reference), ("no-op", noop)]
                    if nogroup is not None:
                        servers.insert(1, ("session-grpc nogroup", nogroup))
                    if python_load:
                        # the token-mode server beside session-grpc (the Go generator sends no token)
                        with_token = servers[:1] + ([(TOKEN_SERVER, token)] if token is not None else []) + servers[1:]
                        await point_workloads(
                            bench, [(n, p.port, p.pid) for n, p in with_token], channel,
                            metadata={TOKEN_SERVER: (("authorization", f"Bearer {BENCH_TOKEN}"),)},
                        )
                    if go_load:
                        await go_point_workloads(bench, builder, [(n, p.port, p.pid) for n, p in servers], channel)
                    if nogroup is not None:
                        nogroup.stop()
                if want("open"):
                    c32 = [
                        r["throughput"]["median"]
                        for r in bench.results
                        if r["workload"] == "add_message" and r["variant"] == f"c={max(cfg.concurrencies)}"
                        and r["target"] in ("session-grpc", "reference")
                    ]
                    rate = round(0.5 * min(c32), -1) if c32 else 100.0
                    for target, proc in (("session-grpc", real), ("reference", reference)):
                        await open_loop_add(bench, target, proc.port, proc.pid, channel, rate)
                if want("chat"):
                    await chat_turns(bench, real.pid, channel)
                if want("history"):
                    await history.batch_append(bench, real.pid, channel)
                    await history.fork_and_truncate(bench, real.pid, channel, urls["session"], cfg.fork_messages)
                if want("big"):
                    data = await seed_big(urls["session"], cfg)
                    await list_big_user(bench, real.pid, channel, data)
                    if python_load:
                        await stream_large(
                            bench,
                            real.pid,
                            channel,
                            {
                                f"{cfg.big_messages} msgs": data["long_session"],
                                f"{cfg.big_messages // 10} msgs": data["tenth_session"],
                            },
                        )
                        await stream_large(
                            bench, noop.pid, channel_noop := grpc.aio.insecure_channel(f"127.0.0.1:{noop.port}"),
                            {f"{cfg.big_messages} msgs": str(uuid.uuid4())}, target="no-op", count=cfg.big_messages,
                        )
                        await channel_noop.close()
                    if go_load:
                        await go_stream_large(bench, builder, real, noop, data["long_session"], cfg.big_messages)
                if want("memory"):
                    bench.memory = await memory.big_pages(real.pid, real.port, urls["session"])
                if want("adk") and cfg.peer:
                    await adk_workloads(bench, urls["adk_compare"], urls["session"], real.port, real.pid)
                if want("pgbouncer"):
                    await pgbouncer_workloads(bench, real, urls["session"], channel, procs)
            for proc in (reference, noop):
                proc.stop()
            if want("workers") and len(cfg.workers) > 1:
                if supports_workers():
                    real.stop()
                    started = []
                    for workers in cfg.workers:
                        args = ["-m", "session_grpc", "serve"] + (["--workers", str(workers)] if workers > 1 else [])
                        proc = start_process(f"session-grpc-w{workers}", args, server_env(urls["session"]))
                        procs.append(proc)
                        started.append((f"session-grpc {workers}w", proc))
                    for _, proc in started:
                        await wait_ready(proc, health=True)
                    async with grpc.aio.insecure_channel(f"127.0.0.1:{started[0][1].port}") as channel:
                        await point_workloads(
                            bench, [(n, p.port, p.pid) for n, p in started], channel,
                            concurrencies=(max(cfg.concurrencies),), connections=4,
                        )
                    for _, proc in started:
                        proc.stop()
                else:
                    bench.notes.append("workers comparison skipped: `session-grpc serve` has no --workers")
            if want("peer") and cfg.peer:
                await peer_workloads(bench, urls["adk"], {})
        finally:
            for proc in procs:
                proc.stop()
            builder.close()
    result = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": report.machine(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "config": {k: (str(v) if isinstance(v, Path) else sorted(v) if isinstance(v, frozenset) else v)
                   for k, v in vars(cfg).items()},
        "wall_seconds": time.monotonic() - began,
        "results": bench.results,
        "memory": bench.memory,
        "notes": bench.notes,
    }
    result["comparisons"] = report.comparisons(bench.results, cfg)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = "quick" if cfg.quick else "bench"
    for path in (cfg.out / f"{name}-{stamp}.json", cfg.out / f"{name}-latest.json"):
        path.write_text(json.dumps(result, indent=2))
    (cfg.out / f"{name}-latest.md").write_text(report.markdown(result))
    print(report.comparison_table(result["comparisons"]))
    if cfg.chart:
        chart = report.chart(result, cfg.out / f"{name}-latest.png")
        if chart:
            print(f"# chart: {chart}")
        else:
            print("# chart skipped: matplotlib is not installed (make bench installs it)")
    if cfg.docs:
        write_docs(result, cfg)
    for note in bench.notes:
        print(f"# note: {note}")
    print(f"# results: {cfg.out / f'{name}-latest.json'}; wall {result['wall_seconds']:.0f}s; "
          f"load average {load_before[0]:.2f} before, {result['load_average_after'][0]:.2f} after")
    return result


def write_docs(result: dict[str, Any], cfg: Config) -> bool:
    """Put the run between docs/performance.md's LATEST markers and its JSON (and chart) in
    docs/perf/, unless the machine was busy when it began (then say so and write nothing)."""
    load = result["load_average_before"][0]
    if load >= QUIET_LOAD and not cfg.force:
        print(f"# docs/performance.md NOT written: the load average was {load:.2f} before the run (>= {QUIET_LOAD}); "
              "rerun on a quiet machine, or pass --force to write it anyway", flush=True)
        return False
    text = DOCS.read_text()
    begin, end = "<!-- LATEST -->", "<!-- /LATEST -->"
    if begin not in text or end not in text:
        print(f"# docs/performance.md NOT written: no {begin} ... {end} block in it", flush=True)
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    body = report.markdown(result)
    if load >= QUIET_LOAD:
        body = f"**Written with --force from a busy machine (load average {load:.2f} before the run).**\n\n" + body
    DOCS.write_text(f"{head}{begin}\n{body.strip()}\n{end}{tail}")
    perf = DOCS.parent / "perf"
    perf.mkdir(exist_ok=True)
    name = "quick" if cfg.quick else "bench"
    (perf / "bench-latest.json").write_text(json.dumps(result, indent=2))
    chart = cfg.out / f"{name}-latest.png"
    if chart.exists():
        (perf / "bench-latest.png").write_bytes(chart.read_bytes())
    print(f"# docs/performance.md's latest written (load average {load:.2f} before the run)", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and durations: a smoke test")
    parser.add_argument("--no-peer", action="store_true", help="skip the ADK comparison")
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument("--reps", type=int)
    parser.add_argument("--duration", type=float, help="seconds measured per repetition (closed loop)")
    parser.add_argument(
        "--only", default="",
        help="comma list among point,open,chat,history,big,memory,adk,pgbouncer,workers,peer",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-token", action="store_true", help="skip the token-mode server in the point workloads")
    parser.add_argument(
        "--docs", action="store_true",
        help=f"write the run into docs/performance.md's latest block (refused at load average >= {QUIET_LOAD})",
    )
    parser.add_argument("--force", action="store_true", help="with --docs: write even from a busy machine")
    parser.add_argument(
        "--loadgen", choices=("python", "go", "both"), default="both",
        help="the load generator of the point and stream workloads: this process (python), the Go one "
        "(bench/goload, built offline with Debian's Go packages; its rows are named go ...), or both",
    )
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {
        "peer": not args.no_peer, "chart": not args.no_chart, "out": args.out, "token": not args.no_token,
        "docs": args.docs, "force": args.force, "loadgen": args.loadgen,
    }
    if args.reps:
        overrides["reps"] = args.reps
    if args.duration:
        overrides["duration"] = args.duration
    if args.only:
        overrides["only"] = frozenset(args.only.split(","))
    cfg = Config.quick_mode(**overrides) if args.quick else Config(**overrides)
    RESULTS.mkdir(parents=True, exist_ok=True)
    asyncio.run(run(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
