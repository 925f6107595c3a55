"""Issue 11, item 9: 16 concurrent ADK appenders on one session, state deltas to their own session
and user: keys; every delta present, every event stored once, in each caller's order.

The scenario is reliability/adk_appenders.py (also a `make chaos` row, beside ADK's own
DatabaseSessionService on the same PostgreSQL).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from google.adk.sessions.database_session_service import DatabaseSessionService

from session_client.adk import SessionGrpcService

SCRIPT = Path(__file__).resolve().parents[2] / "reliability" / "adk_appenders.py"
_spec = importlib.util.spec_from_file_location("adk_appenders", SCRIPT)
assert _spec and _spec.loader
adk_appenders = importlib.util.module_from_spec(_spec)
sys.modules["adk_appenders"] = adk_appenders  # dataclasses look their module up there
_spec.loader.exec_module(adk_appenders)


async def test_sixteen_appenders_lose_nothing_duplicate_nothing_and_keep_their_order(service: SessionGrpcService):
    result = await adk_appenders.run(service, "session-grpc", appenders=16, rounds=5)
    assert result.errors == {} and result.gave_up == 0, result
    assert result.acknowledged == 16 * 5, result
    assert result.stored == 16 * 5, result
    assert result.broken == 0, result  # lost, duplicates, failed but stored, out of order, lost deltas


async def test_the_same_run_against_adks_database_session_service_is_reported(peer_database_url):
    """The peer's figures, for the report (printed with -s): what it refuses, loses or duplicates."""
    peer = DatabaseSessionService(db_url=peer_database_url.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        result = await adk_appenders.run(peer, "ADK DatabaseSessionService", appenders=16, rounds=5)
    finally:
        await peer.close()
    print(result)
    assert result.attempted >= result.acknowledged > 0
    assert os.environ.get("ADK_PEER_DATABASE_URL")
