"""What a requester submits: ``TaskSpec``; what the executor advertises: ``Offer``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from protocols.contract_net.messages import Semantics
from protocols.errors import LocalProtocolError

__all__ = ["STRAGGLER_FACTOR", "Offer", "TaskSpec"]

#: After the first bid, an auction waits at least this many times that bid's delay
#: (from the cfp) for the others: the grace scales with the network it runs on.
STRAGGLER_FACTOR = 3.0


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A unit of work to hand to a peer.

    ``task_id`` is the idempotency key handed to the handler; leave it ``None``
    and the agent draws one from its injected random generator.
    Durations are seconds; ``deadline`` is absolute (the same clock as ``now``),
    or ``None`` for ``now + timeout`` at submission.

    An auction closes when every invited bidder has answered, at ``reply_by``
    (``reply_timeout`` after the cfp), or once the stragglers have had their chance:
    ``max(bid_grace, STRAGGLER_FACTOR x the first bid's delay)`` after the first bid
    (a lost frame or a dead, not yet detected, bidder then costs tens of
    milliseconds, not the whole reply window). ``bid_grace=None`` waits for every
    answer or ``reply_by``.
    """

    capability: str
    input: Any = None
    version_spec: str = "*"
    strategy: str = "least_loaded"
    risk: str = "low"
    budget: float | None = None
    semantics: Semantics = "at-least-once"
    constraints: dict[str, Any] = field(default_factory=dict)
    reply_timeout: float = 1.0
    bid_grace: float | None = 0.05
    lease: float = 6.0
    timeout: float = 120.0
    deadline: float | None = None
    max_auctions: int = 3
    task_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.capability, str) or not 1 <= len(self.capability) <= 128:
            raise LocalProtocolError("TaskSpec.capability: 1 to 128 characters")
        texts = (("version_spec", self.version_spec, 64), ("risk", self.risk, 64))
        for name, text, most in texts:
            if not isinstance(text, str) or len(text) > most:
                raise LocalProtocolError(f"TaskSpec.{name}: text of at most {most} characters")
        if self.task_id is not None and (
            not isinstance(self.task_id, str) or not 1 <= len(self.task_id) <= 64
        ):
            raise LocalProtocolError("TaskSpec.task_id: 1 to 64 characters, or None")
        if self.semantics not in ("at-least-once", "at-most-once"):
            raise LocalProtocolError(f"unknown semantics {self.semantics!r}")
        numbers = ("reply_timeout", "lease", "timeout", "bid_grace", "budget", "deadline")
        for name in numbers:  # a string or None where a number goes named the option
            value = getattr(self, name)
            optional = name in ("bid_grace", "budget", "deadline")
            if not (_is_number(value) or (optional and value is None)):
                kind = "a number or None" if optional else "a number"
                raise LocalProtocolError(f"TaskSpec.{name} must be {kind}, not {value!r}")
        if not isinstance(self.max_auctions, int) or isinstance(self.max_auctions, bool):
            raise LocalProtocolError(
                f"TaskSpec.max_auctions must be an integer, not {self.max_auctions!r}"
            )
        for name in ("reply_timeout", "lease", "timeout"):
            value = getattr(self, name)
            if not 0 < value < math.inf:  # also false for NaN
                raise LocalProtocolError(f"TaskSpec.{name} must be a positive number, not {value}")
        if self.bid_grace is not None and not 0 <= self.bid_grace < math.inf:
            raise LocalProtocolError("TaskSpec.bid_grace must be >= 0 or None")
        for name in ("budget", "deadline"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise LocalProtocolError(f"TaskSpec.{name} must be a finite number or None")
        if self.max_auctions < 1:
            raise LocalProtocolError("TaskSpec.max_auctions must be >= 1")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Offer:
    """A capability this node executes: how many at once and its declared cost."""

    capability: str
    max_concurrency: int = 4
    cost: float = 1.0
    eta: float = 1.0

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise LocalProtocolError("Offer.max_concurrency must be >= 1")
