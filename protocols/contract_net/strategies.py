"""Award strategies: rank the eligible bids of a round, best first.

A strategy is a pure function ``(bids) -> ranked list``; the first is the winner,
the rest are the ranked backups. Every strategy ends its sort key with the
bidder's node id, so equal bids always rank the same way (no dict or set order).

Bids carry the bidder's load *at bid time*, which lags: awards this requester
made after sending the cfp are not in it. ``Bid.recent`` counts those awards
and ``effective_load`` adds them, so a burst of auctions spreads over the
executors instead of all landing on the one that looked idle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from protocols.errors import LocalProtocolError

__all__ = [
    "FIRST_IDLE",
    "STRATEGIES",
    "Bid",
    "Strategy",
    "earliest_eta",
    "least_loaded",
    "lowest_cost",
    "make_weighted",
    "rank",
    "weighted",
]


@dataclass(frozen=True, slots=True)
class Bid:
    bidder: str
    price: float
    eta: float
    running: int
    capacity: int
    confidence: float = 1.0
    recent: int = 0  # awards we made to this bidder that its bid could not include
    #: Final tie-break, set by the requester per task (a hash of task id and bidder):
    #: deterministic, yet not always in favour of the same node id.
    tiebreak: str = ""

    @property
    def effective_load(self) -> float:
        return (self.running + self.recent) / max(1, self.capacity)


Strategy = Callable[[Sequence[Bid]], list[Bid]]


def least_loaded(bids: Sequence[Bid]) -> list[Bid]:
    """Lowest effective load; then price, ETA, per-task tie-break, node id."""
    return sorted(bids, key=lambda b: (b.effective_load, b.price, b.eta, b.tiebreak, b.bidder))


def lowest_cost(bids: Sequence[Bid]) -> list[Bid]:
    """Lowest price; then effective load, ETA, node id."""
    return sorted(bids, key=lambda b: (b.price, b.effective_load, b.eta, b.tiebreak, b.bidder))


def earliest_eta(bids: Sequence[Bid]) -> list[Bid]:
    """Earliest ETA; then effective load, price, node id."""
    return sorted(bids, key=lambda b: (b.eta, b.effective_load, b.price, b.tiebreak, b.bidder))


def make_weighted(
    load: float = 1.0, price: float = 1.0, eta: float = 1.0, confidence: float = 0.5
) -> Strategy:
    """A weighted sum of each criterion normalised by the round's maximum (lower wins)."""

    def _weighted(bids: Sequence[Bid]) -> list[Bid]:
        if not bids:
            return []
        max_load = max(b.effective_load for b in bids) or 1.0
        max_price = max(b.price for b in bids) or 1.0
        max_eta = max(b.eta for b in bids) or 1.0

        def score(b: Bid) -> float:
            return (
                load * b.effective_load / max_load
                + price * b.price / max_price
                + eta * b.eta / max_eta
                - confidence * b.confidence
            )

        return sorted(bids, key=lambda b: (score(b), b.tiebreak, b.bidder))

    return _weighted


weighted: Strategy = make_weighted()

#: Least-loaded, but the auction closes at the first bid from an idle bidder (nothing
#: running, within budget) instead of waiting for the others: the round's latency is
#: the fastest idle bidder's, at the cost of the backups whose bids came later (a
#: failed winner then costs a new auction) and of the load tie-break among idle nodes.
FIRST_IDLE = "first_idle"

STRATEGIES: dict[str, Strategy] = {
    "least_loaded": least_loaded,
    FIRST_IDLE: least_loaded,
    "lowest_cost": lowest_cost,
    "earliest_eta": earliest_eta,
    "weighted": weighted,
}


def rank(
    bids: Sequence[Bid], strategy: str, registry: dict[str, Strategy] | None = None
) -> list[Bid]:
    """Rank ``bids`` with the named strategy (``LocalProtocolError`` if unknown)."""
    table = STRATEGIES if registry is None else registry
    try:
        fn = table[strategy]
    except KeyError:
        raise LocalProtocolError(f"unknown award strategy {strategy!r}") from None
    return fn(bids)
