"""The contract's hygiene: `buf breaking` against the previous commit guards it, and every part of it is documented."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from .test_server import buf

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "buf-breaking"


def run_breaking(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT)], cwd=cwd, env={"BUF": buf(), "PATH": "/usr/bin:/bin", "HOME": str(cwd)},
        capture_output=True, text=True, timeout=120,
    )


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd, check=True, capture_output=True,
    )


@pytest.fixture
def proto_repo(tmp_path: Path) -> Path:
    """A git repository with this checkout's buf.yaml and session proto committed once."""
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    (tmp_path / "protos" / "session" / "v1").mkdir(parents=True)
    shutil.copy(ROOT / "protos/session/v1/session.proto", tmp_path / "protos/session/v1/session.proto")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "first")
    return tmp_path


def test_this_checkout_has_no_breaking_change_against_its_previous_commit():
    result = run_breaking(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_renumbered_field_fails_the_breaking_check(proto_repo: Path):
    proto = proto_repo / "protos/session/v1/session.proto"
    text = proto.read_text()
    assert "string title = 4;" in text
    proto.write_text(text.replace("string title = 4;", "string title = 40;", 1))
    git(proto_repo, "commit", "-q", "-am", "renumber")
    result = run_breaking(proto_repo)
    assert result.returncode != 0
    assert "title" in result.stdout + result.stderr


def test_a_new_field_passes_the_breaking_check(proto_repo: Path):
    proto = proto_repo / "protos/session/v1/session.proto"
    proto.write_text(proto.read_text().replace("message GetSessionRequest {\n", "message GetSessionRequest {\n  // new\n  string view = 99;\n", 1))
    git(proto_repo, "commit", "-q", "-am", "add a field")
    result = run_breaking(proto_repo)
    assert result.returncode == 0, result.stdout + result.stderr


def test_without_a_previous_commit_the_check_is_skipped_with_a_reason(proto_repo: Path):
    result = run_breaking(proto_repo)
    assert result.returncode == 0 and "skipped" in result.stdout


def test_a_previous_commit_without_protos_is_skipped_with_a_reason(tmp_path: Path):
    (tmp_path / "README").write_text("before the protos\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "no protos")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "protos" / "session", tmp_path / "protos" / "session")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "protos")
    result = run_breaking(tmp_path)
    assert result.returncode == 0 and "has no protos" in result.stdout, result.stdout + result.stderr


def session_descriptor(tmp_path: Path) -> descriptor_pb2.FileDescriptorProto:
    import grpc_tools
    from grpc_tools import protoc

    out = tmp_path / "session.pb"
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    assert protoc.main(
        ["protoc", f"-I{ROOT / 'protos'}", f"-I{well_known}", "--include_source_info",
         f"--descriptor_set_out={out}", "session/v1/session.proto"]
    ) == 0
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return files.file[0]


def test_every_message_field_enum_service_and_rpc_of_session_v1_is_commented(tmp_path: Path):
    proto = session_descriptor(tmp_path)
    comments = {
        tuple(location.path): location.leading_comments.strip()
        for location in proto.source_code_info.location
    }
    missing = []
    for m, message in enumerate(proto.message_type):
        if not comments.get((4, m)):
            missing.append(message.name)
        for f, field in enumerate(message.field):
            if not comments.get((4, m, 2, f)):
                missing.append(f"{message.name}.{field.name}")
    for e, enum in enumerate(proto.enum_type):
        if not comments.get((5, e)):
            missing.append(enum.name)
        for v, value in enumerate(enum.value):
            if not value.name.endswith("_UNSPECIFIED") and not comments.get((5, e, 2, v)):
                missing.append(value.name)
    for s, service in enumerate(proto.service):
        if not comments.get((6, s)):
            missing.append(service.name)
        for r, method in enumerate(service.method):
            if not comments.get((6, s, 2, r)):
                missing.append(f"{service.name}.{method.name}")
    assert missing == [], f"{len(missing)} undocumented: {missing}"
