"""The RPC boundary: the one interceptor every call passes through, and the steps that plug into it.

grpc.aio lets an interceptor replace a method's behaviour before the call runs. The boundary
does that once per method (the wrapped handler is cached), for unary and server-streaming
behaviours alike (async generators, and coroutines that write through the context), and runs
each call through an ordered list of steps. `server.build_server` lists them:

    observe        metrics and the access log (every method, health and reflection too)
    drain          refuse new calls while shutting down; count the ones running
    authenticate   token mode: verify the bearer token, run the call as its principal
    parse          unparseable request bytes are INVALID_ARGUMENT
    deadline       record the client's deadline for the database work the call triggers
    authorize      the policy table (session_grpc.policy)
    limit          in-flight calls per principal
    standing       account standing on writes (the named user of CreateSession, else the caller)

A step's `enter(call)` runs before the method, in order; raising a DomainError there ends the
call with that error's status and skips the rest. `exit(call, state, error)` runs after, in
reverse order, for each step whose `enter` ran (`state` is what `enter` returned). Steps that
`watch_responses(method)` see every response message on its way out (the metrics count
AddMessage's tokens and cost).

Errors: a DomainError, from a step or a servicer, becomes its status through status.py's table;
anything else is logged and INTERNAL. Both are reported by setting the status on the context and
returning, not by context.abort(): grpcio cancels aborted calls still finishing when the server
stops (grpc/grpc#37239), and the client would see CANCELLED instead.

Each call runs in an asyncio task of its own, so a context variable a step sets lasts exactly
the call (auth.current(), deadlines.remaining()).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc

from . import status
from .domain.errors import DomainError

log = logging.getLogger(__name__)

SERVICE_PREFIX = "/session.v1."
"""The methods of this service (health and reflection are the others)."""


def ours(method: str) -> bool:
    return method.startswith(SERVICE_PREFIX)


class Call:
    """One call as the steps see it. `request` is None for client-streaming methods (reflection)."""

    __slots__ = ("method", "request", "context")

    def __init__(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        self.method = method
        self.request = request
        self.context = context


class Step:
    """What a step can do around a call; each override is optional."""

    def applies(self, method: str) -> bool:
        """Whether this step runs for `method` (asked once per method)."""
        return ours(method)

    async def enter(self, call: Call) -> Any:
        """Before the method; raise a DomainError to refuse the call. The return value is `state`."""
        return None

    def exit(self, call: Call, state: Any, error: BaseException | None) -> None:
        """After the call, with its status already set on the context."""

    def watch_responses(self, method: str) -> bool:
        return False

    def response(self, call: Call, response: Any) -> None:
        """Each response message of methods this step watches."""

    def deserializer(self, deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
        """Replace the method's request deserializer (the parse step keeps parse errors)."""
        return deserialize


class _Plan:
    """The steps that apply to one method, sorted out once."""

    __slots__ = ("method", "steps", "exits", "watchers")

    def __init__(self, method: str, steps: Sequence[Step]) -> None:
        self.method = method
        self.steps = tuple(step for step in steps if step.applies(method))
        self.exits = tuple(type(step).exit is not Step.exit for step in self.steps)
        self.watchers = tuple(step for step in self.steps if step.watch_responses(method))

    async def enter(self, call: Call, states: list[Any]) -> None:
        for step in self.steps:
            states.append(await step.enter(call))

    def exit(self, call: Call, states: list[Any], error: BaseException | None) -> None:
        for index in range(len(states) - 1, -1, -1):
            if self.exits[index]:
                self.steps[index].exit(call, states[index], error)


async def _report(error: BaseException, call: Call) -> None:
    """Set the status `error` stands for; re-raise what must travel on (cancellation, an abort)."""
    if not isinstance(error, Exception) or isinstance(error, grpc.aio.AbortError):
        raise error
    if isinstance(error, DomainError):
        status.report(call.context, error)
        return
    log.error("unexpected error in %s", call.method, exc_info=error)
    call.context.set_code(grpc.StatusCode.INTERNAL)
    call.context.set_details("internal error; the server log has the details")


def _unary(plan: _Plan, inner: Callable[..., Awaitable[Any]], streaming_request: bool) -> Callable[..., Any]:
    async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = Call(plan.method, None if streaming_request else request, context)
        states: list[Any] = []
        error: BaseException | None = None
        try:
            await plan.enter(call, states)
            response = await inner(request, context)
            for step in plan.watchers:
                step.response(call, response)
            return response
        except BaseException as caught:  # noqa: BLE001 - reported or re-raised in _report
            error = caught
            await _report(caught, call)
            return None
        finally:
            plan.exit(call, states, error)

    return behaviour


def _generator(plan: _Plan, inner: Callable[..., AsyncIterator[Any]], streaming_request: bool) -> Callable[..., Any]:
    async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        call = Call(plan.method, None if streaming_request else request, context)
        states: list[Any] = []
        error: BaseException | None = None
        try:
            await plan.enter(call, states)
            async for item in inner(request, context):
                for step in plan.watchers:
                    step.response(call, item)
                yield item
        except BaseException as caught:  # noqa: BLE001 - reported or re-raised in _report
            error = caught
            await _report(caught, call)
        finally:
            plan.exit(call, states, error)

    return behaviour


def _wrap(plan: _Plan, behaviour: Callable[..., Any], streaming_request: bool) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behaviour):
        return _generator(plan, behaviour, streaming_request)
    return _unary(plan, behaviour, streaming_request)


def wrap(handler: grpc.RpcMethodHandler, plan: _Plan) -> grpc.RpcMethodHandler:
    """`handler` with its behaviour run through the plan's steps."""
    replace: dict[str, Any] = {}
    if handler.request_deserializer is not None and not handler.request_streaming:
        deserialize = handler.request_deserializer
        for step in plan.steps:
            deserialize = step.deserializer(deserialize)
        replace["request_deserializer"] = deserialize
    for kind, streaming_request in (
        ("unary_unary", False), ("unary_stream", False), ("stream_unary", True), ("stream_stream", True)
    ):
        behaviour = getattr(handler, kind)
        if behaviour is not None:
            replace[kind] = _wrap(plan, behaviour, streaming_request)
            break
    return handler._replace(**replace)


class Boundary(grpc.aio.ServerInterceptor):
    """Runs every call through `steps`; register it as the server's (last) interceptor."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = tuple(steps)
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = wrap(handler, _Plan(method, self.steps))
        self._wrapped[method] = (handler, wrapped)
        return wrapped
