"""Failures are typed: one exception class per status code, with the server's details unpacked.

    python error_handling.py [HOST:PORT]
"""

import asyncio
import sys
import uuid

from session_client import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SessionClient,
    SessionError,
)


async def main(address: str) -> None:
    async with SessionClient(address) as client:
        # INVALID_ARGUMENT names every bad field (google.rpc.BadRequest).
        session = await client.create_session(f"alice-{uuid.uuid4().hex[:8]}")
        try:
            await client.add_message(session.session_id, "user", "", tokens_used=-1, cost="-0.5")
            raise AssertionError("bad input must be refused")
        except InvalidArgument as error:
            print("invalid:", error.violations)
            assert {"content", "tokens_used", "cost"} <= set(error.violations), error.violations

        # A role (status, message type) the client does not know is refused before it is sent.
        try:
            await client.add_message(session.session_id, "boss", "hi")
            raise AssertionError("an unknown role must be refused")
        except InvalidArgument as error:
            print("invalid role:", error.violations["role"])
            assert "user, assistant, system, tool" in error.violations["role"]

        # NOT_FOUND says what was missing (google.rpc.ResourceInfo).
        missing = str(uuid.uuid4())
        try:
            await client.get_session(missing)
            raise AssertionError("no such session")
        except NotFound as error:
            print("not found:", error.resource_type, error.resource_name)
            assert error.resource_name == missing

        # FAILED_PRECONDITION and ABORTED carry a machine-readable reason (google.rpc.ErrorInfo).
        await client.update_session(session.session_id, status="completed")
        try:
            await client.update_session(session.session_id, status="active")
            raise AssertionError("COMPLETED cannot go back to ACTIVE")
        except FailedPrecondition as error:
            print("precondition:", error.reason)
            assert error.reason == "INVALID_STATUS_TRANSITION"

        current = await client.get_session(session.session_id)
        await client.update_session(session.session_id, title="renamed", etag=current.etag)
        try:
            await client.update_session(session.session_id, title="lost update", etag=current.etag)
            raise AssertionError("a stale etag must be refused")
        except Aborted as error:
            print("aborted:", error.reason)
            assert error.reason == "ETAG_MISMATCH"

        # Every one of them is a SessionError with the code, for a catch-all.
        try:
            await client.delete_session(missing)
        except SessionError as error:
            print("catch-all:", error)  # "NOT_FOUND: session ... not found"
            assert isinstance(error, NotFound)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:8203"))
