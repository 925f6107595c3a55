"""End a session: it stops taking messages; ending it again changes nothing.

    python end_session.py [HOST:PORT]
"""

import asyncio
import sys
import uuid

from session_client import FailedPrecondition, SessionClient, pb


async def main(address: str) -> None:
    async with SessionClient(address) as client:
        session = await client.create_session(f"alice-{uuid.uuid4().hex[:8]}")
        await client.add_message(session.session_id, "user", "bye")

        ended = await client.end_session(session.session_id)
        print(pb.SessionStatus.Name(ended.status), ended.end_time.ToJsonString())
        assert ended.status == pb.SESSION_STATUS_ENDED and ended.HasField("end_time")
        assert await client.end_session(session.session_id) == ended

        try:
            await client.add_message(session.session_id, "user", "are you there?")
            raise AssertionError("an ENDED session takes no messages")
        except FailedPrecondition as error:
            print("refused:", error.reason)
            assert error.reason == "SESSION_NOT_ACTIVE"

        archived = await client.update_session(session.session_id, status="archived")
        assert archived.status == pb.SESSION_STATUS_ARCHIVED


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:8203"))
