"""Simulated nodes with real crypto share one parsed copy of each public key.

A parsed Ed25519 public key costs ~360 bytes; with a verifier per node, a
1,000-node real-crypto run held one per (node, peer) pair, about 360 MB.
"""

from __future__ import annotations

from simulations.runner import _build
from simulations.scenario import apply_overrides, load_scenario


def test_real_crypto_nodes_parse_each_public_key_once_per_process() -> None:
    sc = apply_overrides(
        load_scenario("simulations/scenarios/three-orgs.toml"), nodes=9, seed=2, crypto="real"
    )
    world, _factory, sim, _history = _build(sc)
    for i in range(sim.n):
        sim.start(i, seeds=world.discover(i))
    sim.run_until(6.0)
    cores = [node for node in sim.nodes if node is not None]
    assert len(cores) == 9
    # Each node still checked its peers' certificates itself: 5 each in acme and
    # globex (their own two and three others), fewer in initech and mallory.
    assert sum(len(core.wire._cert_refs) for core in cores) >= 30
    verifiers = {id(core.wire.verifier) for core in cores}
    assert len(verifiers) == 1
    parsed = cores[0].wire.verifier._keys
    # at most one entry per node key and org key in the world, not one per pair
    assert 9 <= len(parsed) <= 9 + len(sc.orgs) + 1
