"""Apps: a session belongs to an application (app_name, "default" when none is named); ListSessions
filters by it with page tokens bound to the filter; GetServiceStats breaks the totals down by it;
sessions that existed before apps did are in the default app."""

from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal

import asyncpg
import grpc
import pytest

from session_grpc import migrations, testing
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc
from session_grpc.storage.sessions import LIST_SESSIONS

from .helpers import add, expect_failure, new_session, serving_with, set_status
from .test_listing_and_totals import list_pages, stats


async def test_session_created_without_an_app_is_in_the_default_app(sessions, sql):
    created = await new_session(sessions, "alice")
    assert created.app_name == "default"
    read = (await sessions.GetSession(pb.GetSessionRequest(session_id=created.session_id))).session
    assert read.app_name == "default"
    assert await sql.fetchval("SELECT app_name FROM sessions WHERE id = $1", uuid.UUID(created.session_id)) == "default"


async def test_session_keeps_the_app_it_was_created_in(sessions):
    created = await new_session(sessions, "alice", app_name="travel-agent_v2.1")
    assert created.app_name == "travel-agent_v2.1"
    read = (await sessions.GetSession(pb.GetSessionRequest(session_id=created.session_id))).session
    assert read.app_name == "travel-agent_v2.1"


BAD_APP_NAMES = ["a" * 129, "has space", "-leading-dash", ".hidden", "tenant/app", "nul\x00", "café", "app:x"]


@pytest.mark.parametrize("app_name", BAD_APP_NAMES)
async def test_malformed_app_name_is_invalid_argument_naming_app_name(sessions, sql, app_name):
    for call in (
        sessions.CreateSession(pb.CreateSessionRequest(user_id="alice", app_name=app_name)),
        sessions.ListSessions(pb.ListSessionsRequest(user_id="alice", app_name=app_name)),
    ):
        failure = await expect_failure(call)
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "app_name" in failure.field_violations
    assert await sql.fetchval("SELECT count(*) FROM sessions") == 0


async def test_app_name_of_128_characters_is_accepted(sessions):
    assert (await new_session(sessions, "alice", app_name="A" * 128)).app_name == "A" * 128


async def test_list_sessions_by_app_returns_only_that_apps_sessions_and_without_app_every_app(sessions):
    chat = [await new_session(sessions, "alice", app_name="chat") for _ in range(3)]
    agent = [await new_session(sessions, "alice", app_name="agent") for _ in range(2)]
    default = await new_session(sessions, "alice")
    await new_session(sessions, "bob", app_name="chat")

    def ids(response: pb.ListSessionsResponse) -> list[str]:
        return [s.session_id for s in response.sessions]

    by_chat = await sessions.ListSessions(pb.ListSessionsRequest(user_id="alice", app_name="chat"))
    assert ids(by_chat) == [s.session_id for s in reversed(chat)]
    assert by_chat.total_size == 3
    by_agent = await sessions.ListSessions(pb.ListSessionsRequest(user_id="alice", app_name="agent"))
    assert ids(by_agent) == [s.session_id for s in reversed(agent)]
    assert by_agent.total_size == 2
    by_default = await sessions.ListSessions(pb.ListSessionsRequest(user_id="alice", app_name="default"))
    assert ids(by_default) == [default.session_id]
    everything = await sessions.ListSessions(pb.ListSessionsRequest(user_id="alice"))
    assert ids(everything) == [s.session_id for s in reversed([*chat, *agent, default])]
    assert everything.total_size == 6
    assert {s.app_name for s in everything.sessions} == {"chat", "agent", "default"}
    none = await sessions.ListSessions(pb.ListSessionsRequest(user_id="alice", app_name="unknown-app"))
    assert (ids(none), none.total_size) == ([], 0)


async def test_list_sessions_app_filter_combines_with_the_status_filter(sessions):
    ended = await new_session(sessions, "alice", app_name="chat")
    await new_session(sessions, "alice", app_name="chat")
    other = await new_session(sessions, "alice", app_name="agent")
    await set_status(sessions, ended.session_id, pb.SESSION_STATUS_ENDED)
    await set_status(sessions, other.session_id, pb.SESSION_STATUS_ENDED)
    page = await sessions.ListSessions(
        pb.ListSessionsRequest(user_id="alice", app_name="chat", status=pb.SESSION_STATUS_ENDED)
    )
    assert [s.session_id for s in page.sessions] == [ended.session_id]
    assert page.total_size == 1


async def test_list_sessions_paging_with_an_app_filter_visits_every_session_of_the_app_once(sessions):
    created = []
    for i in range(7):
        created.append(await new_session(sessions, "alice", app_name="chat"))
        await new_session(sessions, "alice", app_name="agent" if i % 2 else "default")
    pages = await list_pages(sessions, user_id="alice", app_name="chat", page_size=2)
    assert [len(p.sessions) for p in pages] == [2, 2, 2, 1]
    assert all(p.total_size == 7 for p in pages)
    listed = [s.session_id for p in pages for s in p.sessions]
    assert listed == [s.session_id for s in reversed(created)]


async def test_list_sessions_token_of_one_apps_listing_is_invalid_argument_in_another(sessions):
    for app in ("chat", "chat", "agent", "agent"):
        await new_session(sessions, "alice", app_name=app)
    chat = await sessions.ListSessions(pb.ListSessionsRequest(user_id="alice", app_name="chat", page_size=1))
    unfiltered = await sessions.ListSessions(pb.ListSessionsRequest(user_id="alice", page_size=1))
    assert chat.next_page_token and unfiltered.next_page_token
    for app_name, token in (("agent", chat.next_page_token), ("", chat.next_page_token),
                            ("agent", unfiltered.next_page_token)):
        failure = await expect_failure(
            sessions.ListSessions(
                pb.ListSessionsRequest(user_id="alice", app_name=app_name, page_size=1, page_token=token)
            )
        )
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, app_name
        assert "page_token" in failure.field_violations, app_name
    # The token still works with the filter that issued it.
    rest = await sessions.ListSessions(
        pb.ListSessionsRequest(user_id="alice", app_name="chat", page_size=1, page_token=chat.next_page_token)
    )
    assert [s.app_name for s in rest.sessions] == ["chat"]


