"""Resources, domain -> proto: the records the service returns, as the messages of session.v1."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from ._proto.session.v1 import session_pb2 as pb
from .domain import records
from .domain.money import format_decimal

# Domain enums -> proto enum numbers. UNSPECIFIED has no domain value on purpose.
STATUS_TO_PROTO = {
    records.SessionStatus.ACTIVE: pb.SESSION_STATUS_ACTIVE,
    records.SessionStatus.COMPLETED: pb.SESSION_STATUS_COMPLETED,
    records.SessionStatus.ENDED: pb.SESSION_STATUS_ENDED,
    records.SessionStatus.ARCHIVED: pb.SESSION_STATUS_ARCHIVED,
    records.SessionStatus.EXPIRED: pb.SESSION_STATUS_EXPIRED,
}
ROLE_TO_PROTO = {
    records.Role.USER: pb.ROLE_USER,
    records.Role.ASSISTANT: pb.ROLE_ASSISTANT,
    records.Role.SYSTEM: pb.ROLE_SYSTEM,
    records.Role.TOOL: pb.ROLE_TOOL,
}
MESSAGE_TYPE_TO_PROTO = {
    records.MessageType.CHAT: pb.MESSAGE_TYPE_CHAT,
    records.MessageType.SYSTEM: pb.MESSAGE_TYPE_SYSTEM,
    records.MessageType.TOOL_CALL: pb.MESSAGE_TYPE_TOOL_CALL,
    records.MessageType.TOOL_RESULT: pb.MESSAGE_TYPE_TOOL_RESULT,
    records.MessageType.NOTIFICATION: pb.MESSAGE_TYPE_NOTIFICATION,
}
STATUS_FROM_PROTO = {v: k for k, v in STATUS_TO_PROTO.items()}
ROLE_FROM_PROTO = {v: k for k, v in ROLE_TO_PROTO.items()}
MESSAGE_TYPE_FROM_PROTO = {v: k for k, v in MESSAGE_TYPE_TO_PROTO.items()}

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """Same result as Timestamp.FromDatetime for the aware datetimes the database returns, in a
    third of the time (it is on every response, up to four times per session)."""
    if value.tzinfo is None:
        message = timestamp_pb2.Timestamp()
        message.FromDatetime(value)
        return message
    delta = value - _EPOCH
    return timestamp_pb2.Timestamp(seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000)


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def session_to_proto(session: records.Session) -> pb.Session:
    message = pb.Session(
        session_id=session.session_id,
        user_id=session.user_id,
        status=STATUS_TO_PROTO[session.status],
        title=session.title,
        conversation_data=struct(session.conversation_data),
        metadata=struct(session.metadata),
        message_count=session.message_count,
        total_tokens=session.total_tokens,
        total_cost=format_decimal(session.total_cost),
        create_time=timestamp(session.create_time),
        update_time=timestamp(session.update_time),
        last_activity_time=timestamp(session.last_activity_time),
        etag=session.etag,
        app_name=session.app_name,
        forked_from_session_id=session.forked_from_session_id or "",
        forked_at_sequence=session.forked_at_sequence or 0,
    )
    if session.end_time is not None:
        message.end_time.CopyFrom(timestamp(session.end_time))
    if session.last_event_time is not None:
        message.last_event_time.CopyFrom(timestamp(session.last_event_time))
    return message


def user_state_to_proto(state: records.UserState) -> pb.UserState:
    message = pb.UserState(app_name=state.app_name, user_id=state.user_id, state=struct(state.state))
    if state.update_time is not None:
        message.update_time.CopyFrom(timestamp(state.update_time))
    return message


def app_state_to_proto(state: records.AppState) -> pb.AppState:
    message = pb.AppState(app_name=state.app_name, state=struct(state.state))
    if state.update_time is not None:
        message.update_time.CopyFrom(timestamp(state.update_time))
    return message


def get_session_response(found: records.SessionState) -> pb.GetSessionResponse:
    return pb.GetSessionResponse(
        session=session_to_proto(found.session),
        user_state=user_state_to_proto(found.user_state),
        app_state=app_state_to_proto(found.app_state),
    )


def update_state_response(found: records.SessionState) -> pb.UpdateStateResponse:
    return pb.UpdateStateResponse(
        session=session_to_proto(found.session),
        user_state=user_state_to_proto(found.user_state),
        app_state=app_state_to_proto(found.app_state),
    )


_NO_METADATA = struct_pb2.Struct()
"""Copied into each message without metadata (the constructor copies it; it is never changed)."""


def message_to_proto(message: records.Message) -> pb.Message:
    # On every streamed message: the create time is converted once when the event time is the
    # same (it is, unless the writer gave one), and empty metadata is not built anew each time.
    created = timestamp(message.create_time)
    event_time = message.event_time
    return pb.Message(
        message_id=message.message_id,
        session_id=message.session_id,
        user_id=message.user_id,
        sequence=message.sequence,
        role=ROLE_TO_PROTO[message.role],
        message_type=MESSAGE_TYPE_TO_PROTO[message.message_type],
        content=message.content,
        tokens_used=message.tokens_used,
        cost=format_decimal(message.cost),
        metadata=struct(message.metadata) if message.metadata else _NO_METADATA,
        create_time=created,
        payload=message.payload,
        payload_type=message.payload_type,
        event_time=created if event_time is None or event_time == message.create_time else timestamp(event_time),
    )


def memory_to_proto(memory: records.Memory) -> pb.Memory:
    return pb.Memory(
        session_id=memory.session_id,
        user_id=memory.user_id,
        conversation_summary=memory.conversation_summary,
        facts=memory.facts,
        preferences=struct(memory.preferences),
        metadata=struct(memory.metadata),
        create_time=timestamp(memory.create_time),
        update_time=timestamp(memory.update_time),
        etag=memory.etag,
    )


def summary_to_proto(summary: records.SessionSummary) -> pb.SessionSummary:
    session = summary.session
    message = pb.SessionSummary(
        session_id=session.session_id,
        user_id=session.user_id,
        title=session.title,
        status=STATUS_TO_PROTO[session.status],
        message_count=session.message_count,
        total_tokens=session.total_tokens,
        total_cost=format_decimal(session.total_cost),
        message_counts_by_role=[
            pb.RoleCount(role=ROLE_TO_PROTO[role], message_count=count)
            for role, count in sorted(summary.message_counts_by_role.items(), key=lambda i: ROLE_TO_PROTO[i[0]])
        ],
        has_memory=summary.has_memory,
        create_time=timestamp(session.create_time),
        last_activity_time=timestamp(session.last_activity_time),
    )
    if summary.first_message_time is not None:
        message.first_message_time.CopyFrom(timestamp(summary.first_message_time))
    if summary.last_message_time is not None:
        message.last_message_time.CopyFrom(timestamp(summary.last_message_time))
    return message


def stats_to_proto(stats: records.ServiceStats) -> pb.ServiceStats:
    return pb.ServiceStats(
        total_sessions=stats.total_sessions,
        sessions_by_status=[
            pb.StatusCount(status=STATUS_TO_PROTO[status], session_count=count)
            for status, count in sorted(stats.sessions_by_status.items(), key=lambda i: STATUS_TO_PROTO[i[0]])
        ],
        total_messages=stats.total_messages,
        total_tokens=stats.total_tokens,
        total_cost=format_decimal(stats.total_cost),
        distinct_users=stats.distinct_users,
        average_messages_per_session=stats.average_messages_per_session,
        apps=[
            pb.AppStats(
                app_name=app.app_name,
                session_count=app.session_count,
                message_count=app.message_count,
                total_tokens=app.total_tokens,
                total_cost=format_decimal(app.total_cost),
                distinct_users=app.distinct_users,
            )
            for app in stats.apps
        ],
    )


def search_hit_to_proto(hit: records.SearchHit) -> pb.SearchResult:
    return pb.SearchResult(message=message_to_proto(hit.message), snippet=hit.snippet, rank=hit.rank)
