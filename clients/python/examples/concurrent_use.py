"""One client, many concurrent calls: the service keeps the sequence gapless and the totals exact.

    python concurrent_use.py [HOST:PORT]

A SessionClient (one HTTP/2 channel) is safe to share between tasks; make one
per process and pass it around.
"""

import asyncio
import sys
import uuid
from decimal import Decimal

from session_client import SessionClient


async def main(address: str) -> None:
    async with SessionClient(address) as client:
        user = f"alice-{uuid.uuid4().hex[:8]}"
        session = await client.create_session(user)
        added = await asyncio.gather(
            *(
                client.add_message(session.session_id, "user", f"concurrent {i}", tokens_used=1, cost="0.001")
                for i in range(50)
            )
        )
        assert sorted(m.sequence for m in added) == list(range(1, 51))
        totals = await client.get_session(session.session_id)
        print("messages", totals.message_count, "tokens", totals.total_tokens, "cost", totals.total_cost)
        assert totals.message_count == 50 and totals.total_tokens == 50
        assert Decimal(totals.total_cost) == Decimal("0.05")

        # Several sessions at once, each with its own conversation.
        others = await asyncio.gather(*(client.create_session(user, title=f"parallel {i}") for i in range(10)))
        await asyncio.gather(*(client.add_message(s.session_id, "user", "hi") for s in others))
        summaries = await asyncio.gather(*(client.get_session_summary(s.session_id) for s in others))
        assert all(s.message_count == 1 for s in summaries)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:8203"))
