"""Node factories: how the simulator builds and drives one kind of node.

The engine needs ``create`` only (``engine.NodeFactory``). The runner also needs
the few shell-level operations below, which differ between the real core and
the toy node: building a task spec, publishing a new record, reading a node's
member view at the end of a run, and crafting adversarial frames.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Sequence
from typing import Any, Protocol

import msgpack

from protocols.errors import ConfigError
from simulations.engine import SimNode
from simulations.scenario import Scenario
from simulations.toy import MAX_FRAME, ToyNode
from simulations.world import World

__all__ = ["ShellFactory", "ToyFactory", "make_factory"]

_TOY_NOT_FORMED = "topology.start = 'formed' needs the real node core (--node core)"


class ShellFactory(Protocol):
    #: frames above this size must be rejected with ``too-large``
    max_frame: int

    def create(self, index: int, now: float, *, restart: int, durable: bool) -> SimNode: ...

    def submit(self, node: Any, spec: dict[str, Any], now: float) -> str: ...

    def complete(self, node: Any, task_id: str, result: Any, now: float) -> None: ...

    def fail(self, node: Any, task_id: str, reason: str, now: float) -> None: ...

    def publish_record(self, node: Any, now: float) -> None: ...

    def view(self, node: Any) -> dict[str, tuple[int, int]] | None:
        """node id -> (incarnation, seq) of every member the node believes up."""
        ...

    def member_count(self, node: Any) -> int:
        """How many other nodes this node counts as alive or suspect members."""
        ...

    def own_version(self, node: Any) -> tuple[int, int] | None:
        """(incarnation, seq) of the record the node publishes now, if known."""
        ...

    def forge(self, frame: bytes, rng: random.Random) -> bytes | None:
        """A copy of an authentic frame whose signature no longer verifies."""
        ...

    def replayable(self, frame: bytes) -> bool:
        """Whether a second delivery of this frame must be rejected (not gossiped)."""
        ...

    def form(self, nodes: Sequence[Any], rng: random.Random, now: float) -> Any:
        """The formed mesh of these just-started nodes (each then ``adopt``s it)."""
        ...

    def adopt(self, node: Any, mesh: Any, now: float) -> None:
        """Make the node a member of the formed mesh (no join); ``now``: its clock."""
        ...


class ToyFactory:
    """Builds ``ToyNode`` objects for a world (``--node toy``)."""

    max_frame = MAX_FRAME

    def __init__(self, world: World) -> None:
        self.world = world
        self.incarnations: dict[int, int] = {}

    def create(self, index: int, now: float, *, restart: int, durable: bool) -> ToyNode:
        spec = self.world.specs[index]
        m = self.world.scenario.membership.resolve()
        inc = self.incarnations.get(index, -1) + 1 if durable else 0
        self.incarnations[index] = inc
        return ToyNode(
            f"n{index}",
            self.world.addresses[index],
            spec.org,
            rng=self.world.rng("node", index, "core", restart),
            now=now,
            trusted=spec.trusted,
            capabilities=spec.capabilities,
            incarnation=inc,
            gossip_interval=m.gossip_interval,
            fanout=m.gossip_nodes,
            probe_interval=m.probe_interval,
            probe_timeout=m.probe_timeout,
            suspicion_timeout=m.suspicion_mult * m.probe_interval,
            price=spec.price,
        )

    def submit(self, node: Any, spec: dict[str, Any], now: float) -> str:
        return str(node.submit(spec, now))

    def complete(self, node: Any, task_id: str, result: Any, now: float) -> None:
        node.complete(task_id, result, now)

    def fail(self, node: Any, task_id: str, reason: str, now: float) -> None:
        node.fail(task_id, reason, now)

    def publish_record(self, node: Any, now: float) -> None:
        node.publish_record(now)

    def view(self, node: Any) -> dict[str, tuple[int, int]] | None:
        return dict(node.view())

    def member_count(self, node: Any) -> int:
        return len(node.alive_ids)

    def own_version(self, node: Any) -> tuple[int, int] | None:
        return (int(node.inc), int(node.seq))

    def forge(self, frame: bytes, rng: random.Random) -> bytes | None:
        try:
            body, sig = msgpack.unpackb(frame)
        except Exception:
            return None
        bad = bytearray(sig)
        bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
        return bytes(msgpack.packb([body, bytes(bad)]))

    def replayable(self, frame: bytes) -> bool:
        return True

    def form(self, nodes: Sequence[Any], rng: random.Random, now: float) -> Any:
        raise ConfigError(_TOY_NOT_FORMED)

    def adopt(self, node: Any, mesh: Any, now: float) -> None:
        raise ConfigError(_TOY_NOT_FORMED)


def make_factory(sc: Scenario, world: World) -> ShellFactory:
    """The factory for the scenario's node kind (``auto``: the core when it exists)."""
    kind = sc.run.node
    if kind in ("core", "auto"):
        try:
            mod = importlib.import_module("simulations.core_factory")
        except ImportError:
            if kind == "core":
                raise
        else:
            factory: ShellFactory = mod.CoreFactory(world, crypto=sc.crypto())
            return factory
    return ToyFactory(world)
