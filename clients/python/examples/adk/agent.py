"""A Google ADK agent whose sessions live in session-grpc, with a scripted model (no network).

    pip install "./clients/python[adk]"
    python clients/python/examples/adk/agent.py localhost:8203

The agent remembers the user's home city in user state (a tool writes "user:city") and its last
reply in session state (output_key). Two turns run through ADK's Runner, then a second service
(another process, as it were) reads the same session back from the server: the events, the state
of every scope, and the user's state without a session.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncGenerator

from google.adk.agents import LlmAgent
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.adk.sessions.base_session_service import GetSessionConfig
from google.adk.tools.tool_context import ToolContext
from google.genai import types

from session_client.adk import SessionGrpcService

APP = "travel-assistant"


def remember_city(city: str, tool_context: ToolContext) -> dict[str, str]:
    """Remember the user's home city for every later conversation."""
    tool_context.state["user:city"] = city
    return {"remembered": city}


USAGE = types.GenerateContentResponseUsageMetadata(prompt_token_count=10, candidates_token_count=5, total_token_count=15)


class ScriptedModel(BaseLlm):
    """A stand-in for an LLM: asks for remember_city when told a city, then answers in text."""

    model: str = "scripted"

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        last = llm_request.contents[-1]
        part = last.parts[0]
        if part.function_response is not None:
            text = f"Noted, you live in {part.function_response.response['remembered']}."
        elif part.text and part.text.startswith("I live in "):
            city = part.text.removeprefix("I live in ").rstrip(".")
            call = types.FunctionCall(name="remember_city", args={"city": city})
            yield LlmResponse(content=types.Content(role="model", parts=[types.Part(function_call=call)]), usage_metadata=USAGE)
            return
        else:
            text = f"You said: {part.text}"
        yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text=text)]), usage_metadata=USAGE)


async def main(target: str) -> None:
    agent = LlmAgent(name="assistant", model=ScriptedModel(), tools=[remember_city], output_key="last_reply")
    user = f"traveller-{uuid.uuid4().hex[:8]}"
    async with SessionGrpcService(target) as service:
        runner = Runner(app_name=APP, agent=agent, session_service=service)
        session = await service.create_session(app_name=APP, user_id=user, state={"channel": "cli"})
        for text in ["I live in Lisbon.", "Where should I go in May?"]:
            message = types.Content(role="user", parts=[types.Part(text=text)])
            async for event in runner.run_async(user_id=user, session_id=session.id, new_message=message):
                if event.content and event.content.parts and event.content.parts[0].text:
                    print(f"{event.author}: {event.content.parts[0].text}")

    # Another service, as another process would make it: everything comes from the server.
    async with SessionGrpcService(target) as reader:
        stored = await reader.get_session(app_name=APP, user_id=user, session_id=session.id)
        assert stored is not None
        print(f"{len(stored.events)} events; state: {stored.state}")
        assert [event.author for event in stored.events] == ["user", "assistant", "assistant", "assistant", "user", "assistant"]
        assert stored.state == {
            "channel": "cli",
            "user:city": "Lisbon",
            "last_reply": "You said: Where should I go in May?",
        }
        assert await reader.get_user_state(app_name=APP, user_id=user) == {"city": "Lisbon"}
        call = stored.events[1].get_function_calls()[0]
        assert (call.name, call.args) == ("remember_city", {"city": "Lisbon"})
        recent = await reader.get_session(
            app_name=APP, user_id=user, session_id=session.id, config=GetSessionConfig(num_recent_events=2)
        )
        assert [event.author for event in recent.events] == ["user", "assistant"]
    print("ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:8203"))
