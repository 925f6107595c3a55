"""Retries: only UNAVAILABLE is retried, with full-jitter backoff under a total deadline,
and a write is retried only with a request_id, so a retry never adds a message twice.

    python retries.py [HOST:PORT]
"""

import asyncio
import socket
import sys
import time
import uuid

from session_client import RetryPolicy, SessionClient, Unavailable


def unused_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


async def main(address: str) -> None:
    # Nobody listens here: every attempt is UNAVAILABLE, so the client retries until
    # the total deadline (or the attempt limit) and then raises Unavailable.
    policy = RetryPolicy(initial_backoff=0.05, max_backoff=0.5, max_attempts=20, total_deadline=2.0)
    async with SessionClient(unused_address(), retry=policy, timeout=1.0) as down:
        started = time.monotonic()
        try:
            await down.get_service_stats()
            raise AssertionError("nobody is listening")
        except Unavailable as error:
            took = time.monotonic() - started
            print(f"gave up after {error.attempts} attempts in {took:.2f}s")
            assert error.attempts > 1 and took < 2.0 + 1.0

    # Retries off: one attempt only.
    async with SessionClient(unused_address(), retry=RetryPolicy.disabled()) as down:
        try:
            await down.get_service_stats()
        except Unavailable as error:
            assert error.attempts == 1

    # The request_id is what makes a write safe to repeat: the client makes one for
    # AddMessage and CreateSession when you give none. Sending the same one twice (what
    # a retry does after a lost answer) returns the first result, counted once.
    async with SessionClient(address, retry=policy) as client:
        session = await client.create_session(f"alice-{uuid.uuid4().hex[:8]}", request_id=str(uuid.uuid4()))
        request_id = str(uuid.uuid4())
        first = await client.add_message(session.session_id, "user", "hello", tokens_used=3, request_id=request_id)
        again = await client.add_message(session.session_id, "user", "hello", tokens_used=3, request_id=request_id)
        assert again.message_id == first.message_id
        totals = await client.get_session(session.session_id)
        print("messages after a repeated write:", totals.message_count, "tokens:", totals.total_tokens)
        assert totals.message_count == 1 and totals.total_tokens == 3


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:8203"))
