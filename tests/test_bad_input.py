"""Bad input is INVALID_ARGUMENT with a google.rpc.BadRequest naming every bad field, and nothing is stored.

SQL-looking text is plain data: stored and returned verbatim.
"""

from __future__ import annotations

import math
import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc.paging import PageTokens
from session_grpc.settings import Settings

from .helpers import add, expect_failure, new_session

MISSING_ID = str(uuid.uuid4())


def struct(values: dict) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def nested_objects(levels: int) -> dict:
    """A JSON object `levels` objects deep: {"a": {"a": ... {}}}."""
    value: dict = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def nested_lists(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


async def expect_invalid(call, *fields: str):
    """The call fails with INVALID_ARGUMENT whose BadRequest names each of `fields`."""
    failure = await expect_failure(call)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure
    for field in fields:
        assert field in failure.field_violations, (field, failure.field_violations)
    return failure


async def row_counts(sql) -> tuple[int, int, int]:
    return (
        await sql.fetchval("SELECT count(*) FROM sessions"),
        await sql.fetchval("SELECT count(*) FROM messages"),
        await sql.fetchval("SELECT count(*) FROM memories"),
    )


# ---- CreateSession ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user_id", ["", "   ", "\t\n", "x" * 256, "al\x00ice"], ids=["empty", "spaces", "whitespace", "256-chars", "nul"]
)
async def test_create_session_bad_user_id_is_invalid_argument_naming_user_id(sessions, sql, user_id):
    await expect_invalid(sessions.CreateSession(pb.CreateSessionRequest(user_id=user_id)), "user_id")
    assert await row_counts(sql) == (0, 0, 0)


async def test_create_session_user_id_of_255_characters_is_accepted(sessions):
    session = await new_session(sessions, "u" * 255)
    assert session.user_id == "u" * 255


@pytest.mark.parametrize("title", ["a\x00b", "t" * 1001], ids=["nul", "1001-chars"])
async def test_create_session_bad_title_is_invalid_argument_naming_title(sessions, sql, title):
    await expect_invalid(sessions.CreateSession(pb.CreateSessionRequest(user_id="alice", title=title)), "title")
    assert await row_counts(sql) == (0, 0, 0)


async def test_create_session_title_of_1000_characters_is_accepted(sessions):
    assert (await new_session(sessions, "alice", title="t" * 1000)).title == "t" * 1000


@pytest.mark.parametrize(
    "request_id",
    ["not-a-uuid", uuid.uuid4().hex, "{" + str(uuid.uuid4()) + "}", "urn:uuid:" + str(uuid.uuid4()), " "],
    ids=["words", "no-dashes", "braces", "urn", "space"],
)
async def test_create_session_malformed_request_id_is_invalid_argument_naming_request_id(
    sessions, sql, request_id
):
    await expect_invalid(
        sessions.CreateSession(pb.CreateSessionRequest(user_id="alice", request_id=request_id)), "request_id"
    )
    assert await row_counts(sql) == (0, 0, 0)


# ---- session ids -----------------------------------------------------------------------------

_HEX = uuid.uuid4().hex
BAD_IDS = {
    "empty": "",
    "words": "not-a-uuid",
    "no-dashes": _HEX,
    "too-short": str(uuid.uuid4())[:-1],
    "dashes-misplaced": "-".join([_HEX[:4], _HEX[4:8], _HEX[8:12], _HEX[12:16], _HEX[16:]]),
    "braces-and-dashes": "{" + _HEX[:8] + "-" + _HEX[8:] + "-}",
}


def _stream(messages, request):
    async def drain():
        return [item async for item in messages.StreamMessages(request)]

    return drain()


