"""The Google ADK adapter (session_client.adk): its tests and example run against this suite's live server.

google-adk cannot share .venv (it pins opentelemetry below the server's), so tests/adk/ runs in a
virtualenv of its own holding only google-adk and the client package with its `adk` extra:
.venv-adk, which `make test` builds and names in ADK_PYTHON, or else a throwaway one made here
(about 20 s). Each file of tests/adk/ is one test here, run by that virtualenv's pytest against the
server of the `service` fixture; its output is the failure message.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from session_grpc import testing
from session_grpc.server import SessionServer

ROOT = Path(__file__).resolve().parents[1]
ADK_TESTS = ROOT / "tests" / "adk"
FILES = sorted(ADK_TESTS.glob("test_*.py"))


@pytest.fixture(scope="session")
def adk_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Python of a virtualenv with google-adk and the client package's `adk` extra."""
    if os.environ.get("ADK_PYTHON"):
        return Path(os.environ["ADK_PYTHON"])
    venv = tmp_path_factory.mktemp("adk-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    build = tmp_path_factory.mktemp("adk-client-src") / "python"
    subprocess.run(["cp", "-r", str(ROOT / "clients" / "python"), str(build)], check=True)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-r", str(ADK_TESTS / "requirements.txt"), f"{build}[adk]"],
        capture_output=True, text=True, timeout=900,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return python


@pytest.fixture(scope="session")
async def peer_database_url(server_url: str) -> AsyncIterator[str]:
    """An empty database on the same PostgreSQL for ADK's DatabaseSessionService (its tables are its own)."""
    name = f"session_grpc_adk_peer_{os.getpid()}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = testing.database_url_for(server_url, name)
    yield url
    await testing.drop_database(server_url, url)


def test_every_adk_test_file_is_run():
    assert {path.name for path in FILES} >= {"test_adk_service.py", "test_example.py", "test_concurrent_appenders.py"}


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
async def test_adk_adapter(path, adk_python, service: SessionServer, database_url, peer_database_url):
    env = {
        **os.environ,
        "SESSION_GRPC_TARGET": f"127.0.0.1:{service.port}",
        "SESSION_GRPC_DATABASE_URL": database_url,
        "ADK_PEER_DATABASE_URL": peer_database_url,
    }
    process = await asyncio.create_subprocess_exec(
        str(adk_python), "-m", "pytest", "-q", "-c", str(ADK_TESTS / "pytest.ini"), "--rootdir", str(ADK_TESTS),
        str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=str(ADK_TESTS), env=env,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=600)
    assert process.returncode == 0, output.decode()


async def test_the_chaos_rows_run_the_appenders_on_session_grpc_and_beside_it_on_adks_service(
    adk_python, server_url, monkeypatch
):
    from reliability import adk

    monkeypatch.setenv("ADK_PYTHON", str(adk_python))
    outcomes = await adk.adk_appenders(server_url, appenders=4, rounds=3)
    assert len(outcomes) == 2, [(o.name, dict(o.failed), o.notes) for o in outcomes]
    ours, peer = outcomes
    assert not ours.is_peer and peer.is_peer
    assert "session_client.adk" in ours.name and "DatabaseSessionService" in peer.name
    assert (ours.attempted - ours.retried, ours.acknowledged) == (12, 12)
    assert (ours.lost, ours.duplicates, ours.failed_but_stored, ours.counter_mismatches) == (0, 0, 0, 0)
    assert peer.acknowledged > 0
