"""Wrapping a gRPC method handler's behaviour in an async context manager, for interceptors.

grpc.aio interceptors get the method handler before the call runs; to act around the call
itself (count it, refuse it, check its request) they replace the behaviour. Server-streaming
behaviours come as async generators or as coroutines that write through the context; both
are handled here once.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc

Around = Callable[[Any, grpc.aio.ServicerContext], AbstractAsyncContextManager[None]]


def wrap_handler(handler: grpc.RpcMethodHandler, around: Around, **replace: Any) -> grpc.RpcMethodHandler:
    """`handler` with its unary-request behaviour run inside `around(request, context)`.

    Client-streaming and bidirectional handlers (only reflection has them) are returned as they are.
    `replace` sets other handler fields too (a request_deserializer, say).
    """
    if handler.unary_unary is not None:
        return handler._replace(unary_unary=_coroutine(handler.unary_unary, around), **replace)
    if handler.unary_stream is not None:
        inner = handler.unary_stream
        wrapped = _generator(inner, around) if inspect.isasyncgenfunction(inner) else _coroutine(inner, around)
        return handler._replace(unary_stream=wrapped, **replace)
    return handler


def _coroutine(inner: Callable[..., Any], around: Around) -> Callable[..., Any]:
    async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with around(request, context):
            return await inner(request, context)

    return behaviour


def _generator(inner: Callable[..., Any], around: Around) -> Callable[..., Any]:
    async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with around(request, context):
            async for item in inner(request, context):
                yield item

    return behaviour


class AroundInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that runs each call it `applies` to inside `self.around(request, context)`."""

    def applies(self, method: str) -> bool:
        return True

    def around(self, request: Any, context: grpc.aio.ServicerContext) -> AbstractAsyncContextManager[None]:
        raise NotImplementedError

    def wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return wrap_handler(handler, self.around)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or not self.applies(handler_call_details.method):
            return handler
        return self.wrap(handler)
