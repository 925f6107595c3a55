"""Bytes that are not a valid request message are INVALID_ARGUMENT, never UNKNOWN or INTERNAL."""

from __future__ import annotations

import grpc
import pytest

CORRUPT = {
    "truncated varint": b"\xff\xff\xff",
    "string that is not UTF-8": b"\x0a\x03\xff\xfe\xfd",
    "length past the end": b"\x0a\x50abc",
}


@pytest.mark.parametrize("payload", CORRUPT.values(), ids=CORRUPT.keys())
@pytest.mark.parametrize(
    "method",
    ["/session.v1.SessionService/GetSession", "/session.v1.MessageService/AddMessage",
     "/session.v1.MemoryService/GetMemory", "/grpc.health.v1.Health/Check"],
)
async def test_unparseable_unary_request_is_invalid_argument(channel, method, payload):
    call = channel.unary_unary(method, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(payload)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("payload", CORRUPT.values(), ids=CORRUPT.keys())
async def test_unparseable_streaming_request_is_invalid_argument(channel, payload):
    call = channel.unary_stream(
        "/session.v1.MessageService/StreamMessages", request_serializer=lambda raw: raw,
        response_deserializer=lambda raw: raw,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call(payload):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_health_watch_streams_through_the_request_check(channel):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
    first = await watch.read()
    watch.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
