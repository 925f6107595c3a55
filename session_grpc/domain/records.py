"""What the service stores and returns, as plain typed records."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

T = TypeVar("T")
JsonObject = dict[str, Any]

DEFAULT_APP = "default"
"""The app of a session created without one, and of every session that existed before apps did
(the migration that added them, which writes the same name as its server default)."""


class SessionStatus(enum.StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    ENDED = "ended"
    ARCHIVED = "archived"
    EXPIRED = "expired"


class Role(enum.StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    TOOL = "tool"


class MessageType(enum.StrEnum):
    CHAT = "chat"
    SYSTEM = "system"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    NOTIFICATION = "notification"


@dataclass(frozen=True)
class Session:
    session_id: str
    user_id: str
    status: SessionStatus
    title: str
    conversation_data: JsonObject
    metadata: JsonObject
    message_count: int
    total_tokens: int
    total_cost: Decimal
    create_time: datetime
    update_time: datetime
    last_activity_time: datetime
    end_time: datetime | None
    version: int
    app_name: str = DEFAULT_APP
    last_event_time: datetime | None = None
    """The event_time of the message with the highest sequence; None without messages."""
    forked_from_session_id: str | None = None
    """The session this one is a fork of (ForkSession); None for a session CreateSession made."""
    forked_at_sequence: int | None = None
    """The last sequence of that session the fork copied."""

    @property
    def etag(self) -> str:
        return etag_of(self.create_time, self.version)


@dataclass(frozen=True)
class Message:
    message_id: str
    session_id: str
    user_id: str
    sequence: int
    role: Role
    message_type: MessageType
    content: str
    tokens_used: int
    cost: Decimal
    metadata: JsonObject
    create_time: datetime
    payload: bytes = b""
    """The writer's bytes, returned as sent (b"": none)."""
    payload_type: str = ""
    """The payload's media type ("" exactly when there is no payload)."""
    event_time: datetime | None = None
    """When the event happened (the writer's, or the server's clock at the append)."""


@dataclass(frozen=True)
class Memory:
    session_id: str
    user_id: str
    conversation_summary: str
    facts: list[str]
    preferences: JsonObject
    metadata: JsonObject
    create_time: datetime
    update_time: datetime
    version: int

    @property
    def etag(self) -> str:
        return etag_of(self.create_time, self.version)


Owner = str | None
"""The user whose session a call may touch: None for any (an admin), "" for none. Every record of
a session-scoped call carries it, and storage puts it into the statement (`AND user_id = owner`),
so another user's session is as missing as one that does not exist."""


@dataclass(frozen=True)
class SessionRef:
    """A session a call names, and whose it must be to be found."""

    session_id: str
    owner: Owner


@dataclass(frozen=True)
class NewSession:
    user_id: str
    title: str = ""
    conversation_data: JsonObject = field(default_factory=dict)
    metadata: JsonObject = field(default_factory=dict)
    request_id: str | None = None
    app_name: str = DEFAULT_APP
    session_id: str | None = None
    """The client's id for the session (canonical UUID); None lets the server choose one."""


@dataclass(frozen=True)
class SessionPatch:
    """The fields an UpdateSession changes: only those named in `fields` are applied."""

    session_id: str
    owner: Owner
    fields: frozenset[str]
    title: str = ""
    status: SessionStatus | None = None
    conversation_data: JsonObject = field(default_factory=dict)
    metadata: JsonObject = field(default_factory=dict)
    etag: str = ""


@dataclass(frozen=True)
class MessageBody:
    """What the writer of one message says about it (AddMessage's fields, one entry of AddMessages)."""

    role: Role
    message_type: MessageType
    content: str
    tokens_used: int = 0
    cost: Decimal = Decimal(0)
    metadata: JsonObject = field(default_factory=dict)
    payload: bytes = b""
    """Stored as given and never parsed (b"": none)."""
    payload_type: str = ""
    """The payload's media type, required with one."""
    event_time: datetime | None = None
    """The event's own time, to the microsecond; None: the server's clock at the append."""


@dataclass(frozen=True)
class StateDelta:
    """A change to one JSON state object: top-level keys of `set` replace theirs, then the keys
    in `delete` go. Storage merges it in the statement that writes, never in Python."""

    set: JsonObject = field(default_factory=dict)
    delete: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.delete)


@dataclass(frozen=True)
class ScopedStateDelta:
    """Deltas for the three scopes of a session: its own state (conversation_data), the state of
    its (app_name, user_id) and of its app_name. None leaves a scope untouched."""

    session: StateDelta | None = None
    user: StateDelta | None = None
    app: StateDelta | None = None
    max_bytes: int = 64 * 1024
    """The longest JSON text a state these deltas produce may have (Limits.struct_bytes)."""

    def __bool__(self) -> bool:
        return any((self.session, self.user, self.app))


