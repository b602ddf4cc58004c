"""Pure timing formulas of SWIM, Lifeguard and dissemination (memberlist's ``util.go``,
``suspicion.go`` and ``awareness.go``). Each has a table test in
``tests/test_membership_timing.py``.
"""

from __future__ import annotations

import math

__all__ = [
    "awareness_scaled",
    "probe_failure_delta",
    "push_pull_scale",
    "retransmit_limit",
    "suspicion_confirmations_needed",
    "suspicion_max_timeout",
    "suspicion_min_timeout",
    "suspicion_timeout",
]

#: Clusters up to this size push-pull at the configured interval (memberlist).
PUSH_PULL_SCALE_THRESHOLD = 32


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """Times one update is piggybacked: ``retransmit_mult * ceil(log10(n + 1))``."""
    return retransmit_mult * math.ceil(math.log10(max(0, n) + 1))


def suspicion_min_timeout(suspicion_mult: int, n: int, probe_interval: float) -> float:
    """``suspicion_mult * max(1, log10(max(1, n))) * probe_interval`` seconds.

    The ``max(1, …)`` keeps small clusters (n < 10) from a near-zero timeout.
    """
    node_scale = max(1.0, math.log10(max(1.0, float(n))))
    return suspicion_mult * node_scale * probe_interval


def suspicion_max_timeout(suspicion_max_timeout_mult: int, min_timeout: float) -> float:
    """Lifeguard: a fresh suspicion waits ``suspicion_max_timeout_mult`` times the minimum."""
    return suspicion_max_timeout_mult * min_timeout


def suspicion_confirmations_needed(suspicion_mult: int, n: int) -> int:
    """Independent confirmations that shrink the timeout to its minimum (*K*).

    ``suspicion_mult - 2``, or 0 when the cluster is too small to provide them
    (fewer than K other members besides us and the suspect).
    """
    k = suspicion_mult - 2
    return 0 if n - 2 < k else max(0, k)


def suspicion_timeout(confirmations: int, k: int, min_timeout: float, max_timeout: float) -> float:
    """Total suspicion timeout after ``confirmations`` independent confirmations.

    ``max(min, max - (max - min) * log(C + 1) / log(K + 1))``, truncated to the
    millisecond as memberlist does. With K = 0 the timeout is the minimum.
    """
    if k < 1:
        return min_timeout
    frac = math.log(confirmations + 1.0) / math.log(k + 1.0)
    raw = max_timeout - frac * (max_timeout - min_timeout)
    return max(min_timeout, math.floor(1000.0 * raw) / 1000.0)


def awareness_scaled(timeout: float, score: int) -> float:
    """Lifeguard local health: ``timeout * (score + 1)``."""
    return timeout * (score + 1)


def probe_failure_delta(expected_nacks: int, nacks: int) -> int:
    """Awareness change after a failed probe (memberlist ``probeNode``).

    Without indirect peers a failed probe costs 1. With them, every missing nack
    costs 1: peers that did not even answer suggest that *we* are the slow one.
    """
    if expected_nacks > 0:
        return max(0, expected_nacks - nacks)
    return 1


def settle_time(
    push_pull_interval: float,
    suspicion_mult: int,
    suspicion_max_timeout_mult: int,
    probe_interval: float,
    n: int,
) -> float:
    """How long after the last heal every live member's view can take to settle.

    The slow case: a node missed a death's gossip (partitioned, clogged). It learns
    the death from a push-pull, as a suspicion (a remote "dead" only makes us
    suspect, as memberlist's mergeState), which then runs to Lifeguard's longest
    timeout when no second claim confirms it. Two scaled push-pull periods (the
    first peer may have missed the death too) plus that longest suspicion.
    """
    min_t = suspicion_min_timeout(suspicion_mult, n, probe_interval)
    longest = suspicion_max_timeout(suspicion_max_timeout_mult, min_t)
    return 2 * push_pull_scale(push_pull_interval, n) + longest


def push_pull_scale(interval: float, n: int) -> float:
    """Push-pull period for ``n`` members: grows with log2(n) above 32 members."""
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval
    multiplier = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1.0
    return interval * multiplier
