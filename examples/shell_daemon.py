"""A daemon serving a shell command, driven by the CLI.

Creates an org, two node keys, certificates and a trust store in a temporary
directory, writes two node.toml files (one daemon serves `wordcount` with the
command `<this Python> examples/wordcount.py`, the other only asks), starts both with
`mesh-node run`, submits a task with `mesh-node submit ... --wait`, and stops
both with SIGTERM. Run: `python examples/shell_daemon.py`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from node import files
from protocols.crypto import Ed25519Signer
from protocols.identity import NodeIdentity
from protocols.trust import issue_certificate

HERE = Path(__file__).resolve().parent
MESH_NODE = str(Path(sys.executable).parent / "mesh-node")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_node(base: Path, name: str, org: Ed25519Signer, port: int, seeds: list[str]) -> Path:
    seed = os.urandom(32)
    ident = NodeIdentity.from_seed(seed)
    now = time.time()
    cert = issue_certificate(
        org, "acme", ident.public_key, name, not_before=now - 60, not_after=now + 86400
    )
    files.write_private_key(base / f"{name}.key", seed)
    files.write_bytes(base / f"{name}.cert", cert)
    toml = f"""
[node]
name = "{name}"
identity = "{name}.key"
certificate = "{name}.cert"
trust = "trust.toml"
listen = "tcp://127.0.0.1:{port}"
seeds = {json.dumps(seeds)}
preset = "local"
control_dir = "{base / ("ctl-" + name)}"
"""
    if not seeds:
        toml += f"""
[[capability]]
name = "wordcount"
command = ["{sys.executable}", "{HERE / "wordcount.py"}"]
timeout = 10
max_concurrency = 2
"""
    (base / f"{name}.toml").write_text(toml)
    return base / f"{name}.toml"


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        org = Ed25519Signer(os.urandom(32))
        files.write_trust_file(
            files.TrustFile(base / "trust.toml", [files.TrustEntry("acme", org.public_key)])
        )
        port = free_port()
        server = make_node(base, "server", org, port, [])
        client = make_node(base, "client", org, free_port(), [f"tcp://127.0.0.1:{port}"])
        procs = [
            subprocess.Popen([MESH_NODE, "run", "--config", str(c)], stderr=subprocess.DEVNULL)
            for c in (server, client)
        ]
        try:
            for _ in range(200):  # bounded: until the client knows the server
                out = subprocess.run(
                    [MESH_NODE, "peers", "--json", "--config", str(client)],
                    capture_output=True,
                    text=True,
                )
                if out.returncode == 0 and json.loads(out.stdout):
                    break
                time.sleep(0.1)
            cfg = ["--config", str(client)]
            text = "the quick brown fox jumps over the lazy dog"
            out = subprocess.run(
                [MESH_NODE, "submit", "wordcount", "--input", json.dumps(text), "--wait", *cfg],
                capture_output=True,
                text=True,
                timeout=60,
            )
            print("result:", out.stdout.strip())
            return out.returncode
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)


if __name__ == "__main__":
    sys.exit(main())
