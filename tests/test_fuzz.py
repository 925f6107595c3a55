"""Arbitrary requests to every RPC get only documented codes, and the server stays SERVING."""

from __future__ import annotations

import asyncio
import os

from grpc_health.v1 import health_pb2, health_pb2_grpc

from reliability.fuzz import Fuzzer
from session_grpc.policy import service_methods

from .helpers import add, new_session

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "400"))


async def test_fuzzed_requests_get_only_documented_codes_and_server_stays_serving(service, channel, sessions, messages):
    known = [await new_session(sessions, "fuzz-user") for _ in range(3)]
    await add(messages, known[0].session_id, "seed message")
    fuzzer = Fuzzer(f"127.0.0.1:{service.port}", [s.session_id for s in known])
    try:
        report = await asyncio.to_thread(fuzzer.run, EXAMPLES)
    finally:
        fuzzer.close()
    print(dict(report.codes), report.exhausted[:5])
    assert report.violations == []
    assert set(report.calls) == set(service_methods()), f"every RPC is exercised: {sorted(report.calls)}"
    # Each RPC gets its share of the examples; one whose request has no fields has one request only.
    share = -(-EXAMPLES // len(fuzzer.methods))
    for path, method in fuzzer.methods:
        assert report.calls[path] >= (share if method.input_type.fields else 1), (path, report.calls[path])
    assert report.codes["OK"] > 0 and report.codes["INVALID_ARGUMENT"] > 0
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
