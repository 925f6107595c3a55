import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_STATUS_UNSPECIFIED: _ClassVar[SessionStatus]
    SESSION_STATUS_ACTIVE: _ClassVar[SessionStatus]
    SESSION_STATUS_COMPLETED: _ClassVar[SessionStatus]
    SESSION_STATUS_ENDED: _ClassVar[SessionStatus]
    SESSION_STATUS_ARCHIVED: _ClassVar[SessionStatus]
    SESSION_STATUS_EXPIRED: _ClassVar[SessionStatus]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_USER: _ClassVar[Role]
    ROLE_ASSISTANT: _ClassVar[Role]
    ROLE_SYSTEM: _ClassVar[Role]
    ROLE_TOOL: _ClassVar[Role]

class MessageType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_TYPE_UNSPECIFIED: _ClassVar[MessageType]
    MESSAGE_TYPE_CHAT: _ClassVar[MessageType]
    MESSAGE_TYPE_SYSTEM: _ClassVar[MessageType]
    MESSAGE_TYPE_TOOL_CALL: _ClassVar[MessageType]
    MESSAGE_TYPE_TOOL_RESULT: _ClassVar[MessageType]
    MESSAGE_TYPE_NOTIFICATION: _ClassVar[MessageType]

class ChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_KIND_UNSPECIFIED: _ClassVar[ChangeKind]
    CHANGE_KIND_SESSION_CREATED: _ClassVar[ChangeKind]
    CHANGE_KIND_SESSION_UPDATED: _ClassVar[ChangeKind]
    CHANGE_KIND_MESSAGE_ADDED: _ClassVar[ChangeKind]
    CHANGE_KIND_MESSAGES_REMOVED: _ClassVar[ChangeKind]
    CHANGE_KIND_MEMORY_CHANGED: _ClassVar[ChangeKind]
    CHANGE_KIND_MEMORY_DELETED: _ClassVar[ChangeKind]
    CHANGE_KIND_SESSION_DELETED: _ClassVar[ChangeKind]

