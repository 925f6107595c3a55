"""Add a user and an assistant message with the tokens and the exact cost each used.

    python add_messages.py [HOST:PORT]

Costs are decimals (Decimal or a string such as "0.00015"), never floats: the
service sums them exactly.
"""

import asyncio
import sys
import uuid
from decimal import Decimal

from session_client import SessionClient, pb


async def main(address: str) -> None:
    async with SessionClient(address) as client:
        session = await client.create_session(f"alice-{uuid.uuid4().hex[:8]}", title="Costs")
        question = await client.add_message(
            session.session_id, "user", "Where should I go in May?", tokens_used=12, cost=Decimal("0.00015")
        )
        answer = await client.add_message(
            session.session_id,
            pb.ROLE_ASSISTANT,
            "Lisbon: warm, not yet crowded.",
            tokens_used=48,
            cost="0.0006",
            metadata={"model": "example-1"},
        )
        print(question.sequence, pb.Role.Name(question.role), question.cost)
        print(answer.sequence, pb.Role.Name(answer.role), answer.cost)
        assert (question.sequence, answer.sequence) == (1, 2)

        totals = await client.get_session(session.session_id)
        print("total tokens", totals.total_tokens, "total cost", totals.total_cost)
        assert totals.message_count == 2 and totals.total_tokens == 60
        assert Decimal(totals.total_cost) == Decimal("0.00075")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:8203"))
