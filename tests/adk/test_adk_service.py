"""session_client.adk.SessionGrpcService: the rules of the ADK adapter, against a live server.

Each test states one rule of the mapping between Google ADK's session model and session.v1 and
checks it both through ADK's interface and, where it matters, in what the server stored.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from typing import Any

import pytest
from google.adk.errors import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions.base_session_service import GetSessionConfig
from google.adk.sessions.database_session_service import DatabaseSessionService
from google.genai import types

from session_client import SessionClient, pb
from session_client.adk import ADK_ID_KEY, EVENT_PAYLOAD_TYPE, NAMESPACE, SessionGrpcService, storage_session_id

APP = "travel"


# -- what the server stored, read with the plain client --------------------------------------


async def stored_session(client: SessionClient, sid: str) -> pb.GetSessionResponse:
    return await client.get_session_with_state(sid)


async def stored_messages(client: SessionClient, sid: str) -> list[pb.Message]:
    return [message async for message in client.list_messages(sid)]


def plain(struct: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    return json_format.MessageToDict(struct)


def text_event(author: str, text: str, **kwargs: Any) -> Event:
    role = "user" if author == "user" else "model"
    return Event(author=author, content=types.Content(role=role, parts=[types.Part(text=text)]), **kwargs)


# -- ids -------------------------------------------------------------------------------------


async def test_a_canonical_uuid_id_is_the_stored_sessions_own_id(service, client):
    adk_id = str(uuid.uuid4())
    session = await service.create_session(app_name=APP, user_id="alice", session_id=adk_id)
    assert session.id == adk_id
    stored = (await stored_session(client, adk_id)).session
    assert (stored.app_name, stored.user_id) == (APP, "alice")
    assert ADK_ID_KEY not in plain(stored.metadata)


async def test_a_generated_id_is_a_uuid_the_server_knows_under_the_same_id(service, client):
    session = await service.create_session(app_name=APP, user_id="alice")
    assert str(uuid.UUID(session.id)) == session.id
    assert (await stored_session(client, session.id)).session.session_id == session.id


async def test_any_other_id_is_stored_under_a_uuid5_of_app_user_and_id_and_listed_as_given(service, client):
    session = await service.create_session(app_name=APP, user_id="alice", session_id="trip/May 2027")
    assert session.id == "trip/May 2027"
    sid = str(uuid.uuid5(NAMESPACE, json.dumps([APP, "alice", "trip/May 2027"])))
    assert storage_session_id(APP, "alice", "trip/May 2027") == sid
    stored = (await stored_session(client, sid)).session
    assert plain(stored.metadata)[ADK_ID_KEY] == "trip/May 2027"
    got = await service.get_session(app_name=APP, user_id="alice", session_id="trip/May 2027")
    assert got is not None and got.id == "trip/May 2027"
    listed = await service.list_sessions(app_name=APP, user_id="alice")
    assert [s.id for s in listed.sessions] == ["trip/May 2027"]


async def test_an_uppercase_uuid_is_not_canonical_and_is_mapped_like_any_other_id(service, client):
    adk_id = str(uuid.uuid4()).upper()
    session = await service.create_session(app_name=APP, user_id="alice", session_id=adk_id)
    assert session.id == adk_id
    sid = storage_session_id(APP, "alice", adk_id)
    assert sid != adk_id.lower()
    assert plain((await stored_session(client, sid)).session.metadata)[ADK_ID_KEY] == adk_id


async def test_one_id_of_two_users_or_two_apps_names_separate_sessions(service):
    for app, user in [(APP, "alice"), (APP, "bob"), ("other", "alice")]:
        await service.create_session(app_name=app, user_id=user, session_id="s1", state={"owner": f"{app}/{user}"})
    for app, user in [(APP, "alice"), (APP, "bob"), ("other", "alice")]:
        got = await service.get_session(app_name=app, user_id=user, session_id="s1")
        assert got.state == {"owner": f"{app}/{user}"}


async def test_surrounding_whitespace_is_stripped_and_a_blank_id_generates_one(service):
    created = await service.create_session(app_name=APP, user_id="alice", session_id="  order-42\n")
    assert created.id == "order-42"
    assert (await service.get_session(app_name=APP, user_id="alice", session_id="order-42 ")).id == "order-42"
    blank = await service.create_session(app_name=APP, user_id="alice", session_id="   ")
    assert str(uuid.UUID(blank.id)) == blank.id


async def test_a_taken_id_is_already_exists_error(service):
    await service.create_session(app_name=APP, user_id="alice", session_id="s1")
    with pytest.raises(AlreadyExistsError):
        await service.create_session(app_name=APP, user_id="alice", session_id="s1")


async def test_a_uuid_id_of_another_users_session_is_not_found_and_not_deleted(service):
    theirs = await service.create_session(app_name=APP, user_id="bob")
    assert await service.get_session(app_name=APP, user_id="alice", session_id=theirs.id) is None
    assert await service.get_session(app_name="other", user_id="bob", session_id=theirs.id) is None
    await service.delete_session(app_name=APP, user_id="alice", session_id=theirs.id)
    assert await service.get_session(app_name=APP, user_id="bob", session_id=theirs.id) is not None


# -- state -----------------------------------------------------------------------------------


async def test_state_keys_go_to_their_scope_without_prefix_and_temp_keys_nowhere(service, client):
    session = await service.create_session(
        app_name=APP, user_id="alice", session_id="s1",
        state={"app:currency": "EUR", "user:name": "Alice", "city": "Lisbon", "temp:draft": "x"},
    )
    assert session.state == {"app:currency": "EUR", "user:name": "Alice", "city": "Lisbon"}
    stored = await stored_session(client, storage_session_id(APP, "alice", "s1"))
    assert plain(stored.session.conversation_data) == {"city": "Lisbon"}
    assert plain(stored.user_state.state) == {"name": "Alice"}
    assert plain(stored.app_state.state) == {"currency": "EUR"}


async def test_an_events_state_delta_is_stored_with_it_in_every_scope(service, client):
    session = await service.create_session(app_name=APP, user_id="alice", session_id="s1", state={"keep": 1})
    event = Event(
        author="agent",
        actions=EventActions(state_delta={"app:k": [1, 2], "user:k": {"a": True}, "k": None, "temp:t": 1}),
    )
    await service.append_event(session, event)
    assert "temp:t" not in event.actions.state_delta
    assert session.state == {"keep": 1, "k": None, "user:k": {"a": True}, "app:k": [1, 2], "temp:t": 1}
    stored = await stored_session(client, storage_session_id(APP, "alice", "s1"))
    assert plain(stored.session.conversation_data) == {"keep": 1, "k": None}
    assert plain(stored.user_state.state) == {"k": {"a": True}}
    assert plain(stored.app_state.state) == {"k": [1, 2]}
    got = await service.get_session(app_name=APP, user_id="alice", session_id="s1")
    assert got.state == {"keep": 1, "k": None, "user:k": {"a": True}, "app:k": [1, 2]}


async def test_integers_in_state_come_back_as_integers(service):
    session = await service.create_session(app_name=APP, user_id="alice", state={"n": 3, "x": 1.5})
    await service.append_event(session, Event(author="agent", actions=EventActions(state_delta={"user:count": 7})))
    got = await service.get_session(app_name=APP, user_id="alice", session_id=session.id)
    assert got.state == {"n": 3, "x": 1.5, "user:count": 7}
    assert type(got.state["n"]) is int and type(got.state["user:count"]) is int


async def test_user_and_app_state_are_shared_by_the_users_and_the_apps_sessions_only(service):
    first = await service.create_session(app_name=APP, user_id="alice")
    await service.append_event(first, Event(author="agent", actions=EventActions(state_delta={"user:u": 1, "app:a": 2})))
    second = await service.create_session(app_name=APP, user_id="alice")
    assert second.state == {"user:u": 1, "app:a": 2}
    assert (await service.create_session(app_name=APP, user_id="bob")).state == {"app:a": 2}
    assert (await service.create_session(app_name="other", user_id="alice")).state == {}


async def test_get_user_state_is_the_users_state_in_the_app_without_prefixes(service):
    assert await service.get_user_state(app_name=APP, user_id="alice") == {}
    session = await service.create_session(app_name=APP, user_id="alice", state={"user:lang": "pt"})
    await service.append_event(session, Event(author="agent", actions=EventActions(state_delta={"user:n": 2, "s": 1})))
    assert await service.get_user_state(app_name=APP, user_id="alice") == {"lang": "pt", "n": 2}
    assert await service.get_user_state(app_name=APP, user_id="bob") == {}
    assert await service.get_user_state(app_name="other", user_id="alice") == {}


# -- events ----------------------------------------------------------------------------------


async def test_an_event_is_a_message_whose_payload_is_the_events_json_byte_for_byte(service, client):
    session = await service.create_session(app_name=APP, user_id="alice")
    event = Event(
        author="planner",
        invocation_id="inv-1",
        content=types.Content(
            role="model",
            parts=[types.Part(text="Lisbon."), types.Part.from_bytes(data=b"\x00\xffpng", mime_type="image/png")],
        ),
        usage_metadata=types.GenerateContentResponseUsageMetadata(
            prompt_token_count=2**40, candidates_token_count=1, total_token_count=2**40 + 1
        ),
        custom_metadata={"big": 2**62 + 1},
        timestamp=1_800_000_000.123456,
    )
    await service.append_event(session, event)
    [message] = await stored_messages(client, session.id)
    assert message.payload == event.model_dump_json(exclude_none=True).encode()
    assert message.payload_type == EVENT_PAYLOAD_TYPE
    assert (message.role, message.message_type, message.content) == (pb.ROLE_ASSISTANT, pb.MESSAGE_TYPE_CHAT, "Lisbon.")
    assert (message.event_time.seconds, message.event_time.nanos) == (1_800_000_000, 123_456_000)
    assert message.tokens_used == 0  # over the server's 1e9 per-message cap: not counted rather than refused
    [got] = (await service.get_session(app_name=APP, user_id="alice", session_id=session.id)).events
    assert got == event
    assert got.custom_metadata["big"] == 2**62 + 1


async def test_roles_follow_the_author_and_the_function_parts(service, client):
    session = await service.create_session(app_name=APP, user_id="alice")
    call = types.Part(function_call=types.FunctionCall(name="weather", args={"city": "Lisbon"}))
    answer = types.Part(function_response=types.FunctionResponse(name="weather", response={"c": 21}))
    for event in [
        text_event("user", "Weather?"),
        Event(author="agent", content=types.Content(role="model", parts=[call])),
        Event(author="agent", content=types.Content(role="user", parts=[answer])),
        text_event("agent", "21 degrees", usage_metadata=types.GenerateContentResponseUsageMetadata(total_token_count=9)),
    ]:
        await service.append_event(session, event)
    messages = await stored_messages(client, session.id)
    assert [(m.role, m.message_type) for m in messages] == [
        (pb.ROLE_USER, pb.MESSAGE_TYPE_CHAT),
        (pb.ROLE_ASSISTANT, pb.MESSAGE_TYPE_TOOL_CALL),
        (pb.ROLE_TOOL, pb.MESSAGE_TYPE_TOOL_RESULT),
        (pb.ROLE_ASSISTANT, pb.MESSAGE_TYPE_CHAT),
    ]
    assert [m.tokens_used for m in messages] == [0, 0, 0, 9]


async def test_partial_events_are_not_stored(service, client):
    session = await service.create_session(app_name=APP, user_id="alice")
    await service.append_event(session, text_event("agent", "Lis", partial=True))
    assert await stored_messages(client, session.id) == []
    assert session.events == []


async def test_last_update_time_is_the_last_events_timestamp_else_the_creation(service):
    session = await service.create_session(app_name=APP, user_id="alice")
    created = session.last_update_time
    await service.append_event(session, Event(author="user", timestamp=created + 100.000001))
    assert session.last_update_time == pytest.approx(created + 100.000001, abs=1e-6)
    await service.append_event(session, Event(author="user", timestamp=created + 50))
    got = await service.get_session(app_name=APP, user_id="alice", session_id=session.id)
    assert got.last_update_time == pytest.approx(created + 50, abs=1e-6)


async def test_appending_to_a_deleted_session_is_session_not_found(service):
    session = await service.create_session(app_name=APP, user_id="alice")
    await service.delete_session(app_name=APP, user_id="alice", session_id=session.id)
    with pytest.raises(SessionNotFoundError):
        await service.append_event(session, text_event("user", "hi"))


# -- stale sessions --------------------------------------------------------------------------


async def test_a_stale_session_object_is_refused_and_nothing_of_its_event_is_stored(service, client):
    session = await service.create_session(app_name=APP, user_id="alice", state={"k": 0})
    stale = session.model_copy(deep=True)
    await service.append_event(session, Event(author="user", actions=EventActions(state_delta={"k": 1, "user:u": 1})))
    with pytest.raises(StaleSessionError, match="modified in storage"):
        await service.append_event(stale, Event(author="user", actions=EventActions(state_delta={"k": 2, "user:u": 2})))
    stored = await stored_session(client, session.id)
    assert stored.session.message_count == 1
    assert plain(stored.session.conversation_data) == {"k": 1}
    assert plain(stored.user_state.state) == {"u": 1}
    fresh = await service.get_session(app_name=APP, user_id="alice", session_id=session.id)
    await service.append_event(fresh, Event(author="user"))
    assert (await stored_session(client, session.id)).session.message_count == 2


async def test_of_concurrent_appends_from_one_read_exactly_one_lands(service, client):
    session = await service.create_session(app_name=APP, user_id="alice")
    copies = [session.model_copy(deep=True) for _ in range(8)]
    results = await asyncio.gather(
        *(service.append_event(copy, text_event("user", f"m{i}")) for i, copy in enumerate(copies)),
        return_exceptions=True,
    )
    assert sum(not isinstance(result, BaseException) for result in results) == 1
    assert all(isinstance(result, StaleSessionError) for result in results if isinstance(result, BaseException))
    assert len(await stored_messages(client, session.id)) == 1


# -- reads -----------------------------------------------------------------------------------


async def _session_with_events(service: SessionGrpcService, timestamps: list[float]):
    session = await service.create_session(app_name=APP, user_id="alice")
    for i, stamp in enumerate(timestamps):
        await service.append_event(session, text_event("user", f"m{i}", timestamp=stamp))
    return session


async def test_num_recent_events_gives_the_last_n_oldest_first_and_zero_gives_none(service):
    session = await _session_with_events(service, [1000.0 + i for i in range(7)])

    async def texts(config: GetSessionConfig) -> list[str]:
        got = await service.get_session(app_name=APP, user_id="alice", session_id=session.id, config=config)
        return [event.content.parts[0].text for event in got.events]

    assert await texts(GetSessionConfig(num_recent_events=3)) == ["m4", "m5", "m6"]
    assert await texts(GetSessionConfig(num_recent_events=0)) == []
    assert await texts(GetSessionConfig(num_recent_events=50)) == [f"m{i}" for i in range(7)]


async def test_after_timestamp_goes_by_the_events_own_timestamps_inclusive(service):
    # Stored in this order; the timestamps are the writer's and need not follow it.
    session = await _session_with_events(service, [1000.0, 1003.0, 1001.0, 1002.5, 1004.0])

    async def texts(config: GetSessionConfig) -> list[str]:
        got = await service.get_session(app_name=APP, user_id="alice", session_id=session.id, config=config)
        return [event.content.parts[0].text for event in got.events]

    assert await texts(GetSessionConfig(after_timestamp=1002.5)) == ["m1", "m3", "m4"]
    assert await texts(GetSessionConfig(after_timestamp=1002.5, num_recent_events=2)) == ["m3", "m4"]
    assert await texts(GetSessionConfig(after_timestamp=5000.0)) == []


async def test_after_timestamp_at_an_events_own_float_includes_it_and_just_past_it_excludes_it(service):
    # Floats that no decimal fraction of a second gives exactly: the server filters the stored
    # microseconds, and the adapter asks from the first microsecond whose float is >= ADK's bound,
    # so the answer is ADK's own `timestamp >= after_timestamp` at both edges. (Event times are
    # kept to the microsecond, as ADK's database service keeps them: a timestamp with a finer
    # fraction is compared as its microsecond.)
    stamps = [1_700_000_000.123456, 1_700_000_000.5, 1_700_000_000.999999, 1_700_000_001.000001]
    session = await _session_with_events(service, stamps)
    stored = await service.get_session(app_name=APP, user_id="alice", session_id=session.id)
    for event in stored.events:
        after = await service.get_session(
            app_name=APP, user_id="alice", session_id=session.id, config=GetSessionConfig(after_timestamp=event.timestamp)
        )
        assert [e.timestamp for e in after.events] == [e.timestamp for e in stored.events if e.timestamp >= event.timestamp]
        past = math.nextafter(event.timestamp, math.inf)
        after = await service.get_session(
            app_name=APP, user_id="alice", session_id=session.id, config=GetSessionConfig(after_timestamp=past)
        )
        assert [e.timestamp for e in after.events] == [e.timestamp for e in stored.events if e.timestamp >= past]


async def test_a_session_read_with_a_subset_of_its_events_still_appends_after_the_last(service, client):
    session = await _session_with_events(service, [1000.0, 1001.0, 1002.0])
    recent = await service.get_session(
        app_name=APP, user_id="alice", session_id=session.id, config=GetSessionConfig(num_recent_events=0)
    )
    await service.append_event(recent, text_event("user", "m3"))
    assert [m.sequence for m in await stored_messages(client, session.id)] == [1, 2, 3, 4]


async def test_list_sessions_has_merged_state_no_events_and_the_least_recently_updated_first(service):
    a = await service.create_session(app_name=APP, user_id="alice", session_id="a", state={"n": "a"})
    await service.create_session(app_name=APP, user_id="alice", session_id="b", state={"user:u": 1})
    await service.create_session(app_name=APP, user_id="bob", session_id="c")
    await service.append_event(a, Event(author="user", timestamp=a.last_update_time + 60))
    listed = (await service.list_sessions(app_name=APP, user_id="alice")).sessions
    assert [s.id for s in listed] == ["b", "a"]
    assert [s.state for s in listed] == [{"user:u": 1}, {"n": "a", "user:u": 1}]
    assert all(s.events == [] for s in listed)
    assert (await service.list_sessions(app_name="other", user_id="alice")).sessions == []


async def _every_users_sessions(service: Any, app: str) -> list[tuple[str, str, dict[str, Any]]]:
    """The same writes through any ADK session service, then the app's listing across users."""
    a = await service.create_session(app_name=app, user_id="alice", session_id="a", state={"n": "a", "user:u": "alice"})
    await service.create_session(app_name=app, user_id="bob", session_id="b", state={"user:u": "bob", "app:v": 1})
    await service.create_session(app_name=app, user_id="carol", session_id="c")
    await service.create_session(app_name=app + "-other", user_id="alice", session_id="d")
    await service.append_event(a, Event(author="user", timestamp=a.last_update_time + 60))
    listed = (await service.list_sessions(app_name=app)).sessions
    assert all(s.events == [] and s.app_name == app for s in listed)
    return [(s.user_id, s.id, s.state) for s in listed]


