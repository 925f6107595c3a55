"""Scoped state: a session's own state, its (app, user) state and its app state, changed by deltas
merged in SQL, with a message (AddMessage) or on their own (UpdateState), all scopes or none."""

from __future__ import annotations

import asyncio
import uuid

import grpc
from google.protobuf import json_format, struct_pb2

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc

from .conftest import test_settings
from .helpers import add, expect_failure, new_session, serving
from .test_auth import Stubs, dev, token_server  # noqa: F401 - dev is a fixture
from .test_statements import StatementCounter


def delta(set_: dict | None = None, delete: list[str] | None = None) -> pb.StateDelta:
    message = pb.StateDelta(delete=delete or [])
    if set_:
        message.set.update(set_)
    return message


def scoped(session: pb.StateDelta | None = None, user: pb.StateDelta | None = None,
           app: pb.StateDelta | None = None) -> pb.ScopedStateDelta:
    return pb.ScopedStateDelta(session_state=session, user_state=user, app_state=app)


def plain(struct: struct_pb2.Struct) -> dict:
    return json_format.MessageToDict(struct)


async def states(sessions, session_id: str) -> tuple[dict, dict, dict]:
    """The session's own state, its user's and its app's, from one GetSession."""
    got = await sessions.GetSession(pb.GetSessionRequest(session_id=session_id, include_scoped_state=True))
    return plain(got.session.conversation_data), plain(got.user_state.state), plain(got.app_state.state)


async def update_state(sessions, session_id: str, state_delta: pb.ScopedStateDelta, **fields) -> pb.UpdateStateResponse:
    return await sessions.UpdateState(pb.UpdateStateRequest(session_id=session_id, state_delta=state_delta, **fields))


async def test_add_message_applies_deltas_to_all_three_scopes_with_the_message(sessions, messages):
    session = await new_session(sessions, "alice", app_name="travel", conversation_data=struct_pb2.Struct(
        fields={"keep": struct_pb2.Value(string_value="me"), "nested": struct_pb2.Value(
            struct_value=struct_pb2.Struct(fields={"a": struct_pb2.Value(number_value=1)}))}))
    change = scoped(
        session=delta({"step": 2, "nested": {"b": 2}}),
        user=delta({"name": "Alice"}),
        app=delta({"model": "m1"}),
    )
    message = await add(messages, session.session_id, state_delta=change)
    assert message.sequence == 1
    own, user, app = await states(sessions, session.session_id)
    # Top-level keys replace: "nested" is the delta's value whole, not a merge of both.
    assert own == {"keep": "me", "step": 2, "nested": {"b": 2}}
    assert (user, app) == ({"name": "Alice"}, {"model": "m1"})
    got = await sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id, include_scoped_state=True))
    assert (got.user_state.app_name, got.user_state.user_id, got.app_state.app_name) == ("travel", "alice", "travel")
    assert got.user_state.HasField("update_time") and got.app_state.HasField("update_time")


async def test_delete_removes_keys_and_ignores_missing_ones(sessions, messages):
    session = await new_session(sessions, "alice")
    await add(messages, session.session_id, state_delta=scoped(user=delta({"a": 1, "b": 2, "c": 3})))
    await add(messages, session.session_id, state_delta=scoped(user=delta({"d": 4}, ["a", "never-there"])))
    assert (await states(sessions, session.session_id))[1] == {"b": 2, "c": 3, "d": 4}


async def test_user_state_belongs_to_the_app_and_user_and_is_shared_by_their_sessions(sessions, messages):
    first = await new_session(sessions, "alice", app_name="travel")
    second = await new_session(sessions, "alice", app_name="travel")
    other_app = await new_session(sessions, "alice", app_name="cooking")
    other_user = await new_session(sessions, "bob", app_name="travel")
    await add(messages, first.session_id, state_delta=scoped(user=delta({"seat": "aisle"}), app=delta({"v": 1})))
    assert (await states(sessions, second.session_id))[1:] == ({"seat": "aisle"}, {"v": 1})
    assert (await states(sessions, other_app.session_id))[1:] == ({}, {})
    assert (await states(sessions, other_user.session_id))[1:] == ({}, {"v": 1})
    alone = await sessions.GetUserState(pb.GetUserStateRequest(app_name="travel", user_id="alice"))
    assert plain(alone.user_state.state) == {"seat": "aisle"}
    app = await sessions.GetAppState(pb.GetAppStateRequest(app_name="travel"))
    assert plain(app.app_state.state) == {"v": 1}


async def test_states_never_set_read_as_empty_not_missing(sessions):
    user = (await sessions.GetUserState(pb.GetUserStateRequest(user_id="nobody"))).user_state
    app = (await sessions.GetAppState(pb.GetAppStateRequest())).app_state
    assert (user.app_name, user.user_id, plain(user.state), user.HasField("update_time")) == ("default", "nobody", {}, False)
    assert (app.app_name, plain(app.state), app.HasField("update_time")) == ("default", {}, False)


