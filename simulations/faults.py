"""Fault schedule: crashes and restarts, partitions, clogging, clock skew and jumps.

Everything is drawn from the master seed when the run is built, then placed on
the engine's heap. ``heal_all`` ends the safety phase: partitions heal, clogs
clear, and nodes waiting to restart come back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

from simulations.engine import Simulator
from simulations.history import History
from simulations.network import Partition, make_partition
from simulations.world import World

if TYPE_CHECKING:
    from simulations.scenario import Scenario

__all__ = ["Faults", "crash_window", "fault_warnings"]


def crash_window(sc: Scenario, safety_end: float) -> tuple[float, float]:
    """When crashes are drawn: ``faults.crash_window``, else from 3 s after the join
    window to 80 % of the safety phase (never an empty range)."""
    lo, hi = sc.faults.crash_window or (sc.topology.join_window + 3.0, 0.8 * safety_end)
    return lo, max(lo, hi)


def fault_warnings(sc: Scenario) -> list[str]:
    """The faults asked for that the run will not inject, each in one line: faults
    happen only in the safety phase (``run.duration``), and a run whose safety phase
    ends first used to drop them in silence (``--duration 4s --crash 0.5``: no crash)."""
    end, f = sc.run.duration, sc.faults
    out = []
    if f.crash_fraction > 0:
        lo, hi = crash_window(sc, end)
        if lo >= end:
            out.append(
                f"no node will crash: crashes are drawn from {lo:g}s on, and the safety "
                f"phase ends at {end:g}s (give a longer --duration, or faults.crash_window)"
            )
        elif hi > end:
            out.append(
                f"crashes drawn after {end:g}s (the end of the safety phase) will not "
                f"happen: faults.crash_window is {lo:g}s to {hi:g}s"
            )
    for what, starts in (
        *((f"partition {p.kind} from {p.at:g}s", p.at) for p in f.partitions),
        *((f"clog from {c.at:g}s", c.at) for c in f.clogs),
    ):
        if starts >= end:
            out.append(
                f"{what} will not happen: the safety phase ends at {end:g}s "
                "(faults are healed there)"
            )
    return out


class Faults:
    def __init__(self, sim: Simulator, world: World, history: History) -> None:
        self.sim = sim
        self.world = world
        self.history = history
        self.sc = world.scenario
        self.rng = world.rng("faults")
        self.pending_restart: dict[int, bool] = {}  # node -> durable
        self.moving: set[int] = set()  # nodes whose restart comes at a new address
        self.crashed: list[int] = []
        self.healed = False

    def skew_clocks(self) -> None:
        skew = self.sc.faults.skew
        if skew > 0:
            rng = self.world.rng("skew")
            for i in range(self.sim.n):
                self.sim.skew[i] = rng.uniform(-skew, skew)

    def schedule(self, safety_end: float) -> None:
        f = self.sc.faults
        self._schedule_crashes(safety_end)
        for k, p in enumerate(f.partitions):
            part = make_partition(f"p{k}", p.kind, self.sim.n, p.fractions, self.rng)
            self.sim.at(p.at, partial(self._partition, part))
            self.sim.at(min(p.heal, safety_end), partial(self._heal, part.name))
        for c in f.clogs:
            nodes = self.rng.sample(range(self.sim.n), min(c.nodes, self.sim.n))
            until = min(c.until, safety_end)
            self.sim.at(c.at, partial(self._clog, nodes, until))
        for _ in range(f.clock_jumps):
            i = self.rng.randrange(self.sim.n)
            t = self.rng.uniform(self.sc.topology.join_window, safety_end)
            jump = f.jump_size * self.rng.choice((-1.0, 1.0))
            self.sim.at(t, partial(self._jump, i, jump))

    def _schedule_crashes(self, safety_end: float) -> None:
        f = self.sc.faults
        seeds = {i for s in self.world.seeds for i in s}
        candidates = [
            i for i in range(self.sim.n) if self.world.specs[i].role == "honest" and i not in seeds
        ]
        count = round(f.crash_fraction * len(candidates))
        lo, hi = crash_window(self.sc, safety_end)
        for i in sorted(self.rng.sample(candidates, count)):
            t = self.rng.uniform(lo, hi)
            restart = self.rng.random() < f.restart_fraction
            durable = self.rng.random() < f.durable_fraction
            # Drawn only when asked for: the other runs keep their traces.
            moved = f.moved_fraction > 0 and self.rng.random() < f.moved_fraction
            if moved and restart:
                self.moving.add(i)
            self.sim.at(t, partial(self._crash, i, restart, durable, safety_end))

    def _jump(self, i: int, jump: float, now: float) -> None:
        self.sim.set_skew(i, self.sim.skew[i] + jump)

    def _crash(self, i: int, restart: bool, durable: bool, safety_end: float, now: float) -> None:
        if self.healed or not self.sim.alive[i]:
            return
        self.sim.crash(i)
        self.history.crashed(self.sim.now, i)
        self.crashed.append(i)
        if restart:
            self.pending_restart[i] = durable
            t = self.sim.now + self.sc.faults.restart_after
            if t < safety_end:
                self.sim.at(t, partial(self._restart_at, i))

    def _restart_at(self, i: int, now: float) -> None:
        self.restart(i)

    def restart(self, i: int) -> None:
        durable = self.pending_restart.pop(i, None)
        if durable is None or self.sim.alive[i]:
            return
        if i in self.moving:
            self.moving.discard(i)
            self.sim.move(i, self.world.move(i))
        self.sim.start(i, seeds=self.world.discover(i), durable=durable)
        self.history.restarted(self.sim.now, i)

    def _partition(self, part: Partition, now: float) -> None:
        if self.healed:
            return
        self.sim.trace_note(f"partition {part}")
        self.sim.network.add_partition(part)

    def _heal(self, name: str, now: float) -> None:
        self.sim.trace_note(f"heal {name}")
        self.sim.network.heal(name)

    def _clog(self, nodes: list[int], until: float, now: float) -> None:
        if self.healed:
            return
        self.sim.trace_note(f"clog {nodes} {until!r}")
        for i in nodes:
            self.sim.network.clog(i, None, until)
            self.sim.network.clog(None, i, until)

    def heal_all(self, after: Callable[[], None] | None = None) -> None:
        """End of the safety phase: heal every fault, restart the nodes due back."""
        self.healed = True
        self.sim.trace_note("heal all")
        self.sim.network.heal()
        self.sim.network.clogs.clear()
        net = self.sim.network
        net.local = replace(net.local, loss=0.0, duplicate=0.0, reorder=0.0)
        net.remote = replace(net.remote, loss=0.0, duplicate=0.0, reorder=0.0)
        for i in sorted(self.pending_restart):
            self.restart(i)
        if after is not None:
            after()
