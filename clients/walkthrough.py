"""The whole life of a session, end to end, through the generated stubs.

    python clients/walkthrough.py [HOST:PORT]     (default localhost:8203)

Creates a session, adds a user and an assistant message with tokens and cost,
lists and streams them, creates, reads and updates the memory, completes the
session, reads the summary, lists the user's sessions, reads the service stats,
ends the session and reads it back, exports everything of the user and erases it.
Exits non-zero at the first surprise.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from decimal import Decimal

import grpc
from google.protobuf import field_mask_pb2, struct_pb2

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok  {what}")


async def walkthrough(address: str) -> None:
    user = f"walkthrough-{uuid.uuid4().hex[:8]}"
    async with grpc.aio.insecure_channel(address) as channel:
        sessions = rpc.SessionServiceStub(channel)
        messages = rpc.MessageServiceStub(channel)
        memories = rpc.MemoryServiceStub(channel)

        metadata = struct_pb2.Struct()
        metadata.update({"channel": "cli"})
        session = (
            await sessions.CreateSession(
                pb.CreateSessionRequest(user_id=user, title="Trip planning", metadata=metadata)
            )
        ).session
        sid = session.session_id
        check(session.status == pb.SESSION_STATUS_ACTIVE, f"created session {sid}")
        check((await sessions.GetSession(pb.GetSessionRequest(session_id=sid))).session == session, "get session")

        for role, content, tokens, cost in [
            (pb.ROLE_USER, "Where should I go in May?", 12, "0.00015"),
            (pb.ROLE_ASSISTANT, "Lisbon: warm, not yet crowded.", 48, "0.00060"),
        ]:
            added = (
                await messages.AddMessage(
                    pb.AddMessageRequest(
                        session_id=sid, role=role, content=content, tokens_used=tokens, cost=cost,
                        request_id=str(uuid.uuid4()),
                    )
                )
            ).message
            check(added.cost == cost, f"added message {added.sequence} ({pb.Role.Name(role)})")

        listed = await messages.ListMessages(pb.ListMessagesRequest(session_id=sid))
        check([m.sequence for m in listed.messages] == [1, 2] and listed.total_size == 2, "list messages")
        streamed = [item.message.sequence async for item in messages.StreamMessages(pb.StreamMessagesRequest(session_id=sid))]
        check(streamed == [1, 2], "stream messages")

        memory = (
            await memories.CreateMemory(
                pb.CreateMemoryRequest(session_id=sid, conversation_summary="Planning May trip", facts=["likes sun"])
            )
        ).memory
        check((await memories.GetMemory(pb.GetMemoryRequest(session_id=sid))).memory == memory, "memory create/get")
        memory = (
            await memories.UpdateMemory(
                pb.UpdateMemoryRequest(
                    memory=pb.Memory(session_id=sid, facts=["likes sun", "budget 1500 EUR"], etag=memory.etag),
                    update_mask=field_mask_pb2.FieldMask(paths=["facts"]),
                )
            )
        ).memory
        check(list(memory.facts) == ["likes sun", "budget 1500 EUR"], "memory update")

        completed = (
            await sessions.UpdateSession(
                pb.UpdateSessionRequest(
                    session=pb.Session(session_id=sid, status=pb.SESSION_STATUS_COMPLETED),
                    update_mask=field_mask_pb2.FieldMask(paths=["status"]),
                )
            )
        ).session
        check(completed.status == pb.SESSION_STATUS_COMPLETED, "session completed")

        summary = (await sessions.GetSessionSummary(pb.GetSessionSummaryRequest(session_id=sid))).summary
        check(
            summary.message_count == 2
            and summary.total_tokens == 60
            and Decimal(summary.total_cost) == Decimal("0.00075")
            and summary.has_memory,
            f"summary: 2 messages, 60 tokens, cost {summary.total_cost}",
        )

        listed_sessions = await sessions.ListSessions(pb.ListSessionsRequest(user_id=user))
        check([s.session_id for s in listed_sessions.sessions] == [sid], "list the user's sessions")

        stats = (await sessions.GetServiceStats(pb.GetServiceStatsRequest())).stats
        check(stats.total_sessions >= 1 and stats.total_messages >= 2, f"service stats: {stats.total_sessions} sessions")

        ended = (await sessions.EndSession(pb.EndSessionRequest(session_id=sid))).session
        check(ended.status == pb.SESSION_STATUS_ENDED and ended.HasField("end_time"), "session ended")
        final = (await sessions.GetSession(pb.GetSessionRequest(session_id=sid))).session
        check(final.status == pb.SESSION_STATUS_ENDED, "get shows ENDED")

        user_data = rpc.UserDataServiceStub(channel)
        lines = [
            json.loads(line)
            async for part in user_data.ExportUserData(pb.ExportUserDataRequest(user_id=user))
            for line in part.lines
        ]
        check(
            lines[0]["type"] == "header" and lines[0]["user_id"] == user
            and lines[-1] == {"type": "end", "record_count": len(lines) - 2}
            and sum(line["type"] == "message" for line in lines) == 2,
            f"export the user: {len(lines)} lines, both messages",
        )
        erased = await user_data.DeleteUserData(pb.DeleteUserDataRequest(user_id=user))
        check(erased.session_count == 1 and erased.message_count == 2 and erased.memory_count == 1, "erase the user")
        gone = await sessions.ListSessions(pb.ListSessionsRequest(user_id=user))
        check(not gone.sessions, "nothing of the user is left")


if __name__ == "__main__":
    asyncio.run(walkthrough(sys.argv[1] if len(sys.argv) > 1 else "localhost:8203"))
