"""ExportUserData and `session-grpc export` / `import`: a documented, versioned JSON Lines file of
everything of a user; an import into a fresh database restores the same ids, sequences, totals and
times, so exporting again gives the same bytes; an import never overwrites; export pages through a
big user; a user exports only their own data."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import asyncpg
import grpc
import pytest

from session_grpc import testing
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc
from session_grpc.domain.errors import AlreadyExists, InvalidArgument
from session_grpc.storage import export
from session_grpc.storage.database import Database, create_engine

from .conftest import test_settings
from .helpers import add, expect_failure, new_session
from .test_auth import dev, token_server  # noqa: F401 - dev is a fixture
from .test_cli import run_cli
from .userdata import populate, struct

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def userdata(channel: grpc.aio.Channel) -> rpc.UserDataServiceStub:
    return rpc.UserDataServiceStub(channel)


async def exported(userdata, user_id: str, metadata=()) -> str:
    lines = [line async for response in userdata.ExportUserData(pb.ExportUserDataRequest(user_id=user_id),
                                                                metadata=metadata)
             for line in response.lines]
    return "".join(line + "\n" for line in lines)


@pytest.mark.parametrize("user_id", ["", "x" * 300, "bad\x00id"])
async def test_a_bad_user_id_is_invalid_argument_naming_it(userdata, user_id):
    failure = await expect_failure(exported(userdata, user_id))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "user_id" in failure.field_violations


async def exported_from(url: str, user_id: str) -> str:
    db = Database(create_engine(test_settings(url)), 60.0)
    try:
        return "".join([line + "\n" async for page in export.export_user(db, user_id) for line in page])
    finally:
        await db.close()


async def imported_into(url: str, text: str) -> export.Imported:
    db = Database(create_engine(test_settings(url)), 60.0)
    try:
        return await db.run(export.import_user, lambda: text.splitlines(keepends=True))
    finally:
        await db.close()


@pytest.fixture
async def fresh_database(server_url):
    url = await testing.create_database(server_url, "session_grpc_import")
    yield url
    await testing.drop_database(server_url, url)


BIG = "123456789012345678901234567890"
LONG = "0.1000000000000000055511151231257827"


async def rich_user(channel, sessions, messages, user_id: str = "xena", sql=None):
    """populate()'s user (forks, rewinds, memories, state, budget, payloads) and messages whose
    values are hard to carry exactly: a huge integer and a long decimal in JSON (written with SQL:
    a protobuf Struct holds doubles), a cost with trailing zeros, text with newlines, quotes and
    non-ASCII, binary payload bytes."""
    found = await populate(channel, user_id)
    session = await new_session(sessions, user_id, app_name="edge",
                                conversation_data=struct({"n": 1}), metadata=struct({"deep": {"a": [1, "two"]}}))
    await add(messages, session.session_id, 'line one\nline "two" — ünïcødé ✓', tokens_used=7, cost="0.100000",
              metadata=struct({"big": 9007199254740993, "pi": 3.14159265358979}))
    await messages.AddMessage(pb.AddMessageRequest(session_id=session.session_id, role=pb.ROLE_ASSISTANT,
                                                   payload=bytes(range(256)), payload_type="application/octet-stream"))
    if sql is not None:
        await sql.execute(f"UPDATE messages SET metadata = metadata || '{{\"big\": {BIG}, \"long\": {LONG}}}'::jsonb "
                          "WHERE session_id = $1 AND sequence = 1", session.session_id)
    return found


async def test_an_export_imported_into_a_fresh_database_exports_to_the_same_bytes(
    channel, sessions, messages, userdata, database_url, fresh_database, sql
):
    await rich_user(channel, sessions, messages, sql=sql)
    await populate(channel, "someone-else")
    first = await exported(userdata, "xena")
    assert first == await exported_from(database_url, "xena"), "the RPC and the command line write the same file"
    done = await imported_into(fresh_database, first)
    assert done.user_id == "xena"
    assert done.counts == {"session": 4, "message": 2 + 4 + 3 + 2, "memory": 3, "session_rewind": 1,
                           "rewound_request": 2, "state_update": 2, "user_state": 2, "budget": 1}
    assert await exported_from(fresh_database, "xena") == first
    # Totals, sequences and ids as stored, not recomputed: compare the rows themselves.
    columns = ("id, app_name, title, status, message_count, total_tokens, total_cost::text, version, create_time, "
               "update_time, last_activity_time, last_event_time, forked_from_session_id, forked_at_sequence")
    query = f"SELECT {columns} FROM sessions WHERE user_id = 'xena' ORDER BY id"
    target = await connect(fresh_database)
    try:
        assert [tuple(r) for r in await target.fetch(query)] == [tuple(r) for r in await sql.fetch(query)]
        messages_query = ("SELECT id, session_id, sequence, content, tokens_used, cost::text, payload, create_time, "
                          "event_time, request_id FROM messages WHERE user_id = 'xena' ORDER BY session_id, sequence")
        assert [tuple(r) for r in await target.fetch(messages_query)] == [tuple(r) for r in await sql.fetch(messages_query)]
        assert await target.fetchval("SELECT count(*) FROM sessions WHERE user_id <> 'xena'") == 0
    finally:
        await target.close()


async def connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url)


async def test_the_export_follows_the_documented_format(channel, sessions, messages, userdata, sql):
    await rich_user(channel, sessions, messages, sql=sql)
    text = await exported(userdata, "xena")
    lines = text.splitlines()
    records = [json.loads(line) for line in lines]
    assert records[0] == {"type": "header", "format": export.FORMAT, "version": export.VERSION, "user_id": "xena"}
    assert records[-1] == {"type": "end", "record_count": len(lines) - 2}
    kinds = {record["type"] for record in records}
    assert kinds == {"header", "user_state", "budget", "session", "memory", "session_rewind", "rewound_request",
                     "state_update", "message", "usage", "end"}
    doc = (ROOT / "docs" / "export-format.md").read_text()
    assert f"version {export.VERSION}" in doc.lower() or f'"version": {export.VERSION}' in doc
    for kind in kinds:
        assert f"`{kind}`" in doc, f"docs/export-format.md documents the {kind} record"
    edge = [r for r in records if r["type"] == "message" and r.get("metadata", {}).get("big")]
    assert edge[0]["metadata"]["big"] == int(BIG) and edge[0]["cost"] == "0.100000"
    assert f'"big": {BIG}' in text and f'"long": {LONG}' in text, "JSON numbers go out digit for digit"
    assert edge[0]["content"] == 'line one\nline "two" — ünïcødé ✓'
    binary = [r for r in records if r["type"] == "message" and r["payload_type"] == "application/octet-stream"]
    assert base64.b64decode(binary[0]["payload"]) == bytes(range(256))
    session = next(r for r in records if r["type"] == "session")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", session["create_time"])
    usage = [r for r in records if r["type"] == "usage"]
    assert sum(r["message_count"] for r in usage) == sum(1 for r in records if r["type"] == "message")


async def test_an_import_never_overwrites_and_stores_nothing_when_refused(
    channel, sessions, messages, userdata, database_url, sql
):
    await rich_user(channel, sessions, messages)
    text = await exported(userdata, "xena")
    before = await sql.fetchval("SELECT count(*) FROM messages")
    with pytest.raises(AlreadyExists):
        await imported_into(database_url, text)
    assert await sql.fetchval("SELECT count(*) FROM messages") == before
    # After an erasure the same file restores the user.
    await userdata.DeleteUserData(pb.DeleteUserDataRequest(user_id="xena"))
    await imported_into(database_url, text)
    assert await exported(userdata, "xena") == text


async def test_a_cut_short_or_foreign_file_is_refused_whole(database_url, fresh_database, channel, sessions,
                                                            messages, userdata):
    await rich_user(channel, sessions, messages)
    lines = (await exported(userdata, "xena")).splitlines(keepends=True)
    for broken in (lines[:-1], lines[:3] + lines[4:], ['{"type": "header", "format": "other", "version": 1}\n'],
                   [lines[0].replace('"version": 1', '"version": 2'), *lines[1:]], ["not json\n"]):
        with pytest.raises(InvalidArgument):
            await imported_into(fresh_database, "".join(broken))
    conn = await connect(fresh_database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM sessions") == 0
    finally:
        await conn.close()


async def test_a_big_user_is_exported_page_by_page(channel, sessions, messages, userdata, monkeypatch, database_url):
    monkeypatch.setattr(export, "SESSION_PAGE", 2)
    monkeypatch.setattr(export, "MESSAGE_PAGE", 3)
    for _ in range(5):
        session = await new_session(sessions, "paged")
        await messages.AddMessages(pb.AddMessagesRequest(session_id=session.session_id, messages=[
            pb.NewMessage(role=pb.ROLE_USER, content=f"m{i}") for i in range(7)]))
    db = Database(create_engine(test_settings(database_url)), 60.0)
    pages = []
    try:
        async for page in export.export_user(db, "paged"):
            pages.append(page)
    finally:
        await db.close()
    assert max(len(page) for page in pages) <= 1 + 3, "no page holds more than a session line and a page of messages"
    records = [json.loads(line) for page in pages for line in page]
    assert sum(r["type"] == "message" for r in records) == 35
    assert sum(r["type"] == "session" for r in records) == 5
    per_session = {}
    for r in records:
        if r["type"] == "message":
            per_session.setdefault(r["session_id"], []).append(r["sequence"])
    assert all(found == list(range(1, 8)) for found in per_session.values())


async def test_a_user_exports_their_own_data_only(database_url, dev):  # noqa: F811
    _, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        data = rpc.UserDataServiceStub(channel)
        sessions = rpc.SessionServiceStub(channel)
        bob, alice = (("authorization", "Bearer bob-token"),), (("authorization", "Bearer alice-token"),)
        await sessions.CreateSession(pb.CreateSessionRequest(user_id="bob"), metadata=bob)
        failure = await expect_failure(exported(data, "bob", alice))
        assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "OTHER_USER")
        own = await exported(data, "", bob)
        assert json.loads(own.splitlines()[0])["user_id"] == "bob"
        assert sum(json.loads(line)["type"] == "session" for line in own.splitlines()) == 1


async def test_the_command_line_exports_and_imports(channel, sessions, messages, userdata, database_url,
                                                    fresh_database, tmp_path):
    await rich_user(channel, sessions, messages)
    out = tmp_path / "xena.jsonl"
    code, output = await run_cli("export", "--user", "xena", "--out", str(out), database_url=database_url)
    assert code == 0, output
    assert out.read_text() == await exported(userdata, "xena")
    code, output = await run_cli("import", str(out), database_url=fresh_database)
    assert code == 0, output
    assert "xena" in output and "message 11" in output
    assert await exported_from(fresh_database, "xena") == out.read_text()
    code, output = await run_cli("import", str(out), database_url=fresh_database)
    assert code == 1 and "already exists" in output, output


async def test_the_python_client_streams_the_export_line_by_line(service, channel, sessions, messages, userdata):
    from session_client import SessionClient

    await rich_user(channel, sessions, messages)
    async with SessionClient(f"127.0.0.1:{service.port}") as client:
        lines = [line async for line in client.export_user_data("xena")]
    assert "".join(line + "\n" for line in lines) == await exported(userdata, "xena")
