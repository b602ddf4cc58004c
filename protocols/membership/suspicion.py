"""Lifeguard suspicion with a shrinking timeout (memberlist ``suspicion.go``).

A suspicion starts with the maximum timeout. Every *independent* confirmation
(another node that suspects the same member at the same incarnation) shrinks it
along ``suspicion_timeout``; after K confirmations it is the minimum.
"""

from __future__ import annotations

from protocols.membership.timing import suspicion_timeout

__all__ = ["Suspicion"]


class Suspicion:
    """One open suspicion of one member. The confirmers are a short list (≤ K + 1)."""

    __slots__ = (
        "_confirmers",
        "_deadline",
        "incarnation",
        "k",
        "max_timeout",
        "min_timeout",
        "start",
    )

    def __init__(
        self,
        origin: str,
        incarnation: int,
        k: int,
        min_timeout: float,
        max_timeout: float,
        now: float,
    ) -> None:
        self.incarnation = incarnation
        self.k = k
        self.min_timeout = min_timeout
        self.max_timeout = max_timeout
        self.start = now
        # The origin is not a confirmation, but a repeat of it must not count either.
        self._confirmers: list[str] = [origin]
        # Asked after every event of the node (its next timer): computed once per change.
        self._deadline = now + self.timeout()

    @property
    def confirmations(self) -> int:
        return len(self._confirmers) - 1

    def confirm(self, by: str) -> bool:
        """Record an independent confirmation; False for a repeat or beyond K."""
        if self.confirmations >= self.k or by in self._confirmers:
            return False
        self._confirmers.append(by)
        self._deadline = self.start + self.timeout()
        return True

    def timeout(self) -> float:
        return suspicion_timeout(self.confirmations, self.k, self.min_timeout, self.max_timeout)

    def deadline(self) -> float:
        """``start + timeout()``, kept up to date by ``confirm``."""
        return self._deadline
