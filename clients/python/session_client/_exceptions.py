"""One exception class per gRPC status code, built from the failed call with its details unpacked.

    SessionError                 any failed call; .code, .message, .reason, .details
    ├── Cancelled                CANCELLED
    ├── Unknown                  UNKNOWN
    ├── InvalidArgument          INVALID_ARGUMENT; .field_violations from google.rpc.BadRequest
    ├── DeadlineExceeded         DEADLINE_EXCEEDED (also the client's own total retry deadline)
    ├── NotFound                 NOT_FOUND; .resource_type / .resource_name from google.rpc.ResourceInfo
    ├── AlreadyExists            ALREADY_EXISTS
    ├── PermissionDenied         PERMISSION_DENIED
    ├── ResourceExhausted        RESOURCE_EXHAUSTED
    ├── FailedPrecondition       FAILED_PRECONDITION; .reason, e.g. SESSION_NOT_ACTIVE
    ├── Aborted                  ABORTED; .reason, e.g. ETAG_MISMATCH
    ├── OutOfRange               OUT_OF_RANGE
    ├── Unimplemented            UNIMPLEMENTED
    ├── Internal                 INTERNAL
    ├── Unavailable              UNAVAILABLE: the only code the client retries
    ├── DataLoss                 DATA_LOSS
    └── Unauthenticated          UNAUTHENTICATED
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "SessionError", "Cancelled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
    "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
    "FieldViolation", "from_rpc_error",
]


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request, as the server's google.rpc.BadRequest names it."""

    field: str
    description: str


class SessionError(Exception):
    """A call failed. Subclasses stand for the status code; catch this one for any failure."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        details: tuple[any_pb2.Any, ...] = (),
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        """The raw google.rpc details (Any) the server sent."""
        self.attempts = attempts
        """How many times the client tried the call before giving up (0: refused before sending)."""
        self.reason: str | None = None
        """google.rpc.ErrorInfo reason (e.g. "SESSION_NOT_ACTIVE", "ETAG_MISMATCH"), when sent."""
        self.error_metadata: Mapping[str, str] = {}
        """google.rpc.ErrorInfo metadata, when sent."""
        self.field_violations: tuple[FieldViolation, ...] = ()
        """google.rpc.BadRequest field violations, when sent (INVALID_ARGUMENT)."""
        self.resource_type: str | None = None
        self.resource_name: str | None = None
        for detail in details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                self.reason, self.error_metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                self.field_violations = tuple(FieldViolation(v.field, v.description) for v in bad.field_violations)
            elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
                resource = error_details_pb2.ResourceInfo()
                detail.Unpack(resource)
                self.resource_type, self.resource_name = resource.resource_type, resource.resource_name

    def __str__(self) -> str:
        # The reason is shown only when it says more than the code (the server's generic reasons repeat it).
        extra = f" [{self.reason}]" if self.reason and self.reason != self.code.name else ""
        return f"{self.code.name}: {self.message}{extra}" if self.message else f"{self.code.name}{extra}"


class Cancelled(SessionError):
    code = grpc.StatusCode.CANCELLED


class Unknown(SessionError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(SessionError):
    """Bad input; `field_violations` names every bad field (`violations` maps field -> description)."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    @property
    def violations(self) -> dict[str, str]:
        return {v.field: v.description for v in self.field_violations}


class DeadlineExceeded(SessionError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(SessionError):
    """The session or memory does not exist; `resource_type`/`resource_name` say which."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(SessionError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(SessionError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(SessionError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(SessionError):
    """The resource is in the wrong state; `reason` says which rule (INVALID_STATUS_TRANSITION, SESSION_NOT_ACTIVE)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(SessionError):
    """A concurrency conflict; `reason` is ETAG_MISMATCH (re-read and retry), CONCURRENT_UPDATE,
    or STALE_SESSION (a conditional add_message: `last_sequence` is where the session is now)."""

    code = grpc.StatusCode.ABORTED

    @property
    def last_sequence(self) -> int | None:
        """The session's last sequence when a conditional append was stale (STALE_SESSION), else None."""
        value = self.error_metadata.get("lastSequence")
        return int(value) if value is not None and value.isdigit() else None


class OutOfRange(SessionError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(SessionError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(SessionError):
    code = grpc.StatusCode.INTERNAL


class Unavailable(SessionError):
    """The service (or its database) cannot be reached right now; the client retried it already."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(SessionError):
    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(SessionError):
    code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE: dict[grpc.StatusCode, type[SessionError]] = {
    cls.code: cls
    for cls in (
        Cancelled, Unknown, InvalidArgument, DeadlineExceeded, NotFound, AlreadyExists, PermissionDenied,
        ResourceExhausted, FailedPrecondition, Aborted, OutOfRange, Unimplemented, Internal, Unavailable,
        DataLoss, Unauthenticated,
    )
}


def _status_details(error: grpc.RpcError) -> tuple[any_pb2.Any, ...]:
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except Exception:  # noqa: BLE001 - a detail we cannot parse is a detail we do not have
                return ()
            return tuple(status.details)
    return ()


def invalid_argument(field: str, description: str) -> InvalidArgument:
    """A request the client refuses before sending it (attempts 0), shaped like the server's refusals:
    the same google.rpc.BadRequest detail, so `violations` works the same way."""
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field=field, description=description)]
    ))
    return InvalidArgument(f"{field}: {description}", details=(detail,), attempts=0)


def from_rpc_error(error: grpc.RpcError, *, attempts: int = 1) -> SessionError:
    """The most specific SessionError for a failed grpc call."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = (error.details() if hasattr(error, "details") else None) or ""
    cls = _BY_CODE.get(code, SessionError)
    return cls(message, details=_status_details(error), attempts=attempts)