ID_CALLS = {
    "GetSession": lambda s, m, mem, sid: s.GetSession(pb.GetSessionRequest(session_id=sid)),
    "EndSession": lambda s, m, mem, sid: s.EndSession(pb.EndSessionRequest(session_id=sid)),
    "DeleteSession": lambda s, m, mem, sid: s.DeleteSession(pb.DeleteSessionRequest(session_id=sid)),
    "GetSessionSummary": lambda s, m, mem, sid: s.GetSessionSummary(pb.GetSessionSummaryRequest(session_id=sid)),
    "GetMemory": lambda s, m, mem, sid: mem.GetMemory(pb.GetMemoryRequest(session_id=sid)),
    "DeleteMemory": lambda s, m, mem, sid: mem.DeleteMemory(pb.DeleteMemoryRequest(session_id=sid)),
    "CreateMemory": lambda s, m, mem, sid: mem.CreateMemory(pb.CreateMemoryRequest(session_id=sid)),
    "ListMessages": lambda s, m, mem, sid: m.ListMessages(pb.ListMessagesRequest(session_id=sid)),
    "StreamMessages": lambda s, m, mem, sid: _stream(m, pb.StreamMessagesRequest(session_id=sid)),
    "AddMessage": lambda s, m, mem, sid: m.AddMessage(
        pb.AddMessageRequest(session_id=sid, role=pb.ROLE_USER, content="hi")
    ),
    "UpdateState": lambda s, m, mem, sid: s.UpdateState(pb.UpdateStateRequest(session_id=sid)),
}


@pytest.mark.parametrize("bad_id", BAD_IDS.values(), ids=BAD_IDS.keys())
@pytest.mark.parametrize("method", ID_CALLS.keys())
async def test_malformed_session_id_is_invalid_argument_naming_session_id(
    sessions, messages, memories, method, bad_id
):
    await expect_invalid(ID_CALLS[method](sessions, messages, memories, bad_id), "session_id")


@pytest.mark.parametrize("bad_id", BAD_IDS.values(), ids=BAD_IDS.keys())
async def test_update_session_malformed_session_id_names_session_session_id(sessions, bad_id):
    await expect_invalid(
        sessions.UpdateSession(pb.UpdateSessionRequest(session=pb.Session(session_id=bad_id, title="t"))),
        "session.session_id",
    )


@pytest.mark.parametrize("bad_id", BAD_IDS.values(), ids=BAD_IDS.keys())
async def test_update_memory_malformed_session_id_names_memory_session_id(memories, bad_id):
    await expect_invalid(
        memories.UpdateMemory(
            pb.UpdateMemoryRequest(memory=pb.Memory(session_id=bad_id, conversation_summary="s"), allow_missing=True)
        ),
        "memory.session_id",
    )


async def test_session_id_in_upper_case_finds_the_session(sessions):
    session = await new_session(sessions, "alice")
    fetched = (await sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id.upper()))).session
    assert fetched.session_id == session.session_id


# ---- AddMessage --------------------------------------------------------------------------------


@pytest.fixture
async def session_id(sessions) -> str:
    return (await new_session(sessions, "alice")).session_id


async def assert_no_message_counted(sessions, sql, session_id: str) -> None:
    assert await sql.fetchval("SELECT count(*) FROM messages") == 0
    current = (await sessions.GetSession(pb.GetSessionRequest(session_id=session_id))).session
    assert (current.message_count, current.total_tokens) == (0, 0)


@pytest.mark.parametrize("content", ["", "a\x00b"], ids=["empty", "nul"])
async def test_add_message_bad_content_is_invalid_argument_naming_content(sessions, messages, sql, session_id, content):
    await expect_invalid(add(messages, session_id, content), "content")
    await assert_no_message_counted(sessions, sql, session_id)


@pytest.mark.parametrize("tokens", [-1, -(2**63), 1_000_000_001, 2**63 - 1])
async def test_add_message_tokens_used_out_of_range_is_invalid_argument(sessions, messages, sql, session_id, tokens):
    await expect_invalid(add(messages, session_id, tokens_used=tokens), "tokens_used")
    await assert_no_message_counted(sessions, sql, session_id)


async def test_add_message_tokens_used_of_one_billion_is_accepted(messages, session_id):
    assert (await add(messages, session_id, tokens_used=1_000_000_000)).tokens_used == 1_000_000_000


BAD_COSTS = [
    "-1",
    "abc",
    "1e-5",
    "1E5",
    "NaN",
    "Infinity",
    " 1",
    "1 ",
    "1\n",
    "+1",
    "0x1",
    "1,5",
    "\u0661",  # ARABIC-INDIC DIGIT ONE: a digit, but not an ASCII one
    "0.1234567890123456789",  # 19 fraction digits
    "1234567890123",  # 13 integer digits
]


