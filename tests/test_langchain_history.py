"""session_client.langchain: a LangChain chat message history over a live server. Every message type
comes back equal to what was added (sync and async), what session-grpc itself records of each
message (role, type, text, tokens) follows from it, and histories are keyed as documented."""

from __future__ import annotations

import asyncio
import functools
import uuid

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
)

from session_client import SessionClient, pb
from session_client.langchain import MEDIA_TYPE, SessionChatMessageHistory, from_stored, session_id_for


def every_kind() -> list[BaseMessage]:
    """One message of each kind LangChain has, with every field a history must keep."""
    return [
        SystemMessage("You plan trips.", id="sys-1", additional_kwargs={"cache": {"type": "ephemeral"}}),
        HumanMessage(
            content=[
                {"type": "text", "text": "Where in May? \u2600"},
                {"type": "image", "source_type": "base64", "mime_type": "image/png", "data": "iVBORw0KGgo="},
            ],
            name="alice",
            id="h-1",
            additional_kwargs={"client": "web", "big": 2**63 + 7},
        ),
        AIMessage(
            content="",
            id="a-1",
            name="planner",
            tool_calls=[{"name": "weather", "args": {"city": "Lisbon", "days": 3, "n": 9007199254740993}, "id": "call-1"}],
            invalid_tool_calls=[{"name": "maps", "args": "{not json", "id": "call-2", "error": "bad json"}],
            usage_metadata={
                "input_tokens": 120, "output_tokens": 30, "total_tokens": 150,
                "input_token_details": {"cache_read": 100}, "output_token_details": {"reasoning": 10},
            },
            response_metadata={"model_name": "fake-1", "finish_reason": "tool_calls", "logprobs": None, "t": 0.1},
            additional_kwargs={"refusal": None, "nested": {"list": [1, 2.5, "x", True, None]}},
        ),
        ToolMessage(content="24 C, sunny", tool_call_id="call-1", name="weather", artifact={"raw": [24, 25]}, status="success", id="t-1"),
        ToolMessage(content=[{"type": "text", "text": "no map"}], tool_call_id="call-2", status="error"),
        FunctionMessage(content='{"ok": true}', name="legacy_fn"),
        ChatMessage(content="a note", role="critic", id="c-1"),
        ChatMessage(content="as the assistant", role="assistant"),
        AIMessageChunk(content="Lis", id="chunk-1", tool_call_chunks=[{"name": "f", "args": '{"a":', "id": "c9", "index": 0}]),
        AIMessage("Lisbon, then Porto.", usage_metadata={"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}),
    ]


def same(got: list[BaseMessage], sent: list[BaseMessage]) -> None:
    assert [type(m) for m in got] == [type(m) for m in sent]
    assert [message_to_dict(m) for m in got] == [message_to_dict(m) for m in sent]
    assert got == sent


@pytest.fixture
def address(service) -> str:
    return f"127.0.0.1:{service.port}"


def in_thread(function):
    """Run a test's sync body in a thread: the in-process server serves on the test's event loop,
    which a sync call made on it would block (as in an application, the sync methods run off it)."""

    @functools.wraps(function)
    async def test(*args, **kwargs):
        await asyncio.to_thread(function, *args, **kwargs)

    return test


@in_thread
def test_every_message_type_round_trips_exactly_through_the_sync_methods(address):
    history = SessionChatMessageHistory(f"trip-{uuid.uuid4()}", user_id="alice", address=address, app_name="lc")
    try:
        assert history.messages == []
        sent = every_kind()
        history.add_messages(sent[:4])
        history.add_message(sent[4])
        history.add_messages(sent[5:])
        same(history.messages, sent)
    finally:
        history.close()


async def test_every_message_type_round_trips_exactly_through_the_async_methods(address):
    history = SessionChatMessageHistory(f"trip-{uuid.uuid4()}", user_id="alice", address=address)
    try:
        assert await history.aget_messages() == []
        sent = every_kind()
        await history.aadd_messages(sent)
        same(await history.aget_messages(), sent)
        # And what one wrote the other reads: a sync history on the same key.
        other = SessionChatMessageHistory(history.key, user_id="alice", address=address)
        try:
            same(await asyncio.to_thread(lambda: other.messages), sent)
        finally:
            await asyncio.to_thread(other.close)
    finally:
        await history.aclose()


async def test_the_server_records_role_type_text_and_tokens_of_each_message(address):
    history = SessionChatMessageHistory(f"k-{uuid.uuid4()}", user_id="alice", address=address)
    sent = every_kind()
    try:
        await history.aadd_messages(sent)
        async with SessionClient(address) as client:
            stored = [m async for m in client.list_messages(history.session_id)]
            session = await client.get_session(history.session_id)
    finally:
        await history.aclose()
    assert [m.role for m in stored] == [
        pb.ROLE_SYSTEM, pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_TOOL, pb.ROLE_TOOL, pb.ROLE_TOOL,
        pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_ASSISTANT, pb.ROLE_ASSISTANT,
    ]
    assert [m.message_type for m in stored] == [
        pb.MESSAGE_TYPE_SYSTEM, pb.MESSAGE_TYPE_CHAT, pb.MESSAGE_TYPE_TOOL_CALL, pb.MESSAGE_TYPE_TOOL_RESULT,
        pb.MESSAGE_TYPE_TOOL_RESULT, pb.MESSAGE_TYPE_TOOL_RESULT, pb.MESSAGE_TYPE_CHAT, pb.MESSAGE_TYPE_CHAT,
        pb.MESSAGE_TYPE_TOOL_CALL, pb.MESSAGE_TYPE_CHAT,
    ]
    assert [m.content for m in stored][:4] == ["You plan trips.", "Where in May? \u2600", "", "24 C, sunny"]
    assert [m.tokens_used for m in stored] == [0, 0, 150, 0, 0, 0, 0, 0, 0, 12]
    assert session.total_tokens == 162 and session.app_name == "default"
    assert all(m.payload_type == MEDIA_TYPE for m in stored)
    # The payload keeps integers past 2^53 as written (JSON text, not doubles).
    assert b'"n":9007199254740993' in stored[2].payload and b'"big":9223372036854775815' in stored[1].payload


async def test_messages_other_writers_stored_read_as_their_role(address):
    async with SessionClient(address) as client:
        session = await client.create_session("bob")
        for role, text in (("system", "be brief"), ("user", "hi"), ("assistant", "hello"), ("tool", "42")):
            await client.add_message(session.session_id, role, text, metadata={"tool_call_id": "c1"} if role == "tool" else None)
        stored = [m async for m in client.list_messages(session.session_id)]
    assert [from_stored(m) for m in stored] == [
        SystemMessage("be brief"), HumanMessage("hi"), AIMessage("hello"), ToolMessage("42", tool_call_id="c1"),
    ]
    history = SessionChatMessageHistory(session.session_id, user_id="bob", address=address)
    try:
        assert [m.content for m in await history.aget_messages()] == ["be brief", "hi", "hello", "42"]
    finally:
        await history.aclose()


def test_keys_map_to_session_ids_per_app_and_user():
    key = "default"
    alice, bob = session_id_for(key, user_id="alice"), session_id_for(key, user_id="bob")
    assert alice != bob and alice == session_id_for(key, user_id="alice", app_name="default")
    assert session_id_for(key, user_id="alice", app_name="travel") != alice
    assert str(uuid.UUID(alice)) == alice
    chosen = str(uuid.uuid4())
    assert session_id_for(chosen.upper(), user_id="alice") == chosen  # a UUID key is the id itself


async def test_clear_removes_the_history_and_the_next_add_starts_again(address):
    history = SessionChatMessageHistory("to-clear", user_id=f"u-{uuid.uuid4().hex[:8]}", address=address, title="T")
    try:
        await history.aadd_messages([HumanMessage("one"), AIMessage("two")])
        await history.aclear()
        assert await history.aget_messages() == []
        await history.aclear()  # clearing an empty history is fine
        await history.aadd_messages([HumanMessage("three")])
        assert await history.aget_messages() == [HumanMessage("three")]
        async with SessionClient(address) as client:
            session = await client.get_session(history.session_id)
        assert (session.message_count, session.user_id, session.title) == (1, history.user_id, "T")
    finally:
        await history.aclose()


@in_thread
def test_sync_clear_works_too(address):
    history = SessionChatMessageHistory("sync-clear", user_id=f"u-{uuid.uuid4().hex[:8]}", address=address)
    try:
        history.add_user_message("hi")
        history.add_ai_message("hello")
        assert [m.content for m in history.messages] == ["hi", "hello"]
        history.clear()
        assert history.messages == []
    finally:
        history.close()


async def test_concurrent_adds_to_a_new_history_create_one_session_and_keep_every_message(address):
    history = SessionChatMessageHistory("race", user_id=f"u-{uuid.uuid4().hex[:8]}", address=address)
    try:
        await asyncio.gather(*(history.aadd_messages([HumanMessage(f"m{i}")]) for i in range(16)))
        got = await history.aget_messages()
    finally:
        await history.aclose()
    assert sorted(m.content for m in got) == sorted(f"m{i}" for i in range(16))


@in_thread
def test_a_message_that_is_not_json_serializable_is_refused_before_sending(address):
    history = SessionChatMessageHistory("bad", user_id="alice", address=address)
    try:
        with pytest.raises((TypeError, ValueError)):
            history.add_messages([AIMessage("x", additional_kwargs={"when": object()})])
        with pytest.raises(ValueError):
            history.add_messages([AIMessage("x", additional_kwargs={"nan": float("nan")})])
        assert history.messages == []
    finally:
        history.close()


@in_thread
def test_runnable_with_message_history_keeps_the_conversation_through_sync_invoke(address):
    """LangChain's own wrapper, sync: the second turn's prompt holds the first turn, read back."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
    from langchain_core.runnables.history import RunnableWithMessageHistory

    seen: list[list[BaseMessage]] = []
    model = GenericFakeChatModel(messages=iter([AIMessage("first"), AIMessage("second")]))
    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"), ("human", "{q}")])
    histories: list[SessionChatMessageHistory] = []

    def history_of(key: str) -> SessionChatMessageHistory:
        histories.append(SessionChatMessageHistory(key, user_id="sync-user", address=address))
        return histories[-1]

    def remember(value):
        seen.append(value.to_messages())
        return value

    chain = RunnableWithMessageHistory(prompt | remember | model, history_of, input_messages_key="q", history_messages_key="history")
    key = f"conv-{uuid.uuid4()}"
    try:
        chain.invoke({"q": "one"}, config={"configurable": {"session_id": key}})
        chain.invoke({"q": "two"}, config={"configurable": {"session_id": key}})
        assert seen[1] == [HumanMessage("one"), AIMessage("first", id=seen[1][1].id), HumanMessage("two")]
        assert [m.content for m in histories[-1].messages] == ["one", "first", "two", "second"]
    finally:
        for history in histories:
            history.close()
