"""The view's suspicions: the earliest deadline it keeps (asked after every event of
a node) is always the one a scan of the open suspicions gives, and expiry ends
exactly the suspicions whose deadline passed, in the order they began."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from test_membership_state import info

from protocols.membership.config import MembershipConfig
from protocols.membership.messages import Claim
from protocols.membership.state import ALIVE, DEAD, LEFT, SUSPECT, MemberTable, Outcome
from protocols.membership.view import MembershipView

SELF = "self"
PEERS = ("a", "b", "c", "d", "e", "f")
WITNESSES = ("w1", "w2", "w3", "w4", "w5")


class ViewSuspicions(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.view = MembershipView(SELF, MembershipConfig(), random.Random(1))
        self.view.install_own(info(SELF, 0, 0), self.now)
        self.seq = dict.fromkeys(PEERS, 0)
        for peer in (*PEERS, *WITNESSES):  # enough members for K > 0
            self.view.apply_record(info(peer, 0, 0), self.now)

    @rule(dt=st.floats(min_value=0.0, max_value=20.0))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule(
        node=st.sampled_from(PEERS),
        inc=st.integers(0, 3),
        status=st.sampled_from(("suspect", "dead")),
        by=st.sampled_from(WITNESSES),
    )
    def claim(self, node: str, inc: int, status: str, by: str) -> None:
        self.view.apply_claim(Claim(node=node, incarnation=inc, status=status, by=by), self.now)

    @rule(node=st.sampled_from(PEERS), inc=st.integers(0, 4))
    def record(self, node: str, inc: int) -> None:
        """A refutation (higher incarnation) ends a suspicion; others change nothing."""
        self.seq[node] += 1
        self.view.apply_record(info(node, inc, self.seq[node]), self.now)

    @rule()
    def expire(self) -> None:
        open_before = list(self.view.suspicions.items())
        claims = self.view.expired_suspicions(self.now)
        due = [nid for nid, s in open_before if s.start + s.timeout() <= self.now]
        assert [c.node for c in claims] == due
        assert all(c.status == "dead" and c.by == SELF for c in claims)
        assert not set(due) & set(self.view.suspicions)

    @invariant()
    def earliest_deadline_is_kept(self) -> None:
        scan = [s.start + s.timeout() for s in self.view.suspicions.values()]
        assert self.view.next_deadline() == (min(scan) if scan else None)


TestViewSuspicions = ViewSuspicions.TestCase
TestViewSuspicions.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)


@settings(max_examples=300, deadline=None)
@given(
    held=st.sampled_from((None, ALIVE, SUSPECT, DEAD, LEFT)),
    held_inc=st.integers(0, 3),
    inc=st.integers(0, 4),
    status=st.sampled_from(("suspect", "dead")),
)
def test_a_skipped_digest_status_would_have_changed_nothing(
    held: int | None, held_inc: int, inc: int, status: str
) -> None:
    """digest_claims skips a peer's status when the table would ignore it (a push-pull
    repeats every dead member): applied anyway, it leaves the member as it was."""
    table = MemberTable(SELF, dead_reclaim_time=0.0)
    if held is not None:
        table.apply_record(info("a", held_inc, 0, leaving=held == LEFT), 0.0)
        if held in (SUSPECT, DEAD):
            table.apply_claim("a", held_inc, "suspect" if held == SUSPECT else "dead", 0.0)
    member = table.get("a")
    assert (member.status if member else None) == held
    before = (member.status, member.incarnation, member.since) if member else None
    if table.claim_changes("a", inc, status):
        return
    outcome = table.apply_claim("a", inc, status, 5.0)
    assert outcome in (Outcome.IGNORED, Outcome.UNKNOWN, Outcome.STALE)
    after = table.get("a")
    assert ((after.status, after.incarnation, after.since) if after else None) == before


def test_digest_claims_keep_what_can_change_the_view() -> None:
    view = MembershipView(SELF, MembershipConfig(), random.Random(1))
    view.install_own(info(SELF, 0, 0), 0.0)
    for peer, inc in (("a", 2), ("b", 0), ("c", 0), ("d", 1)):
        view.apply_record(info(peer, inc, 0), 0.0)
    view.apply_claim(Claim(node="c", incarnation=0, status="dead", by="w1"), 0.0)
    view.apply_claim(Claim(node="d", incarnation=1, status="dead", by="w1"), 0.0)
    digest = [
        ("a", 1, 0, SUSPECT),  # older than our incarnation 2: ignored
        ("b", 0, 0, DEAD),  # alive here: becomes a suspicion
        ("c", 0, 0, DEAD),  # dead here at the same incarnation: nothing new
        ("d", 3, 0, DEAD),  # died at a later incarnation: raises ours
        ("x", 0, 0, DEAD),  # unknown here
        (SELF, 0, 0, SUSPECT),  # about us: we must refute
    ]
    claims = view.digest_claims(digest, "peer")
    assert [(c.node, c.incarnation, c.status) for c in claims] == [
        ("b", 0, "suspect"),
        ("d", 3, "dead"),
        (SELF, 0, "suspect"),
    ]