async def test_service_stats_per_app_are_exact_and_add_up_to_the_totals_under_concurrent_writes(sessions, messages):
    apps = {"chat": 3, "agent": 2, "default": 1}
    made = {app: [await new_session(sessions, f"user-{i}", app_name=app) for i in range(n)] for app, n in apps.items()}
    writes_per_session = 12
    snapshots: list[pb.ServiceStats] = []

    async def write(session_id: str) -> None:
        for _ in range(writes_per_session):
            await add(messages, session_id, tokens_used=3, cost="0.1")

    async def watch() -> None:
        for _ in range(15):
            snapshots.append(await stats(sessions))

    await asyncio.gather(*(write(s.session_id) for group in made.values() for s in group), watch())
    snapshots.append(await stats(sessions))
    for snapshot in snapshots:  # every snapshot, mid-write or not, is one consistent read
        assert sum(a.session_count for a in snapshot.apps) == snapshot.total_sessions == 6
        assert sum(a.message_count for a in snapshot.apps) == snapshot.total_messages
        assert sum(a.total_tokens for a in snapshot.apps) == snapshot.total_tokens
        assert sum(Decimal(a.total_cost) for a in snapshot.apps) == Decimal(snapshot.total_cost)
    final = {a.app_name: a for a in snapshots[-1].apps}
    assert list(final) == sorted(apps)
    for app, n in apps.items():
        got = final[app]
        assert (got.session_count, got.distinct_users) == (n, n), app
        assert got.message_count == n * writes_per_session, app
        assert got.total_tokens == 3 * n * writes_per_session, app
        assert Decimal(got.total_cost) == Decimal("0.1") * n * writes_per_session, app


async def test_service_stats_on_empty_database_have_no_apps(sessions):
    assert list((await stats(sessions)).apps) == []


async def test_listing_by_app_reads_the_user_app_index_without_sorting(database_url):
    """The page of a filtered listing walks ix_sessions_user_id_app_name_create_time in its order
    and stops at the page (no sort, no scan of the table, no filter on app_name over the user's
    other apps), first page and deep page, on 4,000 sessions: 4 users, 3 apps each."""
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
            "SELECT create_time, id FROM sessions WHERE user_id = 'user-1' AND app_name = 'app-1'"
            " ORDER BY create_time DESC, id DESC OFFSET 10 LIMIT 1"
        )
        for keyset, extra in ((False, []), (True, [after["create_time"], after["id"]])):
            sql = LIST_SESSIONS[(False, True, keyset)]
            plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", "user-1", 51, 1 << 22, "app-1", *extra)
            nodes = _nodes(json.loads(plan)[0]["Plan"])
            assert not any(n["Node Type"] == "Seq Scan" for n in nodes), nodes
            (limit,) = [n for n in nodes if n["Node Type"] == "Limit"]
            page = _nodes(limit)
            assert not any(n["Node Type"] == "Sort" for n in page), page
            scans = [(n["Node Type"], n.get("Index Name"), n.get("Filter")) for n in page if "Scan" in n["Node Type"]]
            assert scans == [("Index Scan", "ix_sessions_user_id_app_name_create_time", None)], scans
    finally:
        await conn.execute("DELETE FROM sessions")
        await conn.close()


def _nodes(plan: dict) -> list[dict]:
    return [plan, *(node for child in plan.get("Plans", []) for node in _nodes(child))]


async def test_sessions_that_existed_before_apps_are_in_the_default_app_and_downgrade_keeps_them(server_url):
    name = f"session_grpc_apps_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = testing.database_url_for(server_url, name)
    try:
        await migrations.upgrade(url, "0001")
        conn = await asyncpg.connect(url)
        old = str(uuid.uuid4())
        await conn.execute("INSERT INTO sessions (id, user_id, status, title) VALUES ($1, 'alice', 'active', 'old')", old)
        await conn.close()

        await migrations.upgrade(url)
        async with serving_with(url) as (_, channel):
            stub = session_pb2_grpc.SessionServiceStub(channel)
            read = (await stub.GetSession(pb.GetSessionRequest(session_id=old))).session
            assert (read.title, read.app_name) == ("old", "default")
            listed = await stub.ListSessions(pb.ListSessionsRequest(user_id="alice", app_name="default"))
            assert [s.session_id for s in listed.sessions] == [old]
            new = (await stub.CreateSession(pb.CreateSessionRequest(user_id="alice", app_name="chat"))).session

        await migrations.downgrade(url, "0001")
        conn = await asyncpg.connect(url)
        try:
            columns = await conn.fetch("SELECT column_name FROM information_schema.columns WHERE table_name = 'sessions'")
            assert "app_name" not in {c["column_name"] for c in columns}
            indexes = await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'sessions'")
            assert "ix_sessions_user_id_app_name_create_time" not in {i["indexname"] for i in indexes}
            kept = await conn.fetch("SELECT id::text FROM sessions ORDER BY create_time")
            assert [r["id"] for r in kept] == [old, new.session_id]
        finally:
            await conn.close()
        await migrations.upgrade(url)
        conn = await asyncpg.connect(url)
        try:
            apps = await conn.fetch("SELECT app_name FROM sessions")
            assert {r["app_name"] for r in apps} == {"default"}, "a downgrade forgets apps; upgrading again defaults them"
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
