"""A session's memory: a summary, facts and preferences, updated with etags.

    python memory.py [HOST:PORT]
"""

import asyncio
import sys
import uuid

from session_client import Aborted, AlreadyExists, NotFound, SessionClient


async def main(address: str) -> None:
    async with SessionClient(address) as client:
        session = await client.create_session(f"alice-{uuid.uuid4().hex[:8]}")
        sid = session.session_id

        memory = await client.create_memory(
            sid, conversation_summary="Planning a May trip", facts=["likes sun"], preferences={"units": "metric"}
        )
        print("memory etag", memory.etag)
        try:
            await client.create_memory(sid)
            raise AssertionError("a second memory must be refused")
        except AlreadyExists:
            print("one memory per session")

        # Only the fields you pass change; the etag makes the update conditional.
        updated = await client.update_memory(sid, facts=["likes sun", "budget 1500 EUR"], etag=memory.etag)
        assert list(updated.facts) == ["likes sun", "budget 1500 EUR"]
        assert updated.conversation_summary == "Planning a May trip"
        try:
            await client.update_memory(sid, conversation_summary="stale", etag=memory.etag)
            raise AssertionError("a stale etag must be refused")
        except Aborted as error:
            print("stale etag:", error.reason)
            assert error.reason == "ETAG_MISMATCH"

        await client.delete_memory(sid)
        try:
            await client.get_memory(sid)
            raise AssertionError("the memory was deleted")
        except NotFound:
            pass
        # allow_missing creates it in one call (an upsert).
        created = await client.update_memory(sid, conversation_summary="fresh start", allow_missing=True)
        assert (await client.get_memory(sid)).conversation_summary == created.conversation_summary == "fresh start"


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:8203"))
