"""SearchMessages: full-text search over messages (ranked, highlighted, keyset paged, filtered),
who finds what, and what it refuses."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import asyncpg
import grpc
import pytest
from google.protobuf import timestamp_pb2

from session_grpc import testing
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc.server import build_server
from session_grpc.settings import SettingsError
from session_grpc.storage import search as search_storage

from .conftest import test_settings
from .helpers import add, expect_failure, new_session
from .test_auth import Stubs, dev, token_server  # noqa: F401 - dev is a fixture

SEARCH = pb.SearchMessagesRequest


def ts(when: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


async def search(messages, **fields) -> pb.SearchMessagesResponse:
    return await messages.SearchMessages(SEARCH(**fields))


def contents(response: pb.SearchMessagesResponse) -> list[str]:
    return [result.message.content for result in response.results]


async def test_search_finds_the_messages_with_every_word_best_first_with_a_highlighted_snippet(sessions, messages):
    s = await new_session(sessions, "ann")
    await add(messages, s.session_id, "We flew to Lisbon in May and Lisbon was sunny")
    await add(messages, s.session_id, "Lisbon once")
    await add(messages, s.session_id, "Porto in May")
    await add(messages, s.session_id, "nothing to see")
    found = await search(messages, query="lisbon")
    assert contents(found) == ["We flew to Lisbon in May and Lisbon was sunny", "Lisbon once"]
    assert found.results[0].rank > found.results[1].rank > 0
    assert "<mark>Lisbon</mark>" in found.results[0].snippet
    assert found.results[0].message.session_id == s.session_id and found.results[0].message.sequence == 1
    assert found.next_page_token == ""
    assert contents(await search(messages, query="lisbon may")) == ["We flew to Lisbon in May and Lisbon was sunny"]


async def test_search_takes_what_people_type_in_a_search_box(sessions, messages):
    s = await new_session(sessions, "ann")
    for text in ("red apple pie", "apple red", "green apple", "a pear"):
        await add(messages, s.session_id, text)
    assert set(contents(await search(messages, query='"red apple"'))) == {"red apple pie"}
    assert set(contents(await search(messages, query="apple -red"))) == {"green apple"}
    assert set(contents(await search(messages, query="pear or pie"))) == {"red apple pie", "a pear"}
    assert contents(await search(messages, query="APPLE  Green")) == ["green apple"]
    # Only punctuation (or, in `simple`, nothing to search for): found nothing, not an error.
    assert contents(await search(messages, query="!!! ???")) == []


async def test_search_filters_by_user_app_session_role_and_time(sessions, messages, sql):
    ann = await new_session(sessions, "ann", app_name="travel")
    ann2 = await new_session(sessions, "ann")
    ben = await new_session(sessions, "ben", app_name="travel")
    await add(messages, ann.session_id, "tea from ann", role=pb.ROLE_USER)
    await add(messages, ann.session_id, "tea answer", role=pb.ROLE_ASSISTANT)
    await add(messages, ann2.session_id, "tea elsewhere")
    await add(messages, ben.session_id, "tea from ben")
    # Mode none: the operator is an admin, so no user_id searches every user's.
    assert len((await search(messages, query="tea")).results) == 4
    assert set(contents(await search(messages, query="tea", user_id="ben"))) == {"tea from ben"}
    assert set(contents(await search(messages, query="tea", app_name="travel"))) == {
        "tea from ann", "tea answer", "tea from ben",
    }
    assert set(contents(await search(messages, query="tea", user_id="ann", app_name="travel"))) == {
        "tea from ann", "tea answer",
    }
    assert set(contents(await search(messages, query="tea", session_ids=[ann2.session_id, ben.session_id]))) == {
        "tea elsewhere", "tea from ben",
    }
    assert set(contents(await search(messages, query="tea", roles=[pb.ROLE_ASSISTANT]))) == {"tea answer"}
    # Time: move one message an hour back, then search from half an hour ago, and up to then.
    await sql.execute("UPDATE messages SET create_time = create_time - interval '1 hour' WHERE content = 'tea elsewhere'")
    half_hour_ago = datetime.now(timezone.utc) - timedelta(minutes=30)
    recent = await search(messages, query="tea", start_time=ts(half_hour_ago))
    assert "tea elsewhere" not in contents(recent) and len(recent.results) == 3
    assert contents(await search(messages, query="tea", end_time=ts(half_hour_ago))) == ["tea elsewhere"]


async def test_search_pages_by_keyset_through_every_match_once(sessions, messages):
    s = await new_session(sessions, "ann")
    # Ranks tie in groups (same word count), so the id must break ties for the keyset to hold.
    expected = set()
    for i in range(23):
        text = "needle " * (1 + i % 3) + f"n{i}"
        await add(messages, s.session_id, text)
        expected.add(text)
    seen: list[str] = []
    ranks: list[float] = []
    token = ""
    pages = 0
    while True:
        page = await search(messages, query="needle", page_size=5, page_token=token)
        seen += contents(page)
        ranks += [result.rank for result in page.results]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 5 and len(seen) == 23 and set(seen) == expected
    assert ranks == sorted(ranks, reverse=True)


async def test_a_search_page_token_holds_only_for_its_own_query_and_filters(sessions, messages):
    s = await new_session(sessions, "ann")
    for i in range(3):
        await add(messages, s.session_id, f"word {i}")
    token = (await search(messages, query="word", page_size=1)).next_page_token
    assert token
    assert len((await search(messages, query="word", page_size=1, page_token=token)).results) == 1
    for other in ({"query": "words"}, {"query": "word", "user_id": "ann"}, {"query": "word", "roles": [pb.ROLE_USER]}):
        failure = await expect_failure(search(messages, page_token=token, **other))
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in failure.field_violations
    failure = await expect_failure(search(messages, query="word", page_token=token[:-2] + "AA"))
    assert "page_token" in failure.field_violations


@pytest.mark.parametrize(
    "fields,field",
    [
        ({"query": ""}, "query"),
        ({"query": "   "}, "query"),
        ({"query": "x" * 257}, "query"),
        ({"query": "a\x00b"}, "query"),
        ({"query": "a", "user_id": "u\x00"}, "user_id"),
        ({"query": "a", "app_name": "-bad"}, "app_name"),
        ({"query": "a", "session_ids": ["nope"]}, "session_ids[0]"),
        ({"query": "a", "session_ids": [str(uuid.uuid4()) for _ in range(101)]}, "session_ids"),
        ({"query": "a", "roles": [pb.ROLE_UNSPECIFIED]}, "roles"),
        ({"query": "a", "roles": [99]}, "roles"),
        ({"query": "a", "start_time": timestamp_pb2.Timestamp(seconds=10), "end_time": timestamp_pb2.Timestamp(seconds=10)}, "end_time"),
        ({"query": "a", "start_time": timestamp_pb2.Timestamp(seconds=10**12)}, "start_time"),
        ({"query": "a", "end_time": timestamp_pb2.Timestamp(seconds=0, nanos=-1)}, "end_time"),
        ({"query": "a", "page_size": 101}, "page_size"),
        ({"query": "a", "page_size": -1}, "page_size"),
        ({"query": "a", "page_token": "garbage"}, "page_token"),
    ],
)
async def test_bad_search_requests_are_invalid_argument_naming_the_field(messages, fields, field):
    failure = await expect_failure(search(messages, **fields))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in failure.field_violations, failure.field_violations


async def test_a_query_of_the_longest_length_and_any_characters_is_searched(sessions, messages):
    s = await new_session(sessions, "ann")
    await add(messages, s.session_id, "zürich 東京 <b>bold</b> o'clock")
    for query in ("x" * 256, "'\"&|!():*<->\\", "東京", "o'clock", "<b>"):
        await search(messages, query=query)  # raises on any failure
    assert contents(await search(messages, query="ZÜRICH")) == ["zürich 東京 <b>bold</b> o'clock"]


async def test_a_user_finds_only_their_own_messages_whatever_they_name(database_url, dev):  # noqa: F811
    _, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        alice, bob, admin = Stubs(channel, "alice-token"), Stubs(channel, "bob-token"), Stubs(channel, "admin-token")
        mine = (await alice.sessions.CreateSession(pb.CreateSessionRequest(), metadata=alice.metadata)).session
        theirs = (await bob.sessions.CreateSession(pb.CreateSessionRequest(), metadata=bob.metadata)).session
        for stubs, sid, text in ((alice, mine.session_id, "secret plan alice"), (bob, theirs.session_id, "secret plan bob")):
            await stubs.messages.AddMessage(
                pb.AddMessageRequest(session_id=sid, role=pb.ROLE_USER, content=text), metadata=stubs.metadata
            )

        async def alice_finds(**fields) -> list[str]:
            found = await alice.messages.SearchMessages(SEARCH(query="secret", **fields), metadata=alice.metadata)
            return contents(found)

        assert await alice_finds() == ["secret plan alice"]
        assert await alice_finds(user_id="alice") == ["secret plan alice"]
        assert await alice_finds(session_ids=[theirs.session_id]) == []
        assert await alice_finds(session_ids=[theirs.session_id, mine.session_id]) == ["secret plan alice"]
        failure = await expect_failure(
            alice.messages.SearchMessages(SEARCH(query="secret", user_id="bob"), metadata=alice.metadata)
        )
        assert failure.code == grpc.StatusCode.PERMISSION_DENIED and failure.reason == "OTHER_USER"
        everyone = await admin.messages.SearchMessages(SEARCH(query="secret"), metadata=admin.metadata)
        assert set(contents(everyone)) == {"secret plan alice", "secret plan bob"}
        only_bob = await admin.messages.SearchMessages(SEARCH(query="secret", user_id="bob"), metadata=admin.metadata)
        assert contents(only_bob) == ["secret plan bob"]


async def test_a_message_is_searchable_as_soon_as_it_is_added(sessions, messages, sql):
    s = await new_session(sessions, "ann")
    await add(messages, s.session_id, "fresh words")
    assert contents(await search(messages, query="fresh")) == ["fresh words"]
    # The vector is PostgreSQL's, from content: nothing writes it by hand.
    assert await sql.fetchval("SELECT search_vector = to_tsvector('simple', content) FROM messages") is True


async def test_the_server_refuses_to_start_in_another_configuration_than_the_stored_vectors(database_url):
    server = build_server(test_settings(database_url, search_config="english"))
    with pytest.raises(SettingsError, match="indexed in 'simple'"):
        await server.start()
    await server.stop(grace=0)


async def test_the_migration_stores_vectors_in_the_configured_language(server_url, monkeypatch):
    monkeypatch.setenv("SESSION_SEARCH_CONFIG", "english")
    url = await testing.create_database(server_url, "session_grpc_search")
    try:
        conn = await asyncpg.connect(url)
        try:
            stored = await search_storage.stored_configuration(conn)
            trigger = await conn.fetchval("SELECT prosrc FROM pg_proc WHERE proname = 'messages_search_vector'")
        finally:
            await conn.close()
        assert stored == "english" and "'english'::regconfig" in trigger  # 0005's column, then 0010's trigger
        async with _server(url, search_config="english") as stubs:
            s = (await stubs.sessions.CreateSession(pb.CreateSessionRequest(user_id="ann"))).session
            await stubs.messages.AddMessage(pb.AddMessageRequest(session_id=s.session_id, role=pb.ROLE_USER, content="running dogs"))
            found = await stubs.messages.SearchMessages(SEARCH(query="run dog"))  # stems match in english
            assert contents(found) == ["running dogs"]
    finally:
        await testing.drop_database(server_url, url)


def _server(url: str, **overrides):
    from contextlib import asynccontextmanager

    from .helpers import serving

    @asynccontextmanager
    async def running():
        async with serving(test_settings(url, **overrides)) as (_, channel):
            yield Stubs(channel, None)

    return running()


async def test_a_narrowed_search_finds_the_same_whether_it_reads_the_messages_or_the_index(sessions, messages, sql):
    """A user's search reads the user's messages one by one up to SCAN_LIMIT of them, else goes
    through the GIN index (storage/search.py): both ways find the same, filters and order alike."""
    ann = await new_session(sessions, "ann", app_name="travel")
    other = await new_session(sessions, "ann")
    await new_session(sessions, "ben")
    for i in range(12):
        await add(messages, (ann if i % 3 else other).session_id, "tea " * (1 + i % 4) + f"cup {i}",
                  role=pb.ROLE_USER if i % 2 else pb.ROLE_ASSISTANT)
    cases = [
        {"query": "tea", "user_id": "ann"},
        {"query": "tea cup", "user_id": "ann", "app_name": "travel"},
        {"query": "tea", "user_id": "ann", "roles": [pb.ROLE_USER]},
        {"query": "tea", "session_ids": [other.session_id]},
    ]

    async def every(fields) -> list[tuple[str, float]]:
        found, token = [], ""
        while True:
            page = await search(messages, page_size=5, page_token=token, **fields)
            found += [(r.message.content, r.rank) for r in page.results]
            token = page.next_page_token
            if not token:
                return found

    read_one_by_one = [await every(fields) for fields in cases]
    assert all(found and len(set(found)) == len(found) for found in read_one_by_one)  # one way, never both
    # The counts steer the choice (they are what the statement sums), so past the limit it is the index.
    await sql.execute("UPDATE sessions SET message_count = $1 WHERE user_id = 'ann'", search_storage.SCAN_LIMIT + 1)
    through_the_index = [await every(fields) for fields in cases]
    assert through_the_index == read_one_by_one


async def test_a_fork_copies_the_vectors_of_the_messages_it_copies(sessions, messages, sql):
    """The copies keep their source's vectors (not parsed again): a vector made otherwise by hand
    comes through as it was, and the fork's messages are found like the source's."""
    source = await new_session(sessions, "ann")
    await add(messages, source.session_id, "running dogs")
    await add(messages, source.session_id, "jumping cats")
    await sql.execute(
        "UPDATE messages SET search_vector = to_tsvector('english', content) WHERE session_id = $1 AND sequence = 1",
        uuid.UUID(source.session_id),
    )
    fork = (await sessions.ForkSession(pb.ForkSessionRequest(session_id=source.session_id))).session
    vectors = await sql.fetch(
        "SELECT sequence, search_vector::text AS v FROM messages WHERE session_id = $1 ORDER BY sequence",
        uuid.UUID(fork.session_id),
    )
    assert [row["v"] for row in vectors] == ["'dog':2 'run':1", "'cats':2 'jumping':1"]
    found = await search(messages, query="jumping", session_ids=[fork.session_id])
    assert [r.message.session_id for r in found.results] == [fork.session_id]


async def test_a_changed_content_gets_a_new_vector(sessions, messages, sql):
    s = await new_session(sessions, "ann")
    await add(messages, s.session_id, "old words")
    await sql.execute("UPDATE messages SET content = 'new words' WHERE session_id = $1", uuid.UUID(s.session_id))
    assert contents(await search(messages, query="new")) == ["new words"]
    assert contents(await search(messages, query="old")) == []
