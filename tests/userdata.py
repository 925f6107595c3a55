"""A user with one of everything the service keeps of a user (for the erasure and export tests),
and the check that no row of any table holds something of theirs."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import asyncpg
from google.protobuf import json_format, struct_pb2

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc


def struct(value: dict) -> struct_pb2.Struct:
    return json_format.ParseDict(value, struct_pb2.Struct())


@dataclass
class Footprint:
    """What was stored for a user: what must be gone after erasing them."""

    user_id: str
    marker: str
    session_ids: list[str] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)

    def needles(self) -> list[str]:
        return [self.user_id, self.marker, *self.session_ids, *self.request_ids]


async def populate(channel, user_id: str, *, admin_metadata=()) -> Footprint:
    """Two sessions in two apps, messages (content, a payload, tokens, exact cost, request ids),
    a batch, state of every scope the user has (session, user in both apps), a memory, an
    UpdateState with a request id, a fork (with the memory copied), a rewind with a request id (its
    record and the request ids it removed), and a budget. Every text carries the marker."""
    sessions, messages = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
    memories, usage = rpc.MemoryServiceStub(channel), rpc.UsageServiceStub(channel)
    marker = f"zqmark{uuid.uuid4().hex[:12]}"
    found = Footprint(user_id, marker)

    def rid() -> str:
        value = str(uuid.uuid4())
        found.request_ids.append(value)
        return value

    for app in ("travel", "food"):
        created = await sessions.CreateSession(pb.CreateSessionRequest(
            user_id=user_id, app_name=app, title=f"{marker} {app}", metadata=struct({"note": marker}),
            conversation_data=struct({"k": marker}), request_id=rid(),
        ))
        sid = created.session.session_id
        found.session_ids.append(sid)
        await messages.AddMessage(pb.AddMessageRequest(
            session_id=sid, role=pb.ROLE_USER, content=f"hello {marker}", tokens_used=12, cost="0.00015",
            request_id=rid(), metadata=struct({"m": marker}),
            state_delta=pb.ScopedStateDelta(session_state=pb.StateDelta(set=struct({"step": marker})),
                                            user_state=pb.StateDelta(set=struct({"seat": marker}))),
        ))
        await messages.AddMessage(pb.AddMessageRequest(
            session_id=sid, role=pb.ROLE_ASSISTANT, payload=f'{{"text": "{marker}"}}'.encode(),
            payload_type="application/json", tokens_used=48, cost="0.0006", request_id=rid(),
        ))
        await messages.AddMessages(pb.AddMessagesRequest(session_id=sid, request_id=rid(), messages=[
            pb.NewMessage(role=pb.ROLE_ASSISTANT, message_type=pb.MESSAGE_TYPE_TOOL_CALL, content=f"call {marker}",
                          tokens_used=9, cost="0.0001"),
            pb.NewMessage(role=pb.ROLE_TOOL, message_type=pb.MESSAGE_TYPE_TOOL_RESULT, content=f"result {marker}"),
        ]))
        await memories.CreateMemory(pb.CreateMemoryRequest(
            session_id=sid, conversation_summary=f"summary {marker}", facts=[marker], preferences=struct({"p": marker}),
        ))
        await sessions.UpdateState(pb.UpdateStateRequest(
            session_id=sid, request_id=rid(),
            state_delta=pb.ScopedStateDelta(user_state=pb.StateDelta(set=struct({"currency": marker}))),
        ))
    first = found.session_ids[0]
    fork = await sessions.ForkSession(pb.ForkSessionRequest(session_id=first, last_sequence=3))
    found.session_ids.append(fork.session.session_id)
    await sessions.TruncateSession(pb.TruncateSessionRequest(session_id=first, last_sequence=2, request_id=rid()))
    await usage.SetBudget(pb.SetBudgetRequest(budget=pb.Budget(user_id=user_id, daily_tokens=10**9)),
                          metadata=admin_metadata)
    return found


async def rows_holding(sql: asyncpg.Connection, needles: list[str]) -> dict[str, int]:
    """For every column of every table of the schema (information_schema.columns, so a table added
    tomorrow is searched too): how many rows hold any of `needles` in it, by "table.column".
    Text, JSON and other columns are searched as text; bytea columns byte for byte."""
    columns = await sql.fetch(
        "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
        "JOIN information_schema.tables t USING (table_schema, table_name) "
        "WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' ORDER BY 1, 2"
    )
    assert columns, "the catalog lists no column"
    found: dict[str, int] = {}
    for column in columns:
        table = '"' + column["table_name"] + '"'
        name = '"' + column["column_name"] + '"'
        if column["data_type"] == "bytea":
            test = f"position(convert_to(n, 'UTF8') in {name}) > 0"
        else:
            test = f"strpos({name}::text, n) > 0"
        count = await sql.fetchval(
            f"SELECT count(*) FROM {table} WHERE EXISTS (SELECT 1 FROM unnest($1::text[]) n WHERE {test})", needles
        )
        if count:
            found[f"{column['table_name']}.{column['column_name']}"] = count
    return found
