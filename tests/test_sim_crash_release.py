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
from simulations.runner import GC_THRESHOLDS, _build, large_heap_collector, run_scenario
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


def test_a_run_gives_back_the_collector_thresholds_it_found() -> None:
    sc = apply_overrides(
        load_scenario("simulations/scenarios/lan-1000.toml"),
        nodes=6,
        seed=1,
        crypto="fast",
        node="toy",
        duration=2.0,
    )
    old = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []
    try:
        gc.set_threshold(1234, 5, 6)
        with large_heap_collector():
            seen.append(gc.get_threshold())
        assert run_scenario(sc).ok
        assert gc.get_threshold() == (1234, 5, 6)
    finally:
        gc.set_threshold(*old)
    assert seen == [GC_THRESHOLDS]
