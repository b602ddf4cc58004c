"""Table tests of every timing formula (values checked by hand / against memberlist)."""

from __future__ import annotations

import math

import pytest

from protocols.membership import timing


@pytest.mark.parametrize(
    ("mult", "n", "expected"),
    [(4, 0, 0), (4, 1, 4), (4, 9, 4), (4, 10, 8), (4, 99, 8), (4, 100, 12), (4, 200, 12),
     (4, 1000, 16), (4, 10_000, 20), (2, 1000, 8)],
)  # fmt: skip
def test_retransmit_limit(mult: int, n: int, expected: int) -> None:
    assert timing.retransmit_limit(mult, n) == expected


@pytest.mark.parametrize(
    ("mult", "n", "interval", "expected"),
    [(4, 0, 1.0, 4.0), (4, 1, 1.0, 4.0), (4, 5, 1.0, 4.0), (4, 10, 1.0, 4.0),
     (4, 100, 1.0, 8.0), (4, 1000, 1.0, 12.0), (4, 200, 1.0, 4 * math.log10(200)),
     (6, 1000, 5.0, 90.0), (3, 10_000, 0.5, 6.0)],
)  # fmt: skip
def test_suspicion_min_timeout(mult: int, n: int, interval: float, expected: float) -> None:
    assert timing.suspicion_min_timeout(mult, n, interval) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("mult", "min_t", "expected"), [(6, 4.0, 24.0), (1, 2.5, 2.5), (6, 0.0, 0.0)]
)
def test_suspicion_max_timeout(mult: int, min_t: float, expected: float) -> None:
    assert timing.suspicion_max_timeout(mult, min_t) == expected


@pytest.mark.parametrize(
    ("mult", "n", "expected"),
    [(4, 1, 0), (4, 3, 0), (4, 4, 2), (4, 200, 2), (6, 5, 0), (6, 6, 4), (2, 100, 0), (1, 100, 0)],
)
def test_suspicion_confirmations_needed(mult: int, n: int, expected: int) -> None:
    assert timing.suspicion_confirmations_needed(mult, n) == expected


# memberlist suspicion_test.go TestSuspicion_remainingSuspicionTime (k=3, min=2s,
# max=30s) gives the *remaining* time after an elapsed time: 30s, 16s-2s, 7.81s-3s, 2s.
@pytest.mark.parametrize(
    ("c", "k", "expected"),
    [(0, 3, 30.0), (1, 3, 16.0), (2, 3, 7.81), (3, 3, 2.0), (4, 3, 2.0), (0, 0, 2.0),
     (5, 0, 2.0), (1, 1, 2.0), (0, 1, 30.0)],
)  # fmt: skip
def test_suspicion_timeout(c: int, k: int, expected: float) -> None:
    assert timing.suspicion_timeout(c, k, 2.0, 30.0) == pytest.approx(expected)


def test_suspicion_timeout_shrinks_monotonically() -> None:
    values = [timing.suspicion_timeout(c, 4, 9.2, 55.2) for c in range(7)]
    assert values == sorted(values, reverse=True)
    assert values[0] == pytest.approx(55.2) and values[4] == pytest.approx(9.2)


@pytest.mark.parametrize(
    ("timeout", "score", "expected"), [(0.5, 0, 0.5), (0.5, 1, 1.0), (0.5, 7, 4.0), (1.0, 3, 4.0)]
)
def test_awareness_scaled(timeout: float, score: int, expected: float) -> None:
    assert timing.awareness_scaled(timeout, score) == expected


@pytest.mark.parametrize(
    ("expected_nacks", "nacks", "delta"), [(0, 0, 1), (3, 3, 0), (3, 1, 2), (3, 0, 3), (1, 2, 0)]
)
def test_probe_failure_delta(expected_nacks: int, nacks: int, delta: int) -> None:
    assert timing.probe_failure_delta(expected_nacks, nacks) == delta


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, 30.0), (32, 30.0), (33, 60.0), (64, 60.0), (65, 90.0), (200, 120.0), (1000, 180.0),
     (10_000, 300.0)],
)  # fmt: skip
def test_push_pull_scale(n: int, expected: float) -> None:
    assert timing.push_pull_scale(30.0, n) == pytest.approx(expected)
