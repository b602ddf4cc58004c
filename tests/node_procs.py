"""Helpers of the real-process node tests: files, configs, daemons, the CLI.

Loopback only; every wait is bounded (a count of polls), never timed assertions.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node import files
from protocols.crypto import Ed25519Signer
from protocols.identity import NodeIdentity
from protocols.trust import issue_certificate

MESH_NODE = str(Path(sys.executable).parent / "mesh-node")
REPO = Path(__file__).resolve().parent.parent

HANDLERS = """
import asyncio

async def echo(task):
    return {"echo": task.input}

async def slow(task):
    await asyncio.sleep(float(task.input or 1.5))
    return {"slept": task.input}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Org:
    name: str
    signer: Ed25519Signer = field(default_factory=lambda: Ed25519Signer(os.urandom(32)))


def write_node_files(base: Path, name: str, org: Org, trusted: list[Org]) -> dict[str, Path]:
    base.mkdir(parents=True, exist_ok=True)
    seed = os.urandom(32)
    ident = NodeIdentity.from_seed(seed)
    now = time.time()
    cert = issue_certificate(
        org.signer, org.name, ident.public_key, name, not_before=now - 60, not_after=now + 3600
    )
    key = base / f"{name}.key"
    files.write_private_key(key, seed)
    files.write_bytes(base / f"{name}.cert", cert)
    trust = files.TrustFile(
        base / f"{name}-trust.toml",
        [files.TrustEntry(o.name, o.signer.public_key) for o in trusted],
    )
    files.write_trust_file(trust)
    return {"key": key, "cert": base / f"{name}.cert", "trust": trust.path}


def write_config(
    base: Path,
    name: str,
    org: Org,
    trusted: list[Org],
    *,
    port: int,
    seeds: list[str] = (),  # type: ignore[assignment]
    caps: tuple[str, ...] = ("echo", "slow"),
    mdns: bool = False,
    extra: str = "",
) -> Path:
    paths = write_node_files(base, name, org, trusted)
    (base / "node_test_handlers.py").write_text(HANDLERS)
    lines = [
        "[node]",
        f'name = "{name}"',
        f'identity = "{paths["key"]}"',
        f'certificate = "{paths["cert"]}"',
        f'trust = "{paths["trust"]}"',
        f'listen = "tcp://127.0.0.1:{port}"',
        f"seeds = {json.dumps(list(seeds))}",
        'preset = "local"',
        f'control_dir = "{base / ("ctl-" + name)}"',
        "",
        "[mdns]",
        f"enabled = {'true' if mdns else 'false'}",
        'interfaces = ["127.0.0.1"]',
        "",
        "[limits]",
        "grace_seconds = 15",
        "",
    ]
    for cap in caps:
        lines += ["[[capability]]", f'name = "{cap}"', f'python = "node_test_handlers:{cap}"']
        lines += ["max_concurrency = 4", ""]
    path = base / f"{name}.toml"
    path.write_text("\n".join(lines) + extra)
    return path


def env_for(base: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(base), str(REPO)])
    return env


class Daemon:
    def __init__(self, config: Path, base: Path) -> None:
        self.config = config
        self.base = base
        self.log = config.with_suffix(".log")
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [MESH_NODE, "run", "--config", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env_for(base),
        )

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [MESH_NODE, *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env_for(self.base),
        )

    def json(self, *args: str, timeout: float = 60) -> Any:
        out = self.cli(*args, "--json", timeout=timeout)
        assert out.returncode == 0, out.stderr + self.tail()
        return json.loads(out.stdout)

    def wait_ready(self, polls: int = 150) -> dict[str, Any]:
        for _ in range(polls):
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {self.tail()}")
            out = self.cli("status", "--json", timeout=10)
            if out.returncode == 0:
                return dict(json.loads(out.stdout))
            time.sleep(0.1)
        raise AssertionError(f"daemon not ready: {self.tail()}")

    def wait_peers(self, n: int, polls: int = 200) -> list[dict[str, Any]]:
        peers: list[dict[str, Any]] = []
        for _ in range(polls):
            peers = [p for p in self.json("peers") if p["state"] == "alive"]
            if len(peers) >= n:
                return peers
            time.sleep(0.1)
        raise AssertionError(f"saw {len(peers)} peers, wanted {n}: {self.tail()}")

    def tail(self, n: int = 30) -> str:
        self._log.flush()
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self) -> int:
        self.signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self._log.close()
        return code

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0
