"""Capability index: who offers what, alive or not, at what load.

Kept up to date by the gossip agent from verified records and member status.
``find`` is the query of the contract net.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from protocols.capabilities.records import RecordInfo
from protocols.capabilities.versions import matches
from protocols.overlay import Overlay

__all__ = ["Candidate", "CapabilityIndex"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One node able to run one capability (a row of ``CapabilityIndex.find``)."""

    node_id: str
    endpoint: str
    org: str
    alive: bool
    load: float
    capability: str
    version: str
    max_concurrency: int
    cost: MappingProxyType[str, float]
    incarnation: int
    seq: int


class CapabilityIndex:
    """``capability name -> {node id -> record}`` plus each node's liveness."""

    __slots__ = ("_by_capability", "_down", "_records")

    def __init__(self) -> None:
        self._records: MutableMapping[str, RecordInfo] = {}
        # The known nodes that are not alive (most are alive: no entry per node).
        self._down: set[str] = set()
        self._by_capability: dict[str, MutableMapping[str, None]] = {}

    def adopt(
        self, records: Mapping[str, RecordInfo], by_capability: Mapping[str, Mapping[str, None]]
    ) -> None:
        """Start from a formed mesh's shared index (every node alive): keep only our
        own changes on top of it (``protocols.overlay.Overlay``)."""
        self._records = Overlay(records)
        self._down = set()
        self._by_capability = {name: Overlay(ids) for name, ids in by_capability.items()}

    def _set_alive(self, node_id: str, alive: bool) -> None:
        if alive:
            self._down.discard(node_id)
        else:
            self._down.add(node_id)

    def export(self) -> tuple[dict[str, RecordInfo], dict[str, dict[str, None]]]:
        """Records and holders per capability, for a formed mesh to share."""
        by_capability = {name: dict(ids) for name, ids in self._by_capability.items()}
        return dict(self._records), by_capability

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, node_id: str) -> bool:
        return node_id in self._records

    def record(self, node_id: str) -> RecordInfo | None:
        return self._records.get(node_id)

    def upsert(self, info: RecordInfo, alive: bool) -> None:
        """Replace ``info.node_id``'s record (the caller checked it is newer)."""
        node_id = info.node_id
        self._drop_names(node_id)
        self._records[node_id] = info
        self._set_alive(node_id, alive)
        for cap in info.record.capabilities:
            self._by_capability.setdefault(cap.name, {})[node_id] = None

    def set_alive(self, node_id: str, alive: bool) -> None:
        if node_id in self._records:
            self._set_alive(node_id, alive)

    def remove(self, node_id: str) -> None:
        self._drop_names(node_id)
        self._records.pop(node_id, None)
        self._down.discard(node_id)

    def _drop_names(self, node_id: str) -> None:
        old = self._records.get(node_id)
        if old is None:
            return
        for cap in old.record.capabilities:
            holders = self._by_capability.get(cap.name)
            if holders is not None:
                holders.pop(node_id, None)
                if not holders:
                    del self._by_capability[cap.name]

    def capabilities(self) -> list[str]:
        """Every capability name offered by some known node, sorted."""
        return sorted(self._by_capability)

    def find(
        self,
        capability: str,
        version_spec: str = "*",
        *,
        include_dead: bool = False,
        exclude: Collection[str] = (),
    ) -> list[Candidate]:
        """Nodes offering ``capability`` at a version matching ``version_spec``.

        Order is deterministic: alive before not alive, then lowest load, then
        node id. Dead, suspected-then-dead and departed nodes are left out unless
        ``include_dead``; suspected nodes count as alive (SWIM: not dead yet).
        """
        out: list[Candidate] = []
        for node_id in self._by_capability.get(capability, {}):
            if node_id in exclude:
                continue
            alive = node_id not in self._down
            if not alive and not include_dead:
                continue
            out.extend(self._rows(node_id, capability, version_spec, alive))
        out.sort(key=lambda c: (not c.alive, c.load, c.node_id, c.version))
        return out

    def _rows(self, node_id: str, capability: str, spec: str, alive: bool) -> Iterator[Candidate]:
        info = self._records[node_id]
        rec = info.record
        for cap in rec.capabilities:
            if cap.name != capability or not matches(spec, cap.version):
                continue
            yield Candidate(
                node_id=node_id,
                endpoint=info.endpoint,
                org=info.org,
                alive=alive,
                load=rec.load,
                capability=cap.name,
                version=cap.version,
                max_concurrency=cap.max_concurrency,
                cost=MappingProxyType(dict(cap.cost)),
                incarnation=rec.incarnation,
                seq=rec.seq,
            )

    def snapshot(self) -> list[dict[str, Any]]:
        """A plain, sorted view for ``inspect`` output and tests."""
        rows: list[dict[str, Any]] = []
        for node_id in sorted(self._records):
            rec = self._records[node_id].record
            rows.append(
                {
                    "node_id": node_id,
                    "alive": node_id not in self._down,
                    "load": rec.load,
                    "incarnation": rec.incarnation,
                    "seq": rec.seq,
                    "capabilities": [f"{c.name}@{c.version}" for c in rec.capabilities],
                }
            )
        return rows
