"""Transmit-limited broadcast queue (memberlist ``queue.go``).

Holds at most one pending update per member (a newer update about a node
replaces the older one) and retires an update once it has been sent
``retransmit_limit(λ, N)`` times. ``take`` fills half of a message with the
newest updates, whatever their count, and the rest with the updates sent the
fewest times (newest first among equals), as memberlist orders its queue.

The newest half is ours: with memberlist's order alone, a fresh update is sent
once, then waits behind every older update sent fewer times. After a mass join
every queue holds ~N such updates, so a fresh record went out once per node
per second instead of on every message, and its epidemic stalled (at 1,000
nodes 99 % of the nodes knew it after 33 gossip rounds instead of ~6). The
fewest-sent half keeps the backlog draining.
"""

from __future__ import annotations

import heapq
from typing import Generic, TypeVar

__all__ = ["TransmitLimitedQueue", "fresh_slots"]

T = TypeVar("T")


def fresh_slots(count: int) -> int:
    """Slots of a ``count``-update message that go to the newest updates."""
    return count // 2


class _Item(Generic[T]):
    __slots__ = ("key", "order", "payload", "transmits")

    def __init__(self, key: str, payload: T, order: int) -> None:
        self.key = key
        self.payload = payload
        self.order = order
        self.transmits = 0


class TransmitLimitedQueue(Generic[T]):
    """Pending updates keyed by the node they are about.

    One min-heap of ``-order`` per transmit count, with lazy deletion: ``take``
    costs O(count · log n) instead of sorting the whole queue on every message (at
    1,000 members the sort was the core's hottest spot). Orders are unique, so a
    heap holds plain ints (a push and a pop of an int cost ~0.4 µs, of an
    ``(-order, key)`` tuple ~1 µs) and ``_by_order`` finds the live item of one.
    """

    __slots__ = ("_by_order", "_heaps", "_items", "_order", "_stale")

    def __init__(self) -> None:
        self._items: dict[str, _Item[T]] = {}
        self._by_order: dict[int, _Item[T]] = {}
        self._heaps: list[list[int]] = [[]]
        self._order = 0
        self._stale = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def put(self, key: str, payload: T) -> None:
        """Queue ``payload`` about ``key``, invalidating anything queued about it."""
        self._order += 1
        order = self._order
        old = self._items.pop(key, None)
        if old is not None:
            self._stale += 1
            del self._by_order[old.order]
        self._items[key] = self._by_order[order] = _Item(key, payload, order)
        heapq.heappush(self._heaps[0], -order)
        if self._stale > 64 and self._stale > len(self._items):
            self._compact()

    def get(self, key: str) -> T | None:
        item = self._items.get(key)
        return None if item is None else item.payload

    def discard(self, key: str) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._stale += 1
            del self._by_order[old.order]

    def transmits(self, key: str) -> int | None:
        item = self._items.get(key)
        return None if item is None else item.transmits

    def _compact(self) -> None:
        """Rebuild the heaps from the live items (drops stale entries)."""
        heaps: list[list[int]] = [[] for _ in self._heaps]
        for item in self._items.values():
            heaps[item.transmits].append(-item.order)
        for heap in heaps:
            heapq.heapify(heap)
        self._heaps = heaps
        self._stale = 0

    def take(self, count: int, limit: int, skip: str | None = None) -> list[T]:
        """Up to ``count`` payloads to piggyback on one message: the ``fresh_slots(count)``
        newest first, then the fewest-sent (newest first among equals).

        Each returned payload's transmit counter goes up; payloads that reach
        ``limit`` are retired. ``skip`` leaves out the update about that key
        (no point telling a node about itself).
        """
        if not self._items or count <= 0:
            return []
        items = self._items
        chosen: list[tuple[str, _Item[T]]] = []
        if len(items) <= count + (skip is not None):
            # Everything fits on this message: take all, in queue order (their heap
            # entries turn stale and are pushed again at their new count below).
            chosen = [(k, it) for k, it in items.items() if k != skip][:count]
            self._stale += len(chosen)
            return self._advance(chosen, limit)
        # The newest: the dict keeps put order (put re-inserts a replaced key).
        fresh = fresh_slots(count)
        taken: set[str] = set()
        if fresh:
            for key in reversed(items):
                if key == skip:
                    continue
                chosen.append((key, items[key]))
                taken.add(key)
                if len(chosen) >= fresh:
                    break
            # Their heap entries turn stale once their count moves (``_advance``).
            self._stale += len(chosen)
        skipped: list[tuple[int, int, str]] = []
        by_order = self._by_order
        pop = heapq.heappop
        for sent, heap in enumerate(self._heaps):
            while heap and len(chosen) < count:
                neg = pop(heap)
                item = by_order.get(-neg)
                if item is None or item.transmits != sent:
                    self._stale = max(0, self._stale - 1)
                    continue
                key = item.key
                if key == skip or key in taken:
                    skipped.append((sent, neg, key))
                    continue
                chosen.append((key, item))
            if len(chosen) >= count:
                break
        for sent, neg, key in skipped:
            if key in taken:
                # Still listed at its old count: stale now (counted above).
                continue
            heapq.heappush(self._heaps[sent], neg)
        return self._advance(chosen, limit)

    def _advance(self, chosen: list[tuple[str, _Item[T]]], limit: int) -> list[T]:
        """Count one more transmission of each chosen item; retire those at ``limit``."""
        items = self._items
        heaps = self._heaps
        push = heapq.heappush
        out: list[T] = []
        for key, item in chosen:
            sent = item.transmits = item.transmits + 1
            out.append(item.payload)
            if sent >= limit:
                del items[key]
                del self._by_order[item.order]
                continue
            while len(heaps) <= sent:
                heaps.append([])
            push(heaps[sent], -item.order)
        return out
