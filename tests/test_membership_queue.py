"""The heap-based transmit-limited queue behaves exactly like the simple sorted model."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.membership.queue import TransmitLimitedQueue, fresh_slots


class SortedModel:
    """The reference: the ``fresh_slots`` newest, then the rest sorted by (transmits, -order)."""

    def __init__(self) -> None:
        self.items: dict[str, list[int]] = {}  # key -> [order, transmits, payload]
        self.order = 0

    def put(self, key: str, payload: int) -> None:
        self.order += 1
        self.items.pop(key, None)
        self.items[key] = [self.order, 0, payload]

    def discard(self, key: str) -> None:
        self.items.pop(key, None)

    def take(self, count: int, limit: int, skip: str | None) -> list[int]:
        if len(self.items) <= count + (skip is not None):  # all fit: queue order
            chosen = [(k, v) for k, v in self.items.items() if k != skip][:count]
        else:
            newest = sorted(self.items.items(), key=lambda kv: -kv[1][0])
            chosen = [(k, v) for k, v in newest if k != skip][: fresh_slots(count)]
            taken = {k for k, _ in chosen}
            ranked = sorted(self.items.items(), key=lambda kv: (kv[1][1], -kv[1][0]))
            chosen += [(k, v) for k, v in ranked if k != skip and k not in taken][
                : count - len(chosen)
            ]
        out = []
        for key, v in chosen:
            v[1] += 1
            out.append(v[2])
            if v[1] >= limit:
                del self.items[key]
        return out


keys = st.sampled_from("abcdefghij")
ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), keys, st.integers(0, 1000)),
        st.tuples(st.just("discard"), keys, st.just(0)),
        st.tuples(st.just("take"), st.one_of(st.none(), keys), st.integers(0, 5)),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(ops=ops, limit=st.integers(1, 6))
def test_queue_matches_the_sorted_model(ops: list[tuple[str, str | None, int]], limit: int) -> None:
    q: TransmitLimitedQueue[int] = TransmitLimitedQueue()
    model = SortedModel()
    for op, key, n in ops:
        if op == "put":
            assert key is not None
            q.put(key, n)
            model.put(key, n)
        elif op == "discard":
            assert key is not None
            q.discard(key)
            model.discard(key)
        else:
            assert q.take(n, limit, skip=key) == model.take(n, limit, key)
        assert len(q) == len(model.items)
        for k, (_, transmits, _) in model.items.items():
            assert q.transmits(k) == transmits


def test_a_fresh_update_rides_every_message_despite_a_backlog() -> None:
    """Regression (1,000-node convergence): after a mass join every queue holds ~N
    updates sent a few times; a fresh record must not wait behind them once sent."""
    q: TransmitLimitedQueue[str] = TransmitLimitedQueue()
    for i in range(500):
        q.put(f"old{i}", f"old{i}")
    for _ in range(200):  # every update of the backlog has been sent once or more
        q.take(8, 12)
    q.put("marker", "marker")
    sent = sum("marker" in q.take(8, 12) for _ in range(12))
    assert sent == 12 and "marker" not in q
    # The backlog still drains: the other half of each message goes to the fewest-sent.
    assert all(q.transmits(f"old{i}") is None or q.transmits(f"old{i}") >= 1 for i in range(500))
