"""Workloads of issue 12's batch append, fork and rewind (`make bench --only history`).

- add_messages: one AddMessages of k messages against the same k messages as k AddMessage calls in
  a row (one caller: what a turn with tool calls and results costs), repetitions interleaved so a
  change in the box's load touches both alike. The ratio of their p50s is the number to judge.
- fork / truncate: ForkSession of a seeded session of N messages (one INSERT ... SELECT), and
  TruncateSession removing all N messages of such a fork.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import grpc

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc

from . import loadgen, seed

BATCH_SIZES = (2, 10, 50)


def _entries(k: int) -> list[pb.NewMessage]:
    """k messages alternating user and assistant, with the chat workload's sizes, tokens and costs."""
    return [
        pb.NewMessage(role=pb.ROLE_USER, content=seed.USER_CONTENT, tokens_used=12, cost="0.00015")
        if n % 2 == 0 else
        pb.NewMessage(role=pb.ROLE_ASSISTANT, content=seed.ASSISTANT_CONTENT, tokens_used=48, cost="0.0006")
        for n in range(k)
    ]


async def batch_append(bench: Any, pid: int, channel: grpc.aio.Channel, sizes: tuple[int, ...] = BATCH_SIZES) -> None:
    sessions = session_pb2_grpc.SessionServiceStub(channel)
    messages = session_pb2_grpc.MessageServiceStub(channel)
    count = max(5, bench.config.timed_count // 4)
    for k in sizes:
        entries = _entries(k)

        async def fresh() -> str:
            return (await sessions.CreateSession(pb.CreateSessionRequest(user_id="bench-batch"))).session.session_id

        batch_session, single_session = await fresh(), await fresh()
        batch = pb.AddMessagesRequest(session_id=batch_session, messages=entries)
        singles = [
            pb.AddMessageRequest(session_id=single_session, role=e.role, content=e.content, tokens_used=e.tokens_used,
                                 cost=e.cost)
            for e in entries
        ]

        async def one_call(batch: pb.AddMessagesRequest = batch) -> None:
            await messages.AddMessages(batch)

        async def k_calls(singles: list[pb.AddMessageRequest] = singles) -> None:
            for request in singles:
                await messages.AddMessage(request)

        ops = {f"k={k}, one AddMessages": one_call, f"k={k}, {k} AddMessage calls": k_calls}
        for op in ops.values():
            for _ in range(3):  # warm the prepared statements
                await op()
        reps: dict[str, list[loadgen.RunStats]] = {name: [] for name in ops}
        cpus: dict[str, list[dict[str, float]]] = {name: [] for name in ops}
        for _ in range(bench.config.reps):
            for name, op in ops.items():
                meter = bench.meter(pid)
                meter.start()
                reps[name].append(await loadgen.timed_calls(op, count))
                cpus[name].append(meter.stop())
        for name in ops:
            bench.record("add_messages", "session-grpc", name, reps[name], cpus[name], unit="turns/s",
                         extra={"messages_per_turn": k})


async def fork_and_truncate(bench: Any, pid: int, channel: grpc.aio.Channel, url: str, size: int) -> None:
    sessions = session_pb2_grpc.SessionServiceStub(channel)
    conn = await asyncpg.connect(url)
    try:
        source = await seed.long_session(conn, "bench-fork", size)
        await seed.analyze(conn)
    finally:
        await conn.close()
    count = 5

    async def fork() -> None:
        await sessions.ForkSession(pb.ForkSessionRequest(session_id=source))

    await fork()  # warm up
    reps, cpus = [], []
    for _ in range(bench.config.reps):
        meter = bench.meter(pid)
        meter.start()
        reps.append(await loadgen.timed_calls(fork, count))
        cpus.append(meter.stop())
    bench.record("fork", "session-grpc", f"ForkSession of {size} msgs", reps, cpus)

    reps, cpus = [], []
    for _ in range(bench.config.reps):
        forks = await asyncio.gather(*(
            sessions.ForkSession(pb.ForkSessionRequest(session_id=source)) for _ in range(count)
        ))
        targets = iter([f.session.session_id for f in forks])

        async def rewind() -> None:
            await sessions.TruncateSession(pb.TruncateSessionRequest(session_id=next(targets), last_sequence=0))

        meter = bench.meter(pid)
        meter.start()
        reps.append(await loadgen.timed_calls(rewind, count))
        cpus.append(meter.stop())
    bench.record("truncate", "session-grpc", f"TruncateSession removing {size} msgs", reps, cpus)
