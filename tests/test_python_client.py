"""The Python client library: installable on its own, and every example runs against a live server.

The package is installed (not editable) into a fresh virtualenv made once per test
session, with the repository's constraints, so what is tested is what users get.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import grpc
import pytest

from session_client import (
    AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, ResourceExhausted, RetryPolicy,
    SessionClient, TlsOptions, Unauthenticated, Unavailable, pb, state_delta,
)

from session_grpc.server import build_server, running
from session_grpc.testing import free_port

from .conftest import test_settings
from .test_observability import handled, scrape

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "clients" / "python"
EXAMPLES = sorted((CLIENT / "examples").glob("*.py"))


def extra_of(example: Path) -> str:
    """The optional extra an example needs (named in its `pip install "./clients/python[extra]"`
    line), or "" for the base package."""
    found = re.search(r'pip install "\./clients/python\[(\w+)\]"', example.read_text())
    return found.group(1) if found else ""


@pytest.fixture(scope="session")
def client_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Python of a fresh virtualenv holding only the client package and its dependencies."""
    return _client_venv(tmp_path_factory, "")


@pytest.fixture(scope="session")
def client_pythons(tmp_path_factory: pytest.TempPathFactory, client_python: Path) -> Iterator[dict[str, Path]]:
    """Python of a fresh virtualenv per extra (made when first asked for), "" being the base one."""
    made = {"": client_python}

    class Venvs(dict):
        def __missing__(self, extra: str) -> Path:
            self[extra] = _client_venv(tmp_path_factory, extra)
            return self[extra]

    yield Venvs(made)


def _client_venv(tmp_path_factory: pytest.TempPathFactory, extra: str) -> Path:
    venv = tmp_path_factory.mktemp(f"client-venv-{extra or 'base'}")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    build = tmp_path_factory.mktemp("client-src") / "python"
    # Build from a copy so the checkout gets no build/ or egg-info droppings.
    subprocess.run(["cp", "-r", str(CLIENT), str(build)], check=True)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--constraint", str(ROOT / "constraints.txt"), f"{build}[{extra}]" if extra else str(build)],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return python


def test_every_example_is_run_by_the_tests():
    names = {path.stem for path in EXAMPLES}
    assert names >= {
        "create_session", "add_messages", "paginate", "stream", "memory", "summary", "user_sessions",
        "stats", "end_session", "error_handling", "retries", "concurrent_use", "watch", "langchain_history",
    }
    assert extra_of(CLIENT / "examples" / "langchain_history.py") == "langchain"


def test_client_package_installs_without_server_dependencies(client_python):
    probe = (
        "import importlib.util, session_client;"
        "print([m for m in ('sqlalchemy', 'asyncpg', 'alembic', 'session_grpc', 'pgserver', 'langchain_core')"
        " if importlib.util.find_spec(m)])"
    )
    result = subprocess.run([str(client_python), "-c", probe], capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.stem for path in EXAMPLES])
async def test_example_runs_against_a_live_server(example, client_pythons, service):
    """Each in a fresh install of the client with the extra it names, if any (the others without)."""
    python = await asyncio.to_thread(client_pythons.__getitem__, extra_of(example))
    process = await asyncio.create_subprocess_exec(
        str(python), str(example), f"127.0.0.1:{service.port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd="/",
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, output.decode()


# The rules of the client itself, through the dev install, against the in-process server.


async def test_unavailable_is_retried_until_the_total_deadline(service):
    policy = RetryPolicy(initial_backoff=0.05, max_backoff=0.2, max_attempts=100, total_deadline=1.0)
    async with SessionClient(f"127.0.0.1:{free_port()}", retry=policy, timeout=0.5) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable) as caught:
            await client.get_session(str(uuid.uuid4()))
    assert caught.value.attempts >= 3
    assert time.monotonic() - started < 1.0 + 0.6


async def test_writes_without_an_idempotency_key_are_not_retried(service):
    policy = RetryPolicy(initial_backoff=0.01, max_attempts=5, total_deadline=5)
    async with SessionClient(f"127.0.0.1:{free_port()}", retry=policy) as client:
        with pytest.raises(Unavailable) as caught:
            await client.end_session(str(uuid.uuid4()))
    assert caught.value.attempts == 1


