"""Build a world from a scenario, run the safety then the liveness phase, check.

``run_scenario`` is what the CLI, the tests and the benchmark call.
"""

from __future__ import annotations

import contextlib
import gc
import shlex
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

from mesh.events import Event, TaskAssigned, TaskCancelled
from protocols.membership import timing
from simulations.adversary import Adversaries
from simulations.checkers import CheckResult, Snapshot, run_checkers
from simulations.engine import Simulator
from simulations.factories import ShellFactory, ToyFactory, make_factory
from simulations.faults import Faults, fault_warnings
from simulations.history import History
from simulations.network import SimNetwork
from simulations.report import build_report
from simulations.rng import derive_seed
from simulations.scenario import Scenario, check_scenario
from simulations.workload import Workload, workload_warnings
from simulations.world import World

__all__ = [
    "RunResult",
    "reproduce_command",
    "run_scenario",
    "scenario_warnings",
    "seconds_text",
]

#: at most this many nodes' views are compared by the convergence checker
VIEW_SAMPLE = 300

Progress = Callable[[float, int], None]


@dataclass(slots=True)
class RunResult:
    scenario: Scenario
    world: World
    sim: Simulator
    history: History
    checks: list[CheckResult]
    report: dict[str, Any]
    #: The nodes convergence is measured over: live at the end, mutually trusted
    #: with the marker's node.
    population: frozenset[int]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def reproduce_command(sc: Scenario, source: str | None, flags: Sequence[str] = ()) -> str:
    """The command line that replays this run (``flags``: the overrides given)."""
    parts = ["mesh-node", "simulate"]
    if source:
        parts.append(source)
    parts += ["--seed", str(sc.run.seed)]
    if not flags:
        parts += ["--nodes", str(sc.run.nodes), "--duration", seconds_text(sc.run.duration)]
        parts += ["--crypto", sc.crypto()]
    parts += list(flags)
    return shlex.join(parts)


def scenario_warnings(sc: Scenario) -> list[str]:
    """What the scenario asks for that the run will not do, a line each (printed as
    ``warning: ...`` before the run, and the report's ``warnings``): faults the safety
    phase ends before, and workload capabilities no org offers."""
    return [*fault_warnings(sc), *workload_warnings(sc)]


def seconds_text(seconds: float) -> str:
    """A duration as ``parse_duration`` reads back to the same float (``10.1234567s``;
    ``:g`` would keep six digits, and another run)."""
    return repr(float(seconds)).removesuffix(".0").replace("e+", "e") + "s"


def _build(sc: Scenario) -> tuple[World, ShellFactory, Simulator, History]:
    world = World(sc)
    factory = make_factory(sc, world)
    n = sc.run.nodes
    seed = sc.run.seed
    net = SimNetwork(
        world.segment,
        [world.rng("net", i) for i in range(n)],
        local=sc.network.lan.build(),
        remote=sc.network.wan.build(),
        salt=derive_seed(seed, "links"),
    )
    history = History(n, mutual=world.mutual)
    sim = Simulator(n, factory, net, observer=history)
    sim.injection_observer = history.injected
    return world, factory, sim, history


def _observer(history: History, workload: Workload) -> Callable[[float, int, Event], None]:
    record = history.__call__
    executor = workload.on_event

    def observe(t: float, i: int, ev: Event) -> None:
        record(t, i, ev)
        tp = type(ev)
        if tp is TaskAssigned or tp is TaskCancelled:
            executor(t, i, ev)

    return observe


