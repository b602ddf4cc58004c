"""One end-to-end run of the installed ``mesh-node`` script in a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MESH_NODE = Path(sys.executable).parent / "mesh-node"


@pytest.mark.skipif(not MESH_NODE.exists(), reason="mesh-node is not installed in this venv")
def test_real_subprocess(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(MESH_NODE), *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )

    r = run("keygen", "--out", "a.key")
    assert r.returncode == 0, r.stderr
    assert run("org", "init", "acme", "--out", "acme").returncode == 0
    r = run(
        "org", "issue", "--org", "acme", "--node-key", "a.key.pub", "--name", "a", "--out", "a.cert"
    )
    assert r.returncode == 0, r.stderr
    (tmp_path / "a.key").chmod(0o644)
    r = run(
        "org", "issue", "--org", "acme", "--node-key", "a.key", "--name", "a", "--out", "b.cert"
    )
    assert r.returncode == 2
    assert (
        r.stderr.startswith("error: key file a.key is accessible") and "Traceback" not in r.stderr
    )
    vectors = json.loads((ROOT / "docs" / "test-vectors.json").read_text())
    frame = tmp_path / "ping.bin"
    frame.write_bytes(bytes.fromhex(vectors[0]["frame_hex"]))
    trust = str(ROOT / "docs" / "test-vectors.trust")
    now = str(vectors[0]["now"])
    r = run("inspect", "--trust", trust, "--as", vectors[0]["recipient"], "--now", now, str(frame))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {
        "file": str(frame), "ok": True, "kind": "ping",
        "sender": vectors[0]["node_id"], "org": "acme",
    }  # fmt: skip
    r = run("inspect", "--trust", trust, "--as", "a" * 52, "--now", now, str(frame))
    assert r.returncode == 1 and json.loads(r.stdout)["error"] == "wrong-recipient"
    r = run("inspect", "--trust", trust)
    assert r.returncode == 2 and "Traceback" not in r.stderr


@pytest.mark.skipif(not MESH_NODE.exists(), reason="mesh-node is not installed in this venv")
def test_a_closed_stdout_ends_the_command_quietly(tmp_path: Path) -> None:
    """`mesh-node tasks | head` (the reader gone before the output): no 'error: Broken
    pipe' line, and the exit status of a command killed by SIGPIPE."""
    org = subprocess.run(
        [str(MESH_NODE), "org", "init", "acme", "--out", "acme"],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert org.returncode == 0, org.stderr
    with subprocess.Popen(
        [str(MESH_NODE), "trust", "add", "--store", "trust.toml", "acme"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # long before the command has started up and prints
        err = proc.stderr.read().decode()
        code = proc.wait(60)
    assert code == 141, err
    assert err == ""