@pytest.mark.parametrize("cost", BAD_COSTS, ids=repr)
async def test_add_message_cost_that_is_not_a_plain_decimal_is_invalid_argument_naming_cost(
    sessions, messages, sql, session_id, cost
):
    await expect_invalid(add(messages, session_id, cost=cost), "cost")
    await assert_no_message_counted(sessions, sql, session_id)


async def test_add_message_cost_with_12_integer_and_18_fraction_digits_is_accepted(messages, session_id):
    cost = "123456789012.123456789012345678"
    assert (await add(messages, session_id, cost=cost)).cost == cost


@pytest.mark.parametrize("role", [pb.ROLE_UNSPECIFIED, 99, -1], ids=["unspecified", "99", "minus-1"])
async def test_add_message_without_a_known_role_is_invalid_argument_naming_role(
    sessions, messages, sql, session_id, role
):
    await expect_invalid(
        messages.AddMessage(pb.AddMessageRequest(session_id=session_id, role=role, content="hi")), "role"
    )
    await assert_no_message_counted(sessions, sql, session_id)


async def test_enum_and_cost_errors_name_the_values_the_json_api_accepts(sessions, messages, session_id):
    """The hints name what a client types in JSON (grpcurl, buf curl): ROLE_USER, not USER."""
    failure = await expect_invalid(
        messages.AddMessage(pb.AddMessageRequest(session_id=session_id, content="hi", message_type=42, cost="1e-5")),
        "role", "message_type", "cost",
    )
    assert "ROLE_USER, ROLE_ASSISTANT, ROLE_SYSTEM, ROLE_TOOL" in failure.field_violations["role"]
    assert "MESSAGE_TYPE_CHAT" in failure.field_violations["message_type"]
    assert "12 integer and 18 fraction digits" in failure.field_violations["cost"]
    failure = await expect_invalid(sessions.ListSessions(pb.ListSessionsRequest(user_id="u", status=99)), "status")
    assert "SESSION_STATUS_ACTIVE" in failure.field_violations["status"]
    failure = await expect_invalid(
        sessions.UpdateSession(
            pb.UpdateSessionRequest(
                session=pb.Session(session_id=session_id, status=pb.SESSION_STATUS_UNSPECIFIED),
                update_mask=field_mask_pb2.FieldMask(paths=["status"]),
            )
        ),
        "session.status",
    )
    assert "SESSION_STATUS_ENDED" in failure.field_violations["session.status"]


@pytest.mark.parametrize("message_type", [42, -3])
async def test_add_message_unknown_message_type_is_invalid_argument_naming_message_type(
    sessions, messages, sql, session_id, message_type
):
    await expect_invalid(add(messages, session_id, message_type=message_type), "message_type")
    await assert_no_message_counted(sessions, sql, session_id)


@pytest.mark.parametrize("request_id", ["not-a-uuid", uuid.uuid4().hex], ids=["words", "no-dashes"])
async def test_add_message_malformed_request_id_is_invalid_argument_naming_request_id(
    sessions, messages, sql, session_id, request_id
):
    await expect_invalid(add(messages, session_id, request_id=request_id), "request_id")
    await assert_no_message_counted(sessions, sql, session_id)


async def test_add_message_reports_every_bad_field_in_one_bad_request(messages, sql):
    request = pb.AddMessageRequest(
        session_id="nope",
        role=pb.ROLE_UNSPECIFIED,
        message_type=42,
        content="",
        tokens_used=-1,
        cost="abc",
        metadata=struct({"x": math.nan}),
        request_id="nope",
    )
    failure = await expect_invalid(
        messages.AddMessage(request),
        "session_id",
        "role",
        "message_type",
        "content",
        "tokens_used",
        "cost",
        "metadata",
        "request_id",
    )
    assert len(failure.field_violations) == 8
    assert await sql.fetchval("SELECT count(*) FROM messages") == 0


async def test_create_session_reports_every_bad_field_in_one_bad_request(sessions, sql):
    request = pb.CreateSessionRequest(
        user_id="",
        title="a\x00",
        conversation_data=struct({"x": math.inf}),
        metadata=struct({"k\x00": 1}),
        request_id="nope",
    )
    failure = await expect_invalid(
        sessions.CreateSession(request), "user_id", "title", "conversation_data", "metadata", "request_id"
    )
    assert len(failure.field_violations) == 5
    assert await row_counts(sql) == (0, 0, 0)


