"""The workload: a Poisson task stream and simulated executors.

Requesters are drawn among running honest nodes. On ``TaskAssigned`` the
simulated executor finishes after a sampled duration, calling ``complete`` or
``fail`` (with the scenario's failure probability) unless the node crashed or
the task was cancelled meanwhile. ``abandon`` nodes never finish.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mesh.events import TaskAssigned, TaskCancelled
from protocols.errors import MeshError
from simulations.engine import Simulator
from simulations.factories import ShellFactory
from simulations.history import History
from simulations.world import World

if TYPE_CHECKING:
    from simulations.scenario import Scenario

__all__ = ["Workload", "workload_warnings"]


def workload_warnings(sc: Scenario) -> list[str]:
    """The workload's capabilities that no org lists in its ``capabilities``, each in
    one line: no node offers them, and every task asking for one fails (no-bidders)
    with no other hint."""
    if sc.workload.tasks_per_s <= 0:
        return []
    offered = {c for o in sc.orgs for c in o.capabilities}
    return [
        f"no org offers workload capability {c!r}: every task asking for it will fail "
        "(add it to an [[orgs]] table's capabilities)"
        for c, weight in sorted(sc.workload.capabilities.items())
        if weight > 0 and c not in offered
    ]


class Workload:
    def __init__(
        self, sim: Simulator, world: World, factory: ShellFactory, history: History
    ) -> None:
        self.sim = sim
        self.world = world
        self.factory = factory
        self.history = history
        self.wl = world.scenario.workload
        self.rng = world.rng("workload")
        self.duration = self.wl.duration.build()
        self.caps = sorted(self.wl.capabilities)
        self.cap_weights = [self.wl.capabilities[c] for c in self.caps]
        self.sems = sorted(self.wl.semantics)
        self.sem_weights = [self.wl.semantics[s] for s in self.sems]
        self.requesters = [s.index for s in world.specs if s.role == "honest"]
        self.cancelled: set[tuple[int, str, int]] = set()
        self.stop = 0.0
        self.local_errors = 0
        self.counter = 0

    def start(self, t0: float, stop: float) -> None:
        self.stop = stop
        if self.wl.tasks_per_s > 0 and self.requesters:
            self.sim.at(t0 + self.rng.expovariate(self.wl.tasks_per_s), self._arrive)

    def _arrive(self, now: float) -> None:
        if now >= self.stop:
            return
        self.sim.at(now + self.rng.expovariate(self.wl.tasks_per_s), self._arrive)
        i = self.rng.choice(self.requesters)
        if not self.sim.alive[i]:
            return
        self.counter += 1
        spec: dict[str, Any] = {
            "capability": self.rng.choices(self.caps, self.cap_weights)[0],
            "input": {"n": self.counter},
            "semantics": self.rng.choices(self.sems, self.sem_weights)[0],
            "timeout": self.wl.timeout,
            "strategy": self.wl.strategy,
        }

        def submit(node: Any, local: float) -> None:
            task_id = self.factory.submit(node, spec, local)
            self.history.submitted(now, i, task_id, spec["semantics"])

        self.sim.call(i, submit)

    # --- executors ------------------------------------------------------------

    def on_event(self, t: float, i: int, ev: Any) -> None:
        if type(ev) is TaskCancelled:
            self.cancelled.add((i, ev.task_id, ev.epoch))
            return
        if type(ev) is not TaskAssigned or self.world.specs[i].role == "abandon":
            return
        rng = self.world.rng("executor", i, ev.task_id, ev.epoch)
        done = t + self.duration.sample(rng)
        fail = rng.random() < self.wl.failure_probability
        gen = self.sim.generation[i]
        self.sim.at(done, lambda now: self._finish(i, gen, ev, fail))

    def _finish(self, i: int, gen: int, ev: TaskAssigned, fail: bool) -> None:
        if self.sim.generation[i] != gen or (i, ev.task_id, ev.epoch) in self.cancelled:
            return

        def finish(node: Any, local: float) -> None:
            try:
                if fail:
                    self.factory.fail(node, ev.task_id, "executor-failed", local)
                else:
                    self.factory.complete(node, ev.task_id, {"by": i, "epoch": ev.epoch}, local)
            except MeshError:
                self.local_errors += 1

        self.sim.call(i, finish)
