"""A LangChain chain whose conversation history lives in session-grpc: RunnableWithMessageHistory
over SessionChatMessageHistory, with langchain-core's fake chat model (no network, no API key).

    pip install "./clients/python[langchain]"
    python langchain_history.py [HOST:PORT]

Each conversation ("session_id" in LangChain's config) is one session-grpc session of the user;
the second turn sees the first because the history is read back from the server. The model's
token usage lands in the session's totals.
"""

import asyncio
import sys
import uuid

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory

from session_client import SessionClient
from session_client.langchain import SessionChatMessageHistory


def build(address: str, user_id: str, histories: list[SessionChatMessageHistory]) -> RunnableWithMessageHistory:
    replies = iter([
        AIMessage("Lisbon: warm, not yet crowded.", usage_metadata={"input_tokens": 12, "output_tokens": 9, "total_tokens": 21}),
        AIMessage("You asked about May; Porto is two hours north.", usage_metadata={"input_tokens": 30, "output_tokens": 11, "total_tokens": 41}),
    ])
    model = GenericFakeChatModel(messages=replies)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You plan trips."), MessagesPlaceholder("history"), ("human", "{question}")]
    )

    def history_of(session_id: str) -> SessionChatMessageHistory:
        history = SessionChatMessageHistory(session_id, user_id=user_id, address=address, app_name="langchain-example")
        histories.append(history)
        return history

    return RunnableWithMessageHistory(
        prompt | model, history_of, input_messages_key="question", history_messages_key="history"
    )


async def main(address: str) -> None:
    user_id = f"alice-{uuid.uuid4().hex[:8]}"
    histories: list[SessionChatMessageHistory] = []
    chain = build(address, user_id, histories)
    config = {"configurable": {"session_id": "trip-planning"}}

    first = await chain.ainvoke({"question": "Where should I go in May?"}, config=config)
    second = await chain.ainvoke({"question": "And after that?"}, config=config)
    print("assistant:", first.content)
    print("assistant:", second.content)

    stored = await histories[-1].aget_messages()
    print(f"{len(stored)} messages in the history:", [m.type for m in stored])
    assert [m.type for m in stored] == ["human", "ai", "human", "ai"], stored
    assert stored[1].usage_metadata["total_tokens"] == 21  # kept whole, as LangChain wrote it

    async with SessionClient(address) as client:
        session = await client.get_session(histories[-1].session_id)
    print(f"session {session.session_id}: {session.message_count} messages, {session.total_tokens} tokens")
    assert (session.message_count, session.total_tokens) == (4, 62)
    for history in histories:
        await history.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:8203"))
