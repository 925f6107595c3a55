"""The peer: Google ADK's DatabaseSessionService on the same PostgreSQL, in-process.

ADK has no server: its session service is a library the agent process calls,
so these numbers carry no network hop and no serialization, which favours ADK.
It gets a database of its own on the same PostgreSQL server (its table names
clash with ours). Importing this module needs google-adk (installed by
`make bench` into .venv-bench only).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg

from . import loadgen
from .seed import ASSISTANT_CONTENT, USER_CONTENT

APP = "bench"


def available() -> str | None:
    """None when ADK can be imported, else why not."""
    try:
        import google.adk.sessions  # noqa: F401
    except Exception as error:  # noqa: BLE001
        return f"google-adk is not importable here: {error!r}"
    return None


def _event(author: str, text: str) -> Any:
    from google.adk.events import Event
    from google.genai import types

    return Event(
        invocation_id=str(uuid.uuid4()),
        author=author,
        content=types.Content(role="user" if author == "user" else "model", parts=[types.Part(text=text)]),
    )


class Peer:
    def __init__(self, url: str) -> None:
        """`url` is a postgresql:// URL of the (empty) database ADK may create its tables in."""
        import logging

        from google.adk.sessions import DatabaseSessionService

        logging.getLogger("google_adk").setLevel(logging.ERROR)
        self.url = url
        self.service = DatabaseSessionService(db_url=url.replace("postgresql://", "postgresql+asyncpg://", 1))

    async def close(self) -> None:
        await self.service.db_engine.dispose()

    async def appenders(self, count: int) -> list[loadgen.Operation]:
        """One caller per session, each appending user events to its own session."""
        ops = []
        for _ in range(count):
            session = await self.service.create_session(app_name=APP, user_id="adk-appender")

            async def op(session: Any = session) -> None:
                await self.service.append_event(session, _event("user", USER_CONTENT))
                # keep the in-memory session small, as an agent loop would between turns
                if len(session.events) > 100:
                    del session.events[:-10]

            ops.append(op)
        return ops

    async def create_sessions(self, count: int) -> loadgen.RunStats:
        async def op() -> None:
            await self.service.create_session(app_name=APP, user_id="adk-creator")

        return await loadgen.timed_calls(op, count)

    async def seed(self, events: int, sessions: int) -> tuple[str, str]:
        """A session with `events` events and a user with `sessions` sessions, copied in SQL from
        rows ADK itself wrote (so the JSON is exactly what ADK stores). Returns (session_id, user_id)."""
        long = await self.service.create_session(app_name=APP, user_id="adk-long")
        await self.service.append_event(long, _event("user", USER_CONTENT))
        await self.service.append_event(long, _event("model", ASSISTANT_CONTENT))
        await self.service.create_session(app_name=APP, user_id="adk-big-user", state={"channel": "web"})
        conn = await asyncpg.connect(self.url)
        try:
            first, second = [r[0] for r in await conn.fetch(
                "SELECT id FROM events WHERE session_id = $1 ORDER BY timestamp", long.id
            )]
            # copies of the two rows ADK wrote (a user event and a model event), alternating, each
            # one millisecond older than the last; the templates are read once (no correlated scans)
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
                first,
                second,
                events,
            )
            await conn.execute(
                """
                INSERT INTO sessions (app_name, user_id, id, state, create_time, update_time)
                SELECT s.app_name, s.user_id, gen_random_uuid()::text, s.state,
                       s.create_time - make_interval(secs => g), s.update_time - make_interval(secs => g)
                FROM generate_series(1, $1::int - 1) g
                CROSS JOIN (SELECT * FROM sessions WHERE user_id = 'adk-big-user' LIMIT 1) s
                """,
                sessions,
            )
            await conn.execute("ANALYZE")
        finally:
            await conn.close()
        return long.id, "adk-big-user"

    async def get_session(self, session_id: str, user_id: str = "adk-long") -> tuple[float, int]:
        started = time.perf_counter()
        session = await self.service.get_session(app_name=APP, user_id=user_id, session_id=session_id)
        return time.perf_counter() - started, len(session.events)

    async def list_sessions(self, user_id: str) -> tuple[float, int]:
        started = time.perf_counter()
        listed = await self.service.list_sessions(app_name=APP, user_id=user_id)
        return time.perf_counter() - started, len(listed.sessions)


async def _smoke(url: str) -> None:  # pragma: no cover - manual check
    peer = Peer(url)
    ops = await peer.appenders(1)
    print(await loadgen.closed_loop(ops, 1.0, 0.2))
    await peer.close()


if __name__ == "__main__":  # pragma: no cover
    import sys

    asyncio.run(_smoke(sys.argv[1]))
