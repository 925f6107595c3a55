"""clients/python/examples/adk/agent.py: an ADK agent with a scripted model, its sessions in session-grpc."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "clients" / "python" / "examples" / "adk" / "agent.py"


async def test_the_adk_agent_example_runs_and_reads_its_session_back(target):
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), target, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd="/"
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, output.decode()
    assert output.decode().splitlines()[-1] == "ok"
