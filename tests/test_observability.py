"""Metrics move with the traffic, calls are logged as JSON lines, and both stay off the servicers."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
import uuid

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc
from session_grpc.testing import free_port

from .helpers import add, expect_failure, new_session, serving_with, wait_for_port


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on /metrics, keyed by (name, sorted labels)."""

    def fetch() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return response.read().decode()

    text = await asyncio.to_thread(fetch)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def handled(samples, service: str, method: str, code: str) -> float:
    key = ("session_grpc_server_handled_total",
           (("grpc_code", code), ("grpc_method", method), ("grpc_service", f"session.v1.{service}")))
    return samples.get(key, 0.0)


async def test_metrics_endpoint_shows_requests_latency_messages_tokens_and_cost_moving(database_url):
    async with serving_with(database_url, metrics_port=free_port()) as (server, channel):
        sessions, messages = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
        before = await scrape(server.metrics_port)
        assert handled(before, "MessageService", "AddMessage", "OK") == 0
        session = await new_session(sessions, "alice")
        for _ in range(3):
            await add(messages, session.session_id, tokens_used=10, cost="0.5")
        travel = await sessions.CreateSession(pb.CreateSessionRequest(user_id="bob", app_name="travel"))
        await add(messages, travel.session.session_id, tokens_used=7, cost="0.25")
        await expect_failure(sessions.GetSession(pb.GetSessionRequest(session_id=str(uuid.uuid4()))))
        await expect_failure(messages.AddMessage(pb.AddMessageRequest(session_id=session.session_id)))
        _ = [m async for m in messages.StreamMessages(pb.StreamMessagesRequest(session_id=session.session_id))]

        after = await scrape(server.metrics_port)
    assert handled(after, "SessionService", "CreateSession", "OK") == 2
    assert handled(after, "MessageService", "AddMessage", "OK") == 4
    assert handled(after, "MessageService", "AddMessage", "INVALID_ARGUMENT") == 1
    assert handled(after, "SessionService", "GetSession", "NOT_FOUND") == 1
    assert handled(after, "MessageService", "StreamMessages", "OK") == 1
    latency = ("session_grpc_server_handling_seconds_count",
               (("grpc_method", "AddMessage"), ("grpc_service", "session.v1.MessageService")))
    assert after[latency] == 5
    # Per app (the label is the session's app), never per user.
    default, travel = (("app_name", "default"),), (("app_name", "travel"),)
    assert after[("session_grpc_messages_added_total", default)] == 3
    assert after[("session_grpc_tokens_added_total", default)] == 30
    assert after[("session_grpc_cost_added_total", default)] == pytest.approx(1.5)
    assert after[("session_grpc_messages_added_total", travel)] == 1
    assert after[("session_grpc_tokens_added_total", travel)] == 7
    assert after[("session_grpc_cost_added_total", travel)] == pytest.approx(0.25)
    assert after[("session_grpc_db_pool_size", ())] == server.settings.db_pool_size
    in_flight = ("session_grpc_server_in_flight", (("grpc_method", "AddMessage"), ("grpc_service", "session.v1.MessageService")))
    assert after[in_flight] == 0


POOL = ("in_use", "idle", "open", "size", "max")


def pool(samples) -> dict[str, float]:
    return {name: samples[(f"session_grpc_db_pool_{name}", ())] for name in POOL}


async def test_pool_metrics_on_an_idle_server_count_connections_and_none_is_negative(database_url):
    async with serving_with(database_url, metrics_port=free_port(), db_pool_size=5, db_max_overflow=0) as (server, _):
        samples = await scrape(server.metrics_port)
    idle = pool(samples)
    # The start-up health check opened one connection and gave it back.
    assert idle == {"in_use": 0, "idle": 1, "open": 1, "size": 5, "max": 5}
    assert all(value >= 0 for (name, _), value in samples.items() if name.startswith("session_grpc_db_pool_"))


async def test_pool_metrics_on_a_busy_server_show_calls_holding_connections_beyond_the_pool_size(database_url, sql):
    """Four calls wait on a row lock, each holding a connection: two from the pool, two overflow."""
    settings = {"metrics_port": free_port(), "db_pool_size": 2, "db_max_overflow": 2}
    async with serving_with(database_url, **settings) as (server, channel):
        session = await new_session(rpc.SessionServiceStub(channel), "alice")
        lock = sql.transaction()
        await lock.start()
        await sql.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", session.session_id)
        messages = rpc.MessageServiceStub(channel)
        calls = [asyncio.ensure_future(add(messages, session.session_id, f"m{i}")) for i in range(4)]
        key = ("session_grpc_server_in_flight", (("grpc_method", "AddMessage"), ("grpc_service", "session.v1.MessageService")))
        try:
            for _ in range(100):
                during = await scrape(server.metrics_port)
                if during.get(key) == 4 and pool(during)["in_use"] == 4:
                    break
                await asyncio.sleep(0.1)
        finally:
            await lock.commit()
        await asyncio.gather(*calls)
        after = await scrape(server.metrics_port)
    assert during[key] == 4
    assert pool(during) == {"in_use": 4, "idle": 0, "open": 4, "size": 2, "max": 4}
    assert after[key] == 0
    # The overflow connections were closed after use; the pool's own two stay open, idle.
    assert pool(after) == {"in_use": 0, "idle": 2, "open": 2, "size": 2, "max": 4}


