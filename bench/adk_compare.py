"""ADK against ADK: the same google.adk calls on DatabaseSessionService and on session_client.adk.

Issue 11, item 8. Both services run in this process (ADK's is a library; ours is the adapter over
the bench's session-grpc server), on the same PostgreSQL, and get the same calls:

- append_event of a user event with a state delta (one session key, one user: key) at c=1 and c=16,
  each caller on a session of its own (a closed loop, the repetitions of the two interleaved);
- get_session of a 3,000-event session with num_recent_events=20;
- list_sessions of a user's 10,000 sessions.

The seed data is written with each service's own calls where that is cheap, and otherwise copied in
SQL from rows the service itself wrote, so what is read is what the service stores. Needs
google-adk and the client package (make bench installs both into .venv-bench).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from . import loadgen
from .seed import ASSISTANT_CONTENT, USER_CONTENT

APP = "bench"
PEER = "adk DatabaseSessionService"
OURS = "adk over session-grpc"
EVENTS = 3_000
SESSIONS = 10_000
RECENT = 20


def _event(author: str, text: str, delta: dict[str, Any] | None = None, timestamp: float | None = None) -> Any:
    from google.adk.events import Event
    from google.adk.events.event_actions import EventActions
    from google.genai import types

    extra: dict[str, Any] = {} if timestamp is None else {"timestamp": timestamp}
    return Event(
        invocation_id=str(uuid.uuid4()),
        author=author,
        content=types.Content(role="user" if author == "user" else "model", parts=[types.Part(text=text)]),
        actions=EventActions(state_delta=delta or {}),
        **extra,
    )


async def _appenders(service: Any, count: int) -> list[loadgen.Operation]:
    """`count` callers, each appending user events with a state delta to a session of its own."""
    ops = []
    for index in range(count):
        session = await service.create_session(app_name=APP, user_id=f"appender-{uuid.uuid4().hex[:8]}")
        turn = {"n": 0}

        async def op(session: Any = session, turn: dict[str, int] = turn, index: int = index) -> None:
            turn["n"] += 1
            delta = {"turn": turn["n"], f"user:last_turn_{index}": turn["n"]}
            await service.append_event(session, _event("user", USER_CONTENT, delta))
            if len(session.events) > 100:  # keep the in-memory session small, as an agent loop would
                del session.events[:-10]

        ops.append(op)
    return ops


async def _seed_ours(service: Any, database_url: str) -> tuple[str, str]:
    """A 3,000-event session (appended through the adapter, 16 at a time, unconditionally) and a
    user with 10,000 sessions (copied in SQL from one the adapter created)."""
    from session_client.adk import storage_session_id

    long = await service.create_session(app_name=APP, user_id="adk-long")
    sid = storage_session_id(APP, "adk-long", long.id)
    base = time.time() - EVENTS
    no_delta: dict[str, dict[str, Any]] = {"app": {}, "user": {}, "session": {}}
    for start in range(0, EVENTS, 16):
        await asyncio.gather(*(
            service._add(sid, _event("user" if i % 2 == 0 else "model",
                                     USER_CONTENT if i % 2 == 0 else ASSISTANT_CONTENT, timestamp=base + i),
                         no_delta, None)
            for i in range(start, min(start + 16, EVENTS))
        ))
    await service.create_session(app_name=APP, user_id="adk-big-user", state={"channel": "web"})
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """
            INSERT INTO sessions (id, user_id, app_name, status, title, conversation_data, metadata,
                                  create_time, update_time, last_activity_time)
            SELECT gen_random_uuid(), s.user_id, s.app_name, s.status, s.title, s.conversation_data, s.metadata,
                   s.create_time - make_interval(secs => g), s.update_time - make_interval(secs => g),
                   s.last_activity_time - make_interval(secs => g)
            FROM generate_series(1, $1::int - 1) g
            CROSS JOIN (SELECT * FROM sessions WHERE user_id = 'adk-big-user' LIMIT 1) s
            """,
            SESSIONS,
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return long.id, "adk-big-user"


async def _seed_peer(service: Any, database_url: str) -> tuple[str, str]:
    """The same for ADK's service: its rows copied in SQL (its appends are too slow to write 3,000)."""
    long = await service.create_session(app_name=APP, user_id="adk-long")
    await service.append_event(long, _event("user", USER_CONTENT))
    await service.append_event(long, _event("model", ASSISTANT_CONTENT))
    await service.create_session(app_name=APP, user_id="adk-big-user", state={"channel": "web"})
    conn = await asyncpg.connect(database_url)
    try:
        first, second = [r[0] for r in await conn.fetch(
            "SELECT id FROM events WHERE session_id = $1 ORDER BY timestamp", long.id
        )]
        await conn.execute(
            """
            INSERT INTO events (id, app_name, user_id, session_id, invocation_id, timestamp, event_data)
            SELECT gen_random_uuid()::text, a.app_name, a.user_id, a.session_id, a.invocation_id,
                   a.timestamp - make_interval(secs => g / 1000.0),
                   CASE WHEN g % 2 = 0 THEN a.event_data ELSE b.event_data END
            FROM generate_series(1, $3::int - 2) g
            CROSS JOIN (SELECT * FROM events WHERE id = $1) a
            CROSS JOIN (SELECT event_data FROM events WHERE id = $2) b
            """,
            first, second, EVENTS,
        )
        await conn.execute(
            """
            INSERT INTO sessions (app_name, user_id, id, state, create_time, update_time)
            SELECT s.app_name, s.user_id, gen_random_uuid()::text, s.state,
                   s.create_time - make_interval(secs => g), s.update_time - make_interval(secs => g)
            FROM generate_series(1, $1::int - 1) g
            CROSS JOIN (SELECT * FROM sessions WHERE user_id = 'adk-big-user' LIMIT 1) s
            """,
            SESSIONS,
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return long.id, "adk-big-user"


async def _interleaved(
    bench: Any,
    workload: str,
    variant: str,
    calls_of: dict[str, tuple[Callable[[], Awaitable[int]], int | None]],
    calls: int,
    reps: int,
) -> None:
    """`calls` sequential calls per repetition, the services' repetitions taking turns (so a change
    in the box's load touches both alike); a row per service with the items the call returned."""
    results: dict[str, list[loadgen.RunStats]] = {name: [] for name in calls_of}
    cpus: dict[str, list[dict[str, float]]] = {name: [] for name in calls_of}
    sizes: dict[str, int] = {}
    for name, (call, _) in calls_of.items():
        sizes[name] = await call()  # warm-up (caches, prepared statements)
    for _ in range(reps):
        for name, (call, pid) in calls_of.items():
            meter = bench.meter(pid)
            meter.start()
            latencies = []
            started = time.perf_counter()
            for _ in range(calls):
                begun = time.perf_counter()
                await call()
                latencies.append(time.perf_counter() - begun)
            seconds = time.perf_counter() - started
            cpus[name].append(meter.stop())
            results[name].append(loadgen.RunStats(calls=calls, seconds=seconds, latencies=latencies))
    for name in calls_of:
        bench.record(workload, name, variant, results[name], cpus[name], extra={"items_returned": sizes[name]})


async def run(bench: Any, peer_url: str, ours_url: str, port: int, pid: int) -> None:
    """The rows adk_append_event_state, adk_get_session_recent and adk_list_sessions_all, for both."""
    import logging

    from google.adk.sessions import DatabaseSessionService
    from google.adk.sessions.base_session_service import GetSessionConfig

    from session_client.adk import SessionGrpcService

    logging.getLogger("google_adk").setLevel(logging.ERROR)
    peer = DatabaseSessionService(db_url=peer_url.replace("postgresql://", "postgresql+asyncpg://", 1))
    ours = SessionGrpcService(f"127.0.0.1:{port}")
    try:
        await peer.prepare_tables()
        for concurrency in (1, 16):
            await bench.closed_interleaved(
                "adk_append_event_state",
                f"c={concurrency}",
                [
                    (PEER, None, lambda c=concurrency: _appenders(peer, c)),
                    (OURS, pid, lambda c=concurrency: _appenders(ours, c)),
                ],
            )
        seeds = {PEER: await _seed_peer(peer, peer_url), OURS: await _seed_ours(ours, ours_url)}
        services = {PEER: (peer, None), OURS: (ours, pid)}
        config = GetSessionConfig(num_recent_events=RECENT)

        def get(name: str) -> Callable[[], Awaitable[int]]:
            service, long_id = services[name][0], seeds[name][0]

            async def call() -> int:
                got = await service.get_session(app_name=APP, user_id="adk-long", session_id=long_id, config=config)
                return len(got.events)

            return call

        def listing(name: str) -> Callable[[], Awaitable[int]]:
            service, big_user = services[name][0], seeds[name][1]

            async def call() -> int:
                return len((await service.list_sessions(app_name=APP, user_id=big_user)).sessions)

            return call

        await _interleaved(bench, "adk_get_session_recent", f"{EVENTS} events, num_recent_events={RECENT}",
                           {name: (get(name), pid_) for name, (_, pid_) in services.items()},
                           calls=max(10, bench.config.timed_count // 4), reps=bench.config.reps)
        await _interleaved(bench, "adk_list_sessions_all", f"{SESSIONS} sessions",
                           {name: (listing(name), pid_) for name, (_, pid_) in services.items()},
                           calls=1, reps=max(5, bench.config.reps))
    finally:
        await ours.close()
        await peer.close()
