"""The member table's SWIM rules, as a Hypothesis state machine plus a few examples."""

from __future__ import annotations

import hashlib

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from protocols.capabilities.records import CapabilityRecord, RecordInfo
from protocols.membership.state import ALIVE, DEAD, LEFT, SUSPECT, MemberTable, Outcome

SELF = "self"
PEERS = ("a", "b", "c")


def info(node: str, inc: int, seq: int, leaving: bool = False) -> RecordInfo:
    rec = CapabilityRecord(
        node_id=node,
        endpoints=[f"sim://{node}"],
        capabilities=[],
        incarnation=inc,
        seq=seq,
        leaving=leaving,
    )
    frame = f"{node}/{inc}/{seq}/{leaving}".encode()
    return RecordInfo(rec, "acme", frame, hashlib.sha256(frame).digest())


class MemberTableMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.table = MemberTable(SELF, dead_reclaim_time=0.0)  # reclaiming off: pure rules
        self.own_inc = 0
        self.own_seq = 0
        self.table.set_self(info(SELF, 0, 0), self.now)
        self.versions: dict[str, tuple[int, int]] = {}

    @rule(dt=st.floats(min_value=0.0, max_value=100.0))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule(
        node=st.sampled_from(PEERS),
        inc=st.integers(0, 4),
        seq=st.integers(0, 4),
        leaving=st.booleans(),
    )
    def record(self, node: str, inc: int, seq: int, leaving: bool) -> None:
        before = self.table.get(node)
        b_status = before.status if before else None
        b_inc = before.incarnation if before else None
        outcome = self.table.apply_record(info(node, inc, seq, leaving), self.now)
        after = self.table.get(node)
        assert after is not None
        old = self.versions.get(node)
        if outcome == Outcome.STALE:
            assert old is not None and (inc, seq) <= old
            assert after.info.version == old and after.status == b_status
            return
        assert old is None or (inc, seq) > old, "records only move forward"
        self.versions[node] = (inc, seq)
        if b_status in (SUSPECT, DEAD) and b_inc is not None and inc <= b_inc:
            # Alive at the same incarnation after dead stays dead; a suspicion is
            # refuted only by a higher incarnation (a leave may still end it).
            assert after.status in (b_status, LEFT)
            assert after.status == b_status or leaving
        if b_status is not None and after.status == ALIVE and b_status != ALIVE:
            assert b_inc is not None and inc > b_inc

    @rule(
        node=st.sampled_from((*PEERS, SELF)),
        inc=st.integers(0, 6),
        status=st.sampled_from(("suspect", "dead")),
    )
    def claim(self, node: str, inc: int, status: str) -> None:
        before = self.table.get(node)
        b_status = before.status if before else None
        b_inc = before.incarnation if before else None
        outcome = self.table.apply_claim(node, inc, status, self.now)
        if node == SELF:
            assert outcome in (Outcome.REFUTE, Outcome.STALE)
            if outcome == Outcome.REFUTE:
                # What the agent does: sign a record at a higher incarnation.
                self.own_inc = max(self.own_inc, inc) + 1
                self.own_seq += 1
                self.table.set_self(info(SELF, self.own_inc, self.own_seq), self.now)
                assert self.own_inc > inc
            return
        after = self.table.get(node)
        if before is None:
            assert outcome == Outcome.UNKNOWN and after is None
            return
        assert after is not None
        if b_status in (DEAD, LEFT):
            assert after.status == b_status and outcome == Outcome.IGNORED
        elif b_inc is not None and inc < b_inc:
            assert outcome == Outcome.STALE and after.status == b_status
        elif status == "dead":
            assert after.status == DEAD and after.incarnation == inc
        else:
            assert after.status == SUSPECT and after.incarnation == inc

    @rule(node=st.sampled_from(PEERS))
    def remove(self, node: str) -> None:
        self.table.remove(node)
        self.versions.pop(node, None)

    @invariant()
    def counts_and_digest_match_the_table(self) -> None:
        members = list(self.table)
        assert self.table.count_live() == sum(1 for m in members if m.status <= SUSPECT)
        assert self.table.count_dead() == sum(1 for m in members if m.status == DEAD)
        rows = [
            (m.node_id, m.info.record.incarnation, m.info.record.seq, m.status) for m in members
        ]
        assert self.table.digest() == rows
        assert list(self.table.digest_map()) == [m.node_id for m in members]

    @precondition(lambda self: len(self.table) > 1)
    @invariant()
    def consistent(self) -> None:
        me = self.table.get(SELF)
        assert me is not None and me.status == ALIVE, "we never accept a claim about ourselves"
        for member in self.table:
            assert member.incarnation >= member.info.record.incarnation or member.status >= DEAD
            if member.node_id != SELF:
                assert member.info.version == self.versions[member.node_id]


