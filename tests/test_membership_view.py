"""The view's suspicions: the earliest deadline it keeps (asked after every event of
a node) is always the one a scan of the open suspicions gives, and expiry ends
exactly the suspicions whose deadline passed, in the order they began."""

from __future__ import annotations

import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from test_membership_state import info

from protocols.membership.config import MembershipConfig
from protocols.membership.messages import Claim
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
