"""The README's walk-through works as written: its shell blocks are run by bash against a server
started the way `make run` starts it (`session-grpc serve --migrate`, embedded PostgreSQL, no
DATABASE_URL), and the server says what it did at start and stop without library noise.

The blocks are found by their markers (`<!-- walkthrough: begin -->` ...), so editing the README
edits what runs here. They run in a folder whose `.venv` is this test's Python environment and whose
`scripts` is the repository's, as a reader's shell at the top of a checkout would see them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from session_grpc.testing import free_port

from .helpers import wait_for_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def block(name: str) -> str:
    """The shell code between `<!-- name: begin -->` and `<!-- name: end -->`, without its fences."""
    found = re.search(rf"<!-- {name}: begin -->\n```sh\n(.*?)```\n<!-- {name}: end -->", README.read_text(), re.S)
    assert found, f"README.md has no {name} block"
    return found.group(1)


@dataclass
class Run:
    walkthrough: subprocess.CompletedProcess[str]
    error_details: subprocess.CompletedProcess[str]
    server_exit: int
    server_log: str


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    if not (Path(sys.prefix) / "bin" / "buf").exists():
        pytest.fail("buf is a dev dependency (buf-bin) and must be installed in this environment")
    home = tmp_path_factory.mktemp("readme")
    (home / ".venv").symlink_to(sys.prefix)
    (home / "scripts").symlink_to(ROOT / "scripts")
    port = free_port()
    env = {name: value for name, value in os.environ.items() if name != "DATABASE_URL"}
    env.update(PORT=str(port), SESSION_EMBEDDED_DATA_DIR=str(home / "pgdata"))
    server = subprocess.Popen(
        [str(Path(sys.prefix) / "bin" / "session-grpc"), "serve", "--migrate"], cwd=home, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_for_port(port, timeout=120)
        script = {name: value for name, value in os.environ.items() if name != "PORT"} | {"PORT": str(port)}
        walkthrough = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + block("walkthrough")],
            cwd=home, env=script, capture_output=True, text=True, timeout=300,
        )
        # Its own shell, with the walk-through's definitions (bcurl, U) but not its calls.
        definitions = "\n".join(line for line in block("walkthrough").splitlines() if line.startswith(("bcurl()", "U=")))
        error_details = subprocess.run(
            ["bash", "-c", "set -eu\n" + definitions + "\n" + block("error-details")],
            cwd=home, env=script, capture_output=True, text=True, timeout=120,
        )
    finally:
        server.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            log, _ = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            log, _ = server.communicate()
    return Run(walkthrough, error_details, server.returncode, log)


def test_the_readme_walk_through_runs_as_a_script_against_a_server_started_like_make_run(run):
    out = run.walkthrough.stdout
    assert run.walkthrough.returncode == 0, run.walkthrough.stdout + run.walkthrough.stderr
    assert "session.v1.SessionService" in out and "grpc.reflection.v1.ServerReflection" in out
    assert "session.v1.MessageService/AddMessage" in out  # --list-methods answered
    assert re.search(r"^session [0-9a-f-]{36}$", out, re.M), out  # S was captured
    assert '"content": "Lisbon."' in out
    assert '"title": "Chosen id"' in out  # a client-chosen session id was accepted
    assert re.search(r'"snippet": "(<|\\u003c)mark(>|\\u003e)Where', out), out  # SearchMessages found it
    assert '"totalCost": "0.00075"' in out
    # GetUsage answered with month buckets (alice's four messages: 60 tokens, 0.00075)
    assert re.search(r'"buckets": \[\s*\{\s*"startTime": "\d{4}-\d\d-01T00:00:00Z"', out), out
    assert '"limit": "daily_cost"' in out and '"remaining": "4.99925"' in out  # GetBudget: 5.00 - 0.00075
    # Scoped state: the AddMessage deltas, then UpdateState's (seat deleted, currency set).
    assert '"step": "booking"' in out and '"model": "m1"' in out
    assert re.search(r'"userState": \{[^}]*"state": \{\s*"currency": "EUR"\s*\}', out), out
    # The event's payload came back as sent (its base64) and stamped the session with its time.
    assert '"payload": "eyJ1c2FnZU1ldGFkYXRhIjp7InRvdGFsVG9rZW5Db3VudCI6OTAwNzE5OTI1NDc0MDk5M319"' in out
    assert '"lastEventTime": "2026-05-01T09:30:00.123456Z"' in out
    assert '"content": "22 C, sunny"' in out  # AddMessages appended the batch
    assert '"forkedAtSequence": "3"' in out  # ForkSession's lineage
    assert '"removedMessageCount": "2"' in out  # TruncateSession removed the batch again
    assert '"status": "SESSION_STATUS_ENDED"' in out
    assert '"kind": "CHANGE_KIND_MESSAGE_ADDED"' in out and '"kind": "CHANGE_KIND_MEMORY_CHANGED"' in out  # the feed
    # WatchUserSessions: alice's other sessions too (the chosen-id one, the fork), not only S's
    assert out.count('"kind": "CHANGE_KIND_SESSION_CREATED"') >= 3, out
    assert out.count('"deleted": true') == 2, out  # DeleteBudget, DeleteRetentionPolicy
    # SetRetentionPolicy answered the policy, and GetRetentionPolicy read it back
    assert out.count('"maxMessagesPerSession": "1000"') == 2 and out.count('"closedSessionTtl": "31536000s"') == 2, out
    assert "session-grpc-user-data" in out  # ExportUserData's header line
    assert '"sessionCount": "3"' in out  # DeleteUserData erased alice: S, C and the fork F
    assert '"status": "SERVING"' in out


def test_the_readme_error_details_recipe_decodes_the_bad_request(run):
    out = run.error_details.stdout
    assert run.error_details.returncode == 0, out + run.error_details.stderr
    assert out.startswith("invalid_argument: "), out
    assert 'google.rpc.BadRequest {"fieldViolations": [{"field": "session_id"' in out, out


def test_make_run_says_the_embedded_database_stopped_and_prints_no_library_noise(run):
    log = run.server_log
    assert run.server_exit == 0, log
    assert "embedded PostgreSQL running in" in log and log.rstrip().endswith("embedded PostgreSQL stopped"), log
    assert "XDG_RUNTIME_DIR" not in log, log
    assert "fork()" not in log, log