def run_scenario(
    sc: Scenario,
    *,
    progress: Progress | None = None,
    source: str | None = None,
    flags: Sequence[str] = (),
) -> RunResult:
    """Run one scenario to the end of its liveness phase and check the history."""
    # The checks that tie keys together (a scenario built in Python may skip them).
    check_scenario(sc, sc.run.name)
    wall0 = time.perf_counter()
    world, factory, sim, history = _build(sc)
    workload = Workload(sim, world, factory, history)
    sim.observer = _observer(history, workload)
    faults = Faults(sim, world, history)
    adversaries = Adversaries(sim, world, factory)
    safety_end = sc.run.duration
    marker = world.seeds[0][0]

    def start(i: int, now: float) -> None:
        # Every start registers the node with discovery (later joiners and restarts
        # find their mDNS peers among them); a formed-mesh member knocks on no one.
        seeds = world.discover(i)
        sim.start(i, seeds=() if world.in_formed_mesh(i) else seeds)
        history.ids[sim.node_ids[i]] = i
        history.started(now, i)
        if world.specs[i].role == "untrusted":
            history.untrusted_ids.add(sim.node_ids[i])
            history.untrusted_nodes.add(i)
        if i == marker:
            history.watch_marker(sim.node_ids[i])

    def publish(now: float) -> None:
        history.publish_marker(now)
        sim.call(marker, lambda node, local: factory.publish_record(node, local))

    def start_formed(now: float) -> None:
        # The formed mesh's nodes start now and adopt one shared table of all of them.
        members = [i for i in range(sim.n) if world.in_formed_mesh(i)]
        for i in members:
            start(i, now)
        mesh = factory.form([sim.nodes[i] for i in members], world.rng("formed"), now)
        for i in members:
            sim.call(i, lambda node, local: factory.adopt(node, mesh, local))

    faults.skew_clocks()
    if world.formed:
        sim.at(0.0, start_formed)
    for t, i in world.start_order():
        if not world.in_formed_mesh(i):  # every node, or a formed mesh's joiners
            sim.at(t, partial(start, i))
    workload.start(sc.workload.start, safety_end)
    adversaries.start(sc.topology.join_window, safety_end)
    faults.schedule(safety_end)
    at = sc.marker_time()
    if at is not None:
        sim.at(at, publish)
    else:
        _when_formed(sim, world, factory, sc, publish)
    with large_heap_collector():
        sim.run_until(safety_end, progress)
        faults.heal_all()
        sim.run_until(safety_end + sc.liveness_s(), progress)
    wall = time.perf_counter() - wall0
    return _finish(sc, world, factory, sim, history, wall, reproduce_command(sc, source, flags))


#: Collector thresholds while a simulation runs (CPython's default is 700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 10)


@contextlib.contextmanager
def large_heap_collector() -> Iterator[None]:
    """Run the cyclic garbage collector less often while a simulation runs.

    A simulated mesh is millions of long-lived objects (every node's tables), and
    with CPython's default thresholds the collector ran ~6,000 young and ~12 full
    collections in a 10 virtual-second, 1,000-node run (5.1 s of 169 s wall, the
    full ones ~0.2 s each, longer as the heap grows). Reference counting frees
    what the protocol drops, and a crashed node too (``SimNode.discard`` breaks
    its cycles), so the collector has next to nothing to find: peak RSS is the
    same either way. The previous thresholds come back when the run ends. It
    changes no result: the trace is the same."""
    old = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*old)


def _when_formed(
    sim: Simulator,
    world: World,
    factory: ShellFactory,
    sc: Scenario,
    then: Callable[[float], None],
) -> None:
    """Poll once per virtual second; call ``then`` once the mesh has formed."""
    deadline = sc.marker_deadline_s()

    def poll(now: float) -> None:
        running = [i for i in range(sim.n) if sim.alive[i] and world.trusted_by_all(i)]
        # A node can only count the running nodes it shares trust with (one-way or no
        # trust between orgs keeps them out of its table): per org, as trust is.
        per_org = Counter(world.specs[i].org for i in running)
        first = {world.specs[i].org: i for i in reversed(running)}
        need = {
            org: 0.99 * (sum(c for o, c in per_org.items() if world.mutual(i, first[o])) - 1)
            for org, i in first.items()
        }
        formed = sum(
            1 for i in running if factory.member_count(sim.nodes[i]) >= need[world.specs[i].org]
        )
        if formed >= 0.99 * len(running) or now >= deadline:
            then(now)
        else:
            sim.at(now + 1.0, poll)

    sim.at(sc.topology.join_window + 1.0, poll)


