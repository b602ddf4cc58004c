"""Probe target selection as in SWIM: round-robin over a shuffled member list.

Each full pass reshuffles the list with the node's own ``random.Random``; a new
member is inserted at a random position so it is probed within one pass.
Peers for indirect probes, gossip and push-pull are drawn from the same list.
Everything is deterministic given the rng (no set or hash order).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, MutableMapping

from protocols.overlay import Overlay

__all__ = ["ProbeOrder", "ProbeState"]


class ProbeOrder:
    __slots__ = ("_ids", "_index", "_known", "_shared")

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._known: MutableMapping[str, None] = {}
        self._index = 0
        self._shared = False  # _ids is a formed mesh's list: copy it before a change

    def adopt(self, ids: list[str], known: Mapping[str, None], start: int) -> None:
        """Start from a formed mesh's shared permutation, at position ``start``.

        Every node of the mesh shares one list (10,000 ids are 80 kB per node) and
        starts its round-robin at its own random position; its first change
        (a new member, a departure, the reshuffle at the end of the pass) makes the
        list its own."""
        self._ids = ids
        self._known = Overlay(known)
        self._index = start
        self._shared = True

    def _own(self) -> list[str]:
        if self._shared:
            self._ids = list(self._ids)
            self._shared = False
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> list[str]:
        return list(self._ids)

    def add(self, node_id: str, rng: random.Random) -> None:
        if node_id in self._known:
            return
        self._known[node_id] = None
        pos = rng.randint(0, len(self._ids))
        self._own().insert(pos, node_id)
        if pos < self._index:
            self._index += 1

    def remove(self, node_id: str) -> None:
        if node_id not in self._known:
            return
        del self._known[node_id]
        ids = self._own()
        pos = ids.index(node_id)
        del ids[pos]
        if pos < self._index:
            self._index -= 1

    def next(self, eligible: Callable[[str], bool], rng: random.Random) -> str | None:
        """The next eligible id in round-robin order, reshuffling after each pass."""
        for _ in range(len(self._ids) + 1):
            if self._index >= len(self._ids):
                rng.shuffle(self._own())
                self._index = 0
                if not self._ids:
                    return None
            node_id = self._ids[self._index]
            self._index += 1
            if eligible(node_id):
                return node_id
        return None

    def sample(
        self, k: int, eligible: Callable[[str], bool], rng: random.Random, exclude: str = ""
    ) -> list[str]:
        """Up to ``k`` distinct eligible ids at random (a few draws, then a scan)."""
        ids = self._ids
        if k <= 0 or not ids:
            return []
        out: list[str] = []
        for _ in range(4 * k):
            node_id = ids[rng.randrange(len(ids))]
            if node_id != exclude and node_id not in out and eligible(node_id):
                out.append(node_id)
                if len(out) == k:
                    return out
        rest = [i for i in ids if i != exclude and i not in out and eligible(i)]
        if rest:
            out.extend(rng.sample(rest, min(k - len(out), len(rest))))
        return out


class ProbeState:
    """The one probe in flight (SWIM probes one member per period).

    ``direct_deadline``: when to fall back to indirect probes; ``end``: when the
    probe fails if neither an ack nor an indirect ack came back.
    """

    __slots__ = ("direct_deadline", "end", "expected_nacks", "indirect", "nacks", "seq", "target")

    def __init__(self, target: str, seq: int, direct_deadline: float, end: float) -> None:
        self.target = target
        self.seq = seq
        self.direct_deadline = direct_deadline
        self.end = end
        self.indirect = False
        self.expected_nacks = 0
        self.nacks = 0
