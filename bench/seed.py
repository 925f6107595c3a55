"""Big data for the size workloads, written with SQL straight into the real (migrated) schema.

Going through the API would take minutes for 50,000 messages; the rows are the
same as the API makes: gapless sequences, counters that match, the real
indexes and constraints.
"""

from __future__ import annotations

import uuid

import asyncpg

USER_CONTENT = "How do I get from Lisbon to Porto by train, and how long does it take? " * 4  # ~290 chars
ASSISTANT_CONTENT = (
    "Trains leave Lisbon Santa Apolonia or Oriente for Porto Campanha about every hour; "
    "the Alfa Pendular takes just under three hours and the Intercidades a little more. "
) * 5  # ~830 chars


async def big_user(conn: asyncpg.Connection, user_id: str, count: int) -> None:
    """`count` sessions for one user, one second apart (newest last)."""
    await conn.execute(
        """
        INSERT INTO sessions (id, user_id, status, title, metadata, create_time, update_time, last_activity_time)
        SELECT gen_random_uuid(), $1, 'active', 'conversation ' || g, '{"channel": "web"}'::jsonb,
               t, t, t
        FROM generate_series(1, $2::int) g, LATERAL (SELECT now() - make_interval(secs => $2::int - g) AS t) x
        """,
        user_id,
        count,
    )


async def long_session(conn: asyncpg.Connection, user_id: str, count: int, content_bytes: int = 0) -> str:
    """One session holding `count` messages, alternating user and assistant; returns its id.
    With `content_bytes`, each message's content is that long (the memory workload's session of
    the largest messages the limits admit)."""
    session_id = str(uuid.uuid4())
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO sessions (id, user_id, status, title) VALUES ($1, $2, 'active', 'long conversation')",
            session_id,
            user_id,
        )
        await conn.execute(
            """
            INSERT INTO messages (id, session_id, user_id, sequence, role, message_type, content,
                                  tokens_used, cost, metadata, create_time)
            SELECT gen_random_uuid(), $1, $2, g,
                   CASE WHEN g % 2 = 1 THEN 'user' ELSE 'assistant' END, 'chat',
                   CASE WHEN $6::int > 0 THEN left(repeat(md5(g::text), $6::int / 32 + 1), $6::int)
                        WHEN g % 2 = 1 THEN $3 ELSE $4 END,
                   CASE WHEN g % 2 = 1 THEN 12 ELSE 48 END,
                   CASE WHEN g % 2 = 1 THEN 0.00015 ELSE 0.0006 END,
                   '{}'::jsonb, now() - make_interval(secs => ($5::int - g) / 1000.0)
            FROM generate_series(1, $5::int) g
            """,
            session_id,
            user_id,
            USER_CONTENT,
            ASSISTANT_CONTENT,
            count,
            content_bytes,
        )
        await conn.execute(
            """
            UPDATE sessions s SET message_count = m.n, total_tokens = m.tokens, total_cost = m.cost,
                   last_activity_time = m.last, update_time = m.last
            FROM (SELECT count(*) AS n, sum(tokens_used) AS tokens, sum(cost) AS cost, max(create_time) AS last
                  FROM messages WHERE session_id = $1) m
            WHERE s.id = $1
            """,
            session_id,
        )
    return session_id


async def analyze(conn: asyncpg.Connection) -> None:
    """What autovacuum would have done by then: statistics, and the visibility map that lets
    counts over an index skip the table (index-only scans)."""
    for table in ("sessions", "messages"):
        await conn.execute(f"VACUUM ANALYZE {table}")

