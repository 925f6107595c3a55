"""ListSessions with an app_name and no user_id: the app's sessions of every user, for an admin
(Google ADK's list_sessions(app_name) without a user); a user still lists only their own."""

from __future__ import annotations

import json

import asyncpg
import grpc
import pytest

from session_grpc import auth
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc.authorization import Authorize
from session_grpc.boundary import Call
from session_grpc.domain.errors import PermissionDenied
from session_grpc.storage.sessions import LIST_APP_SESSIONS

from .helpers import expect_failure, new_session, set_status
from .test_auth import Stubs, dev, token_server  # noqa: F401 - dev is a fixture

LIST = "/session.v1.SessionService/ListSessions"


async def make(sessions, spread: dict[str, list[str]]) -> dict[str, list[str]]:
    """Sessions per app, created in turn over the users (user -> apps); ids per app, newest first."""
    made: dict[str, list[str]] = {}
    for user, apps in spread.items():
        for app in apps:
            made.setdefault(app, []).insert(0, (await new_session(sessions, user, app_name=app)).session_id)
    return made


async def walk(sessions, metadata=(), **fields) -> tuple[list[pb.Session], int]:
    seen, token, total = [], "", -1
    while True:
        page = await sessions.ListSessions(pb.ListSessionsRequest(page_token=token, **fields), metadata=metadata)
        seen += page.sessions
        total, token = page.total_size, page.next_page_token
        if not token:
            return seen, total


async def test_an_admin_lists_an_apps_sessions_of_every_user_newest_first(sessions):
    """Mode none's operator is an admin: every user's sessions of the app, in pages, and no other app's."""
    made = await make(sessions, {"alice": ["travel", "chess", "travel"], "bob": ["travel", "chess"], "carol": ["travel"]})
    found, total = await walk(sessions, app_name="travel", page_size=2)
    assert [s.session_id for s in found] == made["travel"] and total == 4
    assert {s.user_id for s in found} == {"alice", "bob", "carol"}
    assert all(s.app_name == "travel" for s in found)
    chess, total = await walk(sessions, app_name="chess")
    assert [s.session_id for s in chess] == made["chess"] and total == 2


async def test_the_status_filter_applies_across_users(sessions):
    made = await make(sessions, {"alice": ["travel"], "bob": ["travel"]})
    await set_status(sessions, made["travel"][0], pb.SESSION_STATUS_ENDED)
    found, total = await walk(sessions, app_name="travel", status=pb.SESSION_STATUS_ACTIVE)
    assert [s.session_id for s in found] == made["travel"][1:] and total == 1


async def test_without_user_id_and_app_name_it_is_invalid_argument(sessions):
    failure = await expect_failure(sessions.ListSessions(pb.ListSessionsRequest()))
    assert failure.code is grpc.StatusCode.INVALID_ARGUMENT
    assert failure.field_violations["user_id"].startswith("is required")


async def test_a_page_token_of_the_apps_listing_does_not_continue_a_users_listing(sessions):
    await make(sessions, {"alice": ["travel", "travel"]})
    first = await sessions.ListSessions(pb.ListSessionsRequest(app_name="travel", page_size=1))
    assert first.next_page_token
    failure = await expect_failure(
        sessions.ListSessions(pb.ListSessionsRequest(user_id="alice", app_name="travel", page_token=first.next_page_token))
    )
    assert failure.code is grpc.StatusCode.INVALID_ARGUMENT and "page_token" in failure.field_violations


