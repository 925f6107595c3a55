"""Google ADK sessions stored in session-grpc: a `google.adk.sessions.BaseSessionService`.

    from session_client.adk import SessionGrpcService

    service = SessionGrpcService("localhost:8203")          # or SessionGrpcService(client=SessionClient(...))
    runner = Runner(agent=agent, app_name="travel", session_service=service)

Install with `pip install "./clients/python[adk]"` (google-adk is not a dependency of the base client).

How ADK's model maps onto session.v1:

- An ADK session is a session-grpc session of the app `app_name` and user `user_id`. ADK session ids
  are any string, ours are UUIDs: an id that is a UUID in canonical form (lowercase, 8-4-4-4-12) is
  used as it is, so the ADK id and the session-grpc id are the same (ids ADK generates are such
  UUIDs); any other id is stored under uuid5(NAMESPACE, [app_name, user_id, id]), with the id
  itself kept in the session's metadata ("adk_session_id") so listings return it. Ids are stripped
  of surrounding whitespace first, as ADK's in-memory service does; a blank id means "generate one".
- An event is a message: its JSON (`Event.model_dump_json(exclude_none=True)`) is the message's
  payload, returned byte for byte; `Event.timestamp` is its event_time (to the microsecond); its
  text parts are the message's content (for other readers), its token usage is tokens_used.
- `append_event` is a conditional AddMessage: it appends only while the session's last sequence is
  the one this Session object last saw (kept in ADK's `_storage_update_marker`), so a stale session
  gets ADK's StaleSessionError and nothing is written.
- State: `app:` keys go to the app's state, `user:` keys to the user's state in the app, other keys
  to the session's own state (`conversation_data`); `temp:` keys are never sent. An event's state
  delta travels in the same AddMessage and is applied in its transaction, key by key on the server
  (concurrent deltas to different keys never lose each other).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from google.adk.errors import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.sessions import _session_util
from google.adk.sessions.base_session_service import BaseSessionService, GetSessionConfig, ListSessionsResponse
from google.adk.sessions.session import Session
from google.adk.sessions.state import State
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from typing_extensions import override

from ._client import SessionClient
from ._exceptions import Aborted, AlreadyExists, NotFound
from ._proto.session.v1 import session_pb2 as pb

__all__ = ["SessionGrpcService", "NAMESPACE", "storage_session_id", "EVENT_PAYLOAD_TYPE"]

NAMESPACE = uuid.UUID("6f1c3b52-4a8e-5d0b-9c6e-2b7d1e0a9f34")
"""The uuid5 namespace of ADK session ids that are not UUIDs. Never change it: stored ids depend on it."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

EVENT_PAYLOAD_TYPE = "application/json; adk-event=1"
"""The payload_type of messages that hold an ADK Event."""

ADK_ID_KEY = "adk_session_id"
"""Session metadata key holding an ADK session id that is not the session's UUID."""

STALE_MESSAGE = (
    "The session has been modified in storage since it was loaded. "
    "Please reload the session before appending more events."
)

_PAGE = 1000
_MAX_CONTENT_BYTES = 262_144
_MAX_TOKENS = 1_000_000_000


def _is_canonical_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def storage_session_id(app_name: str, user_id: str, session_id: str) -> str:
    """The session-grpc id (a UUID) of the ADK session `session_id` of (app_name, user_id).

    A canonical UUID is its own id; anything else maps to a uuid5 of the three, so the same ADK id
    of two users (or apps) names two sessions, as ADK expects."""
    if _is_canonical_uuid(session_id):
        return session_id
    return str(uuid.uuid5(NAMESPACE, json.dumps([app_name, user_id, session_id])))


def _normalized(session_id: str | None) -> str | None:
    """ADK's normalization: surrounding whitespace is dropped; blank means none."""
    if session_id is None:
        return None
    return session_id.strip() or None


