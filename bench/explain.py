"""EXPLAIN ANALYZE of the service's per-call statements on big data, as Markdown for docs/performance.md.

    python -m bench.explain > /tmp/plans.md

A fresh embedded PostgreSQL, the real migrations, a user with 10,000 sessions
and a session with 50,000 messages (bench/seed.py), then each statement exactly
as session_grpc/storage issues it.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from session_grpc import paging
from session_grpc.storage import history, messages, sessions

from . import seed
from .run import database_server, prepare


async def explain(conn: asyncpg.Connection, title: str, sql: str, *args: object, rollback: bool = False) -> str:
    tx = conn.transaction()
    await tx.start()
    try:
        rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", *args)
    finally:
        await tx.rollback()
    del rollback
    plan = "\n".join(r[0] for r in rows)
    return f"#### {title}\n\n```\n{plan}\n```\n"


async def main() -> None:
    with database_server() as (url, _):
        urls = await prepare(url)
        conn = await asyncpg.connect(urls["session"])
        try:
            await seed.big_user(conn, "big-user", 10_000)
            long_session = await seed.long_session(conn, "long-user", 50_000)
            # The big user's sessions in four apps, 2,500 each, for the listing by app.
            await conn.execute(
                "UPDATE sessions SET app_name = 'app-' || (('x' || substr(id::text, 1, 8))::bit(32)::int & 3) "
                "WHERE user_id = 'big-user'"
            )
            await seed.analyze(conn)
            deep = await conn.fetchrow(
                "SELECT create_time, id FROM sessions WHERE user_id = 'big-user' "
                "ORDER BY create_time DESC, id DESC OFFSET 9000 LIMIT 1"
            )
            deep_in_app = await conn.fetchrow(
                "SELECT create_time, id FROM sessions WHERE user_id = 'big-user' AND app_name = 'app-1' "
                "ORDER BY create_time DESC, id DESC OFFSET 2000 LIMIT 1"
            )
            at_49000 = await conn.fetchval(
                "SELECT create_time FROM messages WHERE session_id = $1 AND sequence = 49000", long_session
            )
            out = [
                await explain(conn, "ListSessions, first page (user with 10,000 sessions)",
                              sessions.LIST_SESSIONS[(False, False, False)], "big-user", 51, paging.RESPONSE_BYTES),
                await explain(conn, "ListSessions, page after 9,000 sessions (keyset)",
                              sessions.LIST_SESSIONS[(False, False, True)], "big-user", 51, paging.RESPONSE_BYTES,
                              deep[0], deep[1]),
                await explain(conn, "ListSessions by app_name, page after 2,000 of the app's ~2,500 (user with 10,000 in 4 apps)",
                              sessions.LIST_SESSIONS[(False, True, True)], "big-user", 51, paging.RESPONSE_BYTES,
                              "app-1", deep_in_app[0], deep_in_app[1]),
                await explain(conn, "GetSession (owner-scoped, as in token mode)", sessions.GET_SESSION, long_session, "long-user"),
                await explain(conn, "ListMessages latest 20, order_by \"sequence desc\" (session with 50,000 messages)",
                              messages.PAGE_DESCENDING, long_session, 2**63 - 1, 21, "long-user", paging.RESPONSE_BYTES),
                await explain(conn, "ListMessages page in the middle (after sequence 25,000)",
                              messages.PAGE_ASCENDING, long_session, 25_000, 101, "long-user", paging.RESPONSE_BYTES),
                await explain(conn, "ListMessages recent_count=20 (last 20 oldest first; session with 50,000 messages)",
                              messages.FILTERED_ASCENDING, long_session, 0, 101, "long-user", paging.RESPONSE_BYTES,
                              None, 20),
                await explain(conn, "ListMessages start_time at message 49,000 (index probe for the first sequence)",
                              messages.FILTERED_ASCENDING, long_session, 0, 101, "long-user", paging.RESPONSE_BYTES,
                              at_49000, None),
                await explain(conn, "ListMessages start_time at message 49,000 and recent_count=20",
                              messages.FILTERED_ASCENDING, long_session, 0, 101, "long-user", paging.RESPONSE_BYTES,
                              at_49000, 20),
                await explain(conn, "AddMessage (rolled back)", messages.ADD_MESSAGES, [str(uuid.uuid4())], long_session,
                              ["user"], ["chat"], ["hello"], ["12"], ["0.00015"], ["{}"], [None], None, None, 0,
                              "long-user", [None], [None], [None]),
                await explain(conn, "AddMessages of 10 (rolled back)", messages.ADD_MESSAGES,
                              [str(uuid.uuid4()) for _ in range(10)], long_session, ["user"] * 10, ["chat"] * 10,
                              ["hello"] * 10, ["12"] * 10, ["0.00015"] * 10, ["{}"] * 10, [None] * 10, None, None, 0,
                              "long-user", [None] * 10, [None] * 10, [None] * 10),
                await explain(conn, "ForkSession at sequence 10,000 of the 50,000-message session (rolled back)",
                              history.FORK_SESSION, long_session, "long-user", 10_000, str(uuid.uuid4()), None,
                              100_000),
                await explain(conn, "GetSessionSummary (session with 50,000 messages: its per-role totals and two index probes)",
                              sessions.SESSION_SUMMARY, long_session, "long-user"),
            ]
        finally:
            await conn.close()
    print("\n".join(out))


if __name__ == "__main__":
    asyncio.run(main())