async def test_update_session_reports_every_bad_field_in_one_bad_request(sessions, session_id):
    request = pb.UpdateSessionRequest(
        session=pb.Session(
            session_id=session_id, title="x" * 1001, metadata=struct({"n": math.nan}), status=pb.SESSION_STATUS_ENDED
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["title", "metadata", "user_id"]),
    )
    await expect_invalid(sessions.UpdateSession(request), "session.title", "session.metadata", "update_mask")
    current = (await sessions.GetSession(pb.GetSessionRequest(session_id=session_id))).session
    assert (current.title, current.status) == ("", pb.SESSION_STATUS_ACTIVE)


# ---- memory text fields ------------------------------------------------------------------------


async def test_create_memory_nul_in_text_fields_is_invalid_argument_naming_each(memories, sql, session_id):
    request = pb.CreateMemoryRequest(session_id=session_id, conversation_summary="s\x00", facts=["ok", "b\x00d"])
    failure = await expect_invalid(memories.CreateMemory(request), "conversation_summary", "facts[1]")
    assert "facts[0]" not in failure.field_violations
    assert await sql.fetchval("SELECT count(*) FROM memories") == 0


async def test_update_memory_nul_in_facts_is_invalid_argument_naming_memory_facts(memories, sql, session_id):
    request = pb.UpdateMemoryRequest(memory=pb.Memory(session_id=session_id, facts=["\x00"]), allow_missing=True)
    await expect_invalid(memories.UpdateMemory(request), "memory.facts[0]")
    assert await sql.fetchval("SELECT count(*) FROM memories") == 0


# ---- Struct values -----------------------------------------------------------------------------

BAD_STRUCTS = {
    "nan": {"n": math.nan},
    "infinity": {"n": math.inf},
    "minus-infinity": {"deep": {"n": -math.inf}},
    "nan-in-list": {"l": [1, math.nan]},
    "nul-in-key": {"k\x00": "v"},
    "nul-in-nested-key": {"a": {"b\x00": 1}},
    "nul-in-string": {"s": "a\x00b"},
    "nul-in-list-string": {"l": ["ok", "\x00"]},
    "33-objects-deep": nested_objects(33),
    "33-lists-deep": {"l": nested_lists(32)},
}


def _struct_calls(session_id: str, bad: struct_pb2.Struct):
    """(name, field the violation must name, call maker) for every Struct field of every request."""
    return {
        "CreateSession.conversation_data": (
            "conversation_data",
            lambda s, m, mem: s.CreateSession(pb.CreateSessionRequest(user_id="alice", conversation_data=bad)),
        ),
        "CreateSession.metadata": (
            "metadata",
            lambda s, m, mem: s.CreateSession(pb.CreateSessionRequest(user_id="alice", metadata=bad)),
        ),
        "UpdateSession.conversation_data": (
            "session.conversation_data",
            lambda s, m, mem: s.UpdateSession(
                pb.UpdateSessionRequest(session=pb.Session(session_id=session_id, conversation_data=bad))
            ),
        ),
        "UpdateSession.metadata": (
            "session.metadata",
            lambda s, m, mem: s.UpdateSession(
                pb.UpdateSessionRequest(session=pb.Session(session_id=session_id, metadata=bad))
            ),
        ),
        "AddMessage.metadata": (
            "metadata",
            lambda s, m, mem: m.AddMessage(
                pb.AddMessageRequest(session_id=session_id, role=pb.ROLE_USER, content="hi", metadata=bad)
            ),
        ),
        "CreateMemory.preferences": (
            "preferences",
            lambda s, m, mem: mem.CreateMemory(pb.CreateMemoryRequest(session_id=session_id, preferences=bad)),
        ),
        "CreateMemory.metadata": (
            "metadata",
            lambda s, m, mem: mem.CreateMemory(pb.CreateMemoryRequest(session_id=session_id, metadata=bad)),
        ),
        "UpdateMemory.preferences": (
            "memory.preferences",
            lambda s, m, mem: mem.UpdateMemory(
                pb.UpdateMemoryRequest(memory=pb.Memory(session_id=session_id, preferences=bad), allow_missing=True)
            ),
        ),
        "UpdateMemory.metadata": (
            "memory.metadata",
            lambda s, m, mem: mem.UpdateMemory(
                pb.UpdateMemoryRequest(memory=pb.Memory(session_id=session_id, metadata=bad), allow_missing=True)
            ),
        ),
    }