async def test_listing_every_users_sessions_of_an_app_merges_each_users_state(service):
    assert await _every_users_sessions(service, APP) == [
        ("bob", "b", {"user:u": "bob", "app:v": 1}),
        ("carol", "c", {"app:v": 1}),
        ("alice", "a", {"n": "a", "user:u": "alice", "app:v": 1}),
    ]


async def test_listing_every_users_sessions_answers_as_adks_database_service_does(service, peer_database_url):
    peer = DatabaseSessionService(db_url=peer_database_url.replace("postgresql://", "postgresql+asyncpg://", 1))
    app = f"peer-{uuid.uuid4().hex[:8]}"
    try:
        expected = await _every_users_sessions(peer, app)
    finally:
        await peer.close()
    assert await _every_users_sessions(service, app) == expected


async def test_delete_removes_the_session_and_a_missing_one_is_a_no_op(service, client):
    session = await service.create_session(app_name=APP, user_id="alice", session_id="s1")
    await service.append_event(session, text_event("user", "hi"))
    await service.delete_session(app_name=APP, user_id="alice", session_id="s1")
    assert await service.get_session(app_name=APP, user_id="alice", session_id="s1") is None
    await service.delete_session(app_name=APP, user_id="alice", session_id="s1")
    await service.delete_session(app_name=APP, user_id="alice", session_id=str(uuid.uuid4()))
    assert (await client.list_sessions_page("alice")).total_size == 0


