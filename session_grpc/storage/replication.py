"""WAL positions, for read-your-writes with a standby (session_grpc/consistency.py)."""

from __future__ import annotations

import asyncpg

from .units import statement


class NotReplayed(Exception):
    """The standby has not replayed the WAL up to the position a read asked for (yet)."""


WAL_POSITION = "SELECT pg_current_wal_lsn()::text"
REPLAYED_PAST = "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)"


@statement
async def wal_position(conn: asyncpg.Connection) -> str:
    """The primary's current WAL write position (after a commit: at or past its commit record)."""
    return str(await conn.fetchval(WAL_POSITION))


async def replayed_past(conn: asyncpg.Connection, lsn: str) -> bool:
    """Whether this standby has replayed the WAL up to `lsn`; false on a primary (no replay)."""
    return bool(await conn.fetchval(REPLAYED_PAST, lsn))
