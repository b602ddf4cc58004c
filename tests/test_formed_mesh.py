"""Formed-mesh start: one shared table that every node overlays with its own changes.

The overlay must behave exactly as a private copy of the shared table (values,
order, lengths), and must never write to the shared one: the simulator's 10,000-node
runs rest on both.
"""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.capabilities.records import CapabilityRecord, CapabilitySpec, RecordInfo
from protocols.errors import ConfigError
from protocols.membership.formed import FormedMesh
from protocols.membership.probe import ProbeOrder
from protocols.membership.state import ALIVE, MemberTable
from protocols.overlay import Overlay
from simulations.runner import run_scenario
from simulations.scenario import validate_scenario

KEYS = st.sampled_from("abcdefgh")
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, st.integers(0, 9)),
        st.tuples(st.just("del"), KEYS, st.just(0)),
        st.tuples(st.just("get"), KEYS, st.just(0)),
        st.tuples(st.just("mutate"), KEYS, st.integers(0, 9)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(base_keys=st.lists(KEYS, unique=True), ops=OPS)
def test_overlay_behaves_as_a_private_copy(
    base_keys: list[str], ops: list[tuple[str, str, int]]
) -> None:
    base = {k: [i] for i, k in enumerate(base_keys)}
    frozen = {k: list(v) for k, v in base.items()}
    plain = {k: list(v) for k, v in base.items()}
    over: Overlay[str, list[int]] = Overlay(base, copy=list)
    for op, key, value in ops:
        if op == "set":
            plain[key] = [value]
            over[key] = [value]
        elif op == "del":
            assert (key in plain) == (key in over)
            if key in plain:
                del plain[key]
                del over[key]
            else:
                with pytest.raises(KeyError):
                    del over[key]
        elif op == "get":
            assert over.get(key) == plain.get(key)
        else:  # edit the row in place, as the member table does
            row_plain, row_over = plain.get(key), over.get(key)
            assert row_plain == row_over
            if row_plain is not None and row_over is not None:
                row_plain.append(value)
                row_over.append(value)
        assert list(over) == list(plain)
        assert list(over.items()) == list(plain.items())
        assert list(over.values()) == list(plain.values())
        assert len(over) == len(plain)
    assert base == frozen  # the shared table was never written


def _info(
    node: str, inc: int = 0, seq: int = 1, caps: tuple[str, ...] = ("summarize",)
) -> RecordInfo:
    rec = CapabilityRecord(
        node_id=node,
        endpoints=[f"sim://{node}"],
        capabilities=[CapabilitySpec(name=c) for c in caps],
        incarnation=inc,
        seq=seq,
    )
    frame = f"{node}/{inc}/{seq}".encode()
    return RecordInfo(rec, "acme", frame, hashlib.sha256(frame).digest())


NODES = ("n0", "n1", "n2", "n3", "n4", "n5")
TABLE_OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("record"), st.sampled_from(NODES[1:]), st.integers(0, 3), st.integers(1, 4)
        ),
        st.tuples(st.just("suspect"), st.sampled_from(NODES[1:]), st.integers(0, 3), st.just(0)),
        st.tuples(st.just("dead"), st.sampled_from(NODES[1:]), st.integers(0, 3), st.just(0)),
        st.tuples(st.just("remove"), st.sampled_from(NODES[1:]), st.just(0), st.just(0)),
    ),
    max_size=30,
)


def _rows(table: MemberTable) -> list[tuple[str, int, int, float]]:
    return [(m.node_id, m.status, m.incarnation, m.since) for m in table]


@settings(max_examples=200, deadline=None)
@given(ops=TABLE_OPS)
def test_an_adopted_member_table_follows_the_same_rules_as_a_joined_one(
    ops: list[tuple[str, str, int, int]],
) -> None:
    infos = [_info(n) for n in NODES]
    mesh = FormedMesh.of(infos, random.Random(1), now=0.0)
    before = [(m.node_id, m.status, m.incarnation, m.info) for m in mesh.members.values()]
    joined = MemberTable("n0", dead_reclaim_time=0.0)
    joined.set_self(infos[0], 0.0)
    for info in infos[1:]:
        joined.apply_record(info, 0.0)
    adopted = MemberTable("n0", dead_reclaim_time=0.0)
    adopted.adopt(mesh.members, mesh.entries, mesh.per_status)
    assert _rows(adopted) == _rows(joined)
    for t, (op, node, inc, seq) in enumerate(ops, start=1):
        if op == "record":
            outcomes = [
                tb.apply_record(_info(node, inc, seq), float(t)) for tb in (joined, adopted)
            ]
        elif op == "remove":
            for tb in (joined, adopted):
                tb.remove(node)
            outcomes = []
        else:
            outcomes = [tb.apply_claim(node, inc, op, float(t)) for tb in (joined, adopted)]
        assert outcomes[:1] == outcomes[1:]
        assert _rows(adopted) == _rows(joined)
        assert adopted.digest() == joined.digest()
        assert (adopted.count_live(), adopted.count_dead()) == (
            joined.count_live(),
            joined.count_dead(),
        )
    after = [(m.node_id, m.status, m.incarnation, m.info) for m in mesh.members.values()]
    assert after == before  # no node ever writes the shared rows


