"""The member table: one lean entry per known node and the SWIM transition rules.

Rules (checked by ``tests/test_membership_state.py``, a Hypothesis state machine):

* a record is accepted only if its ``(incarnation, seq)`` is newer than the known
  record's (records only move forward), except that the id of a node dead or
  gone for ``dead_reclaim_time`` may be reclaimed by any record;
* a higher-incarnation record makes a suspect, dead or departed node alive
  again; a record at the *same* incarnation updates the data but never the
  status (alive at the same incarnation after dead stays dead; a suspicion is
  refuted only by a higher incarnation);
* a suspect claim at an incarnation ≥ the known one suspects an alive or
  suspect node; a dead claim at such an incarnation kills it;
* a claim about ourselves is never applied: the caller must refute it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping

from protocols.capabilities.records import RecordInfo
from protocols.overlay import Overlay

__all__ = [
    "ALIVE",
    "DEAD",
    "LEFT",
    "STATUS_NAMES",
    "SUSPECT",
    "Member",
    "MemberTable",
    "Outcome",
]

ALIVE = 0
SUSPECT = 1
DEAD = 2
LEFT = 3
STATUS_NAMES = ("alive", "suspect", "dead", "left")
_CLAIM_STATUS = {"suspect": SUSPECT, "dead": DEAD}


class Outcome:
    """What ``apply_record`` / ``apply_claim`` did (plain string constants)."""

    JOINED = "joined"  # first record of an unknown node
    UPDATED = "updated"  # newer record, status unchanged
    ALIVE = "alive"  # suspect/dead/left node is alive again (higher incarnation or reclaim)
    LEFT = "left"  # final record of a graceful leave
    STALE = "stale"  # not newer than what we know
    SUSPECTED = "suspected"  # alive (or older-incarnation suspect) node now suspected
    CONFIRMED = "confirmed"  # suspect claim at the incarnation already suspected
    DEAD = "dead"  # node now dead
    IGNORED = "ignored"  # claim about a node already dead or gone
    UNKNOWN = "unknown"  # claim about a node we have no record of
    REFUTE = "refute"  # claim about ourselves: the caller must refute it
    IMPLAUSIBLE = "implausible"  # claim far above any incarnation its node has had


#: How far above the incarnation we hold for a node a claim about it may go. A node
#: raises its incarnation by one per refutation; a claim far above that was made up,
#: and obeying it spends the node's incarnations: one trusted member's claim at
#: 2**62 - 1 made its target refute at the last one (MAX_COUNTER), after which no
#: claim about it could be made, and it could never be suspected or declared dead.
CLAIM_INCARNATION_LEAP = 1 << 20


class Member:
    """One row; ``since`` is when the status last changed (virtual seconds)."""

    __slots__ = ("incarnation", "info", "node_id", "since", "status")

    def __init__(self, node_id: str, incarnation: int, status: int, info: RecordInfo, now: float):
        self.node_id = node_id
        self.incarnation = incarnation
        self.status = status
        self.info = info
        self.since = now

    @property
    def status_name(self) -> str:
        return STATUS_NAMES[self.status]

    def __repr__(self) -> str:
        return f"Member({self.node_id!r}, {self.status_name}, inc={self.incarnation})"

    def copy(self) -> Member:
        return Member(self.node_id, self.incarnation, self.status, self.info, self.since)


def _no_change(member: Member | None, incarnation: int, status: str) -> str | None:
    """The outcome of a claim about another node that changes nothing, or None.

    Unknown node; one that left; one held dead, unless the claim is a death at a later
    incarnation; an incarnation older than the one we hold."""
    if member is None:
        return Outcome.UNKNOWN
    if member.status >= DEAD:
        later_death = member.status == DEAD and status == "dead"
        return None if later_death and incarnation > member.incarnation else Outcome.IGNORED
    if incarnation < member.incarnation:
        return Outcome.STALE
    return None


class MemberTable:
    """Members by node id, in insertion order (never hash order)."""

    __slots__ = ("_entries", "_members", "_per_status", "dead_reclaim_time", "self_id")

    def __init__(self, self_id: str, dead_reclaim_time: float) -> None:
        self.self_id = self_id
        self.dead_reclaim_time = dead_reclaim_time
        self._members: MutableMapping[str, Member] = {}
        # Members per status, kept by every change below: the counts are asked at
        # every new suspicion and push-pull, a scan of the table each time.
        self._per_status = [0, 0, 0, 0]
        # The push-pull digest entry of each member, in table order, rewritten by
        # every change (a push-pull used to rebuild all of them: 0.5 ms at 1,000).
        self._entries: MutableMapping[str, tuple[str, int, int, int]] = {}

    def adopt(
        self,
        members: Mapping[str, Member],
        entries: Mapping[str, tuple[str, int, int, int]],
        per_status: tuple[int, int, int, int],
    ) -> None:
        """Start from a formed mesh's shared table (``formed.FormedMesh``): this table
        keeps only its own changes on top of it (``protocols.overlay.Overlay``)."""
        assert self.self_id in members, "a formed mesh lists every node, us included"
        self._members = Overlay(members, Member.copy)
        self._entries = Overlay(entries)
        self._per_status = list(per_status)

    def export(
        self,
    ) -> tuple[dict[str, Member], dict[str, tuple[str, int, int, int]], tuple[int, int, int, int]]:
        """Rows, push-pull entries and counts per status, for a formed mesh to share."""
        per = self._per_status
        return dict(self._members), dict(self._entries), (per[0], per[1], per[2], per[3])

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, node_id: str) -> bool:
        return node_id in self._members

    def __iter__(self) -> Iterator[Member]:
        return iter(self._members.values())

    def get(self, node_id: str) -> Member | None:
        return self._members.get(node_id)

    def ids(self) -> list[str]:
        return list(self._members)

    def count_live(self) -> int:
        """Members alive or suspect (including ourselves)."""
        return self._per_status[ALIVE] + self._per_status[SUSPECT]

    def count_dead(self) -> int:
        """Members held dead (not left)."""
        return self._per_status[DEAD]

    def _add(self, member: Member) -> None:
        self._members[member.node_id] = member
        self._per_status[member.status] += 1
        self._entry(member)

    def _entry(self, member: Member) -> None:
        info = member.info
        if member.status == ALIVE:
            entry = info.alive_entry
            if entry is None:
                rec = info.record
                entry = info.alive_entry = (member.node_id, rec.incarnation, rec.seq, ALIVE)
        else:
            entry = (member.node_id, info.record.incarnation, info.record.seq, member.status)
        self._entries[member.node_id] = entry

    def _set_status(self, member: Member, status: int, now: float) -> None:
        per = self._per_status
        per[member.status] -= 1
        per[status] += 1
        member.status = status
        member.since = now
        self._entry(member)

    def set_self(self, info: RecordInfo, now: float) -> None:
        """Install our own (newly signed) record; we are alive at its incarnation."""
        rec = info.record
        member = self._members.get(self.self_id)
        status = LEFT if rec.leaving else ALIVE
        if member is None:
            self._add(Member(self.self_id, rec.incarnation, status, info, now))
            return
        member.info = info
        member.incarnation = rec.incarnation
        if member.status != status:
            self._set_status(member, status, now)
        else:
            self._entry(member)

    def apply_record(self, info: RecordInfo, now: float) -> str:
        """Apply a verified record about another node; returns an ``Outcome``."""
        rec = info.record
        assert info.node_id != self.self_id, "our own record is installed with set_self"
        member = self._members.get(info.node_id)
        status = LEFT if rec.leaving else ALIVE
        if member is None:
            self._add(Member(info.node_id, rec.incarnation, status, info, now))
            return Outcome.LEFT if rec.leaving else Outcome.JOINED
        reclaim = self.dead_reclaim_time > 0 and now - member.since >= self.dead_reclaim_time
        if member.status >= DEAD and reclaim and member.info is not info:
            member.info = info
            member.incarnation = rec.incarnation
            self._set_status(member, status, now)
            return Outcome.LEFT if rec.leaving else Outcome.ALIVE
        if info.version <= member.info.version:
            return Outcome.STALE
        member.info = info
        self._entry(member)
        inc = rec.incarnation
        same_alive = inc == member.incarnation and member.status == ALIVE
        if rec.leaving and member.status != LEFT and (inc > member.incarnation or same_alive):
            member.incarnation = inc
            self._set_status(member, LEFT, now)
            return Outcome.LEFT
        if inc > member.incarnation:
            member.incarnation = inc
            if member.status != status:
                self._set_status(member, status, now)
                return Outcome.LEFT if rec.leaving else Outcome.ALIVE
        return Outcome.UPDATED

    def claim_changes(self, node_id: str, incarnation: int, status: str) -> bool:
        """Would ``apply_claim`` change anything? (A claim about ourselves always
        matters: it must be refuted.) Lets a caller skip claims before building them."""
        if node_id == self.self_id:
            return True
        return _no_change(self._members.get(node_id), incarnation, status) is None

    def replace_info(self, info: RecordInfo) -> None:
        """Hold ``info`` for its member in place of a record of the same version (its
        offers checked again under a changed trust policy): nothing else changes."""
        member = self._members.get(info.node_id)
        assert member is not None and member.info.version == info.version
        member.info = info

    def apply_claim(self, node_id: str, incarnation: int, status: str, now: float) -> str:
        """Apply a suspect or dead claim; returns an ``Outcome``."""
        if node_id == self.self_id:
            member = self._members.get(node_id)
            known = member.incarnation if member is not None else 0
            if incarnation > known + CLAIM_INCARNATION_LEAP:
                return Outcome.IMPLAUSIBLE
            return Outcome.REFUTE if incarnation >= known else Outcome.STALE
        member = self._members.get(node_id)
        if member is not None and incarnation > member.incarnation + CLAIM_INCARNATION_LEAP:
            return Outcome.IMPLAUSIBLE
        unchanged = _no_change(member, incarnation, status)
        if unchanged is not None:
            return unchanged
        assert member is not None
        if member.status == DEAD:
            # It died at a later incarnation than we saw: its records up to that
            # one are old news and must not bring it back (see compare_digests).
            member.incarnation = incarnation
            return Outcome.IGNORED
        new_status = _CLAIM_STATUS[status]
        same = incarnation == member.incarnation
        if new_status == SUSPECT and member.status == SUSPECT and same:
            return Outcome.CONFIRMED
        member.incarnation = incarnation
        self._set_status(member, new_status, now)
        return Outcome.DEAD if new_status == DEAD else Outcome.SUSPECTED

    def remove(self, node_id: str) -> None:
        assert node_id != self.self_id
        member = self._members.pop(node_id, None)
        if member is not None:
            self._per_status[member.status] -= 1
            del self._entries[node_id]

    def digest(self) -> list[tuple[str, int, int, int]]:
        """``(node id, record incarnation, record seq, status)`` per member, for push-pull."""
        return list(self._entries.values())

    def digest_map(self) -> Mapping[str, tuple[str, int, int, int]]:
        """The same entries by node id (read-only: the table keeps them current)."""
        return self._entries
