"""The change feed at the edge, both ways: Watch* requests -> feed queries (validated, with the
call's owner), and changes -> SessionChange messages (the kind of requests.py and resources.py,
for the two watch RPCs)."""

from __future__ import annotations

from ._proto.session.v1 import session_pb2 as pb
from .authorization import owner_scope
from .domain.changes import Change, ChangeKind, FeedQuery
from .domain.limits import DEFAULT_LIMITS, Limits
from .domain.validation import Violations
from .resources import memory_to_proto, message_to_proto, session_to_proto, timestamp

READ_LIMIT = 100
"""Changes read per statement; a watcher behind reads again at once until it has caught up."""

KIND_TO_PROTO = {
    ChangeKind.SESSION_CREATED: pb.CHANGE_KIND_SESSION_CREATED,
    ChangeKind.SESSION_UPDATED: pb.CHANGE_KIND_SESSION_UPDATED,
    ChangeKind.MESSAGE_ADDED: pb.CHANGE_KIND_MESSAGE_ADDED,
    ChangeKind.MESSAGES_REMOVED: pb.CHANGE_KIND_MESSAGES_REMOVED,
    ChangeKind.MEMORY_CHANGED: pb.CHANGE_KIND_MEMORY_CHANGED,
    ChangeKind.MEMORY_DELETED: pb.CHANGE_KIND_MEMORY_DELETED,
    ChangeKind.SESSION_DELETED: pb.CHANGE_KIND_SESSION_DELETED,
}


def _cursor(check: Violations, request: pb.WatchSessionRequest | pb.WatchUserSessionsRequest) -> int | None:
    if not request.HasField("after_change_id"):
        return None
    if request.after_change_id < 0:
        check.add("after_change_id", "must be 0 (from the first change) or a change_id the feed sent; unset for from now on")
    return request.after_change_id


def session_feed(request: pb.WatchSessionRequest, limits: Limits = DEFAULT_LIMITS) -> FeedQuery:
    check = Violations(limits)
    session_id = check.uuid("session_id", request.session_id)
    after = _cursor(check, request)
    check.raise_if_any()
    return FeedQuery(owner=owner_scope(), session_id=session_id, after=after, limit=READ_LIMIT)


def user_feed(request: pb.WatchUserSessionsRequest, limits: Limits = DEFAULT_LIMITS) -> FeedQuery:
    check = Violations(limits)
    user_id = check.user_id("user_id", request.user_id)
    after = _cursor(check, request)
    check.raise_if_any()
    return FeedQuery(owner=owner_scope(), user_id=user_id, after=after, limit=READ_LIMIT)


def change_to_proto(change: Change) -> pb.SessionChange:
    message = pb.SessionChange(
        change_id=change.change_id,
        session_id=change.session_id,
        kind=KIND_TO_PROTO[change.kind],
        change_time=timestamp(change.change_time),
        changed_fields=change.changed_fields,
        first_sequence=change.first_sequence,
    )
    if change.session is not None:
        message.session.CopyFrom(session_to_proto(change.session))
    if change.message is not None:
        message.message.CopyFrom(message_to_proto(change.message))
    if change.memory is not None:
        message.memory.CopyFrom(memory_to_proto(change.memory))
    return message