STRUCT_TARGETS = list(_struct_calls(MISSING_ID, struct_pb2.Struct()))


@pytest.mark.parametrize("kind", BAD_STRUCTS.keys())
@pytest.mark.parametrize("target", STRUCT_TARGETS)
async def test_struct_value_postgres_cannot_store_is_invalid_argument_naming_the_field(
    sessions, messages, memories, sql, session_id, target, kind
):
    field, call = _struct_calls(session_id, struct(BAD_STRUCTS[kind]))[target]
    before = (await sessions.GetSession(pb.GetSessionRequest(session_id=session_id))).session
    await expect_invalid(call(sessions, messages, memories), field)
    assert await row_counts(sql) == (1, 0, 0)
    after = (await sessions.GetSession(pb.GetSessionRequest(session_id=session_id))).session
    assert after == before


async def test_struct_32_levels_deep_is_stored_and_returned_intact(sessions, messages):
    deep = struct(nested_objects(32))
    session = await new_session(sessions, "alice", metadata=deep)
    fetched = (await sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id))).session
    assert fetched.metadata == deep
    message = await add(messages, session.session_id, metadata=deep)
    assert message.metadata == deep


def _varint(number: int) -> bytes:
    out = b""
    while True:
        low, number = number & 0x7F, number >> 7
        if not number:
            return out + bytes([low])
        out += bytes([low | 0x80])


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def deep_struct_bytes(levels: int) -> bytes:
    """A Struct `levels` objects deep, encoded by hand: deeper than python-protobuf will build or parse."""
    encoded = b""
    for _ in range(levels - 1):
        encoded = _field(1, _field(1, b"a") + _field(2, _field(5, encoded)))
    return encoded


@pytest.mark.parametrize("levels", [34, 35, 200])
async def test_struct_nested_deeper_than_the_parser_allows_is_invalid_argument(channel, sql, levels):
    create = channel.unary_unary(
        "/session.v1.SessionService/CreateSession", request_serializer=bytes, response_deserializer=bytes
    )
    payload = _field(1, b"alice") + _field(4, deep_struct_bytes(levels))
    failure = await expect_failure(create(payload))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert await row_counts(sql) == (0, 0, 0)


# ---- state deltas ------------------------------------------------------------------------------

SCOPES = ["session_state", "user_state", "app_state"]


def _scoped(scope: str, given: pb.StateDelta) -> pb.ScopedStateDelta:
    return pb.ScopedStateDelta(**{scope: given})


def _delta_calls(session_id: str, change: pb.ScopedStateDelta):
    """The two writes that carry state deltas, each with `change`."""
    return {
        "AddMessage": lambda s, m: m.AddMessage(
            pb.AddMessageRequest(session_id=session_id, role=pb.ROLE_USER, content="hi", state_delta=change)
        ),
        "UpdateState": lambda s, m: s.UpdateState(pb.UpdateStateRequest(session_id=session_id, state_delta=change)),
    }


async def assert_no_state_changed(sessions, sql, session_id: str, before: pb.Session) -> None:
    assert await sql.fetchval("SELECT count(*) FROM messages") == 0
    assert await sql.fetchval("SELECT count(*) FROM user_states") == 0
    assert await sql.fetchval("SELECT count(*) FROM app_states") == 0
    assert (await sessions.GetSession(pb.GetSessionRequest(session_id=session_id))).session == before


@pytest.mark.parametrize("kind", BAD_STRUCTS.keys())
@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("rpc", ["AddMessage", "UpdateState"])
async def test_state_delta_set_postgres_cannot_store_is_invalid_argument_naming_it(
    sessions, messages, sql, session_id, rpc, scope, kind
):
    before = (await sessions.GetSession(pb.GetSessionRequest(session_id=session_id))).session
    change = _scoped(scope, pb.StateDelta(set=struct(BAD_STRUCTS[kind])))
    await expect_invalid(_delta_calls(session_id, change)[rpc](sessions, messages), f"state_delta.{scope}.set")
    await assert_no_state_changed(sessions, sql, session_id, before)


