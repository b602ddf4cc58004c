"""A flood of garbage, oversized and replayed frames (and raw non-ZMTP bytes)
at a daemon's ROUTER does not stop it serving honest peers, and its memory
stays bounded. Loopback only; the flood is bounded in count."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

import zmq
from node_procs import Daemon, Org, free_port, write_config

from mesh.core import make_wire
from protocols.crypto import Ed25519Verifier
from protocols.identity import NodeIdentity
from protocols.membership.messages import Gossip
from protocols.trust import OrgPolicy, TrustStore, issue_certificate


def _replayable(org: Org, target: str) -> bytes:
    seed = os.urandom(32)
    ident = NodeIdentity.from_seed(seed)
    now = time.time()
    cert = issue_certificate(
        org.signer, org.name, ident.public_key, "flooder", not_before=now - 60, not_after=now + 600
    )
    trust = TrustStore([OrgPolicy(org.name, org.signer.public_key)])
    wire = make_wire(ident, cert, trust, Ed25519Verifier())
    return wire.seal("gossip", Gossip(), target, now, nonce=os.urandom(16), ttl=300)


def _flood(endpoint: str, replay: bytes, stop: threading.Event, sent: list[int]) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    socks = []
    for i in range(4):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 2000)
        s.setsockopt(zmq.ROUTING_ID, b"tcp://127.0.0.1:%d" % (1000 + i))
        s.connect(endpoint)
        socks.append(s)
    big = os.urandom(2 << 20)
    try:
        for rnd in range(400):  # bounded
            if stop.is_set():
                break
            for _ in range(50):
                for s, frame in zip(
                    socks, (os.urandom(200), replay, os.urandom(40), replay), strict=True
                ):
                    try:
                        s.send(frame, zmq.NOBLOCK)
                        sent[0] += 1
                    except zmq.Again:
                        pass
            if rnd % 20 == 0:
                with contextlib.suppress(zmq.Again):
                    socks[2].send(big, zmq.NOBLOCK)  # over MAXMSGSIZE: the link is cut
                host, port = endpoint[len("tcp://") :].rsplit(":", 1)
                with socket.create_connection((host, int(port)), timeout=2) as raw:
                    raw.sendall(os.urandom(3000))  # not even ZMTP
            time.sleep(0.01)
    finally:
        for s in socks:
            s.close(linger=0)


def test_flood_does_not_stop_honest_service(tmp_path: Path) -> None:
    org = Org("acme")
    p0, p1 = free_port(), free_port()
    seed = f"tcp://127.0.0.1:{p1}"
    target = Daemon(write_config(tmp_path, "t", org, [org], port=p1), tmp_path)
    client = Daemon(
        write_config(tmp_path, "c", org, [org], port=p0, seeds=[seed], caps=()), tmp_path
    )
    try:
        tid = target.wait_ready()["node_id"]
        client.wait_ready()
        client.wait_peers(1)
        assert client.json("submit", "echo", "--input", "0", "--wait")["ok"]
        rss_before = target.rss_kb()
        stop = threading.Event()
        sent = [0]
        flood = threading.Thread(
            target=_flood,
            args=(target.json("status")["endpoint"], _replayable(org, tid), stop, sent),
        )
        flood.start()
        completed = 0
        try:
            for i in range(8):
                out = client.json("submit", "echo", "--input", str(i), "--wait", "--timeout", "30")
                completed += bool(out["ok"]) and out["executor"] == tid
        finally:
            stop.set()
            flood.join(60)
        assert sent[0] > 1000
        assert completed == 8
        stats = target.json("status")["statistics"]
        rejected = sum(v for k, v in stats.items() if k.startswith("rejected."))
        assert rejected > 0
        assert target.rss_kb() - rss_before < 150_000  # KiB: bounded, not proportional
        assert target.proc.poll() is None
    finally:
        client.stop()
        target.stop()
