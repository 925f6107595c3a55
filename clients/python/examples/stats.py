"""Totals over the whole service.

    python stats.py [HOST:PORT]
"""

import asyncio
import sys
import uuid
from decimal import Decimal

from session_client import SessionClient, pb


async def main(address: str) -> None:
    async with SessionClient(address) as client:
        before = await client.get_service_stats()
        session = await client.create_session(f"alice-{uuid.uuid4().hex[:8]}")
        await client.add_message(session.session_id, "user", "hello", tokens_used=7, cost="0.25")
        stats = await client.get_service_stats()

        by_status = {pb.SessionStatus.Name(c.status): c.session_count for c in stats.sessions_by_status}
        print("sessions", stats.total_sessions, by_status)
        print("messages", stats.total_messages, "tokens", stats.total_tokens, "cost", stats.total_cost)
        print("users", stats.distinct_users, "avg messages/session", round(stats.average_messages_per_session, 2))
        assert stats.total_sessions >= before.total_sessions + 1
        assert stats.total_messages >= before.total_messages + 1
        assert Decimal(stats.total_cost) >= Decimal(before.total_cost or "0") + Decimal("0.25")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:8203"))