NO_STATE_DELTA = ScopedStateDelta()


@dataclass(frozen=True)
class StateUpdate:
    """UpdateState: deltas applied through a session, without a message."""

    session: SessionRef
    delta: ScopedStateDelta
    request_id: str | None = None


@dataclass(frozen=True)
class UserState:
    app_name: str
    user_id: str
    state: JsonObject
    update_time: datetime | None
    """None: nothing was ever set."""


@dataclass(frozen=True)
class AppState:
    app_name: str
    state: JsonObject
    update_time: datetime | None
    """None: nothing was ever set."""


@dataclass(frozen=True)
class UserStateRef:
    app_name: str
    user_id: str


@dataclass(frozen=True)
class SessionState:
    """A session with the state of its (app_name, user_id) and of its app_name."""

    session: Session
    user_state: UserState
    app_state: AppState


@dataclass(frozen=True)
class NewMessage:
    session_id: str
    owner: Owner
    role: Role
    message_type: MessageType
    content: str
    tokens_used: int = 0
    cost: Decimal = Decimal(0)
    metadata: JsonObject = field(default_factory=dict)
    request_id: str | None = None
    expected_last_sequence: int | None = None
    """Append only if the session's message_count is this (None: no condition)."""
    expected_etag: str = ""
    """Append only if the session's etag is this ("": no condition)."""
    state_delta: ScopedStateDelta = NO_STATE_DELTA
    """Applied in the statement that appends, or not at all."""
    payload: bytes = b""
    """Stored as given and never parsed (b"": none)."""
    payload_type: str = ""
    """The payload's media type, required with one."""
    event_time: datetime | None = None
    """The event's own time, to the microsecond; None: the server's clock at the append."""

    def as_batch(self) -> NewMessages:
        """The same append as a batch of one: storage has one insert path for both RPCs."""
        body = MessageBody(
            self.role, self.message_type, self.content, self.tokens_used, self.cost, self.metadata, self.payload,
            self.payload_type, self.event_time,
        )
        return NewMessages(
            self.session_id, self.owner, [body], self.request_id, self.expected_last_sequence, self.expected_etag,
            self.state_delta,
        )


@dataclass(frozen=True)
class NewMessages:
    """An append of one or more messages, all or none, with contiguous sequences in list order."""

    session_id: str
    owner: Owner
    messages: list[MessageBody]
    request_id: str | None = None
    """Makes the batch idempotent as a whole (per session)."""
    expected_last_sequence: int | None = None
    """Append only if the session's message_count is this (None: no condition)."""
    expected_etag: str = ""
    """Append only if the session's etag is this ("": no condition)."""
    state_delta: ScopedStateDelta = NO_STATE_DELTA
    """Applied in the statement that appends, or not at all."""


@dataclass(frozen=True)
class Fork:
    """ForkSession: a copy of a session's first messages, state and memory as a new session."""

    source: SessionRef
    last_sequence: int | None = None
    """Copy messages 1..last_sequence; None: all."""
    request_id: str | None = None
    """Per user, like NewSession.request_id: a repeat returns the first fork."""
    fork_session_id: str | None = None
    """The client's id for the fork (canonical UUID); None lets the server choose one."""


@dataclass(frozen=True)
class Rewind:
    """TruncateSession: remove a session's messages after last_sequence."""

    session: SessionRef
    last_sequence: int
    request_id: str | None = None


@dataclass(frozen=True)
class Rewound:
    """The session after a rewind, and how many messages the rewind removed."""

    session: Session
    removed_count: int


@dataclass(frozen=True)
class NewMemory:
    session_id: str
    owner: Owner
    conversation_summary: str = ""
    facts: list[str] = field(default_factory=list)
    preferences: JsonObject = field(default_factory=dict)
    metadata: JsonObject = field(default_factory=dict)


@dataclass(frozen=True)
class MemoryPatch:
    """The fields an UpdateMemory changes: only those named in `fields` are applied."""

    memory: NewMemory
    fields: frozenset[str]
    etag: str = ""
    allow_missing: bool = False


@dataclass(frozen=True)
class SessionSummary:
    session: Session
    message_counts_by_role: dict[Role, int]
    has_memory: bool
    first_message_time: datetime | None
    last_message_time: datetime | None


