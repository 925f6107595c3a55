"""Async Python client for session-grpc.

    from session_client import SessionClient

    async with SessionClient("localhost:8203") as client:
        session = await client.create_session("alice", title="Trip planning")

`pb` is the generated session.v1 module (messages and enums: pb.ROLE_USER, pb.SESSION_STATUS_ENDED, ...).
"""

from ._client import SessionClient, StateChange, state_delta
from ._config import ChannelOptions, RetryPolicy, TlsOptions
from ._drafts import Draft
from ._exceptions import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    SessionError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
    from_rpc_error,
)
from ._proto.session.v1 import session_pb2 as pb

__version__ = "0.1.0"

__all__ = [
    "SessionClient", "RetryPolicy", "TlsOptions", "ChannelOptions", "Draft", "pb", "StateChange", "state_delta",
    "SessionError", "Cancelled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
    "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
    "FieldViolation", "from_rpc_error",
]
