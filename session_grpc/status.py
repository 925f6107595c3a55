"""The one table from domain errors to gRPC status codes, and the google.rpc details each carries."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from . import deadlines
from .domain.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)

log = logging.getLogger(__name__)

ERROR_DOMAIN = "session-grpc"

STATUS_CODES: dict[type[DomainError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
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
        details.append(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN))
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


async def abort_with(context: grpc.aio.ServicerContext, error: DomainError) -> None:
    await context.abort_with_status(rpc_status.to_status(to_rpc_status(error)))


F = TypeVar("F", bound=Callable[..., Any])


async def _report(error: Exception, context: grpc.aio.ServicerContext, method: Callable[..., Any]) -> None:
    """Abort the call with the status `error` stands for; anything unplanned is a logged INTERNAL."""
    if isinstance(error, grpc.aio.AbortError):
        raise error
    if isinstance(error, DomainError):
        await abort_with(context, error)
    log.error("unexpected error in %s", method.__qualname__, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")


def _unary(method: F) -> F:
    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        deadlines.start_call(context.time_remaining())
        try:
            return await method(self, request, context)
        except Exception as error:
            await _report(error, context, method)

    return wrapper  # type: ignore[return-value]


def _streaming(method: F) -> F:
    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        deadlines.start_call(context.time_remaining())
        try:
            async for item in method(self, request, context):
                yield item
        except Exception as error:
            await _report(error, context, method)

    return wrapper  # type: ignore[return-value]


C = TypeVar("C", bound=type)


def maps_errors(cls: C) -> C:
    """Class decorator for servicers, the RPC boundary: every RPC method records the call's
    deadline for the database work (session_grpc.deadlines) and reports DomainErrors through
    STATUS_CODES."""
    for name, member in list(vars(cls).items()):
        if name[:1].isupper() and callable(member):
            wrap = _streaming if inspect.isasyncgenfunction(member) else _unary
            setattr(cls, name, wrap(member))
    return cls
