"""One identity, another endpoint: a node restarted at a new port or address, and two
live processes started with the same key.

Both used to be cut off in silence. A seed answered a push-pull at the endpoint of
the record it held for that node id, the old one, so a node restarted elsewhere
(``listen = "tcp://127.0.0.1:*"``, a container's new address) was never answered and
stayed alone for good; a second process with the same key was likewise never heard of.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mesh.events import Event, IdentityConflict
from node import LocalOrg, Node
from protocols.membership.config import tuned
from protocols.trust import TrustStore

#: Push-pulls every 2 s: the repair rides on anti-entropy, and the test stays short.
FAST = tuned({"preset": "local", "push_pull_interval": "2s"})


async def _until(check: Any, timeout: float) -> bool:
    for _ in range(int(timeout / 0.1)):  # bounded
        if check():
            return True
        await asyncio.sleep(0.1)
    return bool(check())


def _alive(node: Node) -> list[str]:
    return [p["endpoint"] for p in node.peers() if p["state"] == "alive"]


@pytest.mark.parametrize("graceful", [True, False], ids=["stopped", "crashed"])
def test_a_node_restarted_at_another_endpoint_rejoins(graceful: bool) -> None:
    async def main() -> None:
        org = LocalOrg("acme")
        seed = Node.from_org(org, "seed", membership=FAST)
        async with seed:
            ident, cert = org.issue("mover")
            first = Node(ident, cert, TrustStore([org.policy()]), seeds=[seed.endpoint])
            await first.start()
            assert await first.wait_for_peers(1, timeout=10)
            assert await _until(lambda: first.endpoint in _alive(seed), 10)
            old = first.endpoint
            if not graceful:  # no leave reaches anyone: the seed still holds it alive
                first._rt().transport.close()
            await first.stop(0)
            again = Node(ident, cert, TrustStore([org.policy()]), seeds=[seed.endpoint])
            async with again:
                assert again.endpoint != old
                assert await again.wait_for_peers(1, timeout=15), again.statistics()
                assert await _until(lambda: _alive(seed) == [again.endpoint], 15), seed.peers()
                assert again.statistics().get("own_record_superseded", 0) >= 1

    asyncio.run(asyncio.wait_for(main(), 60))


def test_two_live_processes_with_one_key_are_told_and_the_mesh_keeps_one() -> None:
    async def main() -> None:
        org = LocalOrg("acme")
        seed = Node.from_org(org, "seed", membership=FAST)
        conflicts: list[Event] = []
        async with seed:
            ident, cert = org.issue("twin")
            twins = [
                Node(
                    ident, cert, TrustStore([org.policy()]), seeds=[seed.endpoint], membership=FAST
                )
                for _ in range(2)
            ]
            for twin in twins:
                twin.on_event(lambda ev: isinstance(ev, IdentityConflict) and conflicts.append(ev))
            a, b = twins
            async with a:
                assert await a.wait_for_peers(1, timeout=10)
                async with b:
                    assert await _until(lambda: bool(conflicts), 30), (
                        a.statistics(),
                        b.statistics(),
                    )
                    (ev,) = conflicts  # one process yields, and says so once
                    assert isinstance(ev, IdentityConflict)
                    assert ev.endpoint in (a.endpoint, b.endpoint)
                    await asyncio.sleep(3)  # a few more push-pulls: no flapping back
                    assert len(conflicts) == 1
                    winner = ev.endpoint
                    assert _alive(seed) == [winner]
                    loser = b if winner == a.endpoint else a
                    assert loser.statistics()["identity_conflicts"] >= 1

    asyncio.run(asyncio.wait_for(main(), 60))


def test_the_daemon_logs_an_identity_conflict_as_an_error_naming_the_other(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from node.daemon import _log_event

    with caplog.at_level(logging.INFO):
        _log_event(IdentityConflict(endpoint="tcp://10.0.0.7:7400", incarnation=3), {})
    (rec,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    message = rec.getMessage()
    assert "another process uses this node's identity key, at tcp://10.0.0.7:7400" in message
    assert "\n" not in message
