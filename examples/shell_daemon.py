"""A daemon serving a shell command, driven by the CLI.

In a temporary directory, with `mesh-node` commands as docs/operations.md shows them:
creates an org (`org init`), two node keys (`keygen`), their certificates (`org issue`)
and a trust store (`trust add`); writes two node.toml files (one daemon serves
`wordcount` with the command `<this Python> examples/wordcount.py`, the other only
asks), starts both with `mesh-node run`, submits a task with `mesh-node submit ...
--wait`, and stops both with SIGTERM (each exits 0). Run: `python examples/shell_daemon.py`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MESH_NODE = str(Path(sys.executable).parent / "mesh-node")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mesh_node(*args: str, cwd: Path) -> str:
    """Run one `mesh-node` command (bounded); its stdout, or exit with its error."""
    out = subprocess.run([MESH_NODE, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise SystemExit(f"mesh-node {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def make_node(base: Path, name: str, port: int, seeds: list[str]) -> Path:
    mesh_node("keygen", "--out", f"{name}.key", cwd=base)
    issue = ["org", "issue", "--org", "acme/", "--node-key", f"{name}.key.pub", "--name", name]
    mesh_node(*issue, "--valid-for", "1d", "--out", f"{name}.cert", cwd=base)
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
command = [{json.dumps(sys.executable)}, {json.dumps(str(HERE / "wordcount.py"))}]
timeout = 10
max_concurrency = 2
"""
    (base / f"{name}.toml").write_text(toml)
    return base / f"{name}.toml"


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        mesh_node("org", "init", "acme", "--out", "acme/", cwd=base)
        mesh_node("trust", "add", "--store", "trust.toml", "acme/", cwd=base)
        port = free_port()
        server = make_node(base, "server", port, [])
        client = make_node(base, "client", free_port(), [f"tcp://127.0.0.1:{port}"])
        procs = [
            subprocess.Popen(
                [MESH_NODE, "run", "--config", str(c)],
                stderr=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                text=True,
            )
            for c in (server, client)
        ]
        code = 1
        try:
            cfg = ["--config", str(client)]
            for _ in range(100):  # bounded: until the client knows the server (10 s)
                out = subprocess.run(
                    [MESH_NODE, "peers", "--json", *cfg], capture_output=True, text=True, timeout=10
                )
                if out.returncode == 0 and json.loads(out.stdout):
                    break
                time.sleep(0.1)
            else:
                print("the client found no peer within 10 s")
            text = "the quick brown fox jumps over the lazy dog"
            out = subprocess.run(
                [MESH_NODE, "submit", "wordcount", "--input", json.dumps(text), "--wait", *cfg],
                capture_output=True,
                text=True,
                timeout=60,
            )
            print("result:", out.stdout.strip() or out.stderr.strip())
            code = out.returncode
        finally:
            for p in procs:
                p.terminate()  # SIGTERM: finish in-flight work, leave, exit 0
            codes = []
            for p in procs:
                try:
                    _, err = p.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    _, err = p.communicate()
                codes.append(p.returncode)
                if p.returncode != 0:
                    print(err.strip(), file=sys.stderr)
            print("daemons stopped by SIGTERM, exit codes:", codes)
        return code or int(codes != [0, 0])


if __name__ == "__main__":
    sys.exit(main())
