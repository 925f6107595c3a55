"""Watch a session live, and pick up where you left off with the cursor.

    python watch.py [HOST:PORT]
"""

import asyncio
import sys
import uuid

from session_client import SessionClient, pb


async def main(address: str) -> None:
    async with SessionClient(address) as client:
        session = await client.create_session(f"alice-{uuid.uuid4().hex[:8]}", title="Live")

        async def reply_later() -> None:
            for text in ("Hello!", "How can I help?"):
                await asyncio.sleep(0.1)
                await client.add_message(session.session_id, "assistant", text)

        writer = asyncio.create_task(reply_later())
        cursor = 0
        # From the first change (after_change_id=0); leave it out to see only what comes from now on.
        async for change in client.watch_session(session.session_id, after_change_id=0):
            print(change.change_id, pb.ChangeKind.Name(change.kind), change.message.content)
            cursor = change.change_id  # keep it: where to resume next time
            if change.kind == pb.CHANGE_KIND_MESSAGE_ADDED and change.message.sequence == 2:
                break  # leaving the loop hangs up
        await writer

        # Later (another process, after a restart): continue after the cursor, nothing repeated.
        await client.add_message(session.session_id, "user", "Thanks")
        await client.end_session(session.session_id)
        kinds = []
        async for change in client.watch_session(session.session_id, after_change_id=cursor):
            kinds.append(pb.ChangeKind.Name(change.kind))
            if change.kind == pb.CHANGE_KIND_SESSION_UPDATED:
                break
        assert kinds == ["CHANGE_KIND_MESSAGE_ADDED", "CHANGE_KIND_SESSION_UPDATED"], kinds

        # Every session of a user: created, changed, deleted.
        async for change in client.watch_user_sessions(session.user_id, after_change_id=0):
            if change.kind == pb.CHANGE_KIND_SESSION_CREATED:
                print("session", change.session_id, "created:", change.session.title)
                break


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:8203"))
