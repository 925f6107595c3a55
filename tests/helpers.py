"""Small helpers the tests share: making entities through the API and reading error details."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

import socket
import time

import grpc
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc.server import SessionServer, running
from session_grpc.settings import Settings


@dataclass
class RpcFailure:
    code: grpc.StatusCode
    message: str
    field_violations: dict[str, str]
    reason: str | None
    resource_type: str | None
    quota_subject: str | None = None
    """The first google.rpc.QuotaFailure violation's subject (e.g. "user:carol"), when sent."""
    error_metadata: dict[str, str] = field(default_factory=dict)
    """google.rpc.ErrorInfo metadata, when sent."""


def failure(error: grpc.aio.AioRpcError) -> RpcFailure:
    """The code and the google.rpc details of a failed call."""
    violations: dict[str, str] = {}
    reason = resource_type = quota_subject = None
    error_metadata: dict[str, str] = {}
    # rpc_status also checks that the rich status agrees with the call's code and message.
    status = rpc_status.from_call(error) or status_pb2.Status()
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = {v.field: v.description for v in bad.field_violations}
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, error_metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            resource = error_details_pb2.ResourceInfo()
            detail.Unpack(resource)
            resource_type = resource.resource_type
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
            quota_subject = quota.violations[0].subject
    return RpcFailure(error.code(), error.details() or "", violations, reason, resource_type, quota_subject, error_metadata)


async def expect_failure(call) -> RpcFailure:
    """Await a call that must fail; return what it failed with."""
    try:
        result = await call
    except grpc.aio.AioRpcError as error:
        return failure(error)
    raise AssertionError(f"expected the call to fail, it returned {result}")


async def new_session(sessions, user_id: str = "user-1", **fields) -> pb.Session:
    response = await sessions.CreateSession(pb.CreateSessionRequest(user_id=user_id, **fields))
    return response.session


async def add(messages, session_id: str, content: str = "hello", **fields) -> pb.Message:
    fields.setdefault("role", pb.ROLE_USER)
    response = await messages.AddMessage(pb.AddMessageRequest(session_id=session_id, content=content, **fields))
    return response.message


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[SessionServer, grpc.aio.Channel]]:
    """A second server of a test's own (other settings than the shared one), with a channel to it."""
    async with running(settings) as server, grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield server, channel


def serving_with(database_url: str, **overrides: object) -> AbstractAsyncContextManager[tuple[SessionServer, grpc.aio.Channel]]:
    """`serving` with the test settings on `database_url`, changed by `overrides`."""
    from .conftest import test_settings

    return serving(test_settings(database_url, **overrides))


async def set_status(sessions, session_id: str, status: int) -> pb.Session:
    response = await sessions.UpdateSession(
        pb.UpdateSessionRequest(
            session=pb.Session(session_id=session_id, status=status),
            update_mask=field_mask_pb2.FieldMask(paths=["status"]),
        )
    )
    return response.session


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    """Until something accepts connections on 127.0.0.1:`port` (a server process starting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


async def statements_waiting_for_a_lock(sql) -> int:
    """How many statements of this database wait for a lock now. pg_stat_activity is read once
    per transaction, so the snapshot is cleared first (the caller may hold a lock in one)."""
    await sql.execute("SELECT pg_stat_clear_snapshot()")
    return await sql.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