async def test_other_codes_are_not_retried(service):
    async with SessionClient(f"127.0.0.1:{service.port}") as client:
        with pytest.raises(NotFound) as caught:
            await client.get_session(str(uuid.uuid4()))
    assert caught.value.attempts == 1
    assert caught.value.resource_type


async def test_add_message_sends_a_generated_request_id_so_a_retry_is_counted_once(service, sql):
    async with SessionClient(f"127.0.0.1:{service.port}") as client:
        session = await client.create_session("alice")
        await client.add_message(session.session_id, "user", "hi")
    ids = await sql.fetch("SELECT request_id FROM messages")
    assert len(ids) == 1 and ids[0]["request_id"] is not None
    sessions = await sql.fetch("SELECT request_id FROM sessions")
    assert sessions[0]["request_id"] is not None


async def test_sessions_are_created_in_and_listed_by_their_app(service):
    async with SessionClient(f"127.0.0.1:{service.port}") as client:
        chat = [await client.create_session("alice", app_name="chat") for _ in range(3)]
        default = await client.create_session("alice")
        assert default.app_name == "default"
        listed = [s.session_id async for s in client.list_sessions("alice", app_name="chat", page_size=2)]
        assert listed == [s.session_id for s in reversed(chat)]
        every = [s.app_name async for s in client.list_sessions("alice", page_size=2)]
        assert every == ["default", "chat", "chat", "chat"]
        apps = {a.app_name: a.session_count for a in (await client.get_service_stats()).apps}
        assert apps == {"chat": 3, "default": 1}


async def test_create_session_takes_a_client_id_once_and_a_taken_id_raises_already_exists(service):
    chosen = str(uuid.uuid4())
    async with SessionClient(f"127.0.0.1:{service.port}") as client:
        session = await client.create_session("alice", session_id=chosen)
        assert session.session_id == chosen
        with pytest.raises(AlreadyExists) as caught:
            await client.create_session("alice", session_id=chosen)
    assert caught.value.attempts == 1
    assert caught.value.resource_type == "session"


async def test_list_messages_takes_the_last_n_and_a_start_time(service):
    async with SessionClient(f"127.0.0.1:{service.port}") as client:
        session = await client.create_session("alice")
        added = [await client.add_message(session.session_id, "user", f"m{i}") for i in range(1, 7)]
        last = [m.content async for m in client.list_messages(session.session_id, recent_count=2)]
        assert last == ["m5", "m6"]
        assert [m async for m in client.list_messages(session.session_id, recent_count=0)] == []
        since = added[2].create_time.ToDatetime(timezone.utc)
        from_third = [m.sequence async for m in client.list_messages(session.session_id, start_time=since, page_size=2)]
        assert from_third == [3, 4, 5, 6]
        both = [m.sequence async for m in client.list_messages(session.session_id, start_time=since, recent_count=3)]
        assert both == [4, 5, 6]
        with pytest.raises(InvalidArgument) as caught:
            await client.list_messages_page(session.session_id, start_time=since.replace(tzinfo=None))
        assert set(caught.value.violations) == {"start_time"}


async def test_add_message_carries_a_payload_and_an_event_time_back_exactly(service):
    event = b'{"usageMetadata":{"totalTokenCount":9223372036854775807},"timestamp":1764446400.123456}'
    async with SessionClient(f"127.0.0.1:{service.port}") as client:
        session = await client.create_session("alice")
        added = await client.add_message(
            session.session_id, "assistant", "", payload=event, payload_type="application/json",
            event_time=1764446400.123456,
        )
        when = datetime.fromtimestamp(1764446400.123456, timezone.utc)
        assert (added.payload, added.event_time.ToDatetime(timezone.utc)) == (event, when)
        assert [m.payload async for m in client.list_messages(session.session_id)] == [event]
        got = await client.get_session(session.session_id)
        assert got.last_event_time.ToDatetime(timezone.utc) == when
        aware = datetime(2026, 5, 1, 9, 30, 0, 7, tzinfo=timezone.utc)
        second = await client.add_message(session.session_id, "user", "hi", event_time=aware)
        assert second.event_time.ToDatetime(timezone.utc) == aware
        with pytest.raises(InvalidArgument) as caught:
            await client.add_message(session.session_id, "user", "hi", event_time=aware.replace(tzinfo=None))
        assert set(caught.value.violations) == {"event_time"}
        with pytest.raises(InvalidArgument) as caught:
            await client.add_message(session.session_id, "user", "hi", payload=b"{}")
        assert set(caught.value.violations) == {"payload_type"}