async def test_get_session_without_the_flag_returns_no_scoped_state(sessions, messages):
    session = await new_session(sessions, "alice")
    await add(messages, session.session_id, state_delta=scoped(user=delta({"a": 1})))
    got = await sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id))
    assert not got.HasField("user_state") and not got.HasField("app_state")


async def test_a_refused_append_changes_no_state(sessions, messages):
    session = await new_session(sessions, "alice")
    await add(messages, session.session_id)
    change = scoped(session=delta({"s": 1}), user=delta({"u": 1}), app=delta({"a": 1}))
    failure = await expect_failure(add(messages, session.session_id, state_delta=change, expected_last_sequence=0))
    assert failure.reason == "STALE_SESSION"
    assert await states(sessions, session.session_id) == ({}, {}, {})


async def test_a_state_past_its_limit_refuses_the_whole_write(sessions, messages, sql):
    session = await new_session(sessions, "alice")
    await add(messages, session.session_id, state_delta=scoped(app=delta({"big": "x" * 40_000})))
    before = await states(sessions, session.session_id)
    change = scoped(session=delta({"s": 1}), user=delta({"u": 1}), app=delta({"more": "y" * 40_000}))
    failure = await expect_failure(add(messages, session.session_id, state_delta=change))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "STATE_TOO_LARGE")
    assert failure.error_metadata == {"scope": "app", "limitBytes": "65536"}
    assert await sql.fetchval("SELECT count(*) FROM messages") == 1
    assert await states(sessions, session.session_id) == before
    # Making room in the same delta is allowed: the limit is on the state the delta leaves.
    await add(messages, session.session_id, state_delta=scoped(app=delta({"more": "y" * 40_000}, ["big"])))
    assert set((await states(sessions, session.session_id))[2]) == {"more"}


async def test_a_repeated_request_id_does_not_apply_its_deltas_again(sessions, messages):
    session = await new_session(sessions, "alice")
    request_id = str(uuid.uuid4())
    first = await add(messages, session.session_id, request_id=request_id, state_delta=scoped(user=delta({"k": 1})))
    await add(messages, session.session_id, state_delta=scoped(user=delta({"k": 2})))
    again = await add(messages, session.session_id, request_id=request_id, state_delta=scoped(user=delta({"k": 1})))
    assert again.message_id == first.message_id
    assert (await states(sessions, session.session_id))[1] == {"k": 2}


async def test_update_state_applies_deltas_without_a_message(sessions, sql):
    session = await new_session(sessions, "alice", app_name="travel")
    changed = await update_state(
        sessions, session.session_id, scoped(session=delta({"s": 1}), user=delta({"u": 1}), app=delta({"a": 1}))
    )
    assert plain(changed.session.conversation_data) == {"s": 1}
    assert (plain(changed.user_state.state), plain(changed.app_state.state)) == ({"u": 1}, {"a": 1})
    assert (changed.user_state.user_id, changed.app_state.app_name) == ("alice", "travel")
    assert changed.session.etag != session.etag, "the session's own state changed: so does its etag"
    assert await sql.fetchval("SELECT count(*) FROM messages") == 0
    assert await states(sessions, session.session_id) == ({"s": 1}, {"u": 1}, {"a": 1})


async def test_user_and_app_deltas_leave_the_session_etag_alone(sessions, messages):
    session = await new_session(sessions, "alice")
    changed = await update_state(sessions, session.session_id, scoped(user=delta({"u": 1}), app=delta({"a": 1})))
    assert changed.session.etag == session.etag
    await add(messages, session.session_id, state_delta=scoped(user=delta({"u": 2})))
    assert (await sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id))).session.etag == session.etag


async def test_an_empty_delta_changes_nothing(sessions):
    session = await new_session(sessions, "alice")
    changed = await update_state(sessions, session.session_id, scoped(session=delta(), user=delta(), app=delta()))
    assert changed.session.etag == session.etag
    assert not changed.user_state.HasField("update_time") and not changed.app_state.HasField("update_time")


async def test_update_state_with_a_repeated_request_id_applies_nothing_and_returns_the_states_now(sessions):
    session = await new_session(sessions, "alice")
    request_id = str(uuid.uuid4())
    await update_state(sessions, session.session_id, scoped(user=delta({"k": 1})), request_id=request_id)
    await update_state(sessions, session.session_id, scoped(user=delta({"k": 2})))
    again = await update_state(sessions, session.session_id, scoped(user=delta({"k": 1})), request_id=request_id)
    assert plain(again.user_state.state) == {"k": 2}
    assert (await states(sessions, session.session_id))[1] == {"k": 2}


