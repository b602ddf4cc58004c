"""Requester-side state of one task (lean: heavy fields are cleared once awarded).

The transitions are applied by ``mesh.contracts.ContractAgent`` through
``REQUESTER_TABLE``; this record only holds what a live task needs.
"""

from __future__ import annotations

from typing import Any

from protocols.contract_net._state import ReqState
from protocols.contract_net.messages import Award
from protocols.contract_net.strategies import Bid
from protocols.contract_net.task import TaskSpec

__all__ = ["RequesterTask"]


class RequesterTask:
    """Requester state of one task: lean, heavy fields cleared once awarded."""

    __slots__ = (
        "attempts",
        "auctions",
        "backups",
        "bids",
        "busy_rounds",
        "busy_wait",
        "cfp_at",
        "deadline",
        "epoch",
        "excluded",
        "full",
        "holder",
        "invited",
        "pending",
        "refused",
        "round",
        "spec",
        "state",
        "task_id",
        "timer_at",
        "unchecked",
        "waiting",
    )

    def __init__(self, task_id: str, spec: TaskSpec, deadline: float) -> None:
        self.task_id = task_id
        self.spec = spec
        self.deadline = deadline
        self.state = ReqState.AUCTION
        self.round = 0
        self.auctions = 0
        self.epoch = 0
        self.holder = ""
        self.backups: list[str] = []
        self.invited: tuple[str, ...] = ()
        self.bids: dict[str, Bid] = {}
        self.refused: dict[str, str] = {}
        self.cfp_at = 0.0
        self.timer_at = 0.0
        self.attempts: list[str] = []
        self.excluded: list[str] = []
        self.pending: tuple[str, str] | None = None  # (previous holder, reason) for a new auction
        #: bidder -> (opened frame, endpoint) of bids whose signature is not checked yet
        #: (checked when the bid wins or its bidder is promoted from backup)
        self.unchecked: dict[str, tuple[Any, str]] = {}
        #: rounds in which every answer was "full" (they do not count as auctions), and
        #: the shortest ``retry_after`` of the current round's "full" refusals
        self.busy_rounds = 0
        self.busy_wait: float | None = None
        self.waiting = False  # between two rounds, after a busy one
        #: bidders that answered "full" since the last wait: left out of the next round
        #: while other candidates have not been asked yet
        self.full: list[str] = []

    def award(self, *, with_input: bool) -> Award:
        spec = self.spec
        return Award(
            task_id=self.task_id,
            round=self.round,
            epoch=self.epoch,
            winner=self.holder,
            backups=list(self.backups),
            capability=spec.capability,
            semantics=spec.semantics,
            risk=spec.risk,
            deadline=self.deadline,
            lease=spec.lease,
            has_input=with_input,
            input=spec.input if with_input else None,
        )
