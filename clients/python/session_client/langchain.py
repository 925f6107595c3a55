"""LangChain's chat message history over session-grpc (the optional `langchain` extra):

    pip install "./clients/python[langchain]"

    history = SessionChatMessageHistory("conversation-42", user_id="alice", address="localhost:8203")
    history.add_messages([HumanMessage("Hi"), AIMessage("Hello!")])
    history.messages                      # or: await history.aget_messages()

One history is one session. Each LangChain message is one session-grpc message whose payload is
the message serialized whole (langchain_core's `message_to_dict`, as JSON, media type
`application/vnd.langchain.message+json`): content (text or blocks), name, id, tool calls and
invalid tool calls, additional_kwargs, response_metadata, usage_metadata, a tool message's
tool_call_id, artifact and status. The server returns it byte for byte, so what is read back is
equal to what was added. Beside it the message gets what session-grpc itself knows: its role
(Human -> user, AI -> assistant, System -> system, Tool and Function -> tool; a ChatMessage by
its role when it is one of those), a message type (an AI message with tool calls is a tool call,
a tool message a tool result), its text as `content` and, for an AI message with usage metadata,
its `total_tokens` as `tokens_used`, so the session's totals count them. Messages that other
writers stored without such a payload are read as the message class of their role with their
content.

Everything in a message must be JSON-serializable (as for LangChain's other persistent stores).

A history's key may be any string: a UUID is used as the session id itself, anything else is
mapped to a UUID (version 5) of the app, the user and the key, so two users' "default" are two
sessions. The session is created on the first add (`create_session` with that id, under
`user_id` and `app_name`); a history that has none reads as empty. `clear()` deletes the session
(its messages, memory and totals); the next add starts a new one under the same id.

Sync methods (what `RunnableWithMessageHistory.invoke` calls) run on a private event loop in a
thread of the history's own; async methods (`ainvoke`) on the caller's loop. Each makes its own
`SessionClient` from `address` and `client_options` (token, TLS, retry policy, ...), so the same
history serves both. `close()` releases them.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
    messages_from_dict,
)

from ._client import SessionClient
from ._exceptions import AlreadyExists, NotFound
from ._proto.session.v1 import session_pb2 as pb

__all__ = ["MEDIA_TYPE", "SessionChatMessageHistory", "from_stored", "session_id_for", "to_stored"]

T = TypeVar("T")

MEDIA_TYPE = "application/vnd.langchain.message+json"
"""The payload type of a LangChain message serialized whole."""

NAMESPACE = uuid.UUID("5b0c3a4e-7f7e-4d0a-9a53-6c616e67636e")
"""The namespace of the version-5 UUIDs that history keys which are not UUIDs map to."""

_ROLES: list[tuple[type[BaseMessage], int]] = [
    (HumanMessage, pb.ROLE_USER), (AIMessage, pb.ROLE_ASSISTANT), (SystemMessage, pb.ROLE_SYSTEM),
    (ToolMessage, pb.ROLE_TOOL), (FunctionMessage, pb.ROLE_TOOL),
]
_CHAT_ROLES = {"user": pb.ROLE_USER, "human": pb.ROLE_USER, "assistant": pb.ROLE_ASSISTANT, "ai": pb.ROLE_ASSISTANT,
               "system": pb.ROLE_SYSTEM, "tool": pb.ROLE_TOOL}
_CLASSES: dict[int, type[BaseMessage]] = {
    pb.ROLE_USER: HumanMessage, pb.ROLE_ASSISTANT: AIMessage, pb.ROLE_SYSTEM: SystemMessage,
}


def session_id_for(key: str, *, user_id: str, app_name: str = "") -> str:
    """The session id of a history key: the key itself when it is a UUID (lowercase), otherwise a
    UUID derived from the app, the user and the key (the same every time, and another for another
    user or app)."""
    try:
        parsed = uuid.UUID(key)
    except ValueError:
        parsed = None
    if parsed is not None and str(parsed) == key.lower():
        return str(parsed)
    return str(uuid.uuid5(NAMESPACE, json.dumps([app_name or "default", user_id, key])))


def to_stored(message: BaseMessage) -> dict[str, Any]:
    """The add_message arguments that store `message`: role, content, message_type, tokens_used
    and the payload that carries it whole."""
    message_type = pb.MESSAGE_TYPE_CHAT
    tokens = 0
    if isinstance(message, AIMessage):
        if message.tool_calls or message.invalid_tool_calls:
            message_type = pb.MESSAGE_TYPE_TOOL_CALL
        if message.usage_metadata:
            tokens = int(message.usage_metadata.get("total_tokens", 0))
    elif isinstance(message, (ToolMessage, FunctionMessage)):
        message_type = pb.MESSAGE_TYPE_TOOL_RESULT
    elif isinstance(message, SystemMessage):
        message_type = pb.MESSAGE_TYPE_SYSTEM
    payload = json.dumps(message_to_dict(message), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return {
        "role": _role(message),
        "content": message.text,
        "message_type": message_type,
        "tokens_used": tokens,
        "payload": payload.encode(),
        "payload_type": MEDIA_TYPE,
    }


def _role(message: BaseMessage) -> int:
    """The session-grpc role of a message (chunks are their message's subclasses)."""
    if isinstance(message, ChatMessage):
        return _CHAT_ROLES.get(message.role.lower(), pb.ROLE_USER)
    for cls, role in _ROLES:
        if isinstance(message, cls):
            return role
    return pb.ROLE_USER


def from_stored(message: pb.Message) -> BaseMessage:
    """The LangChain message a stored message holds: its payload when it carries one, otherwise
    the message class of its role with its content (a message another writer stored)."""
    if message.payload_type == MEDIA_TYPE:
        return messages_from_dict([json.loads(message.payload)])[0]
    if message.role == pb.ROLE_TOOL:
        call_id = message.metadata["tool_call_id"] if "tool_call_id" in message.metadata else ""
        return ToolMessage(content=message.content, tool_call_id=str(call_id))
    return _CLASSES.get(message.role, HumanMessage)(content=message.content)


class _LoopThread:
    """An event loop running in a daemon thread, for the sync methods."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="session-grpc-langchain", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class SessionChatMessageHistory(BaseChatMessageHistory):
    """A LangChain chat message history kept in a session-grpc session (see the module's doc)."""

    def __init__(
        self,
        key: str,
        *,
        user_id: str,
        address: str = "localhost:8203",
        app_name: str = "",
        title: str = "",
        client_options: dict[str, Any] | None = None,
    ) -> None:
        """key: the history's name (any string; a UUID is the session id itself).
        user_id: whose session it is (in token mode, the token's user).
        app_name: the session's app ("" for the default).
        title: the title of the session when this history creates it.
        client_options: keyword arguments of SessionClient (token, tls, retry, timeout, ...)."""
        self.key = key
        self.user_id = user_id
        self.app_name = app_name
        self.title = title
        self.session_id = session_id_for(key, user_id=user_id, app_name=app_name)
        self._address = address
        self._options = dict(client_options or {})
        self._clients: dict[asyncio.AbstractEventLoop, SessionClient] = {}
        self._thread: _LoopThread | None = None
        self._lock = threading.Lock()

    # -- the async methods: on the caller's loop -------------------------------------------------

    async def aget_messages(self) -> list[BaseMessage]:
        client = self._client()
        try:
            return [from_stored(message) async for message in client.list_messages(self.session_id, page_size=1000)]
        except NotFound:
            return []

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        client = self._client()
        for message in messages:
            fields = to_stored(message)
            try:
                await client.add_message(self.session_id, **fields)
            except NotFound:
                await self._create(client)
                await client.add_message(self.session_id, **fields)

    async def aclear(self) -> None:
        try:
            await self._client().delete_session(self.session_id)
        except NotFound:
            pass

    # -- the sync methods: on the history's own loop ---------------------------------------------

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]  # a read, as LangChain's own stores have it
        return self._run(self.aget_messages())

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        self._run(self.aadd_messages(list(messages)))

    def clear(self) -> None:
        self._run(self.aclear())

    def close(self) -> None:
        """Close the clients this history made (and its thread's loop)."""
        with self._lock:
            clients, self._clients = self._clients, {}
            thread, self._thread = self._thread, None
        for loop, client in clients.items():
            if thread is not None and loop is thread.loop:
                thread.run(client.close())
            elif not loop.is_closed() and loop.is_running():
                asyncio.run_coroutine_threadsafe(client.close(), loop)
        if thread is not None:
            thread.stop()

    async def aclose(self) -> None:
        """Close the client of the running loop (use close() for the others)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    # -- helpers ---------------------------------------------------------------------------------

    def _client(self) -> SessionClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                client = self._clients[loop] = SessionClient(self._address, **self._options)
        return client

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            if self._thread is None:
                self._thread = _LoopThread()
            thread = self._thread
        return thread.run(coroutine)

    async def _create(self, client: SessionClient) -> None:
        try:
            await client.create_session(
                self.user_id, session_id=self.session_id, app_name=self.app_name, title=self.title,
                metadata={"langchain_history": self.key},
            )
        except AlreadyExists:
            pass  # a concurrent add created it
