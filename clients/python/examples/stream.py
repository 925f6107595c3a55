"""Stream a session's messages, from the start and from a known sequence on.

    python stream.py [HOST:PORT]
"""

import asyncio
import sys
import uuid

from session_client import SessionClient


async def main(address: str) -> None:
    async with SessionClient(address) as client:
        session = await client.create_session(f"alice-{uuid.uuid4().hex[:8]}")
        for i in range(1, 8):
            await client.add_message(session.session_id, "user", f"line {i}", tokens_used=i)

        async for message in client.stream_messages(session.session_id, page_size=3):
            print(message.sequence, message.content)

        # Catch up from the last sequence you have already seen.
        later = [m.sequence async for m in client.stream_messages(session.session_id, after_sequence=5)]
        assert later == [6, 7], later

        # Stopping early is fine: the stream is cancelled when the loop breaks.
        async for message in client.stream_messages(session.session_id):
            if message.sequence == 2:
                break
        everything = [m.sequence async for m in client.stream_messages(session.session_id)]
        assert everything == list(range(1, 8))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:8203"))