async def test_list_sessions_reads_every_page(service, client):
    made = set()
    for start in range(0, 1203, 100):
        batch = await asyncio.gather(*(
            client.create_session("alice", app_name=APP, conversation_data={"n": i})
            for i in range(start, min(start + 100, 1203))
        ))
        made.update(session.session_id for session in batch)
    listed = (await service.list_sessions(app_name=APP, user_id="alice")).sessions
    assert len(listed) == 1203 and {s.id for s in listed} == made
    assert sorted(s.state["n"] for s in listed) == list(range(1203))


async def test_a_message_written_by_another_client_reads_as_a_text_event(service, client):
    session = await service.create_session(app_name=APP, user_id="alice")
    await client.add_message(session.id, "user", "Hello from the web app", event_time=1_800_000_000.5)
    await client.add_message(session.id, "assistant", "Hi!")
    got = await service.get_session(app_name=APP, user_id="alice", session_id=session.id)
    assert [(e.author, e.content.parts[0].text) for e in got.events] == [
        ("user", "Hello from the web app"), ("model", "Hi!"),
    ]
    assert got.events[0].timestamp == 1_800_000_000.5
    # and the ADK session still appends after them
    await service.append_event(got, text_event("user", "and from ADK"))
    assert len(await stored_messages(client, session.id)) == 3