async def test_list_sessions_of_an_app_across_users(service):
    async with SessionClient(f"127.0.0.1:{service.port}") as client:
        for user in ("alice", "bob"):
            await client.create_session(user, app_name="across")
        await client.create_session("carol", app_name="elsewhere")
        users = [s.user_id async for s in client.list_sessions("", app_name="across", page_size=1)]
        assert users == ["bob", "alice"]


async def test_state_changes_ride_on_messages_or_go_alone_and_read_back_in_one_call(service, sql):
    async with SessionClient(f"127.0.0.1:{service.port}") as client:
        session = await client.create_session("alice", app_name="travel")
        await client.add_message(
            session.session_id, "user", "hi", session_state={"step": 1}, user_state={"seat": "aisle", "tmp": 1},
            app_state={"model": "m1"},
        )
        changed = await client.update_state(session.session_id, user_state=state_delta({"currency": "EUR"}, ["tmp"]))
        assert dict(changed.user_state.state) == {"seat": "aisle", "currency": "EUR"}
        both = await client.get_session_with_state(session.session_id)
        assert (dict(both.session.conversation_data), dict(both.app_state.state)) == ({"step": 1}, {"model": "m1"})
        assert dict(both.user_state.state) == {"seat": "aisle", "currency": "EUR"}
        assert dict((await client.get_user_state("alice", app_name="travel")).state) == dict(both.user_state.state)
        assert dict((await client.get_app_state("travel")).state) == {"model": "m1"}
        await client.update_state(session.session_id, app_state={"big": "x" * 40_000})
        with pytest.raises(FailedPrecondition) as caught:
            await client.update_state(session.session_id, app_state={"more": "y" * 40_000})
        assert caught.value.reason == "STATE_TOO_LARGE"
    # update_state sent a request_id of its own (so a retry after UNAVAILABLE applies nothing twice).
    assert await sql.fetchval("SELECT count(*) FROM state_updates") == 2


async def test_invalid_argument_exposes_the_field_violations(service):
    async with SessionClient(f"127.0.0.1:{service.port}") as client:
        with pytest.raises(InvalidArgument) as caught:
            await client.create_session("", title="x" * 5000)
    assert {"user_id", "title"} <= set(caught.value.violations)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_stream_messages_yields_the_same_messages_batched_or_not(service):
    async with SessionClient(f"127.0.0.1:{service.port}") as client:
        session = await client.create_session("alice")
        for i in range(12):
            await client.add_message(session.session_id, "user", f"m{i}")
        one_by_one = [m async for m in client.stream_messages(session.session_id, page_size=5)]
        batched = [m async for m in client.stream_messages(session.session_id, page_size=5, batched=True)]
        later = [m.sequence async for m in client.stream_messages(session.session_id, after_sequence=9, batched=True)]
    assert [m.sequence for m in one_by_one] == list(range(1, 13))
    assert batched == one_by_one
    assert later == [10, 11, 12]


@pytest.mark.parametrize("batched", [False, True])
async def test_a_broken_stream_resumes_after_the_last_message(service, batched):
    """Stop the server mid-stream, start a new one on the same port: the stream goes on where it was."""
    first = build_server(test_settings(service.settings.database_url, port=free_port()))
    port = first.port
    await first.start()
    policy = RetryPolicy(initial_backoff=0.05, max_backoff=0.3, total_deadline=15)
    async with SessionClient(f"127.0.0.1:{port}", retry=policy) as client:
        session = await client.create_session("alice")
        for i in range(30):
            await client.add_message(session.session_id, "user", f"m{i} " + "x" * 20000)
        seen = []
        second = None
        try:
            async for message in client.stream_messages(session.session_id, page_size=5, batched=batched):
                seen.append(message.sequence)
                if len(seen) == 7:
                    await first.stop(grace=0)
                    second = build_server(test_settings(service.settings.database_url, port=port, metrics_port=free_port()))
                    await second.start()
            assert second is not None
            # The rest really came from the second server, over a reopened stream.
            samples = await scrape(second.metrics_port)
            assert handled(samples, "MessageService", "StreamMessages", "OK") == 1
        finally:
            if second is not None:
                await second.stop(grace=0)
    assert seen == list(range(1, 31))


