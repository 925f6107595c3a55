"""`make chaos` rows for Google ADK (issue 11, item 9): reliability/adk_appenders.py against
session_client.adk and, beside it, ADK's own DatabaseSessionService on the same PostgreSQL.

The scenario runs in the ADK virtualenv (google-adk cannot share .venv): ADK_PYTHON, else
.venv-adk/bin/python (make test and make chaos build it). Without one the rows say so.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from pathlib import Path

import asyncpg

from session_grpc.testing import database_url_for, drop_database

from .scenarios import Outcome, drops_its_databases, fresh_database, in_process_server

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "reliability" / "adk_appenders.py"


def adk_python() -> Path:
    return Path(os.environ.get("ADK_PYTHON") or ROOT / ".venv-adk" / "bin" / "python")


def _outcome(row: dict, peer: bool) -> Outcome:
    name = f"ADK appenders on one session: {row['service']}"
    outcome = Outcome(name, is_peer=peer)
    outcome.attempted = row["attempted"]
    outcome.acknowledged = row["acknowledged"]
    outcome.retried = row["stale_refusals"]
    outcome.failed = Counter(row["errors"])
    outcome.lost = row["lost"]
    outcome.duplicates = row["duplicates"]
    outcome.failed_but_stored = row["failed_but_stored"]
    outcome.counter_mismatches = row["out_of_order"] + row["lost_deltas"]
    outcome.notes = (
        f"{row['appenders']} appenders x {row['rounds']} events, {row['stored']} stored in {row['seconds']:.1f}s; "
        f"{row['stale_refusals']} stale-session refusals re-read and retried (column retried); "
        f"{row['gave_up']} events given up after 200 refusals in a row; "
        f"{row['out_of_order']} out of order and {row['lost_deltas']} lost state deltas (column counter mismatches)"
        + ("; ADK's own service, reported for comparison, not held to the table's zeros" if peer else "")
    )
    return outcome


@drops_its_databases
async def adk_appenders(server_url: str, *, appenders: int = 16, rounds: int = 20) -> list[Outcome]:
    python = adk_python()
    if not python.exists():
        skipped = Outcome("ADK appenders on one session", is_peer=True)
        skipped.notes = f"skipped: no ADK virtualenv at {python} (make chaos builds .venv-adk)"
        return [skipped]
    url = await fresh_database(server_url)
    peer_name = f"session_grpc_chaos_adk_peer_{os.getpid()}"
    peer_url = database_url_for(server_url, peer_name)
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{peer_name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{peer_name}"')
    finally:
        await admin.close()
    try:
        async with in_process_server(url) as (server, _):
            process = await asyncio.create_subprocess_exec(
                str(python), str(SCRIPT), "--target", f"127.0.0.1:{server.port}", "--peer-url", peer_url,
                "--appenders", str(appenders), "--rounds", str(rounds),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            out, err = await process.communicate()
    finally:
        await drop_database(server_url, peer_url)
    if process.returncode != 0:
        failed = Outcome("ADK appenders on one session")
        failed.failed["SCRIPT_FAILED"] += 1
        failed.notes = err.decode()[-500:]
        return [failed]
    ours, *peer = json.loads(out)
    return [_outcome(ours, peer=False)] + [_outcome(row, peer=True) for row in peer]
