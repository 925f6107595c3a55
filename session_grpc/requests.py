"""Requests, proto -> domain: each request validated into the command or query record storage takes.

Every problem of a request is reported at once (INVALID_ARGUMENT with a BadRequest naming each
field). Every record of a session-scoped request carries the owner the call may touch
(authorization.owner_scope()), so no storage statement can be written without it.
"""

from __future__ import annotations

import functools
from decimal import Decimal
from datetime import datetime, timedelta, timezone
from typing import Any

from google.protobuf import field_mask_pb2, struct_pb2, timestamp_pb2

from . import paging
from ._proto.session.v1 import session_pb2 as pb
from .authorization import owner_scope
from .domain import records
from .domain.errors import InvalidArgument
from .domain.limits import DEFAULT_LIMITS, Limits
from .domain.money import parse_cost
from .domain.validation import MAX_ETAG_LENGTH, MAX_TOKENS_PER_MESSAGE, Violations, excerpt
from .paging import PageTokens
from .resources import MESSAGE_TYPE_TO_PROTO, ROLE_TO_PROTO, STATUS_TO_PROTO

DEFAULT_SESSIONS_PAGE_SIZE = 50
DEFAULT_MESSAGES_PAGE_SIZE = 100
MAX_IDLE_SECONDS = 100 * 365 * 86400
MESSAGE_ORDERS = {"": False, "sequence": False, "sequence asc": False, "sequence desc": True}

STATUS_FROM_PROTO = {v: k for k, v in STATUS_TO_PROTO.items()}
ROLE_FROM_PROTO = {v: k for k, v in ROLE_TO_PROTO.items()}
MESSAGE_TYPE_FROM_PROTO = {v: k for k, v in MESSAGE_TYPE_TO_PROTO.items()}

SESSION_MASK_FIELDS = frozenset({"title", "status", "conversation_data", "metadata"})
MEMORY_MASK_FIELDS = frozenset({"conversation_summary", "facts", "preferences", "metadata"})


def _one_of(enum: Any, numbers: Any, *extra: int) -> str:
    """The hint for a bad enum value: the names a client sends in JSON (`ROLE_USER`, not `USER`)."""
    return "must be one of " + ", ".join(enum.Name(number) for number in sorted([*numbers, *extra]))


STATUS_HINT = _one_of(pb.SessionStatus, STATUS_FROM_PROTO)
STATUS_FILTER_HINT = _one_of(pb.SessionStatus, STATUS_FROM_PROTO, pb.SESSION_STATUS_UNSPECIFIED)
ROLE_HINT = _one_of(pb.Role, ROLE_FROM_PROTO)
MESSAGE_TYPE_HINT = _one_of(pb.MessageType, MESSAGE_TYPE_FROM_PROTO, pb.MESSAGE_TYPE_UNSPECIFIED)
COST_HINT = 'must be a non-negative decimal string like "0.00015" (at most 12 integer and 18 fraction digits)'


def _struct(check: Violations, field: str, message: struct_pb2.Struct) -> dict[str, Any]:
    """A request's Struct as JSON values, checked for size first (cheap), then content."""
    if not message.fields:
        return {}  # nothing to check (most requests' metadata)
    if not check.struct_size(field, message.ByteSize()):
        return {}
    return check.json_object(field, from_struct(message))