async def test_a_watch_resumes_by_itself_across_a_server_restart_without_gap_or_duplicate(service):
    """The server under a watch stops (its watches end UNAVAILABLE) while messages keep coming
    through another server; a new one starts on the same port: the iterator reconnects with its
    cursor and every message arrives exactly once, in order."""
    first = build_server(test_settings(service.settings.database_url, port=free_port()))
    port = first.port
    await first.start()
    policy = RetryPolicy(initial_backoff=0.05, max_backoff=0.3, total_deadline=15)
    writer = SessionClient(f"127.0.0.1:{service.port}")
    second = None
    seen: list[int] = []
    try:
        async with SessionClient(f"127.0.0.1:{port}", retry=policy) as client:
            session = await writer.create_session("watching-alice")

            async def write() -> None:
                for i in range(40):
                    await writer.add_message(session.session_id, "user", f"m{i}")
                    await asyncio.sleep(0.01)

            writing = None
            async for change in client.watch_session(session.session_id, after_change_id=0):
                if writing is None:
                    writing = asyncio.create_task(write())
                if change.kind == pb.CHANGE_KIND_MESSAGE_ADDED:
                    seen.append(change.message.sequence)
                    if len(seen) == 10:
                        await first.stop(grace=0)
                        second = build_server(test_settings(service.settings.database_url, port=port))
                        await second.start()
                    if len(seen) == 40:
                        break
            assert writing is not None
            await writing
    finally:
        await writer.close()
        if second is not None:
            await second.stop(grace=0)
    assert seen == list(range(1, 41))


@pytest.fixture
async def dev_auth() -> AsyncIterator[int]:
    """The development account and auth services (tokens alice-token, bob-token, ...)."""
    from session_grpc.devservices import DevAccountService, DevAuthService, load_accounts, load_tokens, start

    accounts = ROOT / "devservices" / "accounts.json"
    server, port = await start(DevAccountService(load_accounts(accounts)), auth=DevAuthService(load_tokens(accounts)))
    yield port
    await server.stop(0)


async def test_a_plaintext_token_needs_an_explicit_opt_in_and_then_authenticates(database_url, dev_auth):
    from session_grpc.auth import AuthSettings

    with pytest.raises(ValueError):
        SessionClient("127.0.0.1:1", token="alice-token")
    settings = test_settings(database_url, auth_mode="token", auth=AuthSettings(address=f"127.0.0.1:{dev_auth}"))
    async with running(settings) as server:
        async with SessionClient(f"127.0.0.1:{server.port}", token="alice-token", insecure_token=True) as alice:
            assert (await alice.create_session("alice")).user_id == "alice"
            with pytest.raises(PermissionDenied):
                await alice.create_session("bob")
        async with SessionClient(f"127.0.0.1:{server.port}") as anonymous:
            with pytest.raises(Unauthenticated):
                await anonymous.create_session("alice")


async def test_mutual_tls_with_call_credentials_acts_as_the_tokens_user(database_url, dev_auth, tmp_path):
    from session_grpc.auth import AuthSettings

    from .certs import make_pki

    ca, server_pem, client_pem = make_pki(tmp_path)
    settings = test_settings(
        database_url, auth_mode="token", auth=AuthSettings(address=f"127.0.0.1:{dev_auth}"),
        tls_cert=server_pem.cert, tls_key=server_pem.key, tls_client_ca=ca.cert,
    )
    tls = TlsOptions(root_certificates=ca.cert, private_key=client_pem.key, certificate_chain=client_pem.cert)
    async with running(settings) as server:
        async with SessionClient(f"localhost:{server.port}", tls=tls, token=lambda: "bob-token") as bob:
            session = await bob.create_session("bob", title="over mTLS")
            assert (await bob.get_session(session.session_id)).title == "over mTLS"
        async with SessionClient(f"localhost:{server.port}", tls=TlsOptions(root_certificates=ca.cert),
                                 token="bob-token", retry=RetryPolicy.disabled()) as no_client_cert:
            with pytest.raises(Unavailable):
                await no_client_cert.get_session(session.session_id)


def test_float_costs_are_refused():
    async def add() -> None:
        async with SessionClient("127.0.0.1:1") as client:
            await client.add_message(str(uuid.uuid4()), pb.ROLE_USER, "x", cost=0.1)

    with pytest.raises(TypeError):
        asyncio.run(add())


