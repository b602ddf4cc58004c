"""Lifeguard local health awareness (memberlist ``awareness.go``).

A score in ``[0, max_multiplier - 1]``: 0 is healthy. Missed nacks, failed probes
and having to refute a suspicion of ourselves raise it; successful probes lower
it. Our own probe timeouts and interval are multiplied by ``score + 1``.
"""

from __future__ import annotations

from protocols.membership.timing import awareness_scaled

__all__ = ["Awareness"]


class Awareness:
    __slots__ = ("_max", "score")

    def __init__(self, max_multiplier: int) -> None:
        assert max_multiplier >= 1
        self._max = max_multiplier
        self.score = 0

    def apply_delta(self, delta: int) -> int:
        """Add ``delta`` and clamp to ``[0, max_multiplier - 1]``; returns the new score."""
        self.score = min(self._max - 1, max(0, self.score + delta))
        return self.score

    def scale(self, timeout: float) -> float:
        return awareness_scaled(timeout, self.score)
