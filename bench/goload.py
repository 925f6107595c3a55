"""The Go load generator (bench/goload/main.go): built offline, driven from the bench.

The Python load generator needs most of a core for the stream workloads and caps what they can
show; a Go client spends a fraction of that per call, so with it the server is the bottleneck.
It is built in GOPATH mode against Debian's Go sources (/usr/share/gocode), the way
tests/test_go_client.py builds clients/go/example (no module downloads), once per run.

Each measurement is one goload process against one server: it warms up, prints "measuring" (the
CPU meters start, with the Go process as the "loadgen" group), runs its window and prints a JSON
result, turned here into the loadgen.RunStats the other workloads record.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from . import loadgen, procstat

ROOT = Path(__file__).resolve().parents[1]
GOCODE = Path("/usr/share/gocode")
APT = (
    "apt-get install golang-go golang-google-grpc-dev golang-google-protobuf-dev "
    "golang-github-golang-protobuf-1-5-dev"
)
IMPORT_PATH = "github.com/session-grpc/session-grpc"


def missing() -> str | None:
    """Why the Go load generator cannot be built here, or None."""
    if shutil.which("go") is None:
        return f"no Go toolchain ({APT})"
    if not (GOCODE / "src/google.golang.org/grpc").is_dir() or not (
        GOCODE / "src/github.com/golang/protobuf/proto/registry.go"
    ).is_file():
        return f"no Debian gRPC/protobuf Go sources under {GOCODE} ({APT})"
    return None


def build(into: Path) -> Path:
    """Build goload into `into` (a GOPATH of its own with this repository linked in); its path."""
    gopath = into / "gopath"
    link = gopath / "src" / IMPORT_PATH
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(ROOT)
    binary = into / "goload"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{gopath}:{GOCODE}", "GOFLAGS": "", "GOPROXY": "off"}
    built = subprocess.run(
        ["go", "build", "-o", str(binary), "."], cwd=link / "bench" / "goload", env=env,
        capture_output=True, text=True, timeout=900,
    )
    if built.returncode != 0:
        raise RuntimeError(f"building bench/goload failed:\n{built.stdout}{built.stderr}")
    return binary


class Builder:
    """Builds goload once, on first use, into a temporary folder removed by close()."""

    def __init__(self) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._binary: Path | None = None

    def binary(self) -> Path:
        if self._binary is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="session-goload-")
            self._binary = build(Path(self._tmp.name))
        return self._binary

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


# The result is one JSON line with every call's latency: at c=32 it passes asyncio's 64 KiB line limit.
_RESULT_LINE_LIMIT = 256 * 1024 * 1024


async def run(
    binary: Path,
    port: int,
    args: list[str],
    meter: Callable[[int], procstat.CpuMeter] | None = None,
    timeout: float = 600.0,
) -> tuple[loadgen.RunStats, dict[str, float]]:
    """One goload measurement against 127.0.0.1:`port`: its stats and the CPU the meter (made for
    the goload process's pid) saw over the measured window ({} without a meter)."""
    process = await asyncio.create_subprocess_exec(
        str(binary), "-addr", f"127.0.0.1:{port}", "-linger", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        limit=_RESULT_LINE_LIMIT,
    )
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    cpu: dict[str, float] = {}
    running = meter(process.pid) if meter else None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout)
        if line.strip() != b"measuring":
            raise RuntimeError(f"goload: {line.decode()}{(await process.stderr.read()).decode()}")
        if running:
            running.start()
        line = await asyncio.wait_for(process.stdout.readline(), timeout)
        if running:
            cpu = running.stop()  # goload lingers until its stdin closes: its CPU time is still readable
        process.stdin.close()
        await asyncio.wait_for(process.wait(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0 or not line:
        raise RuntimeError(f"goload exited with {process.returncode}: {(await process.stderr.read()).decode()}")
    found = json.loads(line)
    latencies = [us / 1e6 for us in found["latencies_us"] or []]
    stats = loadgen.RunStats(calls=found["calls"], seconds=found["seconds"], latencies=latencies, errors=found["errors"])
    if found.get("first_error"):
        print(f"# goload: {found['errors']} errors, the first: {found['first_error']}", flush=True)
    return stats, cpu