BAD_DELTAS = {
    "set-over-64-KiB": (pb.StateDelta(set=struct({"k": "x" * 70_000})), "set"),
    "nul-in-delete": (pb.StateDelta(delete=["ok", "a\x00b"]), "delete[1]"),
    "delete-over-64-KiB": (pb.StateDelta(delete=[f"{i:02d}" + "k" * 998 for i in range(70)]), "delete"),
    "set-and-delete-one-key": (pb.StateDelta(set=struct({"k": 1, "j": 2}), delete=["k"]), "delete[0]"),
}


@pytest.mark.parametrize("kind", BAD_DELTAS.keys())
@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("rpc", ["AddMessage", "UpdateState"])
async def test_bad_state_delta_is_invalid_argument_naming_the_field(sessions, messages, sql, session_id, rpc, scope, kind):
    given, field = BAD_DELTAS[kind]
    before = (await sessions.GetSession(pb.GetSessionRequest(session_id=session_id))).session
    await expect_invalid(_delta_calls(session_id, _scoped(scope, given))[rpc](sessions, messages), f"state_delta.{scope}.{field}")
    await assert_no_state_changed(sessions, sql, session_id, before)


async def test_state_delta_at_its_limits_is_accepted(sessions, session_id):
    keys = [f"{i:02d}" + "k" * 998 for i in range(65)]  # 65,000 bytes of keys to delete
    change = pb.ScopedStateDelta(user_state=pb.StateDelta(set=struct(nested_objects(32)), delete=keys))
    changed = await sessions.UpdateState(pb.UpdateStateRequest(session_id=session_id, state_delta=change))
    assert changed.user_state.state == struct(nested_objects(32))


async def test_update_state_malformed_request_id_is_invalid_argument_naming_request_id(sessions, sql, session_id):
    change = pb.ScopedStateDelta(user_state=pb.StateDelta(set=struct({"u": 1})))
    await expect_invalid(
        sessions.UpdateState(pb.UpdateStateRequest(session_id=session_id, state_delta=change, request_id="nope")),
        "request_id",
    )
    assert await sql.fetchval("SELECT count(*) FROM user_states") == 0


BAD_APP_NAMES = ["-starts-with-dash", "has space", "a" * 129, "slash/", "nul\x00"]


@pytest.mark.parametrize("app_name", BAD_APP_NAMES)
async def test_state_reads_with_a_bad_app_name_are_invalid_argument_naming_app_name(sessions, app_name):
    await expect_invalid(sessions.GetUserState(pb.GetUserStateRequest(app_name=app_name, user_id="alice")), "app_name")
    await expect_invalid(sessions.GetAppState(pb.GetAppStateRequest(app_name=app_name)), "app_name")


@pytest.mark.parametrize("user_id", ["", "   ", "x" * 256, "al\x00ice"], ids=["empty", "spaces", "256-chars", "nul"])
async def test_get_user_state_bad_user_id_is_invalid_argument_naming_user_id(sessions, user_id):
    await expect_invalid(sessions.GetUserState(pb.GetUserStateRequest(user_id=user_id)), "user_id")


# ---- SQL-looking text is data ------------------------------------------------------------------

SQL_TEXT = "'; DROP TABLE sessions; --"


async def test_sql_looking_text_is_stored_and_returned_verbatim(sessions, messages, memories, sql):
    session = await new_session(
        sessions, SQL_TEXT, title=SQL_TEXT, metadata=struct({SQL_TEXT: SQL_TEXT}), request_id=str(uuid.uuid4())
    )
    assert (session.user_id, session.title) == (SQL_TEXT, SQL_TEXT)
    message = await add(messages, session.session_id, SQL_TEXT)
    memory = (
        await memories.CreateMemory(
            pb.CreateMemoryRequest(session_id=session.session_id, conversation_summary=SQL_TEXT, facts=[SQL_TEXT])
        )
    ).memory
    fetched = (await sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id))).session
    assert (fetched.title, dict(fetched.metadata)) == (SQL_TEXT, {SQL_TEXT: SQL_TEXT})
    listed = (await messages.ListMessages(pb.ListMessagesRequest(session_id=session.session_id))).messages
    assert [m.content for m in listed] == [SQL_TEXT] == [message.content]
    assert (memory.conversation_summary, list(memory.facts)) == (SQL_TEXT, [SQL_TEXT])
    users = (await sessions.ListSessions(pb.ListSessionsRequest(user_id=SQL_TEXT))).sessions
    assert [s.session_id for s in users] == [session.session_id]
    assert await sql.fetchval("SELECT title FROM sessions") == SQL_TEXT
    assert await row_counts(sql) == (1, 1, 1)