async def test_an_unknown_enum_name_is_invalid_argument_naming_the_accepted_values_before_sending():
    """role="boss" is the client's InvalidArgument (not protobuf's ValueError), with a BadRequest-style violation."""
    async with SessionClient("127.0.0.1:1", retry=RetryPolicy.disabled()) as client:
        with pytest.raises(InvalidArgument) as role:
            await client.add_message(str(uuid.uuid4()), "boss", "hi")
        with pytest.raises(InvalidArgument) as status:
            await client.update_session(str(uuid.uuid4()), status="done")
        with pytest.raises(InvalidArgument) as message_type:
            await client.add_message(str(uuid.uuid4()), "user", "hi", message_type="email")
    assert role.value.violations == {"role": "'boss' is not one of user, assistant, system, tool (or their ROLE_* names)"}
    assert role.value.attempts == 0 and role.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "active, completed, ended, archived, expired" in status.value.violations["session.status"]
    assert "chat, system, tool_call, tool_result, notification" in message_type.value.violations["message_type"]
    assert str(role.value).startswith("INVALID_ARGUMENT: role: 'boss' is not one of")


async def test_an_error_message_names_its_code_once_and_a_reason_only_when_it_says_more(service):
    async with SessionClient(f"127.0.0.1:{service.port}") as client:
        with pytest.raises(NotFound) as missing:
            await client.get_session(str(uuid.uuid4()))
        session = await client.create_session("alice")
        await client.update_session(session.session_id, status="completed")
        with pytest.raises(FailedPrecondition) as backwards:
            await client.update_session(session.session_id, status="active")
    text = str(missing.value)
    assert missing.value.reason == "NOT_FOUND"  # the server's generic reason: the same word as the code
    assert text.startswith("NOT_FOUND: ") and text.count("NOT_FOUND") == 1, text
    assert str(backwards.value).endswith(" [INVALID_STATUS_TRANSITION]"), str(backwards.value)
    assert str(backwards.value).count("FAILED_PRECONDITION") == 1


async def test_search_messages_pages_through_every_result_with_filters(service):
    async with SessionClient(f"127.0.0.1:{service.port}") as client:
        session = await client.create_session("alice", app_name="search")
        other = await client.create_session("alice")
        for i in range(5):
            await client.add_message(session.session_id, "user", f"kettle number {i}")
        await client.add_message(session.session_id, "assistant", "the kettle boils")
        await client.add_message(other.session_id, "user", "kettle elsewhere")
        every = [r async for r in client.search_messages("kettle", user_id="alice", page_size=2)]
        assert len(every) == 7 and all("<mark>kettle</mark>" in r.snippet for r in every)
        assert [r.rank for r in every] == sorted((r.rank for r in every), reverse=True)
        mine = [r.message.content async for r in client.search_messages("kettle", app_name="search", roles=["assistant"])]
        assert mine == ["the kettle boils"]
        since = datetime.now(timezone.utc) - timedelta(hours=1)
        page = await client.search_messages_page("kettle", session_ids=[other.session_id], start_time=since)
        assert [r.message.content for r in page.results] == ["kettle elsewhere"] and page.next_page_token == ""
        with pytest.raises(InvalidArgument) as caught:
            await client.search_messages_page("kettle", end_time=since.replace(tzinfo=None))
        assert set(caught.value.violations) == {"end_time"}
        with pytest.raises(InvalidArgument) as caught:
            await client.search_messages_page("")
        assert set(caught.value.violations) == {"query"}


async def test_list_sessions_filters_and_orders_by_last_activity(service, sql):
    async with SessionClient(f"127.0.0.1:{service.port}") as client:
        web = await client.create_session("carol", title="Trip to Lisbon", metadata={"channel": "web"})
        app = await client.create_session("carol", title="Groceries", metadata={"channel": "app"})
        ended = await client.create_session("carol", title="Old lisbon trip", metadata={"channel": "web"})
        await client.end_session(ended.session_id)
        await client.add_message(web.session_id, "user", "hello")  # web is now the latest active
        by_activity = [s.title async for s in client.list_sessions("carol", by_last_activity=True, page_size=1)]
        assert by_activity[0] == "Trip to Lisbon" and len(by_activity) == 3
        found = [s.title async for s in client.list_sessions("carol", title_contains="LISBON", metadata_contains={"channel": "web"})]
        assert found == ["Old lisbon trip", "Trip to Lisbon"]
        page = await client.list_sessions_page("carol", statuses=["active", "SESSION_STATUS_COMPLETED"], page_size=1)
        assert page.total_size == 2 and page.next_page_token
        since = datetime.now(timezone.utc) - timedelta(hours=1)
        assert len([s async for s in client.list_sessions("carol", created_after=since, updated_before=since)]) == 0
        assert {s.session_id async for s in client.list_sessions("carol", created_after=since)} == {
            web.session_id, app.session_id, ended.session_id,
        }
        with pytest.raises(InvalidArgument) as caught:
            await client.list_sessions_page("carol", created_before=since.replace(tzinfo=None))
        assert set(caught.value.violations) == {"create_time_end"}


