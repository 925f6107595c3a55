"""A pg_auto_failover formation on loopback: a monitor, a primary and a synchronous secondary,
each a `pg_autoctl` keeper (Debian's postgresql-15-auto-failover) with its own PostgreSQL 15.

The monitor's health checks are tightened (1 s period, unhealthy after 3 s) so that a failover
takes seconds, not the half minute of the defaults; what they are is in MONITOR_SETTINGS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from ..testing import free_port
from . import PG_BIN, as_owner, give_to_owner, program, run, scratch

MONITOR_SETTINGS = {
    "pgautofailover.health_check_period": "1000",  # ms between the monitor's checks of each node
    "pgautofailover.health_check_timeout": "1000",  # ms a check's connection may take
    "pgautofailover.health_check_max_retries": "1",
    "pgautofailover.health_check_retry_delay": "500",  # ms
    "pgautofailover.node_considered_unhealthy_timeout": "3000",  # ms without a keeper's report
    "pgautofailover.primary_demote_timeout": "5000",  # ms the old primary gets to demote itself
}
"""Monitor settings (defaults 5 s, 5 s, 2, 2 s, 20 s, 30 s), so a killed primary is noticed in
about 3 s and replaced in about 10."""


@dataclass
class Node:
    name: str
    data: Path
    port: int
    keeper: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@dataclass
class Formation:
    folder: Path
    monitor_port: int
    nodes: list[Node] = field(default_factory=list)
    monitor: subprocess.Popen[bytes] | None = None

    @property
    def monitor_url(self) -> str:
        return f"postgresql://autoctl_node@127.0.0.1:{self.monitor_port}/pg_auto_failover"

    def multi_host_url(self, database: str) -> str:
        """Every node, the writable one chosen at connect time (what `pg_autoctl show uri` prints)."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"postgresql://postgres@{hosts}/{database}?target_session_attrs=read-write"

    def env(self) -> dict[str, str]:
        """pg_autoctl keeps its state under XDG folders: ours, inside the scratch folder."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "XDG_CONFIG_HOME": str(self.folder / "config"),
            "XDG_DATA_HOME": str(self.folder / "share"),
            "XDG_RUNTIME_DIR": str(self.folder / "run"),
            "PG_CONFIG": str(PG_BIN / "pg_config"),
        }

    async def states(self) -> dict[str, tuple[str, str]]:
        """Each node's (reported state, goal state), as the monitor has them."""
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{self.monitor_port}/pg_auto_failover")
        try:
            rows = await conn.fetch("SELECT nodename, reportedstate::text, goalstate::text FROM pgautofailover.node")
        finally:
            await conn.close()
        return {row["nodename"]: (row["reportedstate"], row["goalstate"]) for row in rows}

    async def primary(self) -> Node | None:
        """The node the monitor has as primary (reported and goal), if any."""
        states = await self.states()
        for node in self.nodes:
            if states.get(node.name) == ("primary", "primary"):
                return node
        return None

    async def wait_for(self, wanted: dict[str, str], timeout: float = 90.0) -> None:
        """Until each named node reports (and is meant to be in) the wanted state."""
        deadline = time.monotonic() + timeout
        states: dict[str, tuple[str, str]] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                states = await self.states()
                if all(states.get(name) == (state, state) for name, state in wanted.items()):
                    return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"pg_auto_failover states {states}, wanted {wanted}")

    def kill(self, node: Node) -> None:
        """Stop a node hard: its keeper and its PostgreSQL get SIGKILL (a host lost)."""
        if node.keeper is not None and node.keeper.poll() is None:
            os.killpg(node.keeper.pid, signal.SIGKILL)
            node.keeper.wait(10)
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            run([str(PG_BIN / "pg_ctl"), "-D", str(node.data), "-m", "immediate", "-w", "stop"], timeout=30)

    def _keeper(self, command: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                as_owner(command), env=self.env(), stdout=out, stderr=subprocess.STDOUT, cwd=self.folder,
                start_new_session=True,  # its own process group: kill() takes the keeper and PostgreSQL together
            )

    def stop(self) -> None:
        for process in [node.keeper for node in self.nodes] + [self.monitor]:
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in [node.keeper for node in self.nodes] + [self.monitor]:
            if process is None:
                continue
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for data in [node.data for node in self.nodes] + [self.folder / "monitor"]:
            if (data / "postmaster.pid").exists():
                with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                    run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], timeout=30)


async def _start(formation: Formation) -> None:
    autoctl = program("pg_autoctl")
    assert autoctl is not None
    folder = formation.folder
    for sub in ("config", "share", "run"):
        (folder / sub).mkdir(mode=0o700)
        give_to_owner(folder / sub)
    pgctl = str(PG_BIN / "pg_ctl")
    monitor_data = folder / "monitor"
    run([autoctl, "create", "monitor", "--pgctl", pgctl, "--pgdata", str(monitor_data), "--pgport",
         str(formation.monitor_port), "--hostname", "127.0.0.1", "--auth", "trust", "--no-ssl"],
        env=formation.env(), timeout=120)
    with (monitor_data / "postgresql.conf").open("a") as conf:  # loopback only (create monitor has no --listen)
        conf.write("\nlisten_addresses = '127.0.0.1'\n")
    formation.monitor = formation._keeper([autoctl, "run", "--pgdata", str(monitor_data)], folder / "monitor.log")
    await _until_accepting(formation.monitor_port)
    admin = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{formation.monitor_port}/pg_auto_failover")
    try:
        for name, value in MONITOR_SETTINGS.items():
            await admin.execute(f"ALTER SYSTEM SET {name} = {value}")
        await admin.execute("SELECT pg_reload_conf()")
    finally:
        await admin.close()
    for index, node in enumerate(formation.nodes):
        node.keeper = formation._keeper(
            [autoctl, "create", "postgres", "--pgctl", pgctl, "--pgdata", str(node.data), "--pgport", str(node.port),
             "--hostname", "127.0.0.1", "--listen", "127.0.0.1", "--name", node.name, "--monitor",
             formation.monitor_url, "--auth", "trust", "--no-ssl", "--run"],
            folder / f"{node.name}.log",
        )
        if index == 0:
            await formation.wait_for({node.name: "single"})
    await formation.wait_for({formation.nodes[0].name: "primary", formation.nodes[1].name: "secondary"})


async def _until_accepting(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", timeout=1)
            await conn.close()
            return
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def formation(nodes: int = 2) -> AsyncIterator[Formation]:
    """A monitor and `nodes` keepers (the first the primary, the others synchronous
    secondaries) for the block; every process stopped and the folder removed after."""
    with scratch("session-grpc-autofailover-") as folder:
        made = Formation(folder, free_port(), [Node(f"node{i + 1}", folder / f"node{i + 1}", free_port()) for i in range(nodes)])
        try:
            await _start(made)
            yield made
        finally:
            await asyncio.to_thread(made.stop)