def _snapshot(world: World, factory: ShellFactory, sim: Simulator) -> Snapshot:
    live = {i: sim.node_ids[i] for i in range(sim.n) if sim.alive[i] and world.trusted_by_all(i)}
    sample = sorted(live)
    if len(sample) > VIEW_SAMPLE:
        sample = sorted(world.rng("view-sample").sample(sample, VIEW_SAMPLE))
    views = {i: factory.view(sim.nodes[i]) for i in sample}

    def visible(i: int, j: int) -> bool:
        # Records only travel between nodes that accept each other's frames.
        return world.mutual(i, j)

    own: dict[str, tuple[int, int]] = {}
    for i, nid in live.items():
        version = factory.own_version(sim.nodes[i])
        if version is not None:
            own[nid] = version
    return Snapshot(live, views, visible, own)


def settle_hint(sc: Scenario) -> str | None:
    """Why membership may not have converged: a liveness phase shorter than it needs."""
    liveness, settle = sc.liveness_s(), sc.settle_s()
    if sc.run.liveness == "auto" or liveness >= settle:
        return None
    period = timing.push_pull_scale(sc.membership.resolve().push_pull_interval, sc.run.nodes)
    return (
        f"note: the liveness phase ({liveness:g} s) is shorter than membership's settle time "
        f"at {sc.run.nodes:,} nodes ({settle:g} s: two push-pull periods of {period:g} s and "
        f'the longest suspicion), which liveness = "auto" gives'
    )


def _with_settle_hint(check: CheckResult, sc: Scenario) -> CheckResult:
    if check.name != "membership-converged" or check.ok:
        return check
    hint = settle_hint(sc)
    return check if hint is None else replace(check, problems=(*check.problems, hint))


def _finish(
    sc: Scenario,
    world: World,
    factory: ShellFactory,
    sim: Simulator,
    history: History,
    wall: float,
    reproduce: str,
) -> RunResult:
    snap = _snapshot(world, factory, sim)
    checks = [_with_settle_hint(c, sc) for c in run_checkers(history, snap)]
    # The marker (node 0's new record) can only reach nodes that accept its frames
    # and whose frames it accepts: with one-way trust (three-orgs' initech trusts acme,
    # acme does not trust initech) the others never hear of it.
    marker = world.seeds[0][0]
    live_trusted = frozenset(i for i in snap.live if i != marker and world.mutual(i, marker))
    st = sim.network.stats
    meta = {
        "scenario": sc.run.name,
        "seed": sc.run.seed,
        "nodes": sc.run.nodes,
        "node_kind": type(factory).__name__,
        # the toy node neither signs nor verifies, whatever run.crypto says
        "crypto": "none" if isinstance(factory, ToyFactory) else sc.crypto(),
        "virtual_seconds": round(sim.now, 3),
        "liveness_seconds": sc.liveness_s(),
        # The membership settings every node ran with (a daemon's [membership] table
        # gives the same ones: protocols.membership.config.tuned).
        "membership": asdict(sc.membership.resolve()),
        "wall_seconds": round(wall, 3),
        "events": sim.events,
        "trace_hash": sim.trace_hash(),
        "reproduce": reproduce,
        # what the scenario asked for that the run did not do (scenario_warnings)
        "warnings": scenario_warnings(sc),
    }
    net = {k: getattr(st, k) for k in st.__slots__}
    report = build_report(
        h=history,
        meta=meta,
        net=net,
        checks=checks,
        population=live_trusted,
        live=[i for i in range(sim.n) if sim.alive[i]],
        gossip_interval=sc.membership.resolve().gossip_interval,
        probe_interval=sc.membership.resolve().probe_interval,
    )
    return RunResult(sc, world, sim, history, checks, report, live_trusted)
