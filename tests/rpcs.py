"""Calls to every RPC, built from the policy table and the proto descriptors rather than listed by
hand: a new RPC is in every authorization test as soon as it has a policy (and the policy test
makes sure it has one)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format, message_factory

from session_grpc.policy import POLICIES, Kind, service_methods

SESSIONS = "/session.v1.SessionService/"
MEMORIES = "/session.v1.MemoryService/"

EXTRAS: dict[str, dict[str, Any]] = {
    SESSIONS + "UpdateSession": {"session": {"title": "x"}},
    SESSIONS + "ExpireSessions": {"idle_for": "86400s"},
    SESSIONS + "UpdateState": {"state_delta": {"session_state": {"set": {"s": 1}}, "user_state": {"set": {"u": 1}}}},
    "/session.v1.MessageService/AddMessage": {"role": "ROLE_USER", "content": "hi"},
    "/session.v1.MessageService/AddMessages": {"messages": [{"role": "ROLE_USER", "content": "hi"}]},
    SESSIONS + "TruncateSession": {"last_sequence": 0},
    "/session.v1.MessageService/SearchMessages": {"query": "hi"},
    MEMORIES + "UpdateMemory": {"memory": {"conversation_summary": "s"}, "allow_missing": True},
    "/session.v1.UsageService/SetBudget": {"budget": {"user_id": "bob", "daily_tokens": "1000"}},
    "/session.v1.UsageService/DeleteBudget": {"user_id": "bob"},
    "/session.v1.RetentionService/SetRetentionPolicy": {"policy": {"app_name": "kept", "max_messages_per_session": "9"}},
    "/session.v1.RetentionService/GetRetentionPolicy": {"app_name": "kept"},
    "/session.v1.RetentionService/DeleteRetentionPolicy": {"app_name": "kept"},
    "/session.v1.UsageService/GetUsage": {
        "bucket": "USAGE_BUCKET_DAY", "start_time": "2026-01-01T00:00:00Z", "end_time": "2026-02-01T00:00:00Z",
    },
}
"""What an RPC needs besides the field its policy names to succeed on a fresh session."""

ENDLESS = {"WatchSession", "WatchUserSessions"}
"""Streams that do not end by themselves (the change feed): a call reads their first response."""

NEEDS_MEMORY = {MEMORIES + "GetMemory", MEMORIES + "DeleteMemory"}
NEEDS_BUDGET = {"/session.v1.UsageService/GetBudget"}
"""RPCs that succeed only for a user who has a budget."""
NEEDS_RETENTION_POLICY = {"/session.v1.RetentionService/GetRetentionPolicy"}
"""RPCs that succeed only for an app ("kept") that has a retention policy."""
"""RPCs that succeed only on a session that has a memory."""

_METHODS = service_methods()


def methods(kind: Kind | None = None, *, writes: bool | None = None) -> list[str]:
    """Full method names from the policy table, of one kind and/or by whether they write."""
    return [
        method for method, policy in POLICIES.items()
        if (kind is None or policy.kind is kind) and (writes is None or policy.writes is writes)
    ]


def request(method: str, value: str = "") -> Any:
    """A request for `method` with its policy's field (the session or the user) set to `value`."""
    message = json_format.ParseDict(EXTRAS.get(method, {}), message_factory.GetMessageClass(_METHODS[method].input_type)())
    path = POLICIES[method].field
    if path and value:
        *parents, name = path.split(".")
        holder = message
        for parent in parents:
            holder = getattr(holder, parent)
        setattr(holder, name, value)
    return message


async def call(channel: grpc.aio.Channel, method: str, message: Any, token: str | None = None) -> Any:
    """Call `method` over `channel` (a stream is read to its end), as the holder of `token`."""
    descriptor = _METHODS[method]
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    response = message_factory.GetMessageClass(descriptor.output_type).FromString
    serialize = type(message).SerializeToString
    if descriptor.server_streaming:
        stream = channel.unary_stream(method, request_serializer=serialize, response_deserializer=response)
        call = stream(message, metadata=metadata)
        if method.rsplit("/", 1)[1] in ENDLESS:  # never ends by itself: its first response is the answer
            async for item in call:
                call.cancel()
                return [item]
        return [item async for item in call]
    return await channel.unary_unary(method, request_serializer=serialize, response_deserializer=response)(
        message, metadata=metadata
    )
