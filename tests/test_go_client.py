"""The Go stubs match the protos, and the Go example client builds and runs against a live server.

Needs Debian's Go toolchain and gRPC sources (no Go module downloads are possible here):
    apt-get install golang-go golang-google-grpc-dev golang-google-protobuf-dev \
        golang-github-golang-protobuf-1-5-dev protoc-gen-go protoc-gen-go-grpc protobuf-compiler
(grpc-go 1.33 marshals through github.com/golang/protobuf; its 1.3 version, which the grpc package
pulls in by default, panics on APIv2 messages, hence the 1-5 package.)
.ci/run installs them; without them these tests skip and say so.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOCODE = Path("/usr/share/gocode")
APT = (
    "apt-get install golang-go golang-google-grpc-dev golang-google-protobuf-dev "
    "golang-github-golang-protobuf-1-5-dev protoc-gen-go protoc-gen-go-grpc protobuf-compiler"
)


def missing(*tools: str) -> list[str]:
    return [tool for tool in tools if shutil.which(tool) is None]


needs_protoc_plugins = pytest.mark.skipif(
    bool(missing("protoc", "protoc-gen-go", "protoc-gen-go-grpc")),
    reason=f"protoc and its Go plugins are not installed ({APT})",
)
needs_go = pytest.mark.skipif(
    bool(missing("go"))
    or not (GOCODE / "src/google.golang.org/grpc").is_dir()
    or not (GOCODE / "src/github.com/golang/protobuf/proto/registry.go").is_file(),  # 1.5, not 1.3
    reason=f"no Go toolchain with Debian's gRPC sources ({APT})",
)


@needs_protoc_plugins
def test_committed_go_stubs_match_the_protos():
    result = subprocess.run([str(ROOT / "scripts/gen_go"), "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="session")
def go_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example built offline in GOPATH mode against /usr/share/gocode."""
    gopath = tmp_path_factory.mktemp("gopath")
    link = gopath / "src/github.com/session-grpc/session-grpc"
    link.parent.mkdir(parents=True)
    link.symlink_to(ROOT)
    binary = gopath / "example"
    env = {
        # GOPATH mode: the repository under a GOPATH of its own, the rest from Debian's sources.
        **os.environ, "GO111MODULE": "off", "GOPATH": f"{gopath}:{GOCODE}", "GOFLAGS": "", "GOPROXY": "off",
    }
    built = subprocess.run(
        ["go", "build", "-o", str(binary), "./example"], cwd=link / "clients/go", env=env,
        capture_output=True, text=True, timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return binary


@needs_go
def test_go_stubs_and_example_compile(go_example):
    assert go_example.is_file()


@needs_go
async def test_go_example_creates_a_session_adds_messages_and_streams_them(go_example, service):
    process = await asyncio.create_subprocess_exec(
        str(go_example), "-addr", f"127.0.0.1:{service.port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    text = output.decode()
    assert process.returncode == 0, text
    assert "streamed 1 ROLE_USER" in text and "streamed 2 ROLE_ASSISTANT" in text
    assert "totals ok: 2 messages, 60 tokens, cost 0.00075" in text
