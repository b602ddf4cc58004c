"""A crashed simulated node is freed at once, not at the next full collection.

Crash-heavy simulations (chaos-1000 crashes 30 % of the nodes) are limited by
memory; a crashed core held every table it had until the cyclic collector ran.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest

from mesh.core import MeshNodeCore
from simulations.runner import _build
from simulations.scenario import apply_overrides, load_scenario
from simulations.toy import ToyNode


def _parts(node: Any) -> list[object]:
    """The node and the agents that refer back to it."""
    if isinstance(node, MeshNodeCore):
        assert len(node.members) >= 3  # it has joined and holds others' entries
        return [node, node.gossip, node.contracts]
    assert isinstance(node, ToyNode)
    return [node, node.tasks]


@pytest.mark.parametrize("kind", ["core", "toy"])
def test_a_crashed_node_and_its_tables_are_freed_by_reference_counting(kind: str) -> None:
    sc = apply_overrides(
        load_scenario("simulations/scenarios/lan-1000.toml"),
        nodes=8,
        seed=3,
        crypto="fast",
        node=kind,
    )
    world, _factory, sim, _history = _build(sc)
    for i in range(sim.n):
        sim.start(i, seeds=world.discover(i))
    sim.run_until(3.0)
    refs = [weakref.ref(part) for part in _parts(sim.nodes[5])]
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        sim.crash(5)
        assert [r() for r in refs] == [None] * len(refs)
    finally:
        if was_enabled:
            gc.enable()
    sim.run_until(6.0)  # the others go on without it
    assert sim.nodes[5] is None
    assert all(sim.nodes[i] is not None for i in range(sim.n) if i != 5)