async def test_account_metrics_are_absent_without_an_account_service(database_url):
    async with serving_with(database_url, metrics_port=free_port()) as (server, _):
        samples = await scrape(server.metrics_port)
    assert not [name for name, _ in samples if name.startswith("session_grpc_account_")]


async def test_metrics_are_off_without_a_metrics_port(service):
    assert service.settings.metrics_port == 0 and service.metrics_port is None


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "session_grpc.access"]


async def test_access_log_writes_one_json_line_per_call_with_method_status_duration_peer_request_id(
    database_url, caplog
):
    caplog.set_level(logging.INFO, logger="session_grpc.access")
    async with serving_with(database_url, access_log=True) as (_, channel):
        session = await new_session(rpc.SessionServiceStub(channel), "alice")
        request_id = str(uuid.uuid4())
        await add(rpc.MessageServiceStub(channel), session.session_id, request_id=request_id)
    lines = access_lines(caplog)
    assert [line["method"] for line in lines] == [
        "/session.v1.SessionService/CreateSession", "/session.v1.MessageService/AddMessage"
    ]
    added = lines[1]
    assert added["status"] == "OK" and added["request_id"] == request_id and added["level"] == "INFO"
    assert isinstance(added["duration_ms"], float) and added["duration_ms"] > 0
    assert str(added["peer"]).startswith("ipv4:127.0.0.1:")


async def test_without_the_access_log_only_server_failures_are_logged(caplog):
    caplog.set_level(logging.INFO, logger="session_grpc.access")
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    async with serving_with(dead, db_pool_timeout=1.0) as (_, channel):
        sessions = rpc.SessionServiceStub(channel)
        await expect_failure(sessions.GetSession(pb.GetSessionRequest(session_id=str(uuid.uuid4())), timeout=10))
        await expect_failure(sessions.GetSession(pb.GetSessionRequest(session_id="not a uuid")))
    lines = access_lines(caplog)
    assert [(line["status"], line["level"]) for line in lines] == [("UNAVAILABLE", "ERROR")]
    assert lines[0]["message"]


def test_tracing_is_off_without_otel_variables(monkeypatch):
    from session_grpc.observability import tracing_interceptors

    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert tracing_interceptors() == []
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert tracing_interceptors() == []


def test_otel_variables_turn_on_a_span_per_call(database_url):
    import os
    import signal
    import subprocess
    import sys

    port = free_port()
    env = {
        **os.environ, "DATABASE_URL": database_url, "PORT": str(port), "SESSION_HOST": "127.0.0.1",
        "OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "session-grpc-test",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "session_grpc", "serve"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_for_port(port)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            rpc.SessionServiceStub(channel).CreateSession(pb.CreateSessionRequest(user_id="traced"), timeout=10)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert '"name": "/session.v1.SessionService/CreateSession"' in output, output[-3000:]
    assert "session-grpc-test" in output


async def test_account_cache_and_fail_open_counters_show_on_the_metrics_endpoint(database_url):
    from session_grpc.accounts import AccountSettings

    down = AccountSettings(address=f"127.0.0.1:{free_port()}", deadline=0.3, retries=0, fail_open=True)
    async with serving_with(database_url, metrics_port=free_port(), account=down) as (server, channel):
        sessions = rpc.SessionServiceStub(channel)
        await new_session(sessions, "alice")
        await new_session(sessions, "alice")
        samples = await scrape(server.metrics_port)
    assert samples[("session_grpc_account_cache_misses_total", ())] == 2
    assert samples[("session_grpc_account_fail_open_total", ())] == 2
    assert samples[("session_grpc_account_cache_hits_total", ())] == 0
    assert samples[("session_grpc_account_lookups_total", ())] == 2


async def test_with_workers_each_process_serves_its_metrics_on_a_port_of_its_own(database_url):
    import os
    import signal
    import sys
    from pathlib import Path

    port, metrics = free_port(), free_port()
    while metrics + 1 == port:
        metrics = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "PORT": str(port), "SESSION_HOST": "127.0.0.1",
           "SESSION_METRICS_PORT": str(metrics), "SESSION_EXPIRY_INTERVAL": "0", "SESSION_SHUTDOWN_GRACE": "2s"}
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("session-grpc")), "serve", "--workers", "2", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output = b""
    try:
        while output.count(b"serving session.v1") < 2:
            line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
            assert line, f"the server exited before both workers served:\n{output.decode()}"
            output += line
        first, second = await scrape(metrics), await scrape(metrics + 1)
        assert ("session_grpc_db_pool_size", ()) in first and ("session_grpc_db_pool_size", ()) in second
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(process.communicate(), timeout=30)
        output += rest
    assert process.returncode == 0, output.decode()
