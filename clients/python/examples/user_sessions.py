"""A user's sessions, newest first, all of them or only those in one status.

    python user_sessions.py [HOST:PORT]
"""

import asyncio
import sys
import uuid

from session_client import SessionClient, pb


async def main(address: str) -> None:
    async with SessionClient(address) as client:
        user = f"alice-{uuid.uuid4().hex[:8]}"
        created = [await client.create_session(user, title=f"chat {i}") for i in range(7)]
        await client.end_session(created[0].session_id)

        listed = [s async for s in client.list_sessions(user, page_size=3)]
        print([s.title for s in listed])
        assert [s.session_id for s in listed] == [s.session_id for s in reversed(created)]

        active = [s async for s in client.list_sessions(user, status="active")]
        assert len(active) == 6 and all(s.status == pb.SESSION_STATUS_ACTIVE for s in active)

        first_page = await client.list_sessions_page(user, page_size=2, status=pb.SESSION_STATUS_ENDED)
        assert first_page.total_size == 1 and first_page.next_page_token == ""
        print("ended:", [s.title for s in first_page.sessions])


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:8203"))
