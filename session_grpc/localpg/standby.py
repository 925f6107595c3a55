"""A primary and a hot standby that streams from it (pg_basebackup -R), both Debian PostgreSQL 15
instances of our own on loopback ports, in one scratch folder."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..testing import free_port
from . import PG_BIN, run, scratch


@dataclass
class Instance:
    """One PostgreSQL instance: a data folder, a port, its URL."""

    data: Path
    port: int
    durable: bool = False
    """fsync and full-page writes on (for measurements); off by default, for fast tests."""

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.data.parent} "
            "-c max_connections=60"
        )
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off"
        run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "-o", options,
             "-l", str(self.data.parent / f"{self.data.name}.log"), "start"])

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "30", "-m", mode, "stop"], timeout=40)


@dataclass
class Replication:
    primary: Instance
    standby: Instance


@contextlib.contextmanager
def primary_and_standby() -> Iterator[Replication]:
    """A fresh primary (initdb, trust on loopback, replication allowed) and a streaming hot
    standby of it, for the block; both stopped and their folder removed after."""
    with scratch("session-grpc-standby-") as folder:
        primary = Instance(folder / "primary", free_port())
        standby = Instance(folder / "standby", free_port())
        started: list[Instance] = []
        try:
            run([str(PG_BIN / "initdb"), "-D", str(primary.data), "-U", "postgres", "-A", "trust", "--no-sync",
                 "-E", "UTF8", "--locale", "C"])
            primary.start()
            started.append(primary)
            run([str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                 "-D", str(standby.data), "-R", "-X", "stream", "--checkpoint", "fast", "--no-sync"])
            standby.start()
            started.append(standby)
            yield Replication(primary, standby)
        finally:
            for instance in reversed(started):
                instance.stop("immediate")