def _seconds(timestamp: timestamp_pb2.Timestamp) -> float:
    """A Timestamp as ADK's float seconds, correctly rounded (microsecond precision)."""
    micros = timestamp.seconds * 1_000_000 + timestamp.nanos // 1000
    return micros / 1_000_000


def _first_microsecond_at_or_after(seconds: float) -> datetime | None:
    """The earliest stored event time (microseconds) that ADK reads as >= `seconds` (through
    _seconds, a float division), so the server's event_time_start filter answers exactly ADK's
    `timestamp >= after_timestamp`, boundaries and float rounding included. None past year 9999."""
    micros = round(seconds * 1_000_000)
    while micros / 1_000_000 < seconds:
        micros += 1
    while (micros - 1) / 1_000_000 >= seconds:
        micros -= 1
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        return None if seconds > 0 else _EPOCH.replace(year=1)


def _timestamp(seconds: float) -> datetime:
    """ADK's float seconds as an instant, rounded to the microsecond the way datetime rounds it."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def _text_of(event: Event) -> str:
    """The event's text parts, for readers that do not decode the payload; cut to the content limit."""
    if not event.content or not event.content.parts:
        return ""
    text = "\n".join(part.text for part in event.content.parts if part.text).replace("\x00", "")
    encoded = text.encode()
    if len(encoded) > _MAX_CONTENT_BYTES:
        text = encoded[:_MAX_CONTENT_BYTES].decode(errors="ignore")
    return text


def _role_of(event: Event) -> tuple[Any, Any]:
    """(role, message_type) of an event: the user's turns, tool results, tool calls, the agents' text."""
    if event.get_function_responses():
        return pb.ROLE_TOOL, pb.MESSAGE_TYPE_TOOL_RESULT
    if event.author == "user":
        return pb.ROLE_USER, pb.MESSAGE_TYPE_CHAT
    if event.get_function_calls():
        return pb.ROLE_ASSISTANT, pb.MESSAGE_TYPE_TOOL_CALL
    return pb.ROLE_ASSISTANT, pb.MESSAGE_TYPE_CHAT


def _event_of(message: pb.Message) -> Event:
    """The ADK Event a message holds; a message written by another client becomes a text event."""
    if message.payload_type == EVENT_PAYLOAD_TYPE:
        return Event.model_validate_json(message.payload)
    from google.genai import types

    author = "user" if message.role == pb.ROLE_USER else "model"
    return Event(
        id=message.message_id,
        invocation_id="",
        author=author,
        content=types.Content(role=author, parts=[types.Part(text=message.content)]),
        timestamp=_seconds(message.event_time),
    )


def _merge(app: dict[str, Any], user: dict[str, Any], session: dict[str, Any]) -> dict[str, Any]:
    merged = dict(session)
    merged.update({State.APP_PREFIX + key: value for key, value in app.items()})
    merged.update({State.USER_PREFIX + key: value for key, value in user.items()})
    return merged


