"""The limit: the least a Python gRPC server can do for AddMessage and GetSession on this schema.

grpc.aio and raw asyncpg, issuing the same SQL in the same transaction shape
as session-grpc (session_grpc/storage/messages.py ADD_MESSAGES, a batch of one, and
storage/sessions.py GET_SESSION: one statement in autocommit, one round trip),
with no ORM, no validation, no interceptors, no error mapping. It is not a
product: it trusts every request.

With --noop it answers from canned responses of the same size without
touching the database: the ceiling of grpc.aio itself on this box.

    python -m bench.reference_server --port 50100 --database-url postgresql://...
    python -m bench.reference_server --port 50101 --noop
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from datetime import datetime, timezone

import grpc
from google.protobuf import struct_pb2, timestamp_pb2

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc
from session_grpc.storage import messages, sessions

# The very statements session-grpc runs (one round trip each, autocommit); on a plain asyncpg
# pool the jsonb columns come back as text, which _struct parses.
ADD_MESSAGE = messages.ADD_MESSAGES
GET_SESSION = sessions.GET_SESSION

ROLES = {pb.ROLE_USER: "user", pb.ROLE_ASSISTANT: "assistant", pb.ROLE_SYSTEM: "system", pb.ROLE_TOOL: "tool"}
ROLE_NUMBERS = {v: k for k, v in ROLES.items()}
STATUS_NUMBERS = {
    "active": pb.SESSION_STATUS_ACTIVE,
    "completed": pb.SESSION_STATUS_COMPLETED,
    "ended": pb.SESSION_STATUS_ENDED,
    "archived": pb.SESSION_STATUS_ARCHIVED,
    "expired": pb.SESSION_STATUS_EXPIRED,
}


def _ts(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _struct(text: str) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    data = json.loads(text)
    if data:
        message.update(data)
    return message


class Reference(session_pb2_grpc.MessageServiceServicer, session_pb2_grpc.SessionServiceServicer):
    def __init__(self, pool) -> None:
        self.pool = pool

    async def AddMessage(self, request, context):
        metadata = json.dumps(dict(request.metadata)) if request.metadata.fields else "{}"
        async with self.pool.acquire() as conn:  # autocommit: the statement is its own transaction
            row = await conn.fetchrow(
                ADD_MESSAGE,
                [str(uuid.uuid4())],
                request.session_id,
                [ROLES[request.role]],
                ["chat"],
                [request.content],
                [str(request.tokens_used)],
                [format(_decimal(request.cost), "f")],
                [metadata],
                [None],  # no request_id
                None,  # expected_last_sequence: no condition
                None,  # expected_etag's version: no condition
                0,  # and its creation microseconds
                None,  # the owner: any (the reference trusts every request)
                [None],  # no payload
                [None],  # nor its media type
                [None],  # event_time: the server's clock
            )
        return pb.AddMessageResponse(
            message=pb.Message(
                message_id=str(row[0]),
                session_id=str(row[1]),
                user_id=row[2],
                sequence=row[3],
                role=ROLE_NUMBERS[row[4]],
                message_type=pb.MESSAGE_TYPE_CHAT,
                content=row[6],
                tokens_used=row[7],
                cost=format(row[8], "f"),
                metadata=_struct(row[9]),
                create_time=_ts(row[10]),
                event_time=_ts(row["event_time"]),
            )
        )

    async def GetSession(self, request, context):
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(GET_SESSION, request.session_id, None)
        session = pb.Session(
            session_id=str(row[0]),
            user_id=row[1],
            status=STATUS_NUMBERS[row[2]],
            title=row[3],
            conversation_data=_struct(row[4]),
            metadata=_struct(row[5]),
            message_count=row[6],
            total_tokens=row[7],
            total_cost=format(row[8], "f"),
            create_time=_ts(row[9]),
            update_time=_ts(row[10]),
            last_activity_time=_ts(row[11]),
            etag=f'"{int(row[9].timestamp() * 1_000_000):x}-{row[13]}"',
        )
        if row[12] is not None:
            session.end_time.CopyFrom(_ts(row[12]))
        return pb.GetSessionResponse(session=session)


def _decimal(text: str):
    from decimal import Decimal

    return Decimal(text or "0")


class Noop(session_pb2_grpc.MessageServiceServicer, session_pb2_grpc.SessionServiceServicer):
    """Answers with canned responses of realistic size: gRPC and protobuf only."""

    def __init__(self) -> None:
        now = _ts(datetime.now(timezone.utc))
        self.message = pb.AddMessageResponse(
            message=pb.Message(
                message_id=str(uuid.uuid4()),
                session_id=str(uuid.uuid4()),
                user_id="bench-user",
                sequence=1,
                role=pb.ROLE_USER,
                message_type=pb.MESSAGE_TYPE_CHAT,
                content="x" * 256,
                tokens_used=12,
                cost="0.00015",
                create_time=now,
            )
        )
        self.session = pb.GetSessionResponse(
            session=pb.Session(
                session_id=str(uuid.uuid4()),
                user_id="bench-user",
                status=pb.SESSION_STATUS_ACTIVE,
                title="bench",
                message_count=10,
                total_tokens=120,
                total_cost="0.0015",
                create_time=now,
                update_time=now,
                last_activity_time=now,
                etag='"5f0c-1"',
            )
        )

    async def AddMessage(self, request, context):
        return self.message

    async def GetSession(self, request, context):
        return self.session

    async def StreamMessages(self, request, context):
        """`after_sequence` canned messages (50,000 when 0): the ceiling of a grpc.aio stream; with
        `batched`, in canned pages of page_size (100 when 0), as session-grpc groups them."""
        count = request.after_sequence or 50_000
        if request.batched:
            size = request.page_size or 100
            page = pb.StreamMessagesResponse(messages=[self.message.message] * size)
            for _ in range(count // size):
                yield page
            if count % size:
                yield pb.StreamMessagesResponse(messages=[self.message.message] * (count % size))
            return
        item = pb.StreamMessagesResponse(message=self.message.message)
        for _ in range(count):
            yield item


async def main(port: int, database_url: str | None, noop: bool) -> None:
    pool = None
    if noop:
        servicer: object = Noop()
    else:
        import asyncpg

        pool = await asyncpg.create_pool(database_url, min_size=10, max_size=20)
        servicer = Reference(pool)
    server = grpc.aio.server()
    session_pb2_grpc.add_MessageServiceServicer_to_server(servicer, server)
    session_pb2_grpc.add_SessionServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url")
    parser.add_argument("--noop", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.port, args.database_url, args.noop))