class UsageBucket(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USAGE_BUCKET_UNSPECIFIED: _ClassVar[UsageBucket]
    USAGE_BUCKET_HOUR: _ClassVar[UsageBucket]
    USAGE_BUCKET_DAY: _ClassVar[UsageBucket]
    USAGE_BUCKET_MONTH: _ClassVar[UsageBucket]
SESSION_STATUS_UNSPECIFIED: SessionStatus
SESSION_STATUS_ACTIVE: SessionStatus
SESSION_STATUS_COMPLETED: SessionStatus
SESSION_STATUS_ENDED: SessionStatus
SESSION_STATUS_ARCHIVED: SessionStatus
SESSION_STATUS_EXPIRED: SessionStatus
ROLE_UNSPECIFIED: Role
ROLE_USER: Role
ROLE_ASSISTANT: Role
ROLE_SYSTEM: Role
ROLE_TOOL: Role
MESSAGE_TYPE_UNSPECIFIED: MessageType
MESSAGE_TYPE_CHAT: MessageType
MESSAGE_TYPE_SYSTEM: MessageType
MESSAGE_TYPE_TOOL_CALL: MessageType
MESSAGE_TYPE_TOOL_RESULT: MessageType
MESSAGE_TYPE_NOTIFICATION: MessageType
CHANGE_KIND_UNSPECIFIED: ChangeKind
CHANGE_KIND_SESSION_CREATED: ChangeKind
CHANGE_KIND_SESSION_UPDATED: ChangeKind
CHANGE_KIND_MESSAGE_ADDED: ChangeKind
CHANGE_KIND_MESSAGES_REMOVED: ChangeKind
CHANGE_KIND_MEMORY_CHANGED: ChangeKind
CHANGE_KIND_MEMORY_DELETED: ChangeKind
CHANGE_KIND_SESSION_DELETED: ChangeKind
USAGE_BUCKET_UNSPECIFIED: UsageBucket
USAGE_BUCKET_HOUR: UsageBucket
USAGE_BUCKET_DAY: UsageBucket
USAGE_BUCKET_MONTH: UsageBucket

class Session(_message.Message):
    __slots__ = ("session_id", "user_id", "status", "title", "conversation_data", "metadata", "message_count", "total_tokens", "total_cost", "create_time", "update_time", "last_activity_time", "end_time", "etag", "app_name", "last_event_time", "forked_from_session_id", "forked_at_sequence")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_DATA_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVITY_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    FORKED_FROM_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FORKED_AT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    user_id: str
    status: SessionStatus
    title: str
    conversation_data: _struct_pb2.Struct
    metadata: _struct_pb2.Struct
    message_count: int
    total_tokens: int
    total_cost: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    last_activity_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    etag: str
    app_name: str
    last_event_time: _timestamp_pb2.Timestamp
    forked_from_session_id: str
    forked_at_sequence: int
    def __init__(self, session_id: _Optional[str] = ..., user_id: _Optional[str] = ..., status: _Optional[_Union[SessionStatus, str]] = ..., title: _Optional[str] = ..., conversation_data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., message_count: _Optional[int] = ..., total_tokens: _Optional[int] = ..., total_cost: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_activity_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ..., app_name: _Optional[str] = ..., last_event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., forked_from_session_id: _Optional[str] = ..., forked_at_sequence: _Optional[int] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("message_id", "session_id", "user_id", "sequence", "role", "message_type", "content", "tokens_used", "cost", "metadata", "create_time", "payload", "payload_type", "event_time")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_USED_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_TYPE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    session_id: str
    user_id: str
    sequence: int
    role: Role
    message_type: MessageType
    content: str
    tokens_used: int
    cost: str
    metadata: _struct_pb2.Struct
    create_time: _timestamp_pb2.Timestamp
    payload: bytes
    payload_type: str
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, message_id: _Optional[str] = ..., session_id: _Optional[str] = ..., user_id: _Optional[str] = ..., sequence: _Optional[int] = ..., role: _Optional[_Union[Role, str]] = ..., message_type: _Optional[_Union[MessageType, str]] = ..., content: _Optional[str] = ..., tokens_used: _Optional[int] = ..., cost: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., payload: _Optional[bytes] = ..., payload_type: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Memory(_message.Message):
    __slots__ = ("session_id", "user_id", "conversation_summary", "facts", "preferences", "metadata", "create_time", "update_time", "etag")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    user_id: str
    conversation_summary: str
    facts: _containers.RepeatedScalarFieldContainer[str]
    preferences: _struct_pb2.Struct
    metadata: _struct_pb2.Struct
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, session_id: _Optional[str] = ..., user_id: _Optional[str] = ..., conversation_summary: _Optional[str] = ..., facts: _Optional[_Iterable[str]] = ..., preferences: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class RoleCount(_message.Message):
    __slots__ = ("role", "message_count")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    role: Role
    message_count: int
    def __init__(self, role: _Optional[_Union[Role, str]] = ..., message_count: _Optional[int] = ...) -> None: ...

class SessionSummary(_message.Message):
    __slots__ = ("session_id", "status", "message_count", "total_tokens", "total_cost", "message_counts_by_role", "has_memory", "first_message_time", "last_message_time", "create_time", "last_activity_time", "user_id", "title")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_COUNTS_BY_ROLE_FIELD_NUMBER: _ClassVar[int]
    HAS_MEMORY_FIELD_NUMBER: _ClassVar[int]
    FIRST_MESSAGE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_MESSAGE_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVITY_TIME_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    status: SessionStatus
    message_count: int
    total_tokens: int
    total_cost: str
    message_counts_by_role: _containers.RepeatedCompositeFieldContainer[RoleCount]
    has_memory: bool
    first_message_time: _timestamp_pb2.Timestamp
    last_message_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    last_activity_time: _timestamp_pb2.Timestamp
    user_id: str
    title: str
    def __init__(self, session_id: _Optional[str] = ..., status: _Optional[_Union[SessionStatus, str]] = ..., message_count: _Optional[int] = ..., total_tokens: _Optional[int] = ..., total_cost: _Optional[str] = ..., message_counts_by_role: _Optional[_Iterable[_Union[RoleCount, _Mapping]]] = ..., has_memory: _Optional[bool] = ..., first_message_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_message_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_activity_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., user_id: _Optional[str] = ..., title: _Optional[str] = ...) -> None: ...

class StatusCount(_message.Message):
    __slots__ = ("status", "session_count")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SESSION_COUNT_FIELD_NUMBER: _ClassVar[int]
    status: SessionStatus
    session_count: int
    def __init__(self, status: _Optional[_Union[SessionStatus, str]] = ..., session_count: _Optional[int] = ...) -> None: ...

class ServiceStats(_message.Message):
    __slots__ = ("total_sessions", "sessions_by_status", "total_messages", "total_tokens", "total_cost", "distinct_users", "average_messages_per_session", "apps")
    TOTAL_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_BY_STATUS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_USERS_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_MESSAGES_PER_SESSION_FIELD_NUMBER: _ClassVar[int]
    APPS_FIELD_NUMBER: _ClassVar[int]
    total_sessions: int
    sessions_by_status: _containers.RepeatedCompositeFieldContainer[StatusCount]
    total_messages: int
    total_tokens: int
    total_cost: str
    distinct_users: int
    average_messages_per_session: float
    apps: _containers.RepeatedCompositeFieldContainer[AppStats]
    def __init__(self, total_sessions: _Optional[int] = ..., sessions_by_status: _Optional[_Iterable[_Union[StatusCount, _Mapping]]] = ..., total_messages: _Optional[int] = ..., total_tokens: _Optional[int] = ..., total_cost: _Optional[str] = ..., distinct_users: _Optional[int] = ..., average_messages_per_session: _Optional[float] = ..., apps: _Optional[_Iterable[_Union[AppStats, _Mapping]]] = ...) -> None: ...

class AppStats(_message.Message):
    __slots__ = ("app_name", "session_count", "message_count", "total_tokens", "total_cost", "distinct_users")
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    SESSION_COUNT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_USERS_FIELD_NUMBER: _ClassVar[int]
    app_name: str
    session_count: int
    message_count: int
    total_tokens: int
    total_cost: str
    distinct_users: int
    def __init__(self, app_name: _Optional[str] = ..., session_count: _Optional[int] = ..., message_count: _Optional[int] = ..., total_tokens: _Optional[int] = ..., total_cost: _Optional[str] = ..., distinct_users: _Optional[int] = ...) -> None: ...

class StateDelta(_message.Message):
    __slots__ = ("set", "delete")
    SET_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    set: _struct_pb2.Struct
    delete: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, set: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., delete: _Optional[_Iterable[str]] = ...) -> None: ...

class ScopedStateDelta(_message.Message):
    __slots__ = ("session_state", "user_state", "app_state")
    SESSION_STATE_FIELD_NUMBER: _ClassVar[int]
    USER_STATE_FIELD_NUMBER: _ClassVar[int]
    APP_STATE_FIELD_NUMBER: _ClassVar[int]
    session_state: StateDelta
    user_state: StateDelta
    app_state: StateDelta
    def __init__(self, session_state: _Optional[_Union[StateDelta, _Mapping]] = ..., user_state: _Optional[_Union[StateDelta, _Mapping]] = ..., app_state: _Optional[_Union[StateDelta, _Mapping]] = ...) -> None: ...

class UserState(_message.Message):
    __slots__ = ("app_name", "user_id", "state", "update_time")
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    app_name: str
    user_id: str
    state: _struct_pb2.Struct
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, app_name: _Optional[str] = ..., user_id: _Optional[str] = ..., state: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AppState(_message.Message):
    __slots__ = ("app_name", "state", "update_time")
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    app_name: str
    state: _struct_pb2.Struct
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, app_name: _Optional[str] = ..., state: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateSessionRequest(_message.Message):
    __slots__ = ("user_id", "title", "conversation_data", "metadata", "request_id", "app_name", "session_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_DATA_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    title: str
    conversation_data: _struct_pb2.Struct
    metadata: _struct_pb2.Struct
    request_id: str
    app_name: str
    session_id: str
    def __init__(self, user_id: _Optional[str] = ..., title: _Optional[str] = ..., conversation_data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., request_id: _Optional[str] = ..., app_name: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class CreateSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id", "include_scoped_state")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SCOPED_STATE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    include_scoped_state: bool
    def __init__(self, session_id: _Optional[str] = ..., include_scoped_state: _Optional[bool] = ...) -> None: ...

class GetSessionResponse(_message.Message):
    __slots__ = ("session", "user_state", "app_state")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    USER_STATE_FIELD_NUMBER: _ClassVar[int]
    APP_STATE_FIELD_NUMBER: _ClassVar[int]
    session: Session
    user_state: UserState
    app_state: AppState
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ..., user_state: _Optional[_Union[UserState, _Mapping]] = ..., app_state: _Optional[_Union[AppState, _Mapping]] = ...) -> None: ...

class UpdateSessionRequest(_message.Message):
    __slots__ = ("session", "update_mask")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    session: Session
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class EndSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class EndSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class DeleteSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class DeleteSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("user_id", "status", "page_size", "page_token", "app_name", "statuses", "create_time_start", "create_time_end", "update_time_start", "update_time_end", "metadata_contains", "title_contains", "order_by")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_START_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_END_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_START_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_END_FIELD_NUMBER: _ClassVar[int]
    METADATA_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    TITLE_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    status: SessionStatus
    page_size: int
    page_token: str
    app_name: str
    statuses: _containers.RepeatedScalarFieldContainer[SessionStatus]
    create_time_start: _timestamp_pb2.Timestamp
    create_time_end: _timestamp_pb2.Timestamp
    update_time_start: _timestamp_pb2.Timestamp
    update_time_end: _timestamp_pb2.Timestamp
    metadata_contains: _struct_pb2.Struct
    title_contains: str
    order_by: str
    def __init__(self, user_id: _Optional[str] = ..., status: _Optional[_Union[SessionStatus, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., app_name: _Optional[str] = ..., statuses: _Optional[_Iterable[_Union[SessionStatus, str]]] = ..., create_time_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metadata_contains: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., title_contains: _Optional[str] = ..., order_by: _Optional[str] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions", "next_page_token", "total_size")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[Session]
    next_page_token: str
    total_size: int
    def __init__(self, sessions: _Optional[_Iterable[_Union[Session, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class GetSessionSummaryRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetSessionSummaryResponse(_message.Message):
    __slots__ = ("summary",)
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    summary: SessionSummary
    def __init__(self, summary: _Optional[_Union[SessionSummary, _Mapping]] = ...) -> None: ...

class GetServiceStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetServiceStatsResponse(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: ServiceStats
    def __init__(self, stats: _Optional[_Union[ServiceStats, _Mapping]] = ...) -> None: ...

class ExpireSessionsRequest(_message.Message):
    __slots__ = ("idle_for",)
    IDLE_FOR_FIELD_NUMBER: _ClassVar[int]
    idle_for: _duration_pb2.Duration
    def __init__(self, idle_for: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ExpireSessionsResponse(_message.Message):
    __slots__ = ("expired_count",)
    EXPIRED_COUNT_FIELD_NUMBER: _ClassVar[int]
    expired_count: int
    def __init__(self, expired_count: _Optional[int] = ...) -> None: ...

class ForkSessionRequest(_message.Message):
    __slots__ = ("session_id", "last_sequence", "request_id", "fork_session_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FORK_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    last_sequence: int
    request_id: str
    fork_session_id: str
    def __init__(self, session_id: _Optional[str] = ..., last_sequence: _Optional[int] = ..., request_id: _Optional[str] = ..., fork_session_id: _Optional[str] = ...) -> None: ...

class ForkSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class TruncateSessionRequest(_message.Message):
    __slots__ = ("session_id", "last_sequence", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    last_sequence: int
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., last_sequence: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class TruncateSessionResponse(_message.Message):
    __slots__ = ("session", "removed_message_count")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REMOVED_MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    session: Session
    removed_message_count: int
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ..., removed_message_count: _Optional[int] = ...) -> None: ...

class UpdateStateRequest(_message.Message):
    __slots__ = ("session_id", "state_delta", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_DELTA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    state_delta: ScopedStateDelta
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., state_delta: _Optional[_Union[ScopedStateDelta, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateStateResponse(_message.Message):
    __slots__ = ("session", "user_state", "app_state")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    USER_STATE_FIELD_NUMBER: _ClassVar[int]
    APP_STATE_FIELD_NUMBER: _ClassVar[int]
    session: Session
    user_state: UserState
    app_state: AppState
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ..., user_state: _Optional[_Union[UserState, _Mapping]] = ..., app_state: _Optional[_Union[AppState, _Mapping]] = ...) -> None: ...

class GetUserStateRequest(_message.Message):
    __slots__ = ("app_name", "user_id")
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    app_name: str
    user_id: str
    def __init__(self, app_name: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class GetUserStateResponse(_message.Message):
    __slots__ = ("user_state",)
    USER_STATE_FIELD_NUMBER: _ClassVar[int]
    user_state: UserState
    def __init__(self, user_state: _Optional[_Union[UserState, _Mapping]] = ...) -> None: ...

class GetAppStateRequest(_message.Message):
    __slots__ = ("app_name",)
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    app_name: str
    def __init__(self, app_name: _Optional[str] = ...) -> None: ...

class GetAppStateResponse(_message.Message):
    __slots__ = ("app_state",)
    APP_STATE_FIELD_NUMBER: _ClassVar[int]
    app_state: AppState
    def __init__(self, app_state: _Optional[_Union[AppState, _Mapping]] = ...) -> None: ...

class SessionChange(_message.Message):
    __slots__ = ("change_id", "session_id", "kind", "change_time", "session", "message", "memory", "changed_fields", "first_sequence")
    CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    change_id: int
    session_id: str
    kind: ChangeKind
    change_time: _timestamp_pb2.Timestamp
    session: Session
    message: Message
    memory: Memory
    changed_fields: _containers.RepeatedScalarFieldContainer[str]
    first_sequence: int
    def __init__(self, change_id: _Optional[int] = ..., session_id: _Optional[str] = ..., kind: _Optional[_Union[ChangeKind, str]] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., session: _Optional[_Union[Session, _Mapping]] = ..., message: _Optional[_Union[Message, _Mapping]] = ..., memory: _Optional[_Union[Memory, _Mapping]] = ..., changed_fields: _Optional[_Iterable[str]] = ..., first_sequence: _Optional[int] = ...) -> None: ...

class WatchSessionRequest(_message.Message):
    __slots__ = ("session_id", "after_change_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    after_change_id: int
    def __init__(self, session_id: _Optional[str] = ..., after_change_id: _Optional[int] = ...) -> None: ...

class WatchSessionResponse(_message.Message):
    __slots__ = ("change", "cursor")
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    change: SessionChange
    cursor: int
    def __init__(self, change: _Optional[_Union[SessionChange, _Mapping]] = ..., cursor: _Optional[int] = ...) -> None: ...

class WatchUserSessionsRequest(_message.Message):
    __slots__ = ("user_id", "after_change_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    after_change_id: int
    def __init__(self, user_id: _Optional[str] = ..., after_change_id: _Optional[int] = ...) -> None: ...

class WatchUserSessionsResponse(_message.Message):
    __slots__ = ("change", "cursor")
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    change: SessionChange
    cursor: int
    def __init__(self, change: _Optional[_Union[SessionChange, _Mapping]] = ..., cursor: _Optional[int] = ...) -> None: ...

class AddMessageRequest(_message.Message):
    __slots__ = ("session_id", "role", "message_type", "content", "tokens_used", "cost", "metadata", "request_id", "expected_last_sequence", "expected_etag", "payload", "payload_type", "event_time", "state_delta")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_USED_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ETAG_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_TYPE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_DELTA_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    role: Role
    message_type: MessageType
    content: str
    tokens_used: int
    cost: str
    metadata: _struct_pb2.Struct
    request_id: str
    expected_last_sequence: int
    expected_etag: str
    payload: bytes
    payload_type: str
    event_time: _timestamp_pb2.Timestamp
    state_delta: ScopedStateDelta
    def __init__(self, session_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., message_type: _Optional[_Union[MessageType, str]] = ..., content: _Optional[str] = ..., tokens_used: _Optional[int] = ..., cost: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., request_id: _Optional[str] = ..., expected_last_sequence: _Optional[int] = ..., expected_etag: _Optional[str] = ..., payload: _Optional[bytes] = ..., payload_type: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state_delta: _Optional[_Union[ScopedStateDelta, _Mapping]] = ...) -> None: ...

class AddMessageResponse(_message.Message):
    __slots__ = ("message", "app_name", "over_budget", "soft_limits_exceeded")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    OVER_BUDGET_FIELD_NUMBER: _ClassVar[int]
    SOFT_LIMITS_EXCEEDED_FIELD_NUMBER: _ClassVar[int]
    message: Message
    app_name: str
    over_budget: bool
    soft_limits_exceeded: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ..., app_name: _Optional[str] = ..., over_budget: _Optional[bool] = ..., soft_limits_exceeded: _Optional[_Iterable[str]] = ...) -> None: ...

class NewMessage(_message.Message):
    __slots__ = ("role", "message_type", "content", "tokens_used", "cost", "metadata", "payload", "payload_type", "event_time")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_USED_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_TYPE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    role: Role
    message_type: MessageType
    content: str
    tokens_used: int
    cost: str
    metadata: _struct_pb2.Struct
    payload: bytes
    payload_type: str
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, role: _Optional[_Union[Role, str]] = ..., message_type: _Optional[_Union[MessageType, str]] = ..., content: _Optional[str] = ..., tokens_used: _Optional[int] = ..., cost: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., payload: _Optional[bytes] = ..., payload_type: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AddMessagesRequest(_message.Message):
    __slots__ = ("session_id", "messages", "request_id", "expected_last_sequence", "expected_etag")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ETAG_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    messages: _containers.RepeatedCompositeFieldContainer[NewMessage]
    request_id: str
    expected_last_sequence: int
    expected_etag: str
    def __init__(self, session_id: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[NewMessage, _Mapping]]] = ..., request_id: _Optional[str] = ..., expected_last_sequence: _Optional[int] = ..., expected_etag: _Optional[str] = ...) -> None: ...

class AddMessagesResponse(_message.Message):
    __slots__ = ("messages", "app_name", "over_budget", "soft_limits_exceeded")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    OVER_BUDGET_FIELD_NUMBER: _ClassVar[int]
    SOFT_LIMITS_EXCEEDED_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    app_name: str
    over_budget: bool
    soft_limits_exceeded: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., app_name: _Optional[str] = ..., over_budget: _Optional[bool] = ..., soft_limits_exceeded: _Optional[_Iterable[str]] = ...) -> None: ...

class ListMessagesRequest(_message.Message):
    __slots__ = ("session_id", "page_size", "page_token", "order_by", "start_time", "recent_count", "event_time_start")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    RECENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_START_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    page_size: int
    page_token: str
    order_by: str
    start_time: _timestamp_pb2.Timestamp
    recent_count: int
    event_time_start: _timestamp_pb2.Timestamp
    def __init__(self, session_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., order_by: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., recent_count: _Optional[int] = ..., event_time_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListMessagesResponse(_message.Message):
    __slots__ = ("messages", "next_page_token", "total_size")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    next_page_token: str
    total_size: int
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class StreamMessagesRequest(_message.Message):
    __slots__ = ("session_id", "after_sequence", "page_size", "batched")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    BATCHED_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    after_sequence: int
    page_size: int
    batched: bool
    def __init__(self, session_id: _Optional[str] = ..., after_sequence: _Optional[int] = ..., page_size: _Optional[int] = ..., batched: _Optional[bool] = ...) -> None: ...

class StreamMessagesResponse(_message.Message):
    __slots__ = ("message", "messages")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    message: Message
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ...) -> None: ...

class SearchMessagesRequest(_message.Message):
    __slots__ = ("query", "user_id", "app_name", "session_ids", "roles", "start_time", "end_time", "page_size", "page_token")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    SESSION_IDS_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    query: str
    user_id: str
    app_name: str
    session_ids: _containers.RepeatedScalarFieldContainer[str]
    roles: _containers.RepeatedScalarFieldContainer[Role]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, query: _Optional[str] = ..., user_id: _Optional[str] = ..., app_name: _Optional[str] = ..., session_ids: _Optional[_Iterable[str]] = ..., roles: _Optional[_Iterable[_Union[Role, str]]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class SearchResult(_message.Message):
    __slots__ = ("message", "snippet", "rank")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SNIPPET_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    message: Message
    snippet: str
    rank: float
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ..., snippet: _Optional[str] = ..., rank: _Optional[float] = ...) -> None: ...

class SearchMessagesResponse(_message.Message):
    __slots__ = ("results", "next_page_token")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResult]
    next_page_token: str
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CreateMemoryRequest(_message.Message):
    __slots__ = ("session_id", "conversation_summary", "facts", "preferences", "metadata")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    conversation_summary: str
    facts: _containers.RepeatedScalarFieldContainer[str]
    preferences: _struct_pb2.Struct
    metadata: _struct_pb2.Struct
    def __init__(self, session_id: _Optional[str] = ..., conversation_summary: _Optional[str] = ..., facts: _Optional[_Iterable[str]] = ..., preferences: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class CreateMemoryResponse(_message.Message):
    __slots__ = ("memory",)
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    memory: Memory
    def __init__(self, memory: _Optional[_Union[Memory, _Mapping]] = ...) -> None: ...

class GetMemoryRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetMemoryResponse(_message.Message):
    __slots__ = ("memory",)
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    memory: Memory
    def __init__(self, memory: _Optional[_Union[Memory, _Mapping]] = ...) -> None: ...

class UpdateMemoryRequest(_message.Message):
    __slots__ = ("memory", "update_mask", "allow_missing")
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MISSING_FIELD_NUMBER: _ClassVar[int]
    memory: Memory
    update_mask: _field_mask_pb2.FieldMask
    allow_missing: bool
    def __init__(self, memory: _Optional[_Union[Memory, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., allow_missing: _Optional[bool] = ...) -> None: ...

class UpdateMemoryResponse(_message.Message):
    __slots__ = ("memory",)
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    memory: Memory
    def __init__(self, memory: _Optional[_Union[Memory, _Mapping]] = ...) -> None: ...

class DeleteMemoryRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class DeleteMemoryResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Budget(_message.Message):
    __slots__ = ("user_id", "app_name", "daily_tokens", "monthly_tokens", "daily_cost", "monthly_cost", "soft", "update_time")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    DAILY_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MONTHLY_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DAILY_COST_FIELD_NUMBER: _ClassVar[int]
    MONTHLY_COST_FIELD_NUMBER: _ClassVar[int]
    SOFT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    app_name: str
    daily_tokens: int
    monthly_tokens: int
    daily_cost: str
    monthly_cost: str
    soft: bool
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, user_id: _Optional[str] = ..., app_name: _Optional[str] = ..., daily_tokens: _Optional[int] = ..., monthly_tokens: _Optional[int] = ..., daily_cost: _Optional[str] = ..., monthly_cost: _Optional[str] = ..., soft: _Optional[bool] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BudgetLimitUse(_message.Message):
    __slots__ = ("limit", "limit_value", "used", "remaining", "period_start")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_VALUE_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    limit: str
    limit_value: str
    used: str
    remaining: str
    period_start: _timestamp_pb2.Timestamp
    def __init__(self, limit: _Optional[str] = ..., limit_value: _Optional[str] = ..., used: _Optional[str] = ..., remaining: _Optional[str] = ..., period_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetBudgetRequest(_message.Message):
    __slots__ = ("user_id", "app_name")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    app_name: str
    def __init__(self, user_id: _Optional[str] = ..., app_name: _Optional[str] = ...) -> None: ...

class GetBudgetResponse(_message.Message):
    __slots__ = ("budget", "usage")
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    budget: Budget
    usage: _containers.RepeatedCompositeFieldContainer[BudgetLimitUse]
    def __init__(self, budget: _Optional[_Union[Budget, _Mapping]] = ..., usage: _Optional[_Iterable[_Union[BudgetLimitUse, _Mapping]]] = ...) -> None: ...

class SetBudgetRequest(_message.Message):
    __slots__ = ("budget",)
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    budget: Budget
    def __init__(self, budget: _Optional[_Union[Budget, _Mapping]] = ...) -> None: ...

class SetBudgetResponse(_message.Message):
    __slots__ = ("budget",)
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    budget: Budget
    def __init__(self, budget: _Optional[_Union[Budget, _Mapping]] = ...) -> None: ...

class DeleteBudgetRequest(_message.Message):
    __slots__ = ("user_id", "app_name")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    app_name: str
    def __init__(self, user_id: _Optional[str] = ..., app_name: _Optional[str] = ...) -> None: ...

class DeleteBudgetResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("user_id", "app_name", "bucket", "start_time", "end_time", "by_role")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    BY_ROLE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    app_name: str
    bucket: UsageBucket
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    by_role: bool
    def __init__(self, user_id: _Optional[str] = ..., app_name: _Optional[str] = ..., bucket: _Optional[_Union[UsageBucket, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., by_role: _Optional[bool] = ...) -> None: ...

class UsageBucketTotals(_message.Message):
    __slots__ = ("start_time", "role", "message_count", "total_tokens", "total_cost")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    role: Role
    message_count: int
    total_tokens: int
    total_cost: str
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., role: _Optional[_Union[Role, str]] = ..., message_count: _Optional[int] = ..., total_tokens: _Optional[int] = ..., total_cost: _Optional[str] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("buckets", "message_count", "total_tokens", "total_cost")
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_FIELD_NUMBER: _ClassVar[int]
    buckets: _containers.RepeatedCompositeFieldContainer[UsageBucketTotals]
    message_count: int
    total_tokens: int
    total_cost: str
    def __init__(self, buckets: _Optional[_Iterable[_Union[UsageBucketTotals, _Mapping]]] = ..., message_count: _Optional[int] = ..., total_tokens: _Optional[int] = ..., total_cost: _Optional[str] = ...) -> None: ...

class RetentionPolicy(_message.Message):
    __slots__ = ("app_name", "closed_session_ttl", "message_ttl", "max_messages_per_session", "update_time")
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    CLOSED_SESSION_TTL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_TTL_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGES_PER_SESSION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    app_name: str
    closed_session_ttl: _duration_pb2.Duration
    message_ttl: _duration_pb2.Duration
    max_messages_per_session: int
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, app_name: _Optional[str] = ..., closed_session_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., message_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_messages_per_session: _Optional[int] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetRetentionPolicyRequest(_message.Message):
    __slots__ = ("app_name",)
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    app_name: str
    def __init__(self, app_name: _Optional[str] = ...) -> None: ...

class GetRetentionPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: RetentionPolicy
    def __init__(self, policy: _Optional[_Union[RetentionPolicy, _Mapping]] = ...) -> None: ...

class SetRetentionPolicyRequest(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: RetentionPolicy
    def __init__(self, policy: _Optional[_Union[RetentionPolicy, _Mapping]] = ...) -> None: ...

class SetRetentionPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: RetentionPolicy
    def __init__(self, policy: _Optional[_Union[RetentionPolicy, _Mapping]] = ...) -> None: ...

class DeleteRetentionPolicyRequest(_message.Message):
    __slots__ = ("app_name",)
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    app_name: str
    def __init__(self, app_name: _Optional[str] = ...) -> None: ...

class DeleteRetentionPolicyResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class DeleteUserDataRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class DeleteUserDataResponse(_message.Message):
    __slots__ = ("session_count", "message_count", "memory_count", "user_state_count", "budget_count", "change_count", "other_counts", "erase_time")
    class OtherCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SESSION_COUNT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_COUNT_FIELD_NUMBER: _ClassVar[int]
    USER_STATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    BUDGET_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHANGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    OTHER_COUNTS_FIELD_NUMBER: _ClassVar[int]
    ERASE_TIME_FIELD_NUMBER: _ClassVar[int]
    session_count: int
    message_count: int
    memory_count: int
    user_state_count: int
    budget_count: int
    change_count: int
    other_counts: _containers.ScalarMap[str, int]
    erase_time: _timestamp_pb2.Timestamp
    def __init__(self, session_count: _Optional[int] = ..., message_count: _Optional[int] = ..., memory_count: _Optional[int] = ..., user_state_count: _Optional[int] = ..., budget_count: _Optional[int] = ..., change_count: _Optional[int] = ..., other_counts: _Optional[_Mapping[str, int]] = ..., erase_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ExportUserDataRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ExportUserDataResponse(_message.Message):
    __slots__ = ("lines",)
    LINES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lines: _Optional[_Iterable[str]] = ...) -> None: ...
