"""A formed mesh: what every node knows once all have joined, built once and shared.

A mesh of N nodes holds N member tables of N rows each: ~50 GB at 10,000 nodes,
whatever the rows are made of. The simulator can instead start a large mesh as
if it had already formed: every node's record is known to every node at t=0.
``FormedMesh.of`` builds one member table, capability index and probe
permutation from the nodes' own signed records; each node then ``adopt``s it
(``MembershipView.adopt``) and keeps only its own changes on top of the shared
copy (``protocols.overlay.Overlay``). Rows, entries and records are the same
objects a join would have produced, and the tables behave as plain ones: the
protocol code above them does not know the difference.

What a formed start skips is the join itself (seeds, push-pull, catch-ups); the
cold start of the same mesh is the scenario without ``start = "formed"``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from protocols.capabilities.index import CapabilityIndex
from protocols.capabilities.records import RecordInfo
from protocols.membership.state import Member, MemberTable

__all__ = ["FormedMesh"]


@dataclass(frozen=True, slots=True)
class FormedMesh:
    """The shared, read-only state of a formed mesh (never written after ``of``)."""

    members: dict[str, Member]
    entries: dict[str, tuple[str, int, int, int]]
    per_status: tuple[int, int, int, int]
    records: dict[str, RecordInfo]
    by_capability: dict[str, dict[str, None]]
    order: list[str]
    known: dict[str, None]

    @classmethod
    def of(cls, infos: Sequence[RecordInfo], rng: random.Random, now: float) -> FormedMesh:
        """The mesh of these records (one per node, in this order), formed at ``now``;
        ``rng`` shuffles the probe permutation the nodes share."""
        table = MemberTable("", dead_reclaim_time=0.0)
        index = CapabilityIndex()
        for info in infos:
            table.apply_record(info, now)
            index.upsert(info, alive=not info.record.leaving)
        members, entries, per_status = table.export()
        records, by_capability = index.export()
        order = [info.node_id for info in infos]
        rng.shuffle(order)
        return cls(
            members=members,
            entries=entries,
            per_status=per_status,
            records=records,
            by_capability=by_capability,
            order=order,
            known=dict.fromkeys(order),
        )

    def __len__(self) -> int:
        return len(self.members)