@dataclass(frozen=True)
class AppStats:
    app_name: str
    session_count: int
    message_count: int
    total_tokens: int
    total_cost: Decimal
    distinct_users: int


@dataclass(frozen=True)
class ServiceStats:
    total_sessions: int
    sessions_by_status: dict[SessionStatus, int]
    total_messages: int
    total_tokens: int
    total_cost: Decimal
    distinct_users: int
    apps: list[AppStats] = field(default_factory=list)
    """Per application, by app_name, from the same snapshot as the totals."""

    @property
    def average_messages_per_session(self) -> float:
        return self.total_messages / self.total_sessions if self.total_sessions else 0.0


@dataclass(frozen=True)
class SessionKey:
    """Position of a session in a newest-first listing (keyset pagination): its time in the
    listing's order (create_time, or last_activity_time) and its id."""

    time: datetime
    session_id: str


class SessionOrder(enum.StrEnum):
    """The column a listing of sessions is ordered by, newest first (then id, descending)."""

    CREATE_TIME = "create_time"
    LAST_ACTIVITY_TIME = "last_activity_time"


@dataclass(frozen=True)
class SessionsQuery:
    """One page of a user's sessions (or of an app's, across its users), newest first (by creation
    or by last activity), filtered."""

    user_id: str | None
    """Whose sessions; None for every user's (then app_name is set)."""
    status: SessionStatus | None
    app_name: str | None
    """Only this app's sessions; None for every app."""
    page_size: int
    after: SessionKey | None
    """The key to continue after; None starts at the newest."""
    scope: dict[str, Any]
    """What a page token of this query is bound to (its filters)."""
    byte_budget: int
    """Sessions that start past this many bytes (title and JSON fields) wait for the next page."""
    statuses: list[SessionStatus] | None = None
    """Only sessions in one of these (None: any). `status` is the one-status form of the same."""
    create_time_start: datetime | None = None
    create_time_end: datetime | None = None
    update_time_start: datetime | None = None
    update_time_end: datetime | None = None
    """Time ranges, start inclusive, end exclusive (None: open)."""
    metadata_contains: JsonObject | None = None
    """Only sessions whose metadata contains this object (jsonb @>)."""
    title_contains: str | None = None
    """Only sessions whose title contains this text, ignoring case."""
    order: SessionOrder = SessionOrder.CREATE_TIME


@dataclass(frozen=True)
class MessagesQuery:
    """One page of a session's messages in sequence order (or newest first)."""

    session: SessionRef
    page_size: int
    position: int | None
    """The sequence to continue after (or before, when descending); None starts at the first page."""
    scope: dict[str, Any]
    """What a page token of this query is bound to (its session and order)."""
    byte_budget: int
    """Messages that start past this many bytes (content and metadata) wait for the next page."""
    descending: bool = False
    start_time: datetime | None = None
    """Only messages created at or after it (None: from the first)."""
    recent_count: int | None = None
    """Only the last this many (of those the other filters let through); None: all. Applies to the
    first page only: a later page continues after its token's position."""
    event_time_start: datetime | None = None
    """Only messages whose event time (or create time, without one) is at or after it; a filter of
    rows, not a range of sequences, since event times are the writer's."""


@dataclass(frozen=True)
class SearchKey:
    """Position of a result in a search's best-first order (keyset pagination)."""

    rank: float
    message_id: str


@dataclass(frozen=True)
class MessageSearch:
    """One page of a full-text search over messages, best first."""

    query: str
    """What the user typed (websearch_to_tsquery syntax)."""
    config: str
    """The text search configuration the query is parsed in (the stored vectors' one)."""
    owner: Owner
    """The user whose messages the call may find (None: any, an admin)."""
    user_id: str | None
    """Only this user's messages; None for every user (an admin's search)."""
    app_name: str | None
    session_ids: list[str] | None
    roles: list[Role] | None
    start_time: datetime | None
    end_time: datetime | None
    page_size: int
    after: SearchKey | None
    scope: dict[str, Any]
    """What a page token of this search is bound to."""
    byte_budget: int
    """Results that start past this many bytes (content and metadata) wait for the next page."""


@dataclass(frozen=True)
class SearchHit:
    message: Message
    snippet: str
    rank: float


@dataclass(frozen=True)
class Page(Generic[T]):
    """Up to page_size items, whether more follow them, and the total the listing counts."""

    items: list[T]
    more: bool
    total: int


def etag_of(create_time: datetime, version: int) -> str:
    """Version plus creation time, so a record deleted and made again never repeats an etag."""
    micros = int(create_time.timestamp() * 1_000_000)
    return f'"{micros:x}-{version}"'
