"""The simulated world: segments, organizations, capability placement, roles, discovery.

Built deterministically from a scenario and the master seed. A *segment* is one
LAN (mDNS reaches inside it only); segments are joined through seed nodes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from protocols.errors import ConfigError
from simulations.engine import endpoint, index_of
from simulations.rng import derive_rng
from simulations.scenario import UNTRUSTED_ORG, Scenario

__all__ = ["ATTACKS", "UNTRUSTED_ORG", "NodeSpec", "World"]

#: adversary roles that inject bad frames (the others misbehave in the protocol)
ATTACKS = ("forge", "replay", "malformed", "oversized")
ROLES = (*ATTACKS, "abandon", "untrusted")


@dataclass(frozen=True, slots=True)
class NodeSpec:
    index: int
    segment: int
    org: str
    trusted: frozenset[str]
    capabilities: tuple[str, ...]
    role: str = "honest"
    price: float = 1.0


def _blocks(n: int, weights: list[float]) -> list[int]:
    """Contiguous blocks of ``range(n)`` sized by ``weights``: block id per index."""
    total = sum(weights)
    out: list[int] = []
    acc = 0.0
    for b, w in enumerate(weights):
        acc += w
        end = n if b == len(weights) - 1 else round(n * acc / total)
        out.extend([b] * (end - len(out)))
    return out


class World:
    """Who is where, who trusts whom, who offers what, who misbehaves."""

    def __init__(self, sc: Scenario) -> None:
        self.scenario = sc
        n = self.n = sc.run.nodes
        seed = sc.run.seed
        segs = sc.topology.segments
        self.segment = [i * segs // n for i in range(n)]
        org_of = _blocks(n, [o.share for o in sc.orgs])
        orgs = {o.name: o for o in sc.orgs}
        roles = self._roles(sc, n)
        specs: list[NodeSpec] = []
        for i in range(n):
            org = sc.orgs[org_of[i]]
            rng = derive_rng(seed, "placement", i)
            caps = tuple(sorted(c for c, p in org.capabilities.items() if rng.random() < p))
            if not caps and org.capabilities:
                caps = (sorted(org.capabilities)[i % len(org.capabilities)],)
            role = roles.get(i, "honest")
            name = UNTRUSTED_ORG if role == "untrusted" else org.name
            trusted = frozenset(
                {org.name, *orgs[org.name].trusts, UNTRUSTED_ORG}
                if role == "untrusted"
                else {org.name, *org.trusts}
            )
            price = 0.01 if role == "abandon" else 1.0
            specs.append(NodeSpec(i, self.segment[i], name, trusted, caps, role, price))
        self.specs = specs
        self.seeds: list[list[int]] = [[] for _ in range(segs)]
        for spec in specs:
            s = self.seeds[spec.segment]
            if spec.role == "honest" and len(s) < sc.topology.seeds_per_segment:
                s.append(spec.index)
        self._started: list[list[int]] = [[] for _ in range(segs)]
        self._rng = derive_rng(seed, "discovery")
        self.formed = sc.topology.start == "formed"
        #: Each node's current endpoint: ``sim://i``, ``sim://i.k`` after its k-th move
        #: (a restart at a new address, ``faults.moved_fraction``).
        self.addresses = [endpoint(i) for i in range(n)]
        seed_nodes = {i for s in self.seeds for i in s}
        others = [i for i in range(n) if self.trusted_by_all(i) and i not in seed_nodes]
        count = min(sc.topology.joiners, len(others)) if self.formed else 0
        self.joiners = frozenset(derive_rng(seed, "joiners").sample(others, count))

    @staticmethod
    def _roles(sc: Scenario, n: int) -> dict[int, str]:
        adv = sc.adversaries
        counts = [(r, getattr(adv, r)) for r in ROLES]
        if adv.fraction > 0:
            kinds = [r for r, c in counts if c > 0] or list(ROLES)
            want = max(len(kinds), round(adv.fraction * n))  # every kind at least once
            counts = [
                (r, want // len(kinds) + (1 if k < want % len(kinds) else 0))
                for k, r in enumerate(kinds)
            ]
        total = sum(c for _, c in counts)
        if total > n // 2:
            raise ConfigError(
                f"adversaries: {total} for {n} nodes; at most half the nodes may misbehave"
            )
        roles: dict[int, str] = {}
        i = n - 1
        for role, count in counts:
            for _ in range(count):
                roles[i] = role
                i -= 1
        return roles

    def honest(self, i: int) -> bool:
        return self.specs[i].role in ("honest", *ATTACKS)

    def trusted_by_all(self, i: int) -> bool:
        return self.specs[i].role != "untrusted"

    def mutual(self, i: int, j: int) -> bool:
        """Nodes ``i`` and ``j`` accept each other's frames (each trusts the other's
        org): only then can either learn, probe or keep the other as a member."""
        a, b = self.specs[i], self.specs[j]
        return b.org in a.trusted and a.org in b.trusted

    def in_formed_mesh(self, i: int) -> bool:
        """Starts as a member of the formed mesh (``start = "formed"``), not by joining."""
        return self.formed and self.trusted_by_all(i) and i not in self.joiners

    def start_order(self) -> list[tuple[float, int]]:
        """(time, node) of every first start: seeds at 0, the rest over the join window."""
        rng = derive_rng(self.scenario.run.seed, "start")
        window = self.scenario.topology.join_window
        seeds = {i for s in self.seeds for i in s}
        out = [(0.0 if i in seeds else rng.uniform(0.0, window), i) for i in range(self.n)]
        out.sort()
        return out

    def discover(self, i: int) -> list[str]:
        """Endpoints node ``i`` knocks on: mDNS peers in its segment, plus all seeds."""
        seg = self.segment[i]
        started = self._started[seg]
        k = self.scenario.topology.mdns_peers
        peers = started if len(started) <= k else self._rng.sample(started, k)
        if i not in started:
            started.append(i)
        seeds = [s for ss in self.seeds for s in ss if s != i]
        addresses = self.addresses
        return [addresses[p] for p in dict.fromkeys([*seeds, *peers]) if p != i]

    def move(self, i: int) -> str:
        """Give node ``i`` a new endpoint (it restarts at another address)."""
        index = index_of(self.addresses[i])
        assert index == i
        tail = self.addresses[i].partition(".")[2]
        self.addresses[i] = endpoint(i, int(tail or 0) + 1)
        return self.addresses[i]

    def rng(self, *path: str | int) -> random.Random:
        return derive_rng(self.scenario.run.seed, *path)