async def test_concurrent_repeats_of_one_update_state_apply_it_once(sessions):
    session = await new_session(sessions, "alice")
    request_id = str(uuid.uuid4())
    # Each call sets a key of its own: applied twice, two keys would be there.
    calls = [
        update_state(sessions, session.session_id, scoped(user=delta({f"k{i}": i})), request_id=request_id)
        for i in range(8)
    ]
    answers = await asyncio.gather(*calls)
    final = (await states(sessions, session.session_id))[1]
    assert len(final) == 1, final
    assert all(plain(answer.user_state.state) == final for answer in answers)


async def test_deltas_cost_no_statement_of_their_own(database_url):
    """An append with deltas for all three scopes is still one statement (one round trip), and so
    are UpdateState and GetSession with the scoped state; only a repeated UpdateState reads again."""
    quiet = {"health_interval": 3600.0}  # no health check's SELECT 1 in between
    async with serving(test_settings(database_url, **quiet)) as (server, channel):
        sessions, messages = session_pb2_grpc.SessionServiceStub(channel), session_pb2_grpc.MessageServiceStub(channel)
        session = await new_session(sessions, "alice")
        counter = StatementCounter(server)
        change = scoped(session=delta({"s": 1}), user=delta({"u": 1}), app=delta({"a": 1}))
        request_id = str(uuid.uuid4())
        calls = {
            "append": lambda: add(messages, session.session_id, state_delta=change),
            "append, request_id": lambda: add(messages, session.session_id, state_delta=change, request_id=request_id),
            "update": lambda: update_state(sessions, session.session_id, change, request_id=request_id),
            "update again": lambda: update_state(sessions, session.session_id, change, request_id=request_id),
            "get": lambda: states(sessions, session.session_id),
        }
        counted = {}
        for name, call in calls.items():
            await asyncio.sleep(0.01)  # the driver reports statements from the event loop
            counter.statements.clear()
            await call()
            await asyncio.sleep(0.01)
            counted[name] = len(counter.statements)
    assert counted == {"append": 1, "append, request_id": 1, "update": 1, "update again": 2, "get": 1}, counter.statements


async def test_update_state_of_a_missing_session_is_not_found(sessions):
    failure = await expect_failure(update_state(sessions, str(uuid.uuid4()), scoped(user=delta({"u": 1}))))
    assert failure.code == grpc.StatusCode.NOT_FOUND


async def test_update_state_works_on_an_ended_session(sessions):
    session = await new_session(sessions, "alice")
    await sessions.EndSession(pb.EndSessionRequest(session_id=session.session_id))
    changed = await update_state(sessions, session.session_id, scoped(user=delta({"u": 1})))
    assert plain(changed.user_state.state) == {"u": 1}


async def test_deleting_a_session_forgets_its_request_ids_but_not_the_user_and_app_state(sessions, sql):
    session = await new_session(sessions, "alice")
    await update_state(sessions, session.session_id, scoped(user=delta({"u": 1}), app=delta({"a": 1})),
                       request_id=str(uuid.uuid4()))
    await sessions.DeleteSession(pb.DeleteSessionRequest(session_id=session.session_id))
    assert await sql.fetchval("SELECT count(*) FROM state_updates") == 0
    user = await sessions.GetUserState(pb.GetUserStateRequest(user_id="alice"))
    assert plain(user.user_state.state) == {"u": 1}


WRITERS = 48


async def test_concurrent_deltas_to_different_keys_all_land(sessions, messages):
    """Many writers at once, through AddMessage and UpdateState, on several sessions of one user in
    one app: each sets its own key in all three scopes. A read-modify-write would lose some."""
    shared = [await new_session(sessions, "alice", app_name="race") for _ in range(4)]

    async def write(i: int) -> None:
        session = shared[i % len(shared)]
        change = scoped(session=delta({f"s{i}": i}), user=delta({f"u{i}": i}), app=delta({f"a{i}": i}))
        if i % 3 == 0:
            await add(messages, session.session_id, f"m{i}", state_delta=change)
        else:
            await update_state(sessions, session.session_id, change)

    await asyncio.gather(*(write(i) for i in range(WRITERS)))
    user = plain((await sessions.GetUserState(pb.GetUserStateRequest(app_name="race", user_id="alice"))).user_state.state)
    app = plain((await sessions.GetAppState(pb.GetAppStateRequest(app_name="race"))).app_state.state)
    assert user == {f"u{i}": i for i in range(WRITERS)}
    assert app == {f"a{i}": i for i in range(WRITERS)}
    for index, session in enumerate(shared):
        own = (await states(sessions, session.session_id))[0]
        assert own == {f"s{i}": i for i in range(index, WRITERS, len(shared))}
        got = (await sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id))).session
        assert got.message_count == len([i for i in range(index, WRITERS, len(shared)) if i % 3 == 0])


