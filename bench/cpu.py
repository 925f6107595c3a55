"""Server CPU per call of AddMessage and GetSession at c=32: session-grpc against the reference.

    python -m bench.cpu                          # 5 interleaved repetitions of 2 s per server
    python -m bench.cpu --token                  # also session-grpc in token mode (cached token)
    python -m bench.cpu --before-root ../main    # also the server of another checkout (before/after)
    python -m bench.cpu --spy session-grpc       # py-spy samples of that server, summed by function

On a shared machine wall-clock throughput moves with everyone else's work; the CPU seconds a
server spends per call move much less (the steadiest measure of its own cost), and instructions
per call would not at all, but this VM exposes no hardware counters to perf. Every server runs in the same run, its
repetitions interleaved with the others', so a change in the machine's load touches them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc

from . import loadgen, procstat
from .run import RESULTS, Proc, database_server, prepare, request_for, server_env, start_process, wait_ready

TOKEN = "bench-token"
USER = "bench-user"


@dataclass
class Target:
    name: str
    proc: Proc
    metadata: tuple[tuple[str, str], ...] = ()
    samples: dict[str, list[dict[str, float]]] = field(default_factory=lambda: collections.defaultdict(list))


async def measure(target: Target, workload: str, ops: list[loadgen.Operation], seconds: float) -> None:
    meter = procstat.CpuMeter([procstat.Group("server", lambda: procstat.tree(target.proc.pid))])
    stats = await loadgen.closed_loop(ops, seconds, 0.5, on_measure_start=meter.start)
    cpu = meter.stop()["server"]
    sample = {
        "calls": stats.calls,
        "throughput": stats.throughput,
        "p50_ms": stats.percentile(50) * 1e3,
        "errors": stats.errors,
        "cpu_us_per_call": cpu / stats.calls * 1e6 if stats.calls else float("nan"),
    }
    target.samples[workload].append(sample)


CATEGORIES = (
    # (category, substrings of a frame): a sample counts for the first category, from its innermost
    # frame outwards, one of whose substrings a frame contains; the rest is grpc and asyncio's own.
    ("prometheus_client (metrics)", ("prometheus_client/",)),
    ("SQLAlchemy pool: connection checkout and return", ("sqlalchemy/", "greenlet")),
    ("asyncpg: the statement", ("asyncpg/",)),
    ("validation (requests.py, domain/)", ("requests.py", "domain/")),
    ("row -> record (storage/rows.py)", ("storage/rows.py",)),
    ("record -> proto (resources.py)", ("resources.py",)),
    ("statement parameters (storage/*)", ("storage/messages.py", "storage/budgets.py", "storage/sessions.py")),
    ("transaction runner (storage/database.py)", ("storage/database.py", "storage/units.py")),
    ("boundary steps", ("observability.py", "boundary.py", "authorization.py", "consistency.py", "deadlines.py",
                        "draining.py", "wire.py", "auth.py", "inflight.py", "policy.py")),
    ("servicer", ("servicers/",)),
    ("reference server", ("reference_server.py",)),
)


def spy_summary(raw: Path, top: int = 40) -> str:
    """py-spy's collapsed stacks summed three ways: by category (CATEGORIES), by own samples of a
    function, and by samples anywhere in the stack."""
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    categories: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [re.sub(r" \(.*/(site-packages|lib/python3\.\d+|session_grpc)/", r" (\1/", f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            anywhere[frame] += n
        categories[_category(frames)] += n
    lines = [f"{total} samples", "", "% of samples | category"]
    lines += [f"{100 * n / total:5.1f} | {name}" for name, n in categories.most_common()]
    lines += ["", "own % | function"]
    lines += [f"{100 * n / total:5.1f} | {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive % | function"]
    lines += [f"{100 * n / total:5.1f} | {name}" for name, n in anywhere.most_common(top * 2)]
    return "\n".join(lines)


def _category(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, marks in CATEGORIES:
            if any(mark in frame for mark in marks):
                return name
    return "grpc and asyncio (the rest)"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    print(f"# load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}", flush=True)
    procs: list[Proc] = []
    with database_server() as (url, _), tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        urls = await prepare(url)
        env = server_env(urls["session"])
        targets: list[Target] = []
        try:
            main = start_process("session-grpc", ["-m", "session_grpc", "serve"], env)
            procs.append(main)
            targets.append(Target("session-grpc", main))
            if args.before_root:
                before = start_process(
                    "session-grpc-before", ["-m", "session_grpc", "serve"], env, cwd=str(Path(args.before_root).resolve())
                )
                procs.append(before)
                targets.append(Target("before", before))
            if args.token:
                accounts = Path(tmp) / "accounts.json"
                accounts.write_text(json.dumps({
                    "accounts": [{"user_id": USER, "status": "active"}],
                    "tokens": [{"token": TOKEN, "user_id": USER, "scopes": [], "expires_in": 86400}],
                }))
                auth = start_process("devservices", ["-m", "session_grpc.devservices", "--accounts", str(accounts),
                                                     "--port", "{port}"])
                procs.append(auth)
                await wait_ready(auth, health=False)
                token_env = {
                    **env, "SESSION_AUTH_MODE": "token", "SESSION_AUTH_ADDRESS": f"127.0.0.1:{auth.port}",
                    "SESSION_ALLOW_PLAINTEXT": "true", "SESSION_PAGE_TOKEN_SECRET": "bench-secret-" + "x" * 32,
                    "SESSION_HOST": "127.0.0.1",
                }
                token = start_process("session-grpc-token", ["-m", "session_grpc", "serve"], token_env)
                procs.append(token)
                targets.append(Target("session-grpc token", token, (("authorization", f"Bearer {TOKEN}"),)))
            reference = start_process(
                "reference", ["-m", "bench.reference_server", "--port", "{port}", "--database-url", urls["session"]]
            )
            procs.append(reference)
            targets.append(Target("reference", reference))
            for target in targets:
                await wait_ready(target.proc, health=target.name != "reference")
            channels = {
                t.name: grpc.aio.insecure_channel(f"127.0.0.1:{t.proc.port}") for t in targets
            }
            creator = session_pb2_grpc.SessionServiceStub(channels["session-grpc"])
            sessions = [
                (await creator.CreateSession(pb.CreateSessionRequest(user_id=USER, title="bench"))).session.session_id
                for _ in range(args.concurrency)
            ]

            def ops(target: Target, workload: str) -> list[loadgen.Operation]:
                channel = channels[target.name]
                md = target.metadata or None
                if workload == "add_message":
                    stub = session_pb2_grpc.MessageServiceStub(channel)
                    return [lambda r=request_for(s): stub.AddMessage(r, metadata=md) for s in sessions]
                reader = session_pb2_grpc.SessionServiceStub(channel)
                return [lambda r=pb.GetSessionRequest(session_id=s): reader.GetSession(r, metadata=md) for s in sessions]

            workloads = [w for w in ("add_message", "get_session") if not args.only or w in args.only]
            for target in targets:  # warm: prepared statements, pool, token cache
                for workload in workloads:
                    await loadgen.closed_loop(ops(target, workload), 0.5, 0.2)
            if args.spy:
                spied = next(t for t in targets if t.name == args.spy)
                spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
                for workload in workloads:
                    raw = RESULTS / f"spy-{args.spy.replace(' ', '-')}-{workload}.txt"
                    recorder = subprocess.Popen(
                        [spy, "record", "--pid", str(spied.proc.pid), "--duration", str(int(args.spy_seconds)),
                         "--rate", "500", "--format", "raw", "--output", str(raw), "--nonblocking"]
                        + (["--native"] if args.native else []),
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                    )
                    await loadgen.closed_loop(ops(spied, workload), args.spy_seconds + 1.0, 0.3)
                    _, err = recorder.communicate()
                    if recorder.returncode == 0:
                        summary = spy_summary(raw)
                        (raw.with_suffix(".summary.txt")).write_text(summary)
                        print(f"# py-spy {args.spy} {workload}: {raw} (summary beside it)", flush=True)
                    else:
                        print(f"# py-spy failed: {err.decode()[-300:]}", flush=True)
            for _ in range(args.reps):
                for workload in workloads:
                    for target in targets:
                        await measure(target, workload, ops(target, workload), args.seconds)
            for channel in channels.values():
                await channel.close()
        finally:
            for proc in procs:
                proc.stop()
    load_after = os.getloadavg()
    rows = []
    reference_cpu = {}
    for workload in ("add_message", "get_session"):
        for target in targets:
            samples = target.samples.get(workload)
            if not samples:
                continue
            row = {"workload": workload, "target": target.name}
            for key in samples[0]:
                row[key] = statistics.median(s[key] for s in samples)
            row["errors"] = sum(s["errors"] for s in samples)
            rows.append(row)
            if target.name == "reference":
                reference_cpu[workload] = row
    print(f"\n| workload c={args.concurrency} | server | calls/s | p50 ms | server CPU us/call | calls per server CPU-s"
          " | vs reference |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        ref = reference_cpu.get(row["workload"])
        ratio = ref["cpu_us_per_call"] / row["cpu_us_per_call"] if ref else float("nan")
        print(f"| {row['workload']} | {row['target']} | {row['throughput']:.0f} | {row['p50_ms']:.2f} | "
              f"{row['cpu_us_per_call']:.0f} | {1e6 / row['cpu_us_per_call']:.0f} | {ratio:.2f} |")
    print(f"# medians of {args.reps} interleaved repetitions of {args.seconds} s; load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after; errors: {sum(r['errors'] for r in rows)}")
    result = {"load_before": load_before, "load_after": load_after, "rows": rows, "args": {k: str(v) for k, v in vars(args).items()}}
    (RESULTS / "cpu-latest.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--token", action="store_true", help="also session-grpc in token mode, token cached")
    parser.add_argument("--before-root", help="also run the server of this checkout, as 'before'")
    parser.add_argument("--only", default="", help="add_message, get_session or both (comma list)")
    parser.add_argument("--spy", help="py-spy this target (session-grpc, before, 'session-grpc token', reference)")
    parser.add_argument("--spy-seconds", type=float, default=8)
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    args = parser.parse_args(argv)
    args.only = frozenset(filter(None, args.only.split(",")))
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
