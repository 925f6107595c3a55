"""`SessionClient`: every RPC of session.v1 as a typed async method, with retries and typed errors."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, TypeVar

import grpc
from google.protobuf import duration_pb2, field_mask_pb2, struct_pb2
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, stop_before_delay, wait_random_exponential
from tenacity.stop import stop_base

from ._config import ChannelOptions, RetryPolicy, TlsOptions
from ._drafts import Draft
from ._exceptions import Unavailable, from_rpc_error, invalid_argument
from ._proto.session.v1 import session_pb2 as pb
from ._proto.session.v1 import session_pb2_grpc as rpc

T = TypeVar("T")

JsonObject = Mapping[str, Any]
Cost = Decimal | str | int


REFUSED_BEFORE_RUNNING = frozenset({"TOO_MANY_CALLS_IN_FLIGHT"})
"""RESOURCE_EXHAUSTED reasons for calls the server refused before running them (the caller's
share of calls in flight was full): any call, a write included, may be repeated after a backoff."""


def _is_unavailable(error: BaseException) -> bool:
    """UNAVAILABLE: retried for calls that are safe to repeat (reads, writes with a request_id)."""
    return isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.UNAVAILABLE


def _refused_before_running(error: BaseException) -> bool:
    """RESOURCE_EXHAUSTED with a reason in REFUSED_BEFORE_RUNNING: retried for every call. Other
    RESOURCE_EXHAUSTED (a request over the size limit) would fail again and is not retried."""
    return (
        isinstance(error, grpc.aio.AioRpcError)
        and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        and from_rpc_error(error).reason in REFUSED_BEFORE_RUNNING
    )


def _is_retryable(error: BaseException) -> bool:
    return _is_unavailable(error) or _refused_before_running(error)


def _struct(value: JsonObject | struct_pb2.Struct | None) -> struct_pb2.Struct | None:
    return None if value is None else _struct_of(value)


def _struct_of(value: JsonObject | struct_pb2.Struct) -> struct_pb2.Struct:
    if isinstance(value, struct_pb2.Struct):
        return value
    struct = struct_pb2.Struct()
    struct.update(dict(value))
    return struct


StateChange = JsonObject | pb.StateDelta
"""A change to one scope's state: a mapping of top-level keys to set, or a pb.StateDelta (which
can also delete keys; build one with `state_delta`)."""


def state_delta(set: JsonObject | None = None, delete: Iterable[str] = ()) -> pb.StateDelta:  # noqa: A002
    """A StateDelta: top-level keys of `set` replace theirs (nested objects whole), then the keys in
    `delete` are removed. A key may not be in both."""
    return pb.StateDelta(set=_struct(set), delete=list(delete))


def _scoped(session: StateChange | None, user: StateChange | None, app: StateChange | None) -> pb.ScopedStateDelta | None:
    """The ScopedStateDelta of a write, or None when it changes no state."""
    if session is None and user is None and app is None:
        return None

    def one(change: StateChange | None) -> pb.StateDelta | None:
        if change is None or isinstance(change, pb.StateDelta):
            return change
        return state_delta(change)

    return pb.ScopedStateDelta(session_state=one(session), user_state=one(user), app_state=one(app))


def _enum(wrapper: Any, prefix: str, value: int | str, field: str) -> Any:
    """Accept the enum value itself, or its name with or without the prefix, any case ("user", "ROLE_USER").

    Any other name is InvalidArgument for `field` (the request's field path), naming the accepted ones.
    The number is returned as Any: protoc's stubs type enum fields as the enum's class, an int at run time.
    """
    if isinstance(value, int):
        return value
    name = str(value).upper()
    try:
        return int(wrapper.Value(name if name.startswith(prefix) else prefix + name))
    except ValueError:
        accepted = [key[len(prefix):].lower() for key in wrapper.keys() if not key.endswith("_UNSPECIFIED")]
        raise invalid_argument(
            field, f"{value!r} is not one of {', '.join(accepted)} (or their {prefix}* names)"
        ) from None


def _instant(value: datetime | float, field: str) -> datetime:
    """A point in time from an aware datetime or from seconds since the epoch (a float, as Google
    ADK keeps them: converted as datetime.fromtimestamp does, to the nearest microsecond)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise invalid_argument(field, "must be timezone-aware (a naive datetime is no instant)")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{field} must be a datetime or seconds since the epoch")
    return datetime.fromtimestamp(value, timezone.utc)


def _draft(draft: Draft, index: int) -> pb.NewMessage:
    field = f"messages[{index}]"
    message = pb.NewMessage(
        role=_enum(pb.Role, "ROLE_", draft.role, f"{field}.role"),
        message_type=(
            _enum(pb.MessageType, "MESSAGE_TYPE_", draft.message_type, f"{field}.message_type")
            if draft.message_type is not None else None
        ),
        content=draft.content,
        tokens_used=draft.tokens_used,
        cost=_cost(draft.cost),
        metadata=_struct(draft.metadata),
        payload=draft.payload or b"",
        payload_type=draft.payload_type,
    )
    if draft.event_time is not None:
        message.event_time.FromDatetime(_instant(draft.event_time, f"{field}.event_time"))
    return message


def _cost(value: Cost | None) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


class _BearerToken(grpc.AuthMetadataPlugin):
    """Call credentials that add `authorization: Bearer <token>`; the token may be a callable for rotation."""

    def __init__(self, token: str | Callable[[], str]) -> None:
        self._token = token

    def __call__(self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback) -> None:
        token = self._token() if callable(self._token) else self._token
        callback((("authorization", f"Bearer {token}"),), None)


COMMIT_LSN = "session-commit-lsn"
READ_AFTER_LSN = "session-read-after-lsn"


async def _flatten(pages: AsyncIterator[list[Any]]) -> AsyncIterator[Any]:
    """The items of each page in turn; closing this closes `pages` (and so its call)."""
    try:
        async for page in pages:
            for item in page:
                yield item
    finally:
        await pages.aclose()  # type: ignore[attr-defined]


def _lsn_key(lsn: str) -> tuple[int, int]:
    high, _, low = lsn.partition("/")
    try:
        return int(high, 16), int(low, 16)
    except ValueError:
        return (-1, -1)


class SessionClient:
    """An async client of the session service.

        async with SessionClient("localhost:8203") as client:
            session = await client.create_session("alice", title="Trip planning")
            await client.add_message(session.session_id, "user", "Hello", tokens_used=3, cost="0.00002")
            async for message in client.stream_messages(session.session_id):
                print(message.sequence, message.content)

    Methods return the generated protobuf messages (`session_client.pb`) and raise a
    `SessionError` subclass per status code. Calls that fail with UNAVAILABLE are
    retried under `retry` when they are safe to repeat: reads, and the writes that
    carry a request_id (CreateSession, AddMessage; the client makes one when you give none).
    Calls refused with RESOURCE_EXHAUSTED reason TOO_MANY_CALLS_IN_FLIGHT never ran and are
    retried under the same policy, writes included.

    target:          "host:port" of the service.
    tls:             None for a plaintext channel; True (system roots) or TlsOptions for TLS.
    token:           a bearer token (or a callable returning one) sent with every call as call
                     credentials. gRPC only sends call credentials over TLS; to send it over a
                     plaintext channel (a local sidecar, tests) also pass insecure_token=True.
    timeout:         seconds each attempt may take; None for no per-attempt limit.
    retry:           the RetryPolicy for UNAVAILABLE and TOO_MANY_CALLS_IN_FLIGHT; RetryPolicy.disabled() turns retries off.
    channel_options: keepalive, message sizes and other channel arguments.
    metadata:        extra metadata sent with every call.
    channel:         an existing grpc.aio.Channel to use instead (the client will not close it).
    read_your_writes: remember the commit position each write answers with (trailing metadata
                     session-commit-lsn, sent by a server with a read standby) and send the
                     newest with every call (session-read-after-lsn), so reads served by the
                     standby include this client's own writes. Harmless without a standby.
    """

    def __init__(
        self,
        target: str = "localhost:8203",
        *,
        tls: bool | TlsOptions | None = None,
        token: str | Callable[[], str] | None = None,
        insecure_token: bool = False,
        timeout: float | None = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        channel_options: ChannelOptions = ChannelOptions(),
        metadata: Mapping[str, str] | None = None,
        channel: grpc.aio.Channel | None = None,
        read_your_writes: bool = True,
    ) -> None:
        self.target = target
        self.read_your_writes = read_your_writes
        self.commit_lsn: str | None = None
        """The newest commit position this client's writes were answered with (read_your_writes)."""
        self.timeout = timeout
        self.retry = retry
        self._metadata: tuple[tuple[str, str], ...] = tuple((metadata or {}).items())
        self._call_credentials: grpc.CallCredentials | None = None
        self._owns_channel = channel is None
        if channel is not None:
            self._channel = channel
        elif tls:
            tls_options = tls if isinstance(tls, TlsOptions) else TlsOptions()
            credentials = tls_options.credentials()
            if token is not None:
                credentials = grpc.composite_channel_credentials(
                    credentials, grpc.metadata_call_credentials(_BearerToken(token), name="bearer")
                )
            self._channel = grpc.aio.secure_channel(
                target, credentials, options=channel_options.as_grpc_options(tls_options.server_name_override)
            )
        else:
            if token is not None and not insecure_token:
                raise ValueError("a bearer token over a plaintext channel needs insecure_token=True (or use tls=...)")
            self._channel = grpc.aio.insecure_channel(target, options=channel_options.as_grpc_options())
        self._plain_token: _BearerToken | None = _BearerToken(token) if token is not None and not tls else None
        self._sessions = rpc.SessionServiceStub(self._channel)
        self._messages = rpc.MessageServiceStub(self._channel)
        self._memories = rpc.MemoryServiceStub(self._channel)
        self._usage = rpc.UsageServiceStub(self._channel)
        self._retention = rpc.RetentionServiceStub(self._channel)
        self._user_data = rpc.UserDataServiceStub(self._channel)

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> SessionClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel (when the client made it); calls in flight are cancelled."""
        if self._owns_channel:
            await self._channel.close()

    async def wait_until_ready(self, timeout: float = 10.0) -> None:
        """Wait until the channel connects; Unavailable when it does not within `timeout` seconds."""
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except TimeoutError:
            raise Unavailable(f"{self.target} did not answer within {timeout}s") from None

    # -- plumbing ------------------------------------------------------------------------------

    def _call_metadata(self) -> tuple[tuple[str, str], ...]:
        metadata = self._metadata
        if self.read_your_writes and self.commit_lsn is not None:
            metadata += ((READ_AFTER_LSN, self.commit_lsn),)
        if self._plain_token is None:
            return metadata
        headers: list[tuple[str, str]] = []
        self._plain_token(None, lambda items, error: headers.extend(items))
        return metadata + tuple(headers)

    def _note_commit(self, trailers: Any) -> None:
        """Keep the newest commit position a write answered with."""
        for key, value in trailers or ():
            if key == COMMIT_LSN and (self.commit_lsn is None or _lsn_key(value) > _lsn_key(self.commit_lsn)):
                self.commit_lsn = value

    def _retrying(self, retry: bool) -> AsyncRetrying:
        """`retry`: the call is safe to repeat after UNAVAILABLE. Any call is repeated after a
        refusal before running (REFUSED_BEFORE_RUNNING); RetryPolicy.disabled() turns both off."""
        policy = self.retry
        stop: stop_base = stop_after_attempt(max(1, policy.max_attempts))
        if policy.total_deadline is not None:
            stop = stop | stop_before_delay(policy.total_deadline)
        return AsyncRetrying(
            stop=stop,
            wait=wait_random_exponential(
                multiplier=policy.initial_backoff, max=policy.max_backoff, exp_base=policy.multiplier
            ),
            retry=retry_if_exception(_is_retryable if retry else _refused_before_running),
            reraise=True,
        )

    async def _unary(self, method: Callable[..., Awaitable[T]], request: Any, *, retry: bool) -> T:
        """One unary call under the retry policy; a failure becomes the matching SessionError."""
        started = time.monotonic()
        attempts = 0
        deadline = self.retry.total_deadline if retry else None

        async def attempt() -> T:
            nonlocal attempts
            attempts += 1
            timeout = self.timeout
            if deadline is not None:
                left = max(0.001, deadline - (time.monotonic() - started))
                timeout = left if timeout is None else min(timeout, left)
            call: Any = method(request, timeout=timeout, metadata=self._call_metadata())
            response: T = await call
            if self.read_your_writes:
                self._note_commit(await call.trailing_metadata())
            return response

        try:
            return await self._retrying(retry)(attempt)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, attempts=attempts) from None

    # -- SessionService ------------------------------------------------------------------------

    async def create_session(
        self,
        user_id: str,
        *,
        title: str = "",
        conversation_data: JsonObject | None = None,
        metadata: JsonObject | None = None,
        request_id: str | None = None,
        app_name: str = "",
        session_id: str = "",
    ) -> pb.Session:
        """Create an ACTIVE session for `user_id` (at most 255 characters; title at most 1000)
        in the application `app_name` (1-128 of A-Z a-z 0-9 . _ -; empty means "default").

        `session_id` (a UUID) chooses the new session's id; empty lets the server choose.
        AlreadyExists when a session (anyone's) has that id; a deleted session's id is free.
        `request_id` (a UUID) makes the call idempotent per user; one is generated when
        omitted, so a retry after UNAVAILABLE returns the same session instead of a second one
        (not AlreadyExists for the id it took). Raises InvalidArgument for an empty user_id or
        bad fields.
        """
        request = pb.CreateSessionRequest(
            user_id=user_id,
            title=title,
            conversation_data=_struct(conversation_data),
            metadata=_struct(metadata),
            request_id=request_id or str(uuid.uuid4()),
            app_name=app_name,
            session_id=session_id,
        )
        return (await self._unary(self._sessions.CreateSession, request, retry=True)).session

    async def get_session(self, session_id: str) -> pb.Session:
        """The session; NotFound when there is none."""
        request = pb.GetSessionRequest(session_id=session_id)
        return (await self._unary(self._sessions.GetSession, request, retry=True)).session

    async def get_session_with_state(self, session_id: str) -> pb.GetSessionResponse:
        """The session (`.session`) with the state of its user in its app (`.user_state.state`) and
        of its app (`.app_state.state`), read in one call; NotFound when there is no session."""
        request = pb.GetSessionRequest(session_id=session_id, include_scoped_state=True)
        return await self._unary(self._sessions.GetSession, request, retry=True)

    async def update_state(
        self,
        session_id: str,
        *,
        session_state: StateChange | None = None,
        user_state: StateChange | None = None,
        app_state: StateChange | None = None,
        request_id: str | None = None,
    ) -> pb.UpdateStateResponse:
        """Change the session's own state, its user's state in its app and its app's state, in one
        transaction on the server, without a message. Each is a mapping of keys to set, or a
        `state_delta(set, delete)`; None leaves that scope alone. Concurrent changes to different
        keys all land (the server merges them).

        `request_id` (a UUID) makes the call idempotent; one is generated when omitted, so a retry
        after UNAVAILABLE applies nothing twice (a repeat returns the states as they are then).
        Returns `.session`, `.user_state` and `.app_state` after the change. FailedPrecondition
        (STATE_TOO_LARGE) when a state would pass its limit; PermissionDenied (ADMIN_REQUIRED) for
        `app_state` without the admin scope (token mode); nothing is changed then.
        """
        request = pb.UpdateStateRequest(
            session_id=session_id,
            state_delta=_scoped(session_state, user_state, app_state),
            request_id=request_id or str(uuid.uuid4()),
        )
        return await self._unary(self._sessions.UpdateState, request, retry=True)

    async def get_user_state(self, user_id: str, *, app_name: str = "") -> pb.UserState:
        """The state of `user_id` in `app_name` ("default" when empty): `.state`, empty when
        nothing was ever set. In token mode a user reads only their own (PermissionDenied)."""
        request = pb.GetUserStateRequest(app_name=app_name, user_id=user_id)
        return (await self._unary(self._sessions.GetUserState, request, retry=True)).user_state

    async def get_app_state(self, app_name: str = "") -> pb.AppState:
        """The state of `app_name` ("default" when empty): `.state`, empty when nothing was ever set."""
        request = pb.GetAppStateRequest(app_name=app_name)
        return (await self._unary(self._sessions.GetAppState, request, retry=True)).app_state

    async def update_session(
        self,
        session_id: str,
        *,
        title: str | None = None,
        status: int | str | None = None,
        conversation_data: JsonObject | None = None,
        metadata: JsonObject | None = None,
        etag: str = "",
    ) -> pb.Session:
        """Change the given fields only (the others are left alone; the mask is built for you).

        With `etag` the update is conditional: Aborted (reason ETAG_MISMATCH) when the session
        changed since you read it. FailedPrecondition (INVALID_STATUS_TRANSITION) for a forbidden
        status move. Not retried: an update carries no request_id.
        """
        session = pb.Session(session_id=session_id, etag=etag)
        paths = []
        if title is not None:
            session.title = title
            paths.append("title")
        if status is not None:
            session.status = _enum(pb.SessionStatus, "SESSION_STATUS_", status, "session.status")
            paths.append("status")
        if conversation_data is not None:
            session.conversation_data.CopyFrom(_struct_of(conversation_data))
            paths.append("conversation_data")
        if metadata is not None:
            session.metadata.CopyFrom(_struct_of(metadata))
            paths.append("metadata")
        if not paths:
            raise ValueError("update_session needs at least one field to change")
        request = pb.UpdateSessionRequest(session=session, update_mask=field_mask_pb2.FieldMask(paths=paths))
        return (await self._unary(self._sessions.UpdateSession, request, retry=False)).session

    async def end_session(self, session_id: str) -> pb.Session:
        """Move the session to ENDED (end_time set); an ENDED or ARCHIVED one comes back unchanged."""
        request = pb.EndSessionRequest(session_id=session_id)
        return (await self._unary(self._sessions.EndSession, request, retry=False)).session

    async def delete_session(self, session_id: str) -> None:
        """Remove the session, its messages and its memory for good; NotFound when there is none."""
        await self._unary(self._sessions.DeleteSession, pb.DeleteSessionRequest(session_id=session_id), retry=False)

    async def list_sessions_page(
        self,
        user_id: str,
        *,
        status: int | str | None = None,
        page_size: int = 0,
        page_token: str = "",
        app_name: str = "",
        statuses: Sequence[int | str] = (),
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
        metadata_contains: JsonObject | struct_pb2.Struct | None = None,
        title_contains: str = "",
        by_last_activity: bool = False,
    ) -> pb.ListSessionsResponse:
        """One page of the user's sessions, newest first (page_size 1..1000; 0 means 50): by
        creation, or with by_last_activity=True by their latest message. Filters, all optional:
        the application `app_name` (every app when empty); a status, or several in `statuses`
        (not both); created or updated in [after, before) (timezone-aware); metadata containing
        `metadata_contains` (every key with an equal value); a title containing `title_contains`
        (ignoring case). user_id "" with an app_name: the app's sessions of every user (needs the
        sessions.admin scope in token mode; with a user's token, that user's own).

        The response has `sessions`, `next_page_token` (empty on the last page) and
        `total_size` (all matching sessions). InvalidArgument for a changed or foreign token
        (one from a listing with other filters or another order).
        """
        request = pb.ListSessionsRequest(
            user_id=user_id,
            status=_enum(pb.SessionStatus, "SESSION_STATUS_", status, "status") if status is not None else None,
            page_size=page_size,
            page_token=page_token,
            app_name=app_name,
            statuses=[_enum(pb.SessionStatus, "SESSION_STATUS_", s, "statuses") for s in statuses],
            metadata_contains=_struct(metadata_contains),
            title_contains=title_contains,
            order_by="last_activity_time desc" if by_last_activity else "",
        )
        for field, when in (
            ("create_time_start", created_after), ("create_time_end", created_before),
            ("update_time_start", updated_after), ("update_time_end", updated_before),
        ):
            if when is not None:
                if when.tzinfo is None:
                    raise invalid_argument(field, "must be timezone-aware (a naive datetime is no instant)")
                getattr(request, field).FromDatetime(when)
        return await self._unary(self._sessions.ListSessions, request, retry=True)

    async def list_sessions(
        self,
        user_id: str,
        *,
        status: int | str | None = None,
        page_size: int = 0,
        app_name: str = "",
        statuses: Sequence[int | str] = (),
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
        metadata_contains: JsonObject | struct_pb2.Struct | None = None,
        title_contains: str = "",
        by_last_activity: bool = False,
    ) -> AsyncIterator[pb.Session]:
        """Every session of the user that passes the filters (list_sessions_page's), in its
        order, fetched page by page as you iterate (user_id "" with an app_name: the app's sessions of
        every user, for an admin)."""
        token = ""
        while True:
            page = await self.list_sessions_page(
                user_id, status=status, page_size=page_size, page_token=token, app_name=app_name,
                statuses=statuses, created_after=created_after, created_before=created_before,
                updated_after=updated_after, updated_before=updated_before, metadata_contains=metadata_contains,
                title_contains=title_contains, by_last_activity=by_last_activity,
            )
            for session in page.sessions:
                yield session
            token = page.next_page_token
            if not token:
                return

    async def get_session_summary(self, session_id: str) -> pb.SessionSummary:
        """Exact totals of one session: counts (also by role), tokens, cost, first/last message time."""
        request = pb.GetSessionSummaryRequest(session_id=session_id)
        return (await self._unary(self._sessions.GetSessionSummary, request, retry=True)).summary

    async def get_service_stats(self) -> pb.ServiceStats:
        """Totals over all sessions, computed by the database on each call, with a breakdown
        per application in `apps` (one snapshot: they add up to the totals)."""
        return (await self._unary(self._sessions.GetServiceStats, pb.GetServiceStatsRequest(), retry=True)).stats

    async def expire_sessions(self, idle_for: timedelta | float) -> int:
        """Move ACTIVE sessions idle for longer than `idle_for` (seconds or timedelta, > 0) to EXPIRED.

        Returns how many this call moved. Not retried.
        """
        duration = duration_pb2.Duration()
        duration.FromTimedelta(idle_for if isinstance(idle_for, timedelta) else timedelta(seconds=idle_for))
        request = pb.ExpireSessionsRequest(idle_for=duration)
        return (await self._unary(self._sessions.ExpireSessions, request, retry=False)).expired_count

    async def fork_session(
        self,
        session_id: str,
        *,
        last_sequence: int | None = None,
        request_id: str | None = None,
        fork_session_id: str = "",
    ) -> pb.Session:
        """A new ACTIVE session (same user and app) holding a copy of the session's messages
        1..`last_sequence` (all when None), its title, state, metadata and memory; its
        `forked_from_session_id` and `forked_at_sequence` say where it came from, its totals are
        the exact sums over the copied messages. The source may be in any status.

        `fork_session_id` (a UUID) chooses the fork's id (AlreadyExists when taken). `request_id`
        makes the call idempotent per user; one is generated when omitted, so a retry after
        UNAVAILABLE returns the same fork. NotFound without the source; FailedPrecondition
        (FORK_TOO_LONG) past the server's SESSION_MAX_FORK_MESSAGES.
        """
        request = pb.ForkSessionRequest(
            session_id=session_id,
            last_sequence=last_sequence,
            request_id=request_id or str(uuid.uuid4()),
            fork_session_id=fork_session_id,
        )
        return (await self._unary(self._sessions.ForkSession, request, retry=True)).session

    async def truncate_session(
        self, session_id: str, last_sequence: int, *, request_id: str | None = None
    ) -> pb.TruncateSessionResponse:
        """Rewind the session: remove its messages after `last_sequence` (0 removes all) and their
        tokens and cost from its totals. The response has the `session` (new totals and etag) and
        `removed_message_count`.

        An append racing the rewind lands before it (and is removed) or after it (as
        last_sequence + 1). `request_id` makes the call idempotent per session; one is generated
        when omitted, so a retry after UNAVAILABLE removes nothing more (not even messages added
        since). FailedPrecondition (SESSION_NOT_ACTIVE) when the session is not ACTIVE.
        """
        request = pb.TruncateSessionRequest(
            session_id=session_id, last_sequence=last_sequence, request_id=request_id or str(uuid.uuid4())
        )
        return await self._unary(self._sessions.TruncateSession, request, retry=True)

    # -- MessageService ------------------------------------------------------------------------

    async def add_message(
        self,
        session_id: str,
        role: int | str,
        content: str,
        *,
        message_type: int | str | None = None,
        tokens_used: int = 0,
        cost: Cost | None = None,
        metadata: JsonObject | None = None,
        request_id: str | None = None,
        expected_last_sequence: int | None = None,
        expected_etag: str = "",
        payload: bytes | None = None,
        payload_type: str = "",
        event_time: datetime | float | None = None,
        session_state: StateChange | None = None,
        user_state: StateChange | None = None,
        app_state: StateChange | None = None,
    ) -> pb.Message:
        """Append a message; the server gives it the next sequence number and adds to the totals.

        role:         "user", "assistant", "system", "tool" (or pb.ROLE_*).
        content:      text; non-empty unless there is a payload.
        tokens_used:  0..1_000_000_000.
        cost:         exact non-negative decimal (Decimal("0.00015") or "0.00015"); never a float.
        request_id:   a UUID that makes the call idempotent per session; generated when omitted,
                      so a retry after UNAVAILABLE never adds the message twice.
        expected_last_sequence: append only if the session's last sequence (its message_count,
                      0 when empty) is this; otherwise Aborted with reason STALE_SESSION and
                      `last_sequence` set to the session's. Never retried: read what was added
                      since, then call again with the new value.
        expected_etag: append only if the session's etag (it changes with title, status, state and
                      metadata, not with messages) is this; otherwise Aborted with reason ETAG_MISMATCH
                      and `error_metadata["etag"]` the session's. Never retried either.
        payload:      bytes stored as sent and returned byte for byte by every read (a framework's
                      event or message serialized as JSON, say); at most SESSION_MAX_PAYLOAD_BYTES.
        payload_type: its media type ("application/json"); required with a payload.
        event_time:   when the event happened: a timezone-aware datetime, or seconds since the
                      epoch as a float (Google ADK's Event.timestamp), kept to the microsecond;
                      omitted, the server's clock. The session's last_event_time becomes it.
        session_state, user_state, app_state: changes to the session's own state, its user's
                      state in its app and its app's state (a mapping of keys to set, or a
                      `state_delta(set, delete)`), applied with the message or not at all.
                      FailedPrecondition (STATE_TOO_LARGE) when a state would pass its limit;
                      PermissionDenied (ADMIN_REQUIRED) for app_state without the admin scope.
        Raises FailedPrecondition (SESSION_NOT_ACTIVE) when the session is not ACTIVE,
        NotFound without the session, InvalidArgument for bad fields.
        """
        if isinstance(cost, float):
            raise TypeError("cost must be a Decimal or a decimal string, not a float")
        request = pb.AddMessageRequest(
            session_id=session_id,
            role=_enum(pb.Role, "ROLE_", role, "role"),
            message_type=_enum(pb.MessageType, "MESSAGE_TYPE_", message_type, "message_type") if message_type is not None else None,
            content=content,
            tokens_used=tokens_used,
            cost=_cost(cost),
            metadata=_struct(metadata),
            request_id=request_id or str(uuid.uuid4()),
            expected_last_sequence=expected_last_sequence,
            expected_etag=expected_etag,
            payload=payload or b"",
            payload_type=payload_type,
            state_delta=_scoped(session_state, user_state, app_state),
        )
        if event_time is not None:
            request.event_time.FromDatetime(_instant(event_time, "event_time"))
        return (await self._unary(self._messages.AddMessage, request, retry=True)).message

    async def add_messages(
        self,
        session_id: str,
        drafts: Sequence[Draft | pb.NewMessage],
        *,
        request_id: str | None = None,
        expected_last_sequence: int | None = None,
        expected_etag: str = "",
    ) -> list[pb.Message]:
        """Append several messages at once (at most the server's SESSION_MAX_BATCH_MESSAGES, 100 by
        default), all or none, in one statement: they get contiguous sequences in the order given,
        each adds its own tokens and cost. Returns them in sequence order.

        The conditions and errors are add_message's, for the batch as a whole; a bad draft is
        InvalidArgument naming it (`messages[2].content`). `request_id` makes the batch idempotent
        per session; one is generated when omitted, so a retry after UNAVAILABLE never adds it twice.
        """
        request = pb.AddMessagesRequest(
            session_id=session_id,
            messages=[draft if isinstance(draft, pb.NewMessage) else _draft(draft, n) for n, draft in enumerate(drafts)],
            request_id=request_id or str(uuid.uuid4()),
            expected_last_sequence=expected_last_sequence,
            expected_etag=expected_etag,
        )
        return list((await self._unary(self._messages.AddMessages, request, retry=True)).messages)

    async def list_messages_page(
        self,
        session_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        newest_first: bool = False,
        start_time: datetime | None = None,
        recent_count: int | None = None,
        event_time_start: datetime | None = None,
    ) -> pb.ListMessagesResponse:
        """One page of messages in sequence order (newest first with newest_first=True).

        page_size 1..1000; 0 means 100. `total_size` is the number of messages in the session.
        start_time (timezone-aware): only messages created at or after it. event_time_start
        (timezone-aware): only messages whose event time (the writer's, else the create time) is
        at or after it (ADK's after_timestamp). recent_count: only the last that many (of those),
        oldest first; 0 gives none (ADK's num_recent_events). A page_token works only with the
        same filters that produced it.
        """
        request = pb.ListMessagesRequest(
            session_id=session_id,
            page_size=page_size,
            page_token=page_token,
            order_by="sequence desc" if newest_first else "",
        )
        if start_time is not None:
            if start_time.tzinfo is None:
                raise invalid_argument("start_time", "must be timezone-aware (a naive datetime is no instant)")
            request.start_time.FromDatetime(start_time)
        if event_time_start is not None:
            if event_time_start.tzinfo is None:
                raise invalid_argument("event_time_start", "must be timezone-aware (a naive datetime is no instant)")
            request.event_time_start.FromDatetime(event_time_start)
        if recent_count is not None:
            request.recent_count = recent_count
        return await self._unary(self._messages.ListMessages, request, retry=True)

    async def list_messages(
        self,
        session_id: str,
        *,
        page_size: int = 0,
        newest_first: bool = False,
        start_time: datetime | None = None,
        recent_count: int | None = None,
        event_time_start: datetime | None = None,
    ) -> AsyncIterator[pb.Message]:
        """Every message of the session (or of the filters, as list_messages_page takes them),
        fetched page by page as you iterate."""
        token = ""
        while True:
            page = await self.list_messages_page(
                session_id,
                page_size=page_size,
                page_token=token,
                newest_first=newest_first,
                start_time=start_time,
                recent_count=recent_count,
                event_time_start=event_time_start,
            )
            for message in page.messages:
                yield message
            token = page.next_page_token
            if not token:
                return

    async def search_messages_page(
        self,
        query: str,
        *,
        user_id: str = "",
        app_name: str = "",
        session_ids: Sequence[str] = (),
        roles: Sequence[int | str] = (),
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.SearchMessagesResponse:
        """One page of the messages matching `query` (what a person types in a search box:
        words, "a phrase", -word, or), best first, each result with its `message`, a `snippet`
        with the matches between <mark> and </mark> (plain text, not HTML-escaped) and its `rank`.

        user_id empty: the caller's own messages (every user's for an admin). The filters
        narrow it: an app, sessions, roles ("user", "ROLE_ASSISTANT", ...), and created in
        [start_time, end_time) (timezone-aware). page_size 1..100; 0 means 20. A page_token works
        only with the query and filters that produced it.
        """
        request = pb.SearchMessagesRequest(
            query=query,
            user_id=user_id,
            app_name=app_name,
            session_ids=list(session_ids),
            roles=[_enum(pb.Role, "ROLE_", role, "roles") for role in roles],
            page_size=page_size,
            page_token=page_token,
        )
        for field, when in (("start_time", start_time), ("end_time", end_time)):
            if when is not None:
                if when.tzinfo is None:
                    raise invalid_argument(field, "must be timezone-aware (a naive datetime is no instant)")
                getattr(request, field).FromDatetime(when)
        return await self._unary(self._messages.SearchMessages, request, retry=True)

    async def search_messages(
        self,
        query: str,
        *,
        user_id: str = "",
        app_name: str = "",
        session_ids: Sequence[str] = (),
        roles: Sequence[int | str] = (),
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page_size: int = 0,
    ) -> AsyncIterator[pb.SearchResult]:
        """Every result of search_messages_page's search, best first, fetched page by page as you iterate."""
        token = ""
        while True:
            page = await self.search_messages_page(
                query, user_id=user_id, app_name=app_name, session_ids=session_ids, roles=roles,
                start_time=start_time, end_time=end_time, page_size=page_size, page_token=token,
            )
            for result in page.results:
                yield result
            token = page.next_page_token
            if not token:
                return

    def stream_messages(
        self, session_id: str, *, after_sequence: int = 0, page_size: int = 0, batched: bool = False
    ) -> AsyncIterator[pb.Message]:
        """Messages after `after_sequence`, in order, as the server streams them; ends at the last one.

        `batched` asks the server for one page (`page_size` messages, at most about 1 MiB) per
        response instead of one message per response: the same messages, with far less work per
        message on both ends; this iterator yields them one by one either way.
        When the stream breaks with UNAVAILABLE the client reopens it after the last
        message it received (under the retry policy), so nothing is skipped or repeated.
        """
        def open_(after: int | None) -> Any:
            request = pb.StreamMessagesRequest(
                session_id=session_id, after_sequence=after or 0, page_size=page_size, batched=batched
            )
            return self._messages.StreamMessages(request, metadata=self._call_metadata())

        if not batched:
            def advance(response: Any) -> tuple[int, pb.Message]:
                return response.message.sequence, response.message

            return self._resumable(open_, after_sequence, advance)

        def advance_page(response: Any) -> tuple[int, list[pb.Message]]:
            return response.messages[-1].sequence, list(response.messages)

        return _flatten(self._resumable(open_, after_sequence, advance_page))

    # -- the change feed -----------------------------------------------------------------------

    def watch_session(self, session_id: str, *, after_change_id: int | None = None) -> AsyncIterator[pb.SessionChange]:
        """The session's changes after `after_change_id` (None: from now on; 0: from the first),
        then each as it commits, for as long as you iterate; ends after CHANGE_KIND_SESSION_DELETED.

        Keep the `change_id` of the last change you handled: it is the cursor to start from next
        time. When the stream breaks with UNAVAILABLE (a server stopping, a network hiccup) the
        client reopens it after the last cursor the server sent (under the retry policy, whose
        attempts and deadline count per outage), so no change is skipped or repeated.
        """

        def open_(after: int | None) -> Any:
            request = pb.WatchSessionRequest(session_id=session_id)
            if after is not None:
                request.after_change_id = after
            return self._sessions.WatchSession(request, metadata=self._call_metadata())

        return self._watch(open_, after_change_id)

    def watch_user_sessions(
        self, user_id: str = "", *, after_change_id: int | None = None
    ) -> AsyncIterator[pb.SessionChange]:
        """`watch_session` over every session of `user_id` (empty: the caller, in token mode),
        sessions created and deleted included; never ends by itself."""

        def open_(after: int | None) -> Any:
            request = pb.WatchUserSessionsRequest(user_id=user_id)
            if after is not None:
                request.after_change_id = after
            return self._sessions.WatchUserSessions(request, metadata=self._call_metadata())

        return self._watch(open_, after_change_id)

    def _watch(self, open_: Callable[[int | None], Any], after: int | None) -> AsyncIterator[pb.SessionChange]:
        def advance(response: Any) -> tuple[int, pb.SessionChange | None]:
            # Heartbeats move the cursor too: a resume skips what is known to be none of ours.
            return response.cursor, response.change if response.HasField("change") else None

        return self._resumable(open_, after, advance)

    async def _resumable(
        self,
        open_: Callable[[int | None], Any],
        after: int | None,
        advance: Callable[[Any], tuple[int, Any]],
    ) -> AsyncIterator[Any]:
        """A server stream reopened after its last cursor when it breaks with UNAVAILABLE (under
        the retry policy), so nothing is skipped or repeated: StreamMessages and the change feed."""
        call: Any = None

        async def next_response() -> Any:
            nonlocal call
            if call is None:
                call = open_(after)
            try:
                return await call.read()
            except grpc.aio.AioRpcError:
                call = None
                raise

        try:
            while True:
                try:
                    response: Any = await self._retrying(True)(next_response)
                except grpc.aio.AioRpcError as error:
                    raise from_rpc_error(error) from None
                if response is grpc.aio.EOF:
                    return
                after, item = advance(response)
                if item is not None:
                    yield item
        finally:
            if call is not None:
                call.cancel()

    # -- MemoryService -------------------------------------------------------------------------

    async def create_memory(
        self,
        session_id: str,
        *,
        conversation_summary: str = "",
        facts: Sequence[str] = (),
        preferences: JsonObject | None = None,
        metadata: JsonObject | None = None,
    ) -> pb.Memory:
        """Create the session's memory; AlreadyExists when it has one, NotFound without the session."""
        request = pb.CreateMemoryRequest(
            session_id=session_id,
            conversation_summary=conversation_summary,
            facts=list(facts),
            preferences=_struct(preferences),
            metadata=_struct(metadata),
        )
        return (await self._unary(self._memories.CreateMemory, request, retry=False)).memory

    async def get_memory(self, session_id: str) -> pb.Memory:
        """The session's memory; NotFound when it has none."""
        request = pb.GetMemoryRequest(session_id=session_id)
        return (await self._unary(self._memories.GetMemory, request, retry=True)).memory

    async def update_memory(
        self,
        session_id: str,
        *,
        conversation_summary: str | None = None,
        facts: Iterable[str] | None = None,
        preferences: JsonObject | None = None,
        metadata: JsonObject | None = None,
        etag: str = "",
        allow_missing: bool = False,
    ) -> pb.Memory:
        """Change the given fields only. `etag` makes it conditional (Aborted, ETAG_MISMATCH, when
        stale); `allow_missing` creates the memory when the session has none."""
        memory = pb.Memory(session_id=session_id, etag=etag)
        paths = []
        if conversation_summary is not None:
            memory.conversation_summary = conversation_summary
            paths.append("conversation_summary")
        if facts is not None:
            memory.facts.extend(facts)
            paths.append("facts")
        if preferences is not None:
            memory.preferences.CopyFrom(_struct_of(preferences))
            paths.append("preferences")
        if metadata is not None:
            memory.metadata.CopyFrom(_struct_of(metadata))
            paths.append("metadata")
        if not paths:
            raise ValueError("update_memory needs at least one field to change")
        request = pb.UpdateMemoryRequest(
            memory=memory, update_mask=field_mask_pb2.FieldMask(paths=paths), allow_missing=allow_missing
        )
        return (await self._unary(self._memories.UpdateMemory, request, retry=False)).memory

    async def delete_memory(self, session_id: str) -> None:
        """Delete the session's memory; NotFound when it has none."""
        await self._unary(self._memories.DeleteMemory, pb.DeleteMemoryRequest(session_id=session_id), retry=False)

    # -- UsageService --------------------------------------------------------------------------

    async def get_usage(
        self,
        bucket: int | str,
        start_time: datetime | float,
        end_time: datetime | float,
        *,
        user_id: str = "",
        app_name: str = "",
        by_role: bool = False,
    ) -> pb.GetUsageResponse:
        """Messages, tokens and exact cost per bucket ("hour", "day", "month" or USAGE_BUCKET_*;
        UTC boundaries) of the messages created in [start_time, end_time), summed over the stored
        messages on this call: `buckets` (the non-empty ones, oldest first; split by role with
        by_role) and the range's totals. user_id empty: the caller's own usage (every user's for an
        admin); app_name narrows it to one app's sessions. Costs are exact decimal strings."""
        request = pb.GetUsageRequest(
            user_id=user_id,
            app_name=app_name,
            bucket=_enum(pb.UsageBucket, "USAGE_BUCKET_", bucket, "bucket"),
            by_role=by_role,
        )
        request.start_time.FromDatetime(_instant(start_time, "start_time"))
        request.end_time.FromDatetime(_instant(end_time, "end_time"))
        return await self._unary(self._usage.GetUsage, request, retry=True)

    async def get_budget(self, *, user_id: str = "", app_name: str = "") -> pb.GetBudgetResponse:
        """A budget (`budget`) and, per limit it sets, what is used and remains in the current UTC
        day or month (`usage`). user_id empty and no app_name: the caller's own budget; an app's
        budget needs the admin scope. NotFound when there is none."""
        request = pb.GetBudgetRequest(user_id=user_id, app_name=app_name)
        return await self._unary(self._usage.GetBudget, request, retry=True)

    async def set_budget(
        self,
        *,
        user_id: str = "",
        app_name: str = "",
        daily_tokens: int | None = None,
        monthly_tokens: int | None = None,
        daily_cost: Cost | None = None,
        monthly_cost: Cost | None = None,
        soft: bool = False,
    ) -> pb.Budget:
        """Create or replace the budget of a user or of an app (exactly one; admin). Limits left at
        None are not set; at least one must be. soft: the limits only report (over_budget on
        AddMessage's answer) instead of refusing. Idempotent, so it is retried like a read."""
        budget = pb.Budget(user_id=user_id, app_name=app_name, soft=soft)
        if daily_tokens is not None:
            budget.daily_tokens = daily_tokens
        if monthly_tokens is not None:
            budget.monthly_tokens = monthly_tokens
        if daily_cost is not None:
            budget.daily_cost = _cost(daily_cost)
        if monthly_cost is not None:
            budget.monthly_cost = _cost(monthly_cost)
        return (await self._unary(self._usage.SetBudget, pb.SetBudgetRequest(budget=budget), retry=True)).budget

    async def delete_budget(self, *, user_id: str = "", app_name: str = "") -> bool:
        """Remove the budget of a user or of an app (admin); False when there was none."""
        request = pb.DeleteBudgetRequest(user_id=user_id, app_name=app_name)
        return (await self._unary(self._usage.DeleteBudget, request, retry=True)).deleted

    # -- RetentionService (admin) ----------------------------------------------------------------

    async def get_retention_policy(self, app_name: str) -> pb.RetentionPolicy:
        """The retention policy of an app (admin). NotFound when it has none."""
        request = pb.GetRetentionPolicyRequest(app_name=app_name)
        return (await self._unary(self._retention.GetRetentionPolicy, request, retry=True)).policy

    async def set_retention_policy(
        self,
        app_name: str,
        *,
        closed_session_ttl: timedelta | float | None = None,
        message_ttl: timedelta | float | None = None,
        max_messages_per_session: int | None = None,
    ) -> pb.RetentionPolicy:
        """Create or replace the retention policy of an app (admin): closed sessions last updated
        longer ago than closed_session_ttl, messages older than message_ttl, and messages past the
        newest max_messages_per_session of a session are deleted by the server's prune job. TTLs in
        seconds or as timedelta; rules left at None are off (at least one must be set). Idempotent,
        so it is retried like a read."""
        policy = pb.RetentionPolicy(app_name=app_name)
        for name, value in (("closed_session_ttl", closed_session_ttl), ("message_ttl", message_ttl)):
            if value is not None:
                getattr(policy, name).FromTimedelta(value if isinstance(value, timedelta) else timedelta(seconds=value))
        if max_messages_per_session is not None:
            policy.max_messages_per_session = max_messages_per_session
        request = pb.SetRetentionPolicyRequest(policy=policy)
        return (await self._unary(self._retention.SetRetentionPolicy, request, retry=True)).policy

    async def delete_retention_policy(self, app_name: str) -> bool:
        """Remove the retention policy of an app (admin); False when there was none."""
        request = pb.DeleteRetentionPolicyRequest(app_name=app_name)
        return (await self._unary(self._retention.DeleteRetentionPolicy, request, retry=True)).deleted
    # -- UserDataService -----------------------------------------------------------------------

    async def delete_user_data(self, user_id: str = "") -> pb.DeleteUserDataResponse:
        """Erase everything stored of a user (GDPR article 17): their sessions with their messages
        and memories, their state in every app, their change feed and budget, in one transaction.
        user_id empty: the caller (token mode); another user's needs the admin scope. Returns the
        counts per kind (`session_count`, `message_count`, ..., `other_counts` by table). Idempotent
        (a repeat removes nothing and reports zeros), so it is retried like a read."""
        request = pb.DeleteUserDataRequest(user_id=user_id)
        return await self._unary(self._user_data.DeleteUserData, request, retry=True)

    async def export_user_data(self, user_id: str = "") -> AsyncIterator[str]:
        """Everything stored of a user as JSON Lines (docs/export-format.md), one line (without its
        line end) at a time as the server streams them; write each followed by "\\n" to get the file
        `session-grpc import` restores. user_id empty: the caller's own (another user's needs the
        admin scope). Not retried: a broken export is started again."""
        call = self._user_data.ExportUserData(pb.ExportUserDataRequest(user_id=user_id),
                                              metadata=self._call_metadata())
        try:
            async for response in call:
                for line in response.lines:
                    yield line
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        finally:
            call.cancel()
