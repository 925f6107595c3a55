"""The exact totals of one session: messages by role, tokens, cost, first and last message time.

    python summary.py [HOST:PORT]
"""

import asyncio
import sys
import uuid
from decimal import Decimal

from session_client import SessionClient, pb


async def main(address: str) -> None:
    async with SessionClient(address) as client:
        session = await client.create_session(f"alice-{uuid.uuid4().hex[:8]}", title="Ten tenths")
        for i in range(10):
            await client.add_message(session.session_id, "user" if i % 2 == 0 else "assistant", f"m{i}", tokens_used=5, cost="0.1")
        await client.create_memory(session.session_id, conversation_summary="counting")

        summary = await client.get_session_summary(session.session_id)
        by_role = {pb.Role.Name(c.role): c.message_count for c in summary.message_counts_by_role}
        print("messages", summary.message_count, by_role, "tokens", summary.total_tokens, "cost", summary.total_cost)
        assert summary.message_count == 10 and summary.total_tokens == 50
        assert Decimal(summary.total_cost) == Decimal("1.0")  # exactly, not 0.9999999
        assert by_role == {"ROLE_USER": 5, "ROLE_ASSISTANT": 5}
        assert summary.has_memory
        assert summary.first_message_time.ToDatetime() <= summary.last_message_time.ToDatetime()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:8203"))