TestMemberTable = MemberTableMachine.TestCase
TestMemberTable.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_dead_node_reclaimed_after_reclaim_time() -> None:
    table = MemberTable(SELF, dead_reclaim_time=60.0)
    table.apply_record(info("a", 5, 9), 0.0)
    assert table.apply_claim("a", 5, "dead", 1.0) == Outcome.DEAD
    # A restarted node (counters back at zero) is stale until the reclaim time passed.
    assert table.apply_record(info("a", 0, 1), 30.0) == Outcome.STALE
    assert (table.count_live(), table.count_dead()) == (0, 1)  # no own record set here
    assert table.apply_record(info("a", 0, 1), 61.0) == Outcome.ALIVE
    member = table.get("a")
    assert member is not None and member.status == ALIVE and member.incarnation == 0
    assert (table.count_live(), table.count_dead()) == (1, 0)


def test_a_later_death_raises_the_dead_incarnation_so_old_records_stay_old() -> None:
    # "a" refuted once (inc 1) and then died; we had declared it dead at inc 0. A dead
    # claim at inc 1 raises our dead incarnation; its inc-1 record is then old news.
    table = MemberTable(SELF, dead_reclaim_time=300.0)
    table.apply_record(info("a", 0, 1), 0.0)
    assert table.apply_claim("a", 0, "dead", 1.0) == Outcome.DEAD
    assert table.apply_claim("a", 1, "suspect", 2.0) == Outcome.IGNORED
    assert table.apply_claim("a", 1, "dead", 3.0) == Outcome.IGNORED
    member = table.get("a")
    assert member is not None and (member.status, member.incarnation) == (DEAD, 1)
    assert table.apply_record(info("a", 1, 2), 4.0) != Outcome.ALIVE
    assert member.status == DEAD
    assert table.apply_claim("a", 0, "dead", 5.0) == Outcome.IGNORED and member.incarnation == 1
    # A real refutation after that death (inc 2) still brings it back.
    assert table.apply_record(info("a", 2, 3), 6.0) == Outcome.ALIVE


def test_leave_then_rejoin_with_higher_incarnation() -> None:
    table = MemberTable(SELF, dead_reclaim_time=0.0)
    assert table.apply_record(info("a", 0, 1), 0.0) == Outcome.JOINED
    assert table.apply_record(info("a", 1, 2, leaving=True), 1.0) == Outcome.LEFT
    assert table.apply_claim("a", 1, "suspect", 2.0) == Outcome.IGNORED
    assert table.apply_record(info("a", 2, 3), 3.0) == Outcome.ALIVE


def test_suspect_confirm_and_digest() -> None:
    table = MemberTable(SELF, dead_reclaim_time=0.0)
    table.set_self(info(SELF, 0, 1), 0.0)
    table.apply_record(info("a", 2, 7), 0.0)
    assert table.apply_claim("a", 2, "suspect", 1.0) == Outcome.SUSPECTED
    assert table.apply_claim("a", 2, "suspect", 1.0) == Outcome.CONFIRMED
    assert table.apply_claim("a", 3, "suspect", 1.0) == Outcome.SUSPECTED
    assert table.apply_record(info("a", 3, 8), 2.0) == Outcome.UPDATED  # same inc: still suspect
    assert table.apply_record(info("a", 4, 9), 2.0) == Outcome.ALIVE
    assert table.digest() == [(SELF, 0, 1, ALIVE), ("a", 4, 9, ALIVE)]
    assert table.count_live() == 2
