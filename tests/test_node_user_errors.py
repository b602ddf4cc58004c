"""Mistakes a user makes first get answers in the user's terms: a request nobody
could be invited to says why (the common surprise: a lone node asking for a
capability it offers itself; a node never bids on its own tasks), and an endpoint
that peers could not dial is refused when the node is made."""

from __future__ import annotations

import asyncio

import pytest

from node import Node, Task
from node.api import LocalOrg
from protocols.errors import ConfigError, ContractNetError


async def _lone_node_requests(capability: str) -> tuple[ContractNetError, str]:
    node = Node.from_org(LocalOrg("acme"), "alone", preset="local")

    @node.capability("upper")
    async def upper(task: Task) -> str:
        return str(task.input).upper()

    async with node:
        with pytest.raises(ContractNetError) as caught:
            await node.request(capability, "hi", timeout=10)
        (view,) = [t for t in node.tasks() if t["capability"] == capability]
        return caught.value, view["reason"]


def test_a_lone_node_asking_for_its_own_capability_is_told_it_does_not_bid_on_itself() -> None:
    err, listed = asyncio.run(asyncio.wait_for(_lone_node_requests("upper"), 30))
    assert err.code in ("no-bidders", "attempts-exhausted")
    assert "no other node offers 'upper' (0 peer(s) known)" in err.message
    assert "a node does not bid on its own tasks" in err.message
    assert err.attempts and all("0 invited" in a for a in err.attempts)
    assert listed == err.message  # `mesh-node tasks` shows the same reason


def test_a_capability_no_known_peer_offers_is_named() -> None:
    err, _ = asyncio.run(asyncio.wait_for(_lone_node_requests("translate"), 30))
    assert "no known peer offers 'translate' in a matching version (0 peer(s) known)" in (
        err.message
    )
    assert "its own tasks" not in err.message


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [({"seeds": ["127.0.0.1:7001"]}, "127.0.0.1:7001"), ({"advertise": "tcp://*:7001"}, "*")],
)
def test_an_endpoint_peers_could_not_dial_is_refused_when_the_node_is_made(
    kwargs: dict[str, object], bad: str
) -> None:
    with pytest.raises(ConfigError, match="is not tcp://host:port") as caught:
        Node.from_org(LocalOrg("acme"), "n", **kwargs)
    assert bad in caught.value.message
