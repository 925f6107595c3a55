"""`make chaos`: appends, batch appends, rewinds and forks racing on one hot session.

Every append and batch carries a request_id; every rewind's answer says how many messages it
removed. Afterwards the session must be exact with what the calls were told: its sequences gapless
from 1, its counters the sums over its rows, each surviving message at the sequence its append was
acknowledged with, and as many messages left as were acknowledged minus what the rewinds removed.
Every fork taken meanwhile must hold totals equal to the sums over the messages it copied.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable
from typing import Any

import asyncpg
import grpc

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc

from .scenarios import Outcome, drops_its_databases, fresh_database, in_process_server


@drops_its_databases
async def rewinds_racing_appends(
    server_url: str, *, appenders: int = 8, batchers: int = 4, rewinders: int = 2, forkers: int = 1,
    seconds: float = 5.0, seed: int = 12,
) -> Outcome:
    outcome = Outcome("rewinds and forks racing appends")
    url = await fresh_database(server_url)
    rng = random.Random(seed)
    acked: dict[str, int] = {}  # message id -> the sequence its append was acknowledged with
    removed = 0
    forks: list[str] = []
    stop = asyncio.Event()

    async with in_process_server(url) as (_, channel):
        sessions, messages = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
        session = (await sessions.CreateSession(pb.CreateSessionRequest(user_id="chaos"))).session.session_id

        async def attempt(call: Awaitable[Any]) -> Any:
            outcome.attempted += 1
            try:
                result = await call
            except grpc.aio.AioRpcError as error:
                outcome.failed[error.code().name] += 1
                return None
            outcome.acknowledged += 1
            return result

        async def appender(n: int) -> None:
            while not stop.is_set():
                request = pb.AddMessageRequest(session_id=session, role=pb.ROLE_USER, content=f"a{n}",
                                               tokens_used=n + 1, cost="0.0001", request_id=str(uuid.uuid4()))
                response = await attempt(messages.AddMessage(request, timeout=10))
                if response is not None:
                    acked[response.message.message_id] = response.message.sequence

        async def batcher(n: int) -> None:
            while not stop.is_set():
                entries = [pb.NewMessage(role=pb.ROLE_ASSISTANT, content=f"b{n}-{i}", tokens_used=i, cost="0.00001")
                           for i in range(rng.randint(2, 5))]
                request = pb.AddMessagesRequest(session_id=session, messages=entries, request_id=str(uuid.uuid4()))
                response = await attempt(messages.AddMessages(request, timeout=10))
                if response is not None:
                    for message in response.messages:
                        acked[message.message_id] = message.sequence

        async def rewinder() -> None:
            nonlocal removed
            while not stop.is_set():
                await asyncio.sleep(rng.uniform(0.02, 0.1))
                now = (await sessions.GetSession(pb.GetSessionRequest(session_id=session))).session.message_count
                keep = max(0, now - rng.randint(0, 8))
                response = await attempt(sessions.TruncateSession(
                    pb.TruncateSessionRequest(session_id=session, last_sequence=keep, request_id=str(uuid.uuid4())),
                    timeout=10,
                ))
                if response is not None:
                    removed += response.removed_message_count

        async def forker() -> None:
            while not stop.is_set():
                await asyncio.sleep(rng.uniform(0.05, 0.2))
                response = await attempt(sessions.ForkSession(pb.ForkSessionRequest(session_id=session), timeout=10))
                if response is not None:
                    forks.append(response.session.session_id)

        tasks = [asyncio.create_task(appender(n)) for n in range(appenders)]
        tasks += [asyncio.create_task(batcher(n)) for n in range(batchers)]
        tasks += [asyncio.create_task(rewinder()) for _ in range(rewinders)]
        tasks += [asyncio.create_task(forker()) for _ in range(forkers)]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*tasks)

    conn = await asyncpg.connect(url)
    try:
        left = await conn.fetch("SELECT id::text AS id, sequence FROM messages WHERE session_id = $1", session)
        outcome.lost = sum(1 for row in left if acked.get(row["id"]) != row["sequence"])  # moved or never acked
        outcome.lost += abs(len(acked) - removed - len(left))  # removed more or fewer than the rewinds said
        totals = await conn.fetch(
            """SELECT s.id, s.message_count, s.total_tokens, s.total_cost, count(m.id) AS n,
                      coalesce(max(m.sequence), 0) AS top, coalesce(sum(m.tokens_used), 0) AS tokens,
                      coalesce(sum(m.cost), 0) AS cost, s.forked_at_sequence
               FROM sessions s LEFT JOIN messages m ON m.session_id = s.id GROUP BY s.id"""
        )
        outcome.counter_mismatches = sum(
            1 for t in totals
            if not (t["message_count"] == t["n"] == t["top"] and t["total_tokens"] == t["tokens"]
                    and t["total_cost"] == t["cost"])
            or (t["forked_at_sequence"] is not None and t["forked_at_sequence"] != t["n"])
        )
    finally:
        await conn.close()
    outcome.notes = (
        f"{appenders} appenders, {batchers} batch appenders (2-5 messages), {rewinders} rewinders, {forkers} forker "
        f"for {seconds:g} s on one session: {len(acked)} messages acknowledged, {removed} removed by rewinds, "
        f"{len(left)} left; {len(forks)} forks checked"
    )
    return outcome
