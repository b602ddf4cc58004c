"""A peer that stops and starts again with the same key is back in ``peers()``.

Its return comes as ``PeerAlive`` at a higher incarnation (its old record was
``left``), not as ``PeerJoined``; the runtime had already dropped its entry on
``PeerLeft`` and ignored the ``PeerAlive``, so ``peers()`` stayed empty and
``wait_for_peers`` false while requests to it worked."""

from __future__ import annotations

import asyncio
import socket

from node import LocalOrg, Node, Task
from protocols.errors import TransportError
from protocols.trust import TrustStore


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_restarted_peer_is_listed_again() -> None:
    async def run() -> tuple[list[str], list[str], str]:
        org = LocalOrg("acme")
        ident, cert = org.issue("worker")
        listen = f"tcp://127.0.0.1:{_free_port()}"

        def worker() -> Node:
            node = Node(ident, cert, TrustStore([org.policy()]), listen=listen, preset="local")

            @node.capability("echo")
            async def echo(task: Task) -> object:
                return task.input

            return node

        asker = Node.from_org(org, "asker", seeds=[listen], preset="local")
        first = worker()
        await first.start()
        await asker.start()
        try:
            assert await asker.wait_for_peers(1, timeout=10)
            before = [p["state"] for p in asker.peers()]
            await first.stop()
            for _ in range(100):  # bounded: the leave reaches the asker
                if not asker.peers():
                    break
                await asyncio.sleep(0.05)
            assert asker.peers() == []
            again = worker()
            for _ in range(50):  # bounded (5 s): libzmq releases a closed listener late
                try:
                    await again.start()
                    break
                except TransportError as exc:
                    if "in use" not in exc.message:
                        raise
                    again = worker()
                    await asyncio.sleep(0.1)
            try:
                # the asker, alone, knocks on its seed again once a push-pull period:
                # 5-13 s measured on a loaded 2-core machine
                assert await asker.wait_for_peers(1, timeout=30)
                result = await asker.request("echo", "hi", timeout=10)
                return before, [p["state"] for p in asker.peers()], result.executor
            finally:
                await again.stop()
        finally:
            await asker.stop()

    before, after, executor = asyncio.run(asyncio.wait_for(run(), 90))
    assert before == ["alive"] and after == ["alive"]
    assert executor
