"""mDNS discovery between two daemons with no seeds, inside a network namespace
this test makes (``unshare --net``; multicast only on that namespace's loopback).

The outer test builds the namespace and re-runs the inner test inside it; the
inner test is skipped anywhere else, so multicast never touches the host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from node_procs import REPO, Daemon, Org, free_port, write_config

INNER = "PARLEY_NETNS_INNER"
DIG = ["dig", "+short", "+tries=1", "+time=1", "-p", "5353", "@127.0.0.1"]
SETUP = "ip link set lo up multicast on && ip route add 224.0.0.0/4 dev lo"


def _ensure_dig() -> str | None:
    """The reason dig is unavailable, or None (installs bind9-dnsutils when missing)."""
    if shutil.which("dig"):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "dig is missing and apt-get is unavailable"
    for cmd in (["apt-get", "install", "-y", "-q", "bind9-dnsutils"], ["apt-get", "update", "-q"]):
        subprocess.run(cmd, capture_output=True, timeout=300, check=False)
        if shutil.which("dig"):
            return None
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "bind9-dnsutils"], capture_output=True, timeout=300
    )
    return None if shutil.which("dig") else "could not install bind9-dnsutils"


@pytest.mark.netns
def test_mdns_in_network_namespace() -> None:
    if os.environ.get(INNER):
        pytest.skip("already inside the namespace")
    probe = subprocess.run(["unshare", "--net", "sh", "-c", SETUP], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace: {probe.stderr.decode().strip()}")
    reason = _ensure_dig()
    if reason:
        pytest.skip(reason)
    inner = f"{__file__}::test_mdns_inside_namespace"
    cmd = f"{SETUP} && exec {sys.executable} -m pytest -q -p no:cacheprovider {inner}"
    env = dict(os.environ, **{INNER: "1"})
    out = subprocess.run(
        ["unshare", "--net", "sh", "-c", cmd],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=REPO,
        env=env,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "1 passed" in out.stdout, out.stdout[-2000:]


def _dig_names(polls: int = 40) -> set[str]:
    names: set[str] = set()
    for _ in range(polls):  # unicast queries land on one responder each (SO_REUSEPORT)
        out = subprocess.run(
            [*DIG, "-t", "PTR", "_parley._tcp.local"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        names.update(line.strip() for line in out.stdout.splitlines() if line.strip())
        if len(names) >= 2:
            break
    return names


def test_mdns_inside_namespace(tmp_path: Path) -> None:
    if not os.environ.get(INNER):
        pytest.skip("runs only inside the namespace made by test_mdns_in_network_namespace")
    org = Org("acme")
    a = Daemon(write_config(tmp_path, "ma", org, [org], port=free_port(), mdns=True), tmp_path)
    b = Daemon(write_config(tmp_path, "mb", org, [org], port=free_port(), mdns=True), tmp_path)
    try:
        ida = a.wait_ready()["node_id"]
        idb = b.wait_ready()["node_id"]
        assert [p["node_id"] for p in a.wait_peers(1)] == [idb]
        assert [p["node_id"] for p in b.wait_peers(1)] == [ida]
        # a offers echo too; ask until the other node wins (bounded)
        for _ in range(10):
            out = a.json("submit", "echo", "--input", '"hi"', "--wait", "--timeout", "20")
            assert out["ok"], out
            if out["executor"] == idb:
                break
            time.sleep(0.05)
        names = _dig_names()
        assert any(ida[:40] in n for n in names), names
        assert any(idb[:40] in n for n in names), names
    finally:
        a.stop()
        b.stop()
