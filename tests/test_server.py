"""The server around the servicers: health, reflection, outages, shutdown, the real process."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc
from session_grpc.auth import AuthSettings
from session_grpc.server import AddressInUse, build_server
from session_grpc.settings import Settings, SettingsError
from session_grpc.testing import free_port

from .certs import make_pki
from .conftest import test_settings
from .helpers import expect_failure, new_session, serving, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {
    "session.v1.SessionService",
    "session.v1.MessageService",
    "session.v1.MemoryService",
    "session.v1.UsageService",
    "session.v1.RetentionService",
    "session.v1.UserDataService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}


async def test_health_is_serving_when_the_database_answers(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "session.v1.SessionService", "session.v1.MessageService", "session.v1.MemoryService"):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING, service


async def test_reflection_lists_the_three_services_health_and_reflection(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def one_request():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for response in stub.ServerReflectionInfo(one_request()):
        names = {service.name for service in response.list_services_response.service}
        assert names == SERVICES
        return
    raise AssertionError("no reflection response")


def buf() -> str:
    found = shutil.which("buf", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found is None:
        pytest.fail("buf is a dev dependency (buf-bin) and must be installed")
    return found


@pytest.mark.parametrize("protocol", ["grpc-v1", "grpc-v1alpha"])
async def test_buf_curl_lists_services_and_creates_a_session_through_either_reflection_version(service, protocol):
    url = f"http://127.0.0.1:{service.port}"
    base = [buf(), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol", protocol]
    listed = await asyncio.to_thread(
        subprocess.run, [*base, "--list-services", url], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == SERVICES
    created = await asyncio.to_thread(
        subprocess.run,
        [*base, "-d", '{"user_id": "alice", "title": "via buf curl"}', f"{url}/session.v1.SessionService/CreateSession"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    assert '"title": "via buf curl"' in created.stdout


async def test_the_development_services_serve_reflection_v1_too():
    from session_grpc.devservices import DevAccountService, DevAuthService, start

    server, port = await start(DevAccountService({}), auth=DevAuthService({}))
    try:
        listed = await asyncio.to_thread(
            subprocess.run,
            [buf(), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol", "grpc-v1",
             "--list-services", f"http://127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        await server.stop(0)
    assert listed.returncode == 0, listed.stderr
    assert {"account.v1.AccountService", "auth.v1.AuthService"} <= set(listed.stdout.split())


async def test_reflection_v1_describes_itself_under_the_v1_file(channel):
    """A v1 client asks with v1 names; the answer is the v1 file, whose types are in package grpc.reflection.v1."""
    info = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )

    async def one_request():
        yield reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection")

    async for response in info(one_request()):
        (serialized,) = response.file_descriptor_response.file_descriptor_proto
        file = descriptor_pb2.FileDescriptorProto.FromString(serialized)
        assert (file.name, file.package) == ("grpc/reflection/v1/reflection.proto", "grpc.reflection.v1")
        assert file.service[0].method[0].input_type == ".grpc.reflection.v1.ServerReflectionRequest"
        return
    raise AssertionError("no reflection response")


async def test_database_outage_is_unavailable_and_health_not_serving():
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    server = build_server(test_settings(dead, db_pool_timeout=1.0))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as chan:
            health = await health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
            started = time.monotonic()
            failure = await expect_failure(
                session_pb2_grpc.SessionServiceStub(chan).GetSession(
                    pb.GetSessionRequest(session_id=str(uuid.uuid4())), timeout=10
                )
            )
            assert failure.code == grpc.StatusCode.UNAVAILABLE
            assert failure.reason == "DATABASE_UNAVAILABLE"
            assert time.monotonic() - started < 5
    finally:
        await server.stop(grace=0)


async def test_stop_turns_health_not_serving_before_the_server_goes(database_url):
    server = build_server(test_settings(database_url))
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as chan:
        watch = health_pb2_grpc.HealthStub(chan).Watch(health_pb2.HealthCheckRequest())
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(server.stop(grace=2))
        second = await watch.read()
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await stopping


async def test_calls_in_flight_finish_during_graceful_stop(database_url, sql):
    server = build_server(test_settings(database_url))
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as chan:
        session = await new_session(session_pb2_grpc.SessionServiceStub(chan), "alice")
        messages = session_pb2_grpc.MessageServiceStub(chan)
        # Hold the session row so the AddMessage calls are surely inside the server when stop begins.
        lock = sql.transaction()
        await lock.start()
        await sql.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", session.session_id)
        calls = [
            asyncio.ensure_future(
                messages.AddMessage(pb.AddMessageRequest(session_id=session.session_id, role=pb.ROLE_USER, content=f"m{i}"))
            )
            for i in range(5)
        ]
        await asyncio.sleep(0.5)
        stopping = asyncio.create_task(server.stop(grace=10))
        await asyncio.sleep(0.3)
        assert not stopping.done()
        await lock.commit()
        results = await asyncio.gather(*calls)
        await stopping
    assert sorted(r.message.sequence for r in results) == [1, 2, 3, 4, 5]


def test_serve_process_runs_the_walkthrough_and_exits_zero_on_sigterm(database_url):
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "PORT": str(port), "SESSION_HOST": "127.0.0.1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "session_grpc", "serve"], env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_for_port(port)
        walk = subprocess.run(
            [sys.executable, "clients/walkthrough.py", f"127.0.0.1:{port}"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        assert walk.returncode == 0, walk.stdout + walk.stderr
        assert "get shows ENDED" in walk.stdout
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        assert "signal received" in output
    finally:
        if process.poll() is None:
            process.kill()


async def test_start_up_says_when_authentication_and_account_checks_are_off(database_url, caplog):
    caplog.set_level("INFO", logger="session_grpc.server")
    async with serving(test_settings(database_url)):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("AUTHENTICATION IS OFF" in w and "loopback only" in w for w in warnings), warnings
    assert sum("account validation is OFF" in w for w in warnings) == 1, warnings


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_second_server_on_a_taken_port_is_refused_with_a_clear_error(database_url, host):
    async with serving(test_settings(database_url, host=host)) as (first, _):
        with pytest.raises(AddressInUse, match="in use"):
            build_server(test_settings(database_url, host=host, port=first.port))


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]])
async def test_serve_on_a_taken_port_exits_non_zero_and_says_why(database_url, workers):
    async with serving(test_settings(database_url)) as (first, _):
        env = {**os.environ, "DATABASE_URL": database_url, "PORT": str(first.port), "SESSION_HOST": "127.0.0.1"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "session_grpc", "serve", *workers, env=env, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output = (await asyncio.wait_for(process.communicate(), 60))[0].decode()
        except TimeoutError:
            process.kill()
            output = (await process.communicate())[0].decode()
            raise AssertionError(f"the second server kept running on a taken port:\n{output}") from None
    assert process.returncode != 0, output
    assert f"127.0.0.1:{first.port}" in output and "in use" in output, output


TOKEN_MODE = {"SESSION_AUTH_MODE": "token", "SESSION_AUTH_ADDRESS": "127.0.0.1:9"}
SECRET = {"SESSION_PAGE_TOKEN_SECRET": "a-secret-of-this-deployment-only"}


def test_token_mode_refuses_to_start_without_a_page_token_secret():
    with pytest.raises(SettingsError, match="SESSION_PAGE_TOKEN_SECRET"):
        Settings.from_env({**TOKEN_MODE, "SESSION_ALLOW_PLAINTEXT": "true"})
    with pytest.raises(SettingsError, match="SESSION_PAGE_TOKEN_SECRET"):
        Settings.from_env({**TOKEN_MODE, "SESSION_ALLOW_PLAINTEXT": "true", "SESSION_PAGE_TOKEN_SECRET": "short"})
    settings = Settings.from_env({**TOKEN_MODE, "SESSION_ALLOW_PLAINTEXT": "true", **SECRET})
    assert settings.page_token_secret == SECRET["SESSION_PAGE_TOKEN_SECRET"]


def test_token_mode_without_tls_refuses_to_start_unless_plaintext_is_allowed(tmp_path):
    with pytest.raises(SettingsError, match="SESSION_ALLOW_PLAINTEXT"):
        Settings.from_env({**TOKEN_MODE, **SECRET})
    assert Settings.from_env({**TOKEN_MODE, **SECRET, "SESSION_ALLOW_PLAINTEXT": "true"}).allow_plaintext
    _, server_pem, _ = make_pki(tmp_path)
    tls = {"SESSION_TLS_CERT": str(server_pem.cert), "SESSION_TLS_KEY": str(server_pem.key)}
    assert Settings.from_env({**TOKEN_MODE, **SECRET, **tls}).tls_cert == server_pem.cert


def test_serve_in_token_mode_over_plaintext_exits_non_zero_naming_the_opt_in():
    env = {**os.environ, **TOKEN_MODE, **SECRET, "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"}
    env.pop("SESSION_ALLOW_PLAINTEXT", None)
    done = subprocess.run(
        [sys.executable, "-m", "session_grpc", "serve"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "SESSION_ALLOW_PLAINTEXT" in done.stderr and "SESSION_TLS_CERT" in done.stderr, done.stderr


async def test_token_mode_allowed_over_plaintext_warns_loudly(database_url, caplog):
    caplog.set_level("INFO", logger="session_grpc.server")
    settings = test_settings(
        database_url, auth_mode="token", auth=AuthSettings(address="127.0.0.1:9"), allow_plaintext=True,
        page_token_secret=SECRET["SESSION_PAGE_TOKEN_SECRET"],
    )
    async with serving(settings):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("PLAINTEXT" in w and "bearer tokens" in w for w in warnings), warnings


def _an_address_of_this_machine_other_than_loopback() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.254", 9))  # picks the outgoing interface; sends nothing
        except OSError:
            pytest.skip("this machine has no non-loopback IPv4 address")
        address = probe.getsockname()[0]
    if address.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address")
    return address


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), 2).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("metrics_host,reachable_from_outside", [(None, False), ("0.0.0.0", True)])
async def test_metrics_listen_on_loopback_unless_the_metrics_host_says_otherwise(
    database_url, metrics_host, reachable_from_outside
):
    outside = _an_address_of_this_machine_other_than_loopback()
    env = {"SESSION_HOST": "0.0.0.0", "SESSION_METRICS_PORT": str(free_port())}
    if metrics_host:
        env["SESSION_METRICS_HOST"] = metrics_host
    from_env = Settings.from_env(env)
    settings = test_settings(
        database_url, host=from_env.host, metrics_port=from_env.metrics_port, metrics_host=from_env.metrics_host
    )
    async with serving(settings) as (server, _):
        assert _accepts("127.0.0.1", server.metrics_port)
        assert _accepts(outside, server.metrics_port) is reachable_from_outside
        assert _accepts(outside, server.port), "the gRPC port itself listens on every interface"


async def test_with_a_drain_delay_health_says_not_serving_while_calls_are_still_served(database_url):
    settings = test_settings(database_url, shutdown_drain_delay=3.0)
    server = build_server(settings)
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        sessions = session_pb2_grpc.SessionServiceStub(channel)
        stopping = asyncio.create_task(server.stop(grace=1))
        while (await health.Check(health_pb2.HealthCheckRequest())).status != health_pb2.HealthCheckResponse.NOT_SERVING:
            await asyncio.sleep(0.01)
        served = await new_session(sessions, "late-but-welcome")  # not UNAVAILABLE: still inside the delay
        assert not stopping.done()
        await stopping
    assert served.user_id == "late-but-welcome"
