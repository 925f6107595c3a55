"""Requests that do not even parse (corrupt wire bytes, strings that are not UTF-8) are INVALID_ARGUMENT.

Left alone, grpcio answers those with UNKNOWN from inside its own
deserialization. This interceptor swaps in a deserializer that keeps the
parse error and a handler that reports it, for every unary-request method.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc


class MalformedRequest:
    def __init__(self, error: Exception) -> None:
        self.error = error


async def _reject(request: MalformedRequest, context: grpc.aio.ServicerContext) -> None:
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT, f"the request message could not be parsed: {request.error}"
    )


def _safe(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as error:  # noqa: BLE001 - whatever the parser says, it is the client's bytes
            return MalformedRequest(error)

    return parse


def _unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, MalformedRequest):
            await _reject(request, context)
        return await behavior(request, context)

    return checked


def _server_streaming(behavior: Callable[..., Any]) -> Callable[..., Any]:
    """Streaming handlers are async generators, or coroutines that write through the context."""
    if not inspect.isasyncgenfunction(behavior):
        return _unary(behavior)

    async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, MalformedRequest):
            await _reject(request, context)
        async for item in behavior(request, context):
            yield item

    return checked


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        safe = _safe(handler.request_deserializer)
        if handler.unary_unary is not None:
            return handler._replace(request_deserializer=safe, unary_unary=_unary(handler.unary_unary))
        if handler.unary_stream is not None:
            return handler._replace(request_deserializer=safe, unary_stream=_server_streaming(handler.unary_stream))
        return handler