# ---- who may read and change which state (token mode) -----------------------------------------

async def test_a_user_changes_their_own_session_and_user_state_but_not_app_state(database_url, dev, sql):  # noqa: F811
    _, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        alice = Stubs(channel, "alice-token")
        session = (await alice.sessions.CreateSession(
            pb.CreateSessionRequest(app_name="travel"), metadata=alice.metadata)).session
        mine = scoped(session=delta({"s": 1}), user=delta({"u": 1}))
        await alice.messages.AddMessage(pb.AddMessageRequest(
            session_id=session.session_id, role=pb.ROLE_USER, content="hi", state_delta=mine), metadata=alice.metadata)
        await alice.sessions.UpdateState(
            pb.UpdateStateRequest(session_id=session.session_id, state_delta=scoped(user=delta({"v": 2}))),
            metadata=alice.metadata)
        # An app delta, alone or beside others, refuses the whole write: no message, no state.
        with_app = scoped(session=delta({"s": 9}), user=delta({"u": 9}), app=delta({"a": 1}))
        for call in (
            alice.messages.AddMessage(pb.AddMessageRequest(
                session_id=session.session_id, role=pb.ROLE_USER, content="x", state_delta=with_app),
                metadata=alice.metadata),
            alice.sessions.UpdateState(
                pb.UpdateStateRequest(session_id=session.session_id, state_delta=with_app), metadata=alice.metadata),
        ):
            failure = await expect_failure(call)
            assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_REQUIRED")
        got = await alice.sessions.GetSession(
            pb.GetSessionRequest(session_id=session.session_id, include_scoped_state=True), metadata=alice.metadata)
        assert (plain(got.session.conversation_data), plain(got.user_state.state)) == ({"s": 1}, {"u": 1, "v": 2})
        assert got.session.message_count == 1
        assert await sql.fetchval("SELECT count(*) FROM app_states") == 0


async def test_an_admin_changes_app_state_through_any_session_of_the_app(database_url, dev):  # noqa: F811
    _, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        alice, admin = Stubs(channel, "alice-token"), Stubs(channel, "admin-token")
        session = (await alice.sessions.CreateSession(
            pb.CreateSessionRequest(app_name="travel"), metadata=alice.metadata)).session
        await admin.messages.AddMessage(pb.AddMessageRequest(
            session_id=session.session_id, role=pb.ROLE_SYSTEM, content="config",
            state_delta=scoped(app=delta({"model": "m1"}))), metadata=admin.metadata)
        changed = await admin.sessions.UpdateState(pb.UpdateStateRequest(
            session_id=session.session_id, state_delta=scoped(app=delta({"temperature": 0}))), metadata=admin.metadata)
        assert plain(changed.app_state.state) == {"model": "m1", "temperature": 0}
        # Every authenticated principal reads app state; the app's users also see it in their sessions.
        bob = Stubs(channel, "bob-token")
        read = await bob.sessions.GetAppState(pb.GetAppStateRequest(app_name="travel"), metadata=bob.metadata)
        assert plain(read.app_state.state) == {"model": "m1", "temperature": 0}
        got = await alice.sessions.GetSession(
            pb.GetSessionRequest(session_id=session.session_id, include_scoped_state=True), metadata=alice.metadata)
        assert plain(got.app_state.state) == {"model": "m1", "temperature": 0}


async def test_a_user_reads_only_their_own_user_state(database_url, dev):  # noqa: F811
    _, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        alice, bob, admin = Stubs(channel, "alice-token"), Stubs(channel, "bob-token"), Stubs(channel, "admin-token")
        session = (await bob.sessions.CreateSession(pb.CreateSessionRequest(), metadata=bob.metadata)).session
        await bob.sessions.UpdateState(pb.UpdateStateRequest(
            session_id=session.session_id, state_delta=scoped(user=delta({"secret": "b"}))), metadata=bob.metadata)
        failure = await expect_failure(
            alice.sessions.GetUserState(pb.GetUserStateRequest(user_id="bob"), metadata=alice.metadata))
        assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "OTHER_USER")
        own = await bob.sessions.GetUserState(pb.GetUserStateRequest(), metadata=bob.metadata)  # empty: the caller
        assert (own.user_state.user_id, plain(own.user_state.state)) == ("bob", {"secret": "b"})
        seen = await admin.sessions.GetUserState(pb.GetUserStateRequest(user_id="bob"), metadata=admin.metadata)
        assert plain(seen.user_state.state) == {"secret": "b"}
        # Another user's session is missing, so its deltas cannot reach that user's state either.
        failure = await expect_failure(alice.sessions.UpdateState(pb.UpdateStateRequest(
            session_id=session.session_id, state_delta=scoped(user=delta({"secret": "a"}))), metadata=alice.metadata))
        assert failure.code == grpc.StatusCode.NOT_FOUND
