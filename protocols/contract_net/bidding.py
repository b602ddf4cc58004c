"""Executor bidding and requester bidder selection (pure functions).

* ``select_bidders``: which candidates a cfp invites. Dead nodes, ourselves and
  excluded nodes (those that already failed this task) are dropped; the rest
  are sorted by node id (so the source's order does not matter) and shuffled
  with the injected generator, then cut at ``cap``: every eligible node gets
  its turn, not always the same 16.
* ``default_bid``: a pluggable ``BidFunction``. It refuses when full (with a
  ``retry_after``) and otherwise prices from the declared cost, the current
  load and the local queue.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from protocols.contract_net.messages import Cfp
from protocols.contract_net.task import Offer

__all__ = [
    "DEFAULT_BIDDER_CAP",
    "BidFunction",
    "BidSituation",
    "Candidate",
    "CandidateSource",
    "Quote",
    "Refusal",
    "default_bid",
    "select_bidders",
]

DEFAULT_BIDDER_CAP = 16


class Candidate(Protocol):
    """What the capability index says about one node (only what we need)."""

    @property
    def node_id(self) -> str: ...

    @property
    def alive(self) -> bool: ...


class CandidateSource(Protocol):
    """The capability index: alive-or-not nodes offering ``capability`` at ``version_spec``,
    in a deterministic order."""

    def find(self, capability: str, version_spec: str) -> Sequence[Candidate]: ...


def select_bidders(
    candidates: Iterable[Candidate],
    rng: random.Random,
    *,
    cap: int = DEFAULT_BIDDER_CAP,
    exclude: Iterable[str] = (),
) -> list[str]:
    """Up to ``cap`` alive candidate ids, a fair seeded sample."""
    banned = set(exclude)
    ids = sorted({c.node_id for c in candidates if c.alive and c.node_id not in banned})
    rng.shuffle(ids)
    return ids[:cap]


@dataclass(frozen=True, slots=True)
class BidSituation:
    """What a bid function sees: the cfp, the offer, our local load."""

    cfp: Cfp
    offer: Offer
    running: int  # tasks of this capability we hold (claiming or running)
    queued: int  # of those, assigned but not yet reported progress
    now: float


@dataclass(frozen=True, slots=True)
class Quote:
    price: float
    eta: float
    confidence: float = 1.0
    valid_for: float = 5.0


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    retry_after: float | None = None


BidFunction = Callable[[BidSituation], Quote | Refusal]


def default_bid(s: BidSituation) -> Quote | Refusal:
    """Refuse when full; price = cost × (1 + load) + 10% of cost per queued task."""
    cap = s.offer.max_concurrency
    if s.running >= cap:
        return Refusal("full", retry_after=s.offer.eta)
    if s.cfp.deadline <= s.now + s.offer.eta:
        return Refusal("deadline")
    load = s.running / cap
    price = s.offer.cost * (1.0 + load) + 0.1 * s.offer.cost * s.queued
    if s.cfp.budget is not None and price > s.cfp.budget:
        return Refusal("budget")
    eta = s.offer.eta * (1.0 + s.queued / cap)
    return Quote(price=price, eta=eta, confidence=1.0 - 0.5 * load)
