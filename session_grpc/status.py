"""The one table from domain errors to gRPC status codes, and the google.rpc details each carries."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from .domain.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

ERROR_DOMAIN = "session-grpc"

STATUS_CODES: dict[type[DomainError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Aborted: grpc.StatusCode.ABORTED,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_code(error: DomainError) -> grpc.StatusCode:
    for kind in type(error).__mro__:
        if kind in STATUS_CODES:
            return STATUS_CODES[kind]
    return grpc.StatusCode.INTERNAL


# Status details travel in trailers, which clients cap at 8 KiB (soft) / 16 KiB (hard); past
# that they see RESOURCE_EXHAUSTED instead of the real error. Keep them well under.
MAX_MESSAGE_LENGTH = 1000
MAX_VIOLATIONS = 20
MAX_DESCRIPTION_LENGTH = 200


def _cut(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 3] + "..."


def to_rpc_status(error: DomainError) -> status_pb2.Status:
    code = status_code(error)
    details: list[Any] = []
    if isinstance(error, InvalidArgument):
        shown = error.violations[:MAX_VIOLATIONS]
        violations = [
            error_details_pb2.BadRequest.FieldViolation(
                field=_cut(v.field, MAX_DESCRIPTION_LENGTH), description=_cut(v.description, MAX_DESCRIPTION_LENGTH)
            )
            for v in shown
        ]
        if len(error.violations) > len(shown):
            violations.append(
                error_details_pb2.BadRequest.FieldViolation(
                    field="", description=f"and {len(error.violations) - len(shown)} more problems"
                )
            )
        details.append(error_details_pb2.BadRequest(field_violations=violations))
    else:
        details.append(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata))
    if isinstance(error, ResourceExhausted):
        details.append(
            error_details_pb2.QuotaFailure(
                violations=[error_details_pb2.QuotaFailure.Violation(subject=error.subject, description=error.description)]
            )
        )
    if isinstance(error, (NotFound, AlreadyExists)):
        details.append(
            error_details_pb2.ResourceInfo(resource_type=error.resource_type, resource_name=error.resource_name)
        )
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return status_pb2.Status(
        code=getattr(code_pb2, code.name), message=_cut(error.message, MAX_MESSAGE_LENGTH), details=packed
    )


def report(context: grpc.aio.ServicerContext, error: DomainError) -> None:
    """End the call with the status `error` stands for: code, message and google.rpc details.

    Set on the context, not raised with context.abort(): see session_grpc.boundary for why."""
    reported = rpc_status.to_status(to_rpc_status(error))
    context.set_code(reported.code)
    context.set_details(reported.details)
    context.set_trailing_metadata(reported.trailing_metadata)