def test_probe_orders_share_the_permutation_until_one_changes_it() -> None:
    mesh = FormedMesh.of([_info(n) for n in NODES], random.Random(7), now=0.0)
    shared = list(mesh.order)
    a, b = ProbeOrder(), ProbeOrder()
    a.adopt(mesh.order, mesh.known, start=0)
    b.adopt(mesh.order, mesh.known, start=3)
    rng = random.Random(3)
    first_a = [a.next(lambda _n: True, rng) for _ in range(3)]
    first_b = [b.next(lambda _n: True, rng) for _ in range(3)]
    assert first_a == shared[:3] and first_b == shared[3:6]  # own starting points
    a.add("late", rng)
    a.remove("n2")
    for _ in range(2 * len(NODES)):  # through the end of the pass: a reshuffle
        a.next(lambda _n: True, rng)
    assert mesh.order == shared and "late" not in mesh.known  # still the shared copy
    assert sorted(a.ids()) == sorted([*(n for n in NODES if n != "n2"), "late"])
    assert b.ids() == shared


def _formed_scenario(nodes: int, **topology: object) -> dict[str, object]:
    return {
        "run": {
            "name": "formed",
            "seed": 3,
            "nodes": nodes,
            "duration": "8s",
            "liveness": "auto",
            "crypto": "fast",
        },
        "topology": {"segments": 2, "start": "formed", **topology},
        "orgs": [
            {
                "name": "acme",
                "trusts": ["globex"],
                "capabilities": {"summarize": 0.6, "translate": 0.6},
            },
            {
                "name": "globex",
                "trusts": ["acme"],
                "capabilities": {"summarize": 0.6, "translate": 0.6},
            },
        ],
        "network": {"lan": {"loss": 0.05}},
        "workload": {"tasks_per_s": 10, "start": "1s"},
        "faults": {
            "crash_fraction": 0.1,
            "restart_after": "2s",
            "partitions": [{"kind": "symmetric", "at": "3s", "heal": "5s"}],
        },
        "adversaries": {"fraction": 0.05},
    }


def test_a_formed_start_runs_the_protocol_and_passes_every_checker() -> None:
    sc = validate_scenario(_formed_scenario(60))
    first = run_scenario(sc)
    assert first.ok, [c for c in first.checks if not c.ok]
    report = first.report
    assert report["tasks"]["submitted"] > 30
    assert report["tasks"]["completed"] > 0.8 * report["tasks"]["submitted"]
    assert report["convergence"]["rounds_to_100pct"] is not None
    # Every running node started with the whole mesh: no join was needed.
    sim, world = first.sim, first.world
    trusted = [n for i, n in enumerate(sim.nodes) if n is not None and world.trusted_by_all(i)]
    assert min(n.members.count_live() for n in trusted) > 0.7 * 60
    assert run_scenario(sc).report["trace_hash"] == report["trace_hash"]


def test_a_formed_start_needs_one_trust_domain() -> None:
    data = _formed_scenario(20)
    data["orgs"] = [{"name": "acme"}, {"name": "globex"}]
    with pytest.raises(ConfigError, match="needs every org to trust every other"):
        validate_scenario(data)
    toy = _formed_scenario(20)
    toy["run"] = {**toy["run"], "node": "toy"}  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="needs the core node"):
        validate_scenario(toy)


def test_formed_members_all_start_alive() -> None:
    mesh = FormedMesh.of([_info(n) for n in NODES], random.Random(1), now=0.0)
    assert len(mesh) == len(NODES)
    assert mesh.per_status == (len(NODES), 0, 0, 0)
    assert all(m.status == ALIVE for m in mesh.members.values())
    assert list(mesh.by_capability["summarize"]) == list(NODES)


def test_joiners_join_a_formed_mesh_through_seeds_and_converge() -> None:
    sc = validate_scenario(_formed_scenario(60, joiners=6, join_window="3s"))
    result = run_scenario(sc)
    assert result.ok, [c for c in result.checks if not c.ok]
    world, sim = result.world, result.sim
    assert len(world.joiners) == 6
    assert not any(world.in_formed_mesh(j) for j in world.joiners)
    # A joiner filled a table of its own; a formed node that never restarted still
    # reads through to the shared one.
    for j in world.joiners:
        node = sim.nodes[j]
        if node is not None:  # not down at the end of the run
            assert type(node.members._members) is dict
            assert node.members.count_live() > 0.7 * 60
    steady = [i for i in range(60) if world.in_formed_mesh(i) and sim.restarts[i] == 0]
    assert steady and all(isinstance(sim.nodes[i].members._members, Overlay) for i in steady)


def test_joiners_need_a_formed_start() -> None:
    data = _formed_scenario(20, joiners=3)
    data["topology"] = {"joiners": 3}
    with pytest.raises(ConfigError, match="joiners needs start = 'formed'"):
        validate_scenario(data)


def test_formed_nodes_spread_their_first_push_pull_over_the_scaled_period() -> None:
    """A node that just started knows only itself and push-pulls within the unscaled
    period; in a formed mesh every node would then push-pull its whole table at once.
    Adopting the mesh draws the next push-pull over the period scaled to its size."""
    from protocols.membership import timing
    from simulations.factories import make_factory
    from simulations.world import World

    sc = validate_scenario(_formed_scenario(60))
    world = World(sc)
    factory = make_factory(sc, world)
    members = [i for i in range(60) if world.in_formed_mesh(i)]
    nodes = [factory.create(i, 0.0, restart=0, durable=True) for i in members]
    mesh = factory.form(nodes, world.rng("formed"), 0.0)
    for node in nodes:
        factory.adopt(node, mesh, 0.0)
    interval = sc.membership.resolve().push_pull_interval
    period = timing.push_pull_scale(interval, len(mesh))
    due = [node.gossip._next_push_pull for node in nodes]
    assert period > interval
    assert max(due) <= period and max(due) > interval