async def test_in_token_mode_only_the_admin_scope_lists_across_users(database_url, dev):  # noqa: F811
    _, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        alice, bob, admin = Stubs(channel, "alice-token"), Stubs(channel, "bob-token"), Stubs(channel, "admin-token")
        for who in (alice, bob, alice):
            await who.sessions.CreateSession(pb.CreateSessionRequest(app_name="travel"), metadata=who.metadata)
        everyone, total = await walk(admin.sessions, admin.metadata, app_name="travel", page_size=2)
        assert sorted(s.user_id for s in everyone) == ["alice", "alice", "bob"] and total == 3
        # A user who leaves user_id empty lists their own sessions of the app, never bob's.
        own, total = await walk(alice.sessions, alice.metadata, app_name="travel")
        assert [s.user_id for s in own] == ["alice", "alice"] and total == 2
        # Naming another user is refused as before.
        failure = await expect_failure(
            alice.sessions.ListSessions(pb.ListSessionsRequest(user_id="bob", app_name="travel"), metadata=alice.metadata)
        )
        assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "OTHER_USER")
        # An admin naming a user lists that user's only.
        bobs, _ = await walk(admin.sessions, admin.metadata, user_id="bob", app_name="travel")
        assert [s.user_id for s in bobs] == ["bob"]


@pytest.mark.parametrize(
    "principal,allowed",
    [
        (auth.Principal(user_id=None, admin=True), True),
        (auth.Principal(user_id="ops", admin=True), True),
        (auth.Principal(user_id=None, admin=False), False),
    ],
)
async def test_the_policy_lets_only_an_admin_act_for_every_user(principal, allowed):
    """At the boundary: an admin (with or without a user of its own) keeps the empty user_id and
    lists across users; a principal that is neither a user nor an admin (the auth step refuses such
    tokens today; the policy does not rely on it) is ADMIN_REQUIRED."""
    request = pb.ListSessionsRequest(app_name="travel")
    token = auth._current.set(principal)
    try:
        if allowed:
            await Authorize().enter(Call(LIST, request, None))
            assert request.user_id == ""
        else:
            with pytest.raises(PermissionDenied) as caught:
                await Authorize().enter(Call(LIST, request, None))
            assert caught.value.reason == "ADMIN_REQUIRED"
    finally:
        auth._current.reset(token)


async def test_a_user_with_an_app_name_and_no_user_id_is_given_their_own(database_url):
    request = pb.ListSessionsRequest(app_name="travel")
    token = auth._current.set(auth.Principal(user_id="alice", admin=False))
    try:
        await Authorize().enter(Call(LIST, request, None))
    finally:
        auth._current.reset(token)
    assert request.user_id == "alice"


async def test_the_apps_listing_reads_the_app_index_without_sorting(database_url):
    """First and deep page walk ix_sessions_app_name_create_time in its order and stop at the page:
    no sort, no scan of the table for the page, on 4,000 sessions of 4 users in 3 apps. (The total
    counts the app's rows; for an app holding a third of the table the planner rightly counts them
    with a sequential scan, so the plan of the count is not asserted.)"""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """
            INSERT INTO sessions (id, user_id, status, app_name, create_time)
            SELECT gen_random_uuid(), 'user-' || (i % 4), 'active', 'app-' || (i / 4 % 3),
                   now() - i * interval '1 second'
            FROM generate_series(1, 4000) i
            """
        )
        await conn.execute("ANALYZE sessions")
        after = await conn.fetchrow(
            "SELECT create_time, id FROM sessions WHERE app_name = 'app-1' ORDER BY create_time DESC, id DESC OFFSET 10 LIMIT 1"
        )
        for keyset, extra in ((False, []), (True, [after["create_time"], after["id"]])):
            sql = LIST_APP_SESSIONS[keyset]
            plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", None, 51, 1 << 22, "app-1", *extra)
            nodes = _nodes(json.loads(plan)[0]["Plan"])
            (limit,) = [n for n in nodes if n["Node Type"] == "Limit"]
            page = _nodes(limit)
            assert not any(n["Node Type"] in ("Sort", "Seq Scan") for n in page), page
            scans = [(n["Node Type"], n.get("Index Name"), n.get("Filter")) for n in page if "Scan" in n["Node Type"]]
            assert scans == [("Index Scan", "ix_sessions_app_name_create_time", None)], scans
    finally:
        await conn.execute("DELETE FROM sessions")
        await conn.close()


def _nodes(plan: dict) -> list[dict]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found
