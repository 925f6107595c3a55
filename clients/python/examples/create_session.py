"""Create a session and read it back.

    python create_session.py [HOST:PORT]
"""

import asyncio
import sys
import uuid

from session_client import SessionClient, pb


async def main(address: str) -> None:
    async with SessionClient(address) as client:
        user = f"alice-{uuid.uuid4().hex[:8]}"
        session = await client.create_session(
            user,
            title="Trip planning",
            conversation_data={"step": "choose destination"},
            metadata={"channel": "web"},
        )
        print("created", session.session_id, pb.SessionStatus.Name(session.status))
        assert session.status == pb.SESSION_STATUS_ACTIVE
        assert session.user_id == user and session.message_count == 0 and session.total_cost in ("0", "")

        again = await client.get_session(session.session_id)
        assert again == session
        print("metadata:", dict(again.metadata), "etag:", again.etag)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:8203"))
