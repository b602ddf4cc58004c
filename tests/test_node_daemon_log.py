"""Real daemons on loopback: what the log tells an operator."""

from __future__ import annotations

import time
from pathlib import Path

from node_procs import Daemon, Org, free_port, write_config


def test_a_daemon_logs_the_seed_it_joins_at_start(tmp_path: Path) -> None:
    """A daemon that joined its seed while starting never logged "peer joined" for
    it: the log watcher began after the join (``mesh-node peers`` showed the seed, the
    log did not)."""
    org = Org("acme")
    ports = [free_port() for _ in range(2)]
    seed = Daemon(write_config(tmp_path, "s", org, [org], port=ports[0], caps=()), tmp_path)
    joiner = None
    try:
        seed_id = seed.wait_ready()["node_id"]
        joiner = Daemon(
            write_config(
                tmp_path,
                "j",
                org,
                [org],
                port=ports[1],
                caps=(),
                seeds=[f"tcp://127.0.0.1:{ports[0]}"],
            ),
            tmp_path,
        )
        joiner.wait_ready()
        joiner.wait_peers(1)
        for _ in range(50):  # bounded: 5 s for the line to reach the file
            if f"peer joined {seed_id[:10]}" in joiner.tail(100):
                break
            time.sleep(0.1)
        assert f"peer joined {seed_id[:10]}" in joiner.tail(100), joiner.tail()
    finally:
        for d in (joiner, seed):
            if d is not None:
                d.stop()