def from_struct(message: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain JSON values; never raises (validation judges the result)."""
    return {key: _from_value(value) for key, value in message.fields.items()}


def _from_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return from_struct(value.struct_value)
    if kind == "list_value":
        return [_from_value(item) for item in value.list_value.values]
    if kind == "number_value":
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None



def _state_delta(check: Violations, field: str, message: pb.StateDelta) -> records.StateDelta | None:
    """One scope's delta; None when it changes nothing (unset or empty)."""
    values = _struct(check, f"{field}.set", message.set)
    delete = check.delete_keys(f"{field}.delete", list(message.delete), values)
    delta = records.StateDelta(values, delete)
    return delta or None


def state_delta(
    check: Violations, field: str, message: pb.ScopedStateDelta, present: bool = True
) -> records.ScopedStateDelta:
    """The deltas of a write for the session, its user and its app (`field` names the request's
    ScopedStateDelta in violations: "state_delta.user_state.set"). `present` False: the request
    has no ScopedStateDelta at all, which changes nothing and has nothing to check (AddMessage's
    usual case, answered without looking at the three scopes)."""
    if not present:
        return _no_state_delta(check.limits.struct_bytes)
    return records.ScopedStateDelta(
        session=_state_delta(check, f"{field}.session_state", message.session_state),
        user=_state_delta(check, f"{field}.user_state", message.user_state),
        app=_state_delta(check, f"{field}.app_state", message.app_state),
        max_bytes=check.limits.struct_bytes,
    )


@functools.cache
def _no_state_delta(max_bytes: int) -> records.ScopedStateDelta:
    return records.ScopedStateDelta(max_bytes=max_bytes)


def state_update(request: pb.UpdateStateRequest, limits: Limits = DEFAULT_LIMITS) -> records.StateUpdate:
    check = Violations(limits)
    sid = check.uuid("session_id", request.session_id)
    result = records.StateUpdate(
        session=records.SessionRef(sid or "", owner_scope()),
        delta=state_delta(check, "state_delta", request.state_delta),
        request_id=check.uuid("request_id", request.request_id, required=False),
    )
    check.raise_if_any()
    return result


def user_state_ref(request: pb.GetUserStateRequest) -> records.UserStateRef:
    check = Violations()
    app_name = check.app_name("app_name", request.app_name) or records.DEFAULT_APP
    user_id = check.user_id("user_id", request.user_id)
    check.raise_if_any()
    return records.UserStateRef(app_name, user_id)


def app_name(request: pb.GetAppStateRequest) -> str:
    check = Violations()
    name = check.app_name("app_name", request.app_name) or records.DEFAULT_APP
    check.raise_if_any()
    return name


def session_ref(value: str, field: str = "session_id") -> records.SessionRef:
    check = Violations()
    parsed = check.uuid(field, value)
    check.raise_if_any()
    assert parsed is not None
    return records.SessionRef(parsed, owner_scope())


def new_session(request: pb.CreateSessionRequest, limits: Limits = DEFAULT_LIMITS) -> records.NewSession:
    check = Violations(limits)
    result = records.NewSession(
        user_id=check.user_id("user_id", request.user_id),
        title=check.text("title", request.title, max_length=limits.title_length),
        conversation_data=_struct(check, "conversation_data", request.conversation_data),
        metadata=_struct(check, "metadata", request.metadata),
        request_id=check.uuid("request_id", request.request_id, required=False),
        app_name=check.app_name("app_name", request.app_name) or records.DEFAULT_APP,
        session_id=check.uuid("session_id", request.session_id, required=False),
    )
    check.raise_if_any()
    return result


def session_patch(request: pb.UpdateSessionRequest, limits: Limits = DEFAULT_LIMITS) -> records.SessionPatch:
    check = Violations(limits)
    given = request.session
    sid = check.uuid("session.session_id", given.session_id)
    paths = _mask_paths(check, request, "session", SESSION_MASK_FIELDS)
    status = None
    if "status" in paths:
        status = STATUS_FROM_PROTO.get(given.status)
        if status is None:
            check.add("session.status", STATUS_HINT)
    result = records.SessionPatch(
        session_id=sid or "",
        owner=owner_scope(),
        fields=paths,
        title=check.text("session.title", given.title, max_length=limits.title_length),
        status=status,
        conversation_data=_struct(check, "session.conversation_data", given.conversation_data),
        metadata=_struct(check, "session.metadata", given.metadata),
        etag=check.text("session.etag", given.etag, max_length=MAX_ETAG_LENGTH),
    )
    check.raise_if_any()
    return result


def _mask_paths(
    check: Violations,
    request: pb.UpdateSessionRequest | pb.UpdateMemoryRequest,
    resource: str,
    allowed: frozenset[str],
) -> frozenset[str]:
    """The fields an update touches (AIP-134): the mask's paths, "*" for all, or else the populated ones."""
    if not request.HasField("update_mask"):
        populated = getattr(request, resource).ListFields()
        return frozenset(descriptor.name for descriptor, _ in populated) & allowed
    mask: field_mask_pb2.FieldMask = request.update_mask
    if list(mask.paths) == ["*"]:
        return allowed
    paths = set()
    for path in mask.paths:
        name = path.removeprefix(f"{resource}.")
        if name not in allowed:
            check.add("update_mask", f"{excerpt(path)} is not one of {', '.join(sorted(allowed))} or '*'")
        else:
            paths.add(name)
    return frozenset(paths)


def new_message(request: pb.AddMessageRequest, limits: Limits = DEFAULT_LIMITS) -> records.NewMessage:
    check = Violations(limits)
    sid = check.uuid("session_id", request.session_id)
    body = _message_body(check, request, "")
    result = records.NewMessage(
        session_id=sid or "",
        owner=owner_scope(),
        role=body.role,
        message_type=body.message_type,
        content=body.content,
        tokens_used=body.tokens_used,
        cost=body.cost,
        metadata=body.metadata,
        request_id=check.uuid("request_id", request.request_id, required=False),
        expected_last_sequence=_expected_last_sequence(check, request),
        expected_etag=check.text("expected_etag", request.expected_etag, max_length=MAX_ETAG_LENGTH),
        payload=body.payload,
        payload_type=body.payload_type,
        event_time=body.event_time,
        state_delta=state_delta(check, "state_delta", request.state_delta, request.HasField("state_delta")),
    )
    check.raise_if_any()
    return result


def new_messages(request: pb.AddMessagesRequest, limits: Limits = DEFAULT_LIMITS) -> records.NewMessages:
    """AddMessages: each entry checked as AddMessage checks its fields, named messages[i].field."""
    check = Violations(limits)
    sid = check.uuid("session_id", request.session_id)
    count = len(request.messages)
    if count == 0:
        check.add("messages", "must hold at least one message")
    elif count > limits.batch_messages:
        check.add("messages", f"must hold at most {limits.batch_messages} messages (SESSION_MAX_BATCH_MESSAGES), not {count}")
    bodies = [] if count > limits.batch_messages else [
        _message_body(check, entry, f"messages[{index}].") for index, entry in enumerate(request.messages)
    ]
    result = records.NewMessages(
        session_id=sid or "",
        owner=owner_scope(),
        messages=bodies,
        request_id=check.uuid("request_id", request.request_id, required=False),
        expected_last_sequence=_expected_last_sequence(check, request),
        expected_etag=check.text("expected_etag", request.expected_etag, max_length=MAX_ETAG_LENGTH),
    )
    check.raise_if_any()
    return result


def _message_body(check: Violations, given: pb.AddMessageRequest | pb.NewMessage, prefix: str) -> records.MessageBody:
    """The fields of one message to append (AddMessage's, or an entry of AddMessages')."""
    role = ROLE_FROM_PROTO.get(given.role)
    if role is None:
        check.add(f"{prefix}role", ROLE_HINT)
    if given.message_type == pb.MESSAGE_TYPE_UNSPECIFIED:
        message_type: records.MessageType | None = records.MessageType.CHAT
    else:
        message_type = MESSAGE_TYPE_FROM_PROTO.get(given.message_type)
        if message_type is None:
            check.add(f"{prefix}message_type", MESSAGE_TYPE_HINT)
    cost = parse_cost(given.cost)
    if cost is None:
        check.add(f"{prefix}cost", COST_HINT)
    payload, payload_type = check.payload(f"{prefix}payload", f"{prefix}payload_type", given.payload, given.payload_type)
    event_time = _event_time(check, given.event_time, f"{prefix}event_time") if given.HasField("event_time") else None
    return records.MessageBody(
        role=role or records.Role.USER,
        message_type=message_type or records.MessageType.CHAT,
        content=check.content(f"{prefix}content", given.content, required=not payload),
        tokens_used=check.non_negative(f"{prefix}tokens_used", given.tokens_used, MAX_TOKENS_PER_MESSAGE),
        cost=cost if cost is not None else Decimal(0),
        metadata=_struct(check, f"{prefix}metadata", given.metadata),
        payload=payload,
        payload_type=payload_type,
        event_time=event_time,
    )


def fork(request: pb.ForkSessionRequest) -> records.Fork:
    check = Violations()
    sid = check.uuid("session_id", request.session_id)
    last_sequence = None
    if request.HasField("last_sequence"):
        last_sequence = request.last_sequence
        if last_sequence < 0:
            check.add("last_sequence", "must not be negative")
    result = records.Fork(
        source=records.SessionRef(sid or "", owner_scope()),
        last_sequence=last_sequence,
        request_id=check.uuid("request_id", request.request_id, required=False),
        fork_session_id=check.uuid("fork_session_id", request.fork_session_id, required=False),
    )
    check.raise_if_any()
    return result


def rewind(request: pb.TruncateSessionRequest) -> records.Rewind:
    check = Violations()
    sid = check.uuid("session_id", request.session_id)
    if not request.HasField("last_sequence"):
        check.add("last_sequence", "is required: the sequence to keep as the last (0 removes every message)")
    elif request.last_sequence < 0:
        check.add("last_sequence", "must not be negative")
    result = records.Rewind(
        session=records.SessionRef(sid or "", owner_scope()),
        last_sequence=request.last_sequence,
        request_id=check.uuid("request_id", request.request_id, required=False),
    )
    check.raise_if_any()
    return result


TIME_RANGE_HINT = "must be a time between 0001-01-01 and 9999-12-31 with nanos 0..999999999"


def _event_time(check: Violations, given: timestamp_pb2.Timestamp, field: str = "event_time") -> datetime | None:
    """The event's time to the microsecond, rounded to the nearest one, half to even: what
    datetime.fromtimestamp does with a float, so a client that converts a float time (Google
    ADK's Event.timestamp) to a Timestamp gets back the datetime it would have made itself."""
    micros, rest = divmod(given.nanos, 1000)
    if rest > 500 or (rest == 500 and micros % 2):
        micros += 1
    try:
        if not 0 <= given.nanos < 1_000_000_000:
            raise ValueError
        return datetime.fromtimestamp(given.seconds, timezone.utc) + timedelta(microseconds=micros)
    except (ValueError, OverflowError, OSError):
        check.add(field, TIME_RANGE_HINT)
        return None


def _expected_last_sequence(check: Violations, request: pb.AddMessageRequest | pb.AddMessagesRequest) -> int | None:
    """The append's condition (None: unset, no condition); 0 is a condition: no messages yet."""
    if not request.HasField("expected_last_sequence"):
        return None
    if request.expected_last_sequence < 0:
        check.add("expected_last_sequence", "must not be negative")
    return request.expected_last_sequence


def new_memory(request: pb.CreateMemoryRequest, limits: Limits = DEFAULT_LIMITS) -> records.NewMemory:
    check = Violations(limits)
    result = _memory_fields(check, request, "")
    check.raise_if_any()
    return result


def _memory_fields(check: Violations, given: pb.CreateMemoryRequest | pb.Memory, prefix: str) -> records.NewMemory:
    sid = check.uuid(f"{prefix}session_id", given.session_id)
    return records.NewMemory(
        session_id=sid or "",
        owner=owner_scope(),
        conversation_summary=check.text(
            f"{prefix}conversation_summary", given.conversation_summary, max_length=check.limits.summary_length
        ),
        facts=check.facts(f"{prefix}facts", list(given.facts)),
        preferences=_struct(check, f"{prefix}preferences", given.preferences),
        metadata=_struct(check, f"{prefix}metadata", given.metadata),
    )


def memory_patch(request: pb.UpdateMemoryRequest, limits: Limits = DEFAULT_LIMITS) -> records.MemoryPatch:
    check = Violations(limits)
    given = request.memory
    memory = _memory_fields(check, given, "memory.")
    paths = _mask_paths(check, request, "memory", MEMORY_MASK_FIELDS)
    result = records.MemoryPatch(
        memory=memory,
        fields=paths,
        etag=check.text("memory.etag", given.etag, max_length=MAX_ETAG_LENGTH),
        allow_missing=request.allow_missing,
    )
    check.raise_if_any()
    return result


def idle_for(request: pb.ExpireSessionsRequest) -> timedelta:
    duration = request.idle_for
    if duration.seconds < 0 or duration.nanos < 0 or (duration.seconds, duration.nanos) == (0, 0):
        raise InvalidArgument.single("idle_for", "is required and must be positive")
    if duration.seconds > MAX_IDLE_SECONDS or duration.nanos >= 1_000_000_000:
        raise InvalidArgument.single("idle_for", "must be at most 100 years")
    return duration.ToTimedelta()


SESSION_ORDERS = {
    "": records.SessionOrder.CREATE_TIME,
    "create_time desc": records.SessionOrder.CREATE_TIME,
    "last_activity_time desc": records.SessionOrder.LAST_ACTIVITY_TIME,
}
MAX_METADATA_FILTER_KEYS = 16
MAX_TITLE_CONTAINS_LENGTH = 200


def sessions_query(
    request: pb.ListSessionsRequest, tokens: PageTokens, limits: Limits = DEFAULT_LIMITS
) -> records.SessionsQuery:
    check = Violations(limits)
    if not request.user_id and not request.app_name:
        check.add("user_id", "is required (or, with the admin scope, an app_name alone lists that app's sessions of every user)")
        user_id: str | None = ""
    elif request.user_id:
        user_id = check.user_id("user_id", request.user_id)
    else:
        user_id = None  # the app's sessions of every user: the policy let only an admin this far
    status = None
    if request.status != pb.SESSION_STATUS_UNSPECIFIED:
        status = STATUS_FROM_PROTO.get(request.status)
        if status is None:
            check.add("status", STATUS_FILTER_HINT)
    statuses = _statuses(check, request)
    app_name = check.app_name("app_name", request.app_name) or None
    page_size = check.page_size("page_size", request.page_size, DEFAULT_SESSIONS_PAGE_SIZE)
    times = {
        name: _start_time(check, getattr(request, name), name) if request.HasField(name) else None
        for name in ("create_time_start", "create_time_end", "update_time_start", "update_time_end")
    }
    for start, end in (("create_time_start", "create_time_end"), ("update_time_start", "update_time_end")):
        start_at, end_at = times[start], times[end]
        if start_at is not None and end_at is not None and end_at <= start_at:
            check.add(end, f"must be after {start}")
    metadata = None
    if request.HasField("metadata_contains") and request.metadata_contains.fields:
        if len(request.metadata_contains.fields) > MAX_METADATA_FILTER_KEYS:
            check.add("metadata_contains", f"must have at most {MAX_METADATA_FILTER_KEYS} keys")
        else:
            metadata = _struct(check, "metadata_contains", request.metadata_contains)
    title = check.text("title_contains", request.title_contains, max_length=MAX_TITLE_CONTAINS_LENGTH) or None
    order = SESSION_ORDERS.get(" ".join(request.order_by.lower().split()))
    if order is None:
        check.add("order_by", 'must be "create_time desc" or "last_activity_time desc"')
    check.raise_if_any()
    assert order is not None
    scope: dict[str, Any] = {"user_id": user_id, "status": request.status}
    if app_name is not None:
        # Only when filtering, so tokens of the unfiltered listing issued before apps existed
        # still hold across the upgrade; with it, a token of one app's listing fails another's.
        scope["app_name"] = app_name
    # The same for each filter and the order: in the scope only when set.
    extra: dict[str, Any] = {
        "statuses": None if statuses is None else [s.value for s in statuses],
        **{name: None if when is None else when.isoformat() for name, when in times.items()},
        "metadata_contains": metadata,
        "title_contains": title,
        "order": None if order is records.SessionOrder.CREATE_TIME else order.value,
    }
    scope.update({key: value for key, value in extra.items() if value is not None})
    after = tokens.after(paging.SESSION_LISTINGS[order], request.page_token, scope)
    if status is not None:
        statuses = [status]
    return records.SessionsQuery(
        user_id, status, app_name, page_size, after, scope, paging.RESPONSE_BYTES, statuses,
        times["create_time_start"], times["create_time_end"], times["update_time_start"], times["update_time_end"],
        metadata, title, order,
    )


def _statuses(check: Violations, request: pb.ListSessionsRequest) -> list[records.SessionStatus] | None:
    if not request.statuses:
        return None
    if request.status != pb.SESSION_STATUS_UNSPECIFIED:
        check.add("statuses", "set status or statuses, not both")
        return None
    found = [STATUS_FROM_PROTO.get(number) for number in request.statuses]
    if None in found:
        check.add("statuses", _one_of(pb.SessionStatus, STATUS_FROM_PROTO))
        return None
    if len(found) > len(STATUS_FROM_PROTO):
        check.add("statuses", f"must name at most {len(STATUS_FROM_PROTO)} statuses")
        return None
    return sorted({status for status in found if status is not None})


def messages_query(
    request: pb.ListMessagesRequest, tokens: PageTokens, limits: Limits = DEFAULT_LIMITS
) -> records.MessagesQuery:
    check = Violations(limits)
    sid = check.uuid("session_id", request.session_id)
    page_size = check.page_size("page_size", request.page_size, DEFAULT_MESSAGES_PAGE_SIZE)
    order = " ".join(request.order_by.lower().split())
    if order not in MESSAGE_ORDERS:
        check.add("order_by", 'must be "sequence" or "sequence desc"')
    start_time = _start_time(check, request.start_time) if request.HasField("start_time") else None
    recent_count = request.recent_count if request.HasField("recent_count") else None
    event_time_start = (
        _start_time(check, request.event_time_start, "event_time_start") if request.HasField("event_time_start") else None
    )
    if recent_count is not None and recent_count < 0:
        check.add("recent_count", "must not be negative")
    elif recent_count is not None and MESSAGE_ORDERS.get(order):
        check.add("recent_count", 'takes order_by "sequence" (the recent messages come oldest first)')
    check.raise_if_any()
    assert sid is not None
    descending = MESSAGE_ORDERS[order]
    scope: dict[str, Any] = {"session_id": sid, "descending": descending}
    # Only when set, so tokens issued before these filters existed still hold; with them, a token
    # of one filter fails another's seal.
    if start_time is not None:
        scope["start_time"] = start_time.isoformat()
    if recent_count is not None:
        scope["recent_count"] = recent_count
    if event_time_start is not None:
        scope["event_time_start"] = event_time_start.isoformat()
    position = tokens.after(paging.MESSAGES, request.page_token, scope)
    return records.MessagesQuery(
        records.SessionRef(sid, owner_scope()), page_size, position, scope, paging.RESPONSE_BYTES, descending,
        start_time, recent_count, event_time_start,
    )


def _start_time(check: Violations, given: timestamp_pb2.Timestamp, field: str = "start_time") -> datetime | None:
    """The microsecond a message must be created at or after (or, for an end, before): a finer
    fraction rounds up, so "at or after" and "before" keep their meaning at the database's precision."""
    micros, rest = divmod(given.nanos, 1000)
    try:
        if not 0 <= given.nanos < 1_000_000_000:
            raise ValueError
        start = datetime.fromtimestamp(given.seconds, timezone.utc)
        return start + timedelta(microseconds=micros + (1 if rest else 0))
    except (ValueError, OverflowError, OSError):
        check.add(field, "must be a time between 0001-01-01 and 9999-12-31 with nanos 0..999999999")
        return None


def stream_query(request: pb.StreamMessagesRequest, limits: Limits = DEFAULT_LIMITS) -> records.MessagesQuery:
    check = Violations(limits)
    sid = check.uuid("session_id", request.session_id)
    if request.after_sequence < 0:
        check.add("after_sequence", "must not be negative")
    page_size = check.page_size("page_size", request.page_size, DEFAULT_MESSAGES_PAGE_SIZE)
    check.raise_if_any()
    assert sid is not None
    return records.MessagesQuery(
        records.SessionRef(sid, owner_scope()), page_size, request.after_sequence, {"session_id": sid},
        paging.STREAM_BATCH_BYTES,
    )


DEFAULT_SEARCH_PAGE_SIZE = 20
MAX_SEARCH_SESSIONS = 100


def message_search(
    request: pb.SearchMessagesRequest, tokens: PageTokens, config: str, limits: Limits = DEFAULT_LIMITS
) -> records.MessageSearch:
    """A search of the caller's messages (Authorize has put the caller into an empty user_id; an
    admin's empty user_id stays empty: every user's), its filters checked and bound to its tokens."""
    check = Violations(limits)
    query = check.text("query", request.query, required=True, max_length=limits.search_query_length)
    user_id = check.text("user_id", request.user_id, max_length=255) or None
    app_name = check.app_name("app_name", request.app_name) or None
    session_ids: list[str] | None = None
    if len(request.session_ids) > MAX_SEARCH_SESSIONS:
        check.add("session_ids", f"must name at most {MAX_SEARCH_SESSIONS} sessions")
    elif request.session_ids:
        parsed = [check.uuid(f"session_ids[{i}]", value) for i, value in enumerate(request.session_ids)]
        session_ids = sorted({value for value in parsed if value is not None})
    roles: list[records.Role] | None = None
    if request.roles:
        found = [ROLE_FROM_PROTO.get(number) for number in request.roles]
        if None in found:
            check.add("roles", ROLE_HINT)
        roles = sorted({role for role in found if role is not None})
    start = _start_time(check, request.start_time) if request.HasField("start_time") else None
    end = _start_time(check, request.end_time, "end_time") if request.HasField("end_time") else None
    if start is not None and end is not None and end <= start:
        check.add("end_time", "must be after start_time")
    page_size = _search_page_size(check, request.page_size, limits)
    check.raise_if_any()
    scope: dict[str, Any] = {
        "query": query, "config": config, "user_id": user_id, "app_name": app_name, "session_ids": session_ids,
        "roles": None if roles is None else [role.value for role in roles],
        "start_time": None if start is None else start.isoformat(),
        "end_time": None if end is None else end.isoformat(),
    }
    after = tokens.after(paging.SEARCH, request.page_token, scope)
    return records.MessageSearch(
        query, config, owner_scope(), user_id, app_name, session_ids, roles, start, end, page_size, after, scope,
        paging.RESPONSE_BYTES,
    )


def _search_page_size(check: Violations, value: int, limits: Limits) -> int:
    if value < 0:
        check.add("page_size", "must not be negative")
    elif value > limits.search_page_size:
        check.add("page_size", f"must be at most {limits.search_page_size}")
    else:
        return value or DEFAULT_SEARCH_PAGE_SIZE
    return DEFAULT_SEARCH_PAGE_SIZE
