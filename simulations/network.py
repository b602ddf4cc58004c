"""The simulated network: latency, loss, duplication, reordering, partitions, clogging.

The network decides *whether* and *when* a frame arrives; the engine puts the
delivery on its heap. Every random draw comes from the sending node's network
RNG, so a run depends on the master seed only.

Partitions are directed: a partition maps each node to a component and blocks a
set of ``(from_component, to_component)`` pairs. A symmetric split blocks both
directions, a one-way split one direction, and a *bridge* leaves a third
component that still reaches both sides. Clogging holds frames on a link (or
all links of a node) until the clog ends, as TigerBeetle's packet simulator does.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from simulations.rng import link_factor

__all__ = ["Clog", "Latency", "LinkClass", "NetworkStats", "Partition", "SimNetwork"]


@dataclass(frozen=True, slots=True)
class Latency:
    """A one-way latency distribution, in seconds.

    ``dist`` is one of ``constant`` (``a``), ``uniform`` (``a``..``b``),
    ``normal`` (mean ``a``, sd ``b``, clipped at ``minimum``), ``lognormal``
    (median ``a``, sigma ``b``) or ``exponential`` (``minimum`` + mean ``a``).
    """

    dist: str = "lognormal"
    a: float = 0.001
    b: float = 0.3
    minimum: float = 0.00005

    def sample(self, rng: random.Random) -> float:
        d = self.dist
        if d == "lognormal":
            v = self.a * math.exp(self.b * rng.gauss(0.0, 1.0))
        elif d == "uniform":
            v = rng.uniform(self.a, self.b)
        elif d == "constant":
            v = self.a
        elif d == "normal":
            v = rng.gauss(self.a, self.b)
        elif d == "exponential":
            v = self.minimum + rng.expovariate(1.0 / self.a)
        else:  # pragma: no cover - validated by the scenario model
            raise AssertionError(f"unknown latency distribution {d!r}")
        return v if v > self.minimum else self.minimum


@dataclass(frozen=True, slots=True)
class LinkClass:
    """How frames behave on one class of link (inside a segment, or across)."""

    latency: Latency = field(default_factory=Latency)
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.05
    #: per-link stable latency factor spread (0.2: each link is 0.8x..1.2x)
    link_spread: float = 0.2


@dataclass(slots=True)
class Partition:
    """A directed partition: ``component[i]`` for every node, blocked pairs."""

    name: str
    component: list[int]
    blocked: frozenset[tuple[int, int]]

    def blocks(self, src: int, dst: int) -> bool:
        return (self.component[src], self.component[dst]) in self.blocked


@dataclass(slots=True)
class Clog:
    """Frames from ``src`` to ``dst`` (None: any) are held until ``until``."""

    src: int | None
    dst: int | None
    until: float


@dataclass(slots=True)
class NetworkStats:
    sent: int = 0
    delivered: int = 0
    dropped_loss: int = 0
    dropped_partition: int = 0
    dropped_down: int = 0
    dropped_unroutable: int = 0
    duplicated: int = 0
    reordered: int = 0
    clogged: int = 0


class SimNetwork:
    """Routes frames between simulated nodes. ``route`` returns arrival times."""

    __slots__ = (
        "_rngs",
        "_salt",
        "clogs",
        "local",
        "partitions",
        "remote",
        "segment",
        "stats",
    )

    def __init__(
        self,
        segment: Sequence[int],
        rngs: Sequence[random.Random],
        *,
        local: LinkClass,
        remote: LinkClass,
        salt: int,
    ) -> None:
        self.segment = list(segment)
        self._rngs = list(rngs)
        self.local = local
        self.remote = remote
        self._salt = salt
        self.partitions: list[Partition] = []
        self.clogs: list[Clog] = []
        self.stats = NetworkStats()

    # --- faults -----------------------------------------------------------

    def add_partition(self, partition: Partition) -> None:
        self.partitions.append(partition)

    def heal(self, name: str | None = None) -> None:
        """Heal one partition by name, or all of them."""
        self.partitions = [p for p in self.partitions if name is not None and p.name != name]

    def clog(self, src: int | None, dst: int | None, until: float) -> None:
        self.clogs.append(Clog(src, dst, until))

    def blocked(self, src: int, dst: int) -> bool:
        return any(p.blocks(src, dst) for p in self.partitions)

    # --- routing ----------------------------------------------------------

    def route(self, src: int, dst: int, now: float) -> tuple[float, ...]:
        """Arrival times of the copies of one frame (empty: dropped)."""
        st = self.stats
        st.sent += 1
        if self.partitions and self.blocked(src, dst):
            st.dropped_partition += 1
            return ()
        link = self.local if self.segment[src] == self.segment[dst] else self.remote
        rng = self._rngs[src]
        if link.loss and rng.random() < link.loss:
            st.dropped_loss += 1
            return ()
        factor = link_factor(self._salt, src, dst, link.link_spread)
        t = now + link.latency.sample(rng) * factor
        if link.reorder and rng.random() < link.reorder:
            st.reordered += 1
            t += rng.uniform(0.0, link.reorder_delay)
        if self.clogs:
            t = self._clogged(src, dst, now, t)
        if link.duplicate and rng.random() < link.duplicate:
            st.duplicated += 1
            return (t, t + link.latency.sample(rng) * factor)
        return (t,)

    def _clogged(self, src: int, dst: int, now: float, t: float) -> float:
        self.clogs = [c for c in self.clogs if c.until > now]
        for c in self.clogs:
            if (c.src is None or c.src == src) and (c.dst is None or c.dst == dst):
                self.stats.clogged += 1
                t = max(t, c.until)
        return t


def split(
    n: int, fractions: Sequence[float], rng: random.Random, members: Sequence[int] | None = None
) -> list[int]:
    """Assign each node a component: ``fractions`` of a shuffled node list, rest last."""
    order = list(range(n)) if members is None else list(members)
    rng.shuffle(order)
    component = [len(fractions)] * n
    start = 0
    for c, f in enumerate(fractions):
        count = round(f * len(order))
        for i in order[start : start + count]:
            component[i] = c
        start += count
    return component


def make_partition(
    name: str, kind: str, n: int, fractions: Sequence[float], rng: random.Random
) -> Partition:
    """Build a ``symmetric``, ``oneway`` (0 cannot reach 1) or ``bridge`` partition.

    ``fractions`` gives the sizes of the first components; the rest of the nodes
    form the last component (for ``bridge``: two sides, the rest is the bridge).
    """
    component = split(n, fractions, rng)
    comps = len(fractions) + 1
    if kind == "symmetric":
        blocked = frozenset((a, b) for a in range(comps) for b in range(comps) if a != b)
    elif kind == "oneway":
        blocked = frozenset({(0, 1)})
    elif kind == "bridge":
        if len(fractions) != 2:
            raise ValueError("a bridge partition needs two side fractions")
        blocked = frozenset({(0, 1), (1, 0)})
    else:
        raise ValueError(f"unknown partition kind {kind!r}")
    return Partition(name, component, blocked)
