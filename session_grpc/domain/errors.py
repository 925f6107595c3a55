"""Domain errors. Storage and validation raise these; `session_grpc.status` maps them to gRPC.

    DomainError
    ├── InvalidArgument      one or more bad request fields
    ├── NotFound             the resource does not exist (or is not the caller's)
    ├── AlreadyExists        a resource that may exist once already does
    ├── FailedPrecondition   the resource is in the wrong state for the call
    ├── Unauthenticated      no valid credentials (token mode)
    ├── PermissionDenied     the caller may not do this (a suspended user, say)
    ├── ResourceExhausted    the caller is over a quota (calls in flight); retry after a backoff
    ├── Aborted              a concurrency conflict: stale etag, repeated serialization failure
    ├── DeadlineExceeded     the call's time ran out; its transaction was rolled back
    └── Unavailable          the database cannot be reached; safe to retry
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class DomainError(Exception):
    """Base of every error the service reports on purpose."""

    reason: str = "ERROR"

    def __init__(self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = dict(metadata or {})
        """ErrorInfo metadata (AIP-193: lowerCamelCase keys): what a client needs to act on the reason."""


class InvalidArgument(DomainError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = list(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(f"invalid request: {summary}")

    @classmethod
    def single(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class NotFound(DomainError):
    reason = "NOT_FOUND"

    def __init__(self, resource_type: str, resource_name: str) -> None:
        super().__init__(f"{resource_type} {resource_name!r} not found")
        self.resource_type = resource_type
        self.resource_name = resource_name


class AlreadyExists(DomainError):
    reason = "ALREADY_EXISTS"

    def __init__(self, resource_type: str, resource_name: str) -> None:
        super().__init__(f"{resource_type} {resource_name!r} already exists")
        self.resource_type = resource_type
        self.resource_name = resource_name


class FailedPrecondition(DomainError):
    reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    reason = "ABORTED"


class Unavailable(DomainError):
    reason = "DATABASE_UNAVAILABLE"


class DeadlineExceeded(DomainError):
    reason = "DEADLINE_EXCEEDED"


class PermissionDenied(DomainError):
    reason = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    reason = "UNAUTHENTICATED"


class ResourceExhausted(DomainError):
    """Over a quota: `subject` names what is limited (google.rpc.QuotaFailure), `description` how."""

    reason = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, reason: str, subject: str, description: str) -> None:
        super().__init__(message, reason=reason)
        self.subject = subject
        self.description = description
