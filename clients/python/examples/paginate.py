"""Walk a long conversation page by page: oldest first, newest first, and one page at a time.

    python paginate.py [HOST:PORT]
"""

import asyncio
import sys
import uuid

from session_client import SessionClient


async def main(address: str) -> None:
    async with SessionClient(address) as client:
        session = await client.create_session(f"alice-{uuid.uuid4().hex[:8]}")
        for i in range(1, 26):
            await client.add_message(session.session_id, "user" if i % 2 else "assistant", f"message {i}")

        # The iterator fetches pages of 10 as you go.
        sequences = [m.sequence async for m in client.list_messages(session.session_id, page_size=10)]
        assert sequences == list(range(1, 26)), sequences

        # The recent history of the conversation: newest first.
        recent = await client.list_messages_page(session.session_id, page_size=5, newest_first=True)
        print("latest five:", [m.sequence for m in recent.messages], "of", recent.total_size)
        assert [m.sequence for m in recent.messages] == [25, 24, 23, 22, 21] and recent.total_size == 25

        # Page by hand with the opaque token.
        second = await client.list_messages_page(
            session.session_id, page_size=5, page_token=recent.next_page_token, newest_first=True
        )
        assert [m.sequence for m in second.messages] == [20, 19, 18, 17, 16]
        print("next five:", [m.sequence for m in second.messages])


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:8203"))