@pytest.mark.parametrize("text", ["%", "_", "\\", "$1", "' OR '1'='1", "😀 ünïcödé", "\u202e"])
async def test_special_characters_in_user_id_match_only_themselves(sessions, text):
    mine = await new_session(sessions, text)
    await new_session(sessions, "someone-else")
    listed = (await sessions.ListSessions(pb.ListSessionsRequest(user_id=text))).sessions
    assert [s.session_id for s in listed] == [mine.session_id]


# ---- forged page tokens ----------------------------------------------------------------------
# Sealed with the test server's own secret, so they pass the MAC: what they carry must still be
# checked (the default secret is public). Each is INVALID_ARGUMENT, never INTERNAL.

TOKENS = PageTokens(Settings().page_token_secret)
NESTED = b"[" * 100_000 + b"]" * 100_000
MESSAGE_POSITIONS = [b"[9223372036854775808]", b"[1000000000000000000000000000000]", b"[-1]", b"[1.5]",
                     b"[true]", b'["7"]', b"[1, 2]", b"[]", b"{}", b"not json", b"\xff\xfe", NESTED, b"[1e400]"]
SESSION_POSITIONS = [
    b'["0001-01-01T00:00:00+00:00", "123e4567-e89b-12d3-a456-426614174000"]',
    b'["9999-12-31T23:59:59.999999-05:00", "123e4567-e89b-12d3-a456-426614174000"]',
    b'["2026-01-01T00:00:00", "123e4567-e89b-12d3-a456-426614174000"]',
    b'["2026-01-01T00:00:00+00:00", "not-a-uuid"]',
    b'["2026-01-01T00:00:00+00:00", "123E4567-E89B-12D3-A456-426614174000"]',
    b'["2026-01-01T00:00:00+00:00", 7]',
    b'[9223372036854775808, "123e4567-e89b-12d3-a456-426614174000"]',
    b'["yesterday", "123e4567-e89b-12d3-a456-426614174000"]',
    b'["2026-01-01T00:00:00+00:00"]',
    b"not json",
    NESTED,
]


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("payload", MESSAGE_POSITIONS, ids=lambda p: p[:40].decode(errors="replace"))
async def test_forged_message_page_token_is_invalid_argument_naming_page_token(messages, session_id, payload, descending):
    token = TOKENS.seal("messages", {"session_id": session_id, "descending": descending}, payload)
    order = "sequence desc" if descending else ""
    await expect_invalid(
        messages.ListMessages(pb.ListMessagesRequest(session_id=session_id, page_token=token, order_by=order)),
        "page_token",
    )


@pytest.mark.parametrize("payload", SESSION_POSITIONS, ids=lambda p: p[:40].decode(errors="replace"))
async def test_forged_session_page_token_is_invalid_argument_naming_page_token(sessions, payload):
    token = TOKENS.seal("sessions", {"user_id": "user-1", "status": 0}, payload)
    await expect_invalid(sessions.ListSessions(pb.ListSessionsRequest(user_id="user-1", page_token=token)), "page_token")


async def test_a_genuine_position_sealed_the_same_way_pages_on(sessions, messages, session_id):
    """The forged tokens above differ from genuine ones only in what they carry."""
    for _ in range(3):
        await add(messages, session_id)
    token = TOKENS.seal("messages", {"session_id": session_id, "descending": False}, b"[1]")
    page = await messages.ListMessages(pb.ListMessagesRequest(session_id=session_id, page_token=token))
    assert [m.sequence for m in page.messages] == [2, 3]