class SessionGrpcService(BaseSessionService):
    """ADK's session service over a session-grpc server (see the module docstring for the mapping).

    target: "host:port" of the server (a SessionClient is made for it and closed by close());
    client: an existing SessionClient to use instead (not closed by close()).
    """

    def __init__(self, target: str = "localhost:8203", *, client: SessionClient | None = None) -> None:
        self._owns_client = client is None
        self.client = client if client is not None else SessionClient(target)

    async def close(self) -> None:
        if self._owns_client:
            await self.client.close()

    async def __aenter__(self) -> SessionGrpcService:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- sessions ------------------------------------------------------------------------------

    @override
    async def create_session(
        self,
        *,
        app_name: str,
        user_id: str,
        state: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Session:
        adk_id = _normalized(session_id) or str(uuid.uuid4())
        sid = storage_session_id(app_name, user_id, adk_id)
        deltas = _session_util.extract_json_safe_state_delta(state or {})
        try:
            created = await self._create(app_name, user_id, sid, adk_id, deltas)
        except AlreadyExists:
            raise AlreadyExistsError(f"Session with id {adk_id} already exists.") from None
        # The app and user deltas go in a second call, which also reads both scoped states back
        # (with no deltas it changes nothing). Not atomic with the creation: see the README.
        scoped = await self.client.update_state(
            sid, user_state=deltas["user"] or None, app_state=deltas["app"] or None
        )
        state = _merge(_state(scoped.app_state.state), _state(scoped.user_state.state), deltas["session"])
        return self._session(created, adk_id, state, [])

    @override
    async def get_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None = None,
    ) -> Session | None:
        adk_id = _normalized(session_id)
        if adk_id is None:
            return None
        sid = storage_session_id(app_name, user_id, adk_id)
        try:
            got, messages = await asyncio.gather(self.client.get_session_with_state(sid), self._events(sid, config))
        except NotFound:
            return None
        stored = got.session
        if stored.app_name != app_name or stored.user_id != user_id:
            return None  # a UUID id of another user's or app's session
        state = _merge(_state(got.app_state.state), _state(got.user_state.state), _state(stored.conversation_data))
        return self._session(stored, adk_id, state, [_event_of(message) for message in messages])

    @override
    async def list_sessions(self, *, app_name: str, user_id: str | None = None) -> ListSessionsResponse:
        """The app's sessions of `user_id`, or of every user when it is None (a listing across
        users: in token mode the client's token needs the sessions.admin scope, as ADK's database
        service needs the whole table). Each has its app, user and session state merged and no
        events; the least recently updated come first, as in ADK's own services."""
        # The scoped states are read while the first page is; each next page is asked for before
        # the one in hand is kept, so the server and this process work at the same time.
        first = asyncio.ensure_future(self._page(app_name, user_id or "", ""))
        try:
            app_state, user_state = await asyncio.gather(
                self._app_state(app_name),
                self._user_state(app_name, user_id) if user_id is not None else _no_state(),
            )
        except BaseException:
            first.cancel()
            raise
        stored: list[pb.Session] = []
        page: asyncio.Future[pb.ListSessionsResponse] | None = first
        while page is not None:
            response = await page
            page = (
                asyncio.ensure_future(self._page(app_name, user_id or "", response.next_page_token))
                if response.next_page_token
                else None
            )
            stored.extend(response.sessions)
        if user_id is not None:
            user_states = {user_id: user_state}
        else:
            users = sorted({session.user_id for session in stored})
            user_states = dict(zip(users, await asyncio.gather(*(self._user_state(app_name, u) for u in users))))
        sessions = [
            self._session(
                session,
                _adk_id(session),
                _merge(app_state, user_states[session.user_id], _state(session.conversation_data)),
                [],
            )
            for session in stored
        ]
        sessions.sort(key=lambda session: (session.last_update_time, session.user_id, session.id))
        return ListSessionsResponse(sessions=sessions)

    @override
    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        adk_id = _normalized(session_id)
        if adk_id is None:
            return
        sid = storage_session_id(app_name, user_id, adk_id)
        try:
            if _is_canonical_uuid(adk_id):
                stored = await self.client.get_session(sid)
                if stored.app_name != app_name or stored.user_id != user_id:
                    return
            await self.client.delete_session(sid)
        except NotFound:
            return

    @override
    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        return await self._user_state(app_name, user_id)

    # -- events --------------------------------------------------------------------------------

    @override
    async def append_event(self, session: Session, event: Event) -> Event:
        if event.partial:
            return event
        self._apply_temp_state(session, event)
        event = self._trim_temp_delta_state(event)
        deltas = _session_util.extract_json_safe_state_delta(
            event.actions.state_delta if event.actions and event.actions.state_delta else {}
        )
        marker = session._storage_update_marker
        sid = storage_session_id(session.app_name, session.user_id, session.id)
        try:
            message = await self._add(sid, event, deltas, None if marker is None else int(marker))
        except Aborted as error:
            if error.reason == "STALE_SESSION":
                raise StaleSessionError(STALE_MESSAGE) from None
            raise
        except NotFound:
            raise SessionNotFoundError(f"Session {session.id} not found.") from None
        session._storage_update_marker = str(message.sequence)
        session.last_update_time = _seconds(message.event_time)
        return self._commit_event_to_session(session, event)

    # -- session.v1 calls ----------------------------------------------------------------------

    async def _create(
        self, app_name: str, user_id: str, sid: str, adk_id: str, deltas: dict[str, dict[str, Any]]
    ) -> pb.Session:
        metadata = {} if adk_id == sid else {ADK_ID_KEY: adk_id}
        return await self.client.create_session(
            user_id,
            app_name=app_name,
            session_id=sid,
            conversation_data=deltas["session"],
            metadata=metadata,
        )

    async def _add(
        self, sid: str, event: Event, deltas: dict[str, dict[str, Any]], expected_last_sequence: int | None
    ) -> pb.Message:
        role, message_type = _role_of(event)
        usage = event.usage_metadata
        tokens = (usage.total_token_count or 0) if usage else 0
        return await self.client.add_message(
            sid,
            role,
            _text_of(event),
            message_type=message_type,
            # The server takes 0..1e9 per message; a larger count is kept in the payload only.
            tokens_used=tokens if tokens <= _MAX_TOKENS else 0,
            # (ADK's EventActions writes a state value JSON cannot hold, a callable, as its repr.)
            payload=event.model_dump_json(exclude_none=True).encode(),
            payload_type=EVENT_PAYLOAD_TYPE,
            event_time=_timestamp(event.timestamp),
            expected_last_sequence=expected_last_sequence,
            session_state=deltas["session"] or None,
            user_state=deltas["user"] or None,
            app_state=deltas["app"] or None,
        )

    async def _events(self, sid: str, config: GetSessionConfig | None) -> list[pb.Message]:
        recent = config.num_recent_events if config else None
        after = config.after_timestamp if config else None
        if recent == 0:
            return []
        since = None if after is None else _first_microsecond_at_or_after(after)
        if after is not None and since is None:
            return []  # after the last instant a Timestamp holds
        return [
            message
            async for message in self.client.list_messages(
                sid, page_size=_PAGE, recent_count=recent, event_time_start=since
            )
        ]

    async def _page(self, app_name: str, user_id: str, token: str) -> pb.ListSessionsResponse:
        return await self.client.list_sessions_page(user_id, app_name=app_name, page_size=_PAGE, page_token=token)

    async def _app_state(self, app_name: str) -> dict[str, Any]:
        return _state((await self.client.get_app_state(app_name)).state)

    async def _user_state(self, app_name: str, user_id: str) -> dict[str, Any]:
        return _state((await self.client.get_user_state(user_id, app_name=app_name)).state)

    # -- conversions ---------------------------------------------------------------------------

    def _session(self, stored: pb.Session, adk_id: str, state: dict[str, Any], events: list[Event]) -> Session:
        updated = stored.last_event_time if stored.HasField("last_event_time") else stored.create_time
        session = Session(
            id=adk_id,
            app_name=stored.app_name,
            user_id=stored.user_id,
            state=state,
            events=events,
            last_update_time=_seconds(updated),
        )
        session._storage_update_marker = str(stored.message_count)
        return session


async def _no_state() -> dict[str, Any]:
    return {}


def _adk_id(session: pb.Session) -> str:
    """The ADK id of a stored session: the one kept in its metadata, else its own UUID."""
    if ADK_ID_KEY in session.metadata.fields:
        return session.metadata.fields[ADK_ID_KEY].string_value
    return session.session_id


def _plain(value: Any) -> Any:
    """A Struct value as ADK wrote it: integral numbers come back as ints (a Struct has only doubles)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _state(struct: struct_pb2.Struct) -> dict[str, Any]:
    return {key: _plain(value) for key, value in json_format.MessageToDict(struct).items()}