async def test_get_usage_returns_exact_buckets_and_checks_its_arguments(service):
    async with SessionClient(f"127.0.0.1:{service.port}") as client:
        session = await client.create_session("usage-user", app_name="metered")
        await client.add_message(session.session_id, "user", "hi", tokens_used=4, cost="0.1")
        await client.add_message(session.session_id, "assistant", "hello", tokens_used=6, cost="0.2")
        now = datetime.now(timezone.utc)
        found = await client.get_usage("day", now - timedelta(days=1), now.timestamp() + 60, user_id="usage-user")
        assert (found.message_count, found.total_tokens, found.total_cost) == (2, 10, "0.3")
        split = await client.get_usage(pb.USAGE_BUCKET_HOUR, now - timedelta(hours=1), now + timedelta(minutes=1),
                                       user_id="usage-user", app_name="metered", by_role=True)
        assert sorted((b.role, b.total_cost) for b in split.buckets) == [(pb.ROLE_USER, "0.1"), (pb.ROLE_ASSISTANT, "0.2")]
        with pytest.raises(InvalidArgument) as caught:
            await client.get_usage("week", now - timedelta(days=1), now)
        assert "bucket" in str(caught.value)
        with pytest.raises(InvalidArgument):
            await client.get_usage("day", now, now - timedelta(days=1))  # the server's check
        with pytest.raises(InvalidArgument):
            await client.get_usage("day", now.replace(tzinfo=None), now)


async def test_budgets_through_the_client_refuse_and_report(service):
    async with SessionClient(f"127.0.0.1:{service.port}") as client:
        budget = await client.set_budget(user_id="budget-user", daily_tokens=10, monthly_cost=Decimal("0.5"))
        assert budget.daily_tokens == 10 and budget.monthly_cost == "0.5" and not budget.HasField("monthly_tokens")
        session = await client.create_session("budget-user")
        await client.add_message(session.session_id, "user", "hi", tokens_used=8, cost="0.1")
        with pytest.raises(ResourceExhausted) as caught:
            await client.add_message(session.session_id, "user", "more", tokens_used=3)
        assert caught.value.reason == "BUDGET_EXCEEDED"
        found = await client.get_budget(user_id="budget-user")
        assert {u.limit: (u.used, u.remaining) for u in found.usage} == {
            "daily_tokens": ("8", "2"), "monthly_cost": ("0.1", "0.4")}
        assert await client.delete_budget(user_id="budget-user") is True
        assert await client.delete_budget(user_id="budget-user") is False
        with pytest.raises(NotFound):
            await client.get_budget(user_id="budget-user")
        with pytest.raises(InvalidArgument):
            await client.set_budget(user_id="budget-user")  # no limit


async def test_retention_policies_through_the_client(service):
    async with SessionClient(f"127.0.0.1:{service.port}") as client:
        policy = await client.set_retention_policy("kept-app", message_ttl=timedelta(days=30),
                                                   max_messages_per_session=200)
        assert policy.message_ttl.seconds == 30 * 86400 and policy.max_messages_per_session == 200
        assert not policy.HasField("closed_session_ttl")
        assert (await client.get_retention_policy("kept-app")) == policy
        replaced = await client.set_retention_policy("kept-app", closed_session_ttl=3600)
        assert replaced.closed_session_ttl.seconds == 3600 and not replaced.HasField("message_ttl")
        assert await client.delete_retention_policy("kept-app") is True
        assert await client.delete_retention_policy("kept-app") is False
        with pytest.raises(NotFound):
            await client.get_retention_policy("kept-app")
        with pytest.raises(InvalidArgument):
            await client.set_retention_policy("kept-app")  # no rule
