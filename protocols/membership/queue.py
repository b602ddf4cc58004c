"""Transmit-limited broadcast queue (memberlist ``queue.go``).

Holds at most one pending update per member (a newer update about a node
replaces the older one). ``take`` hands out the updates sent the fewest times
first (newest first among equals) and retires an update once it has been sent
``retransmit_limit(λ, N)`` times.
"""

from __future__ import annotations

import heapq
from typing import Generic, TypeVar

__all__ = ["TransmitLimitedQueue"]

T = TypeVar("T")


class _Item(Generic[T]):
    __slots__ = ("order", "payload", "transmits")

    def __init__(self, payload: T, order: int) -> None:
        self.payload = payload
        self.order = order
        self.transmits = 0


class TransmitLimitedQueue(Generic[T]):
    """Pending updates keyed by the node they are about.

    One min-heap of ``(-order, key)`` per transmit count, with lazy deletion:
    ``take`` costs O(count · log n) instead of sorting the whole queue on every
    message (at 1,000 members the sort was the core's hottest spot).
    """

    __slots__ = ("_heaps", "_items", "_order", "_stale")

    def __init__(self) -> None:
        self._items: dict[str, _Item[T]] = {}
        self._heaps: list[list[tuple[int, str]]] = [[]]
        self._order = 0
        self._stale = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def put(self, key: str, payload: T) -> None:
        """Queue ``payload`` about ``key``, invalidating anything queued about it."""
        self._order += 1
        if self._items.pop(key, None) is not None:
            self._stale += 1
        self._items[key] = _Item(payload, self._order)
        heapq.heappush(self._heaps[0], (-self._order, key))
        if self._stale > 64 and self._stale > len(self._items):
            self._compact()

    def get(self, key: str) -> T | None:
        item = self._items.get(key)
        return None if item is None else item.payload

    def discard(self, key: str) -> None:
        if self._items.pop(key, None) is not None:
            self._stale += 1

    def transmits(self, key: str) -> int | None:
        item = self._items.get(key)
        return None if item is None else item.transmits

    def _compact(self) -> None:
        """Rebuild the heaps from the live items (drops stale entries)."""
        heaps: list[list[tuple[int, str]]] = [[] for _ in self._heaps]
        for key, item in self._items.items():
            heaps[item.transmits].append((-item.order, key))
        for heap in heaps:
            heapq.heapify(heap)
        self._heaps = heaps
        self._stale = 0

    def take(self, count: int, limit: int, skip: str | None = None) -> list[T]:
        """Up to ``count`` payloads to piggyback on one message: fewest-sent first,
        newest first among equals.

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
        skipped: tuple[int, int, str] | None = None
        for sent, heap in enumerate(self._heaps):
            while heap and len(chosen) < count:
                neg, key = heapq.heappop(heap)
                item = items.get(key)
                if item is None or item.order != -neg or item.transmits != sent:
                    self._stale = max(0, self._stale - 1)
                    continue
                if key == skip:
                    skipped = (sent, neg, key)
                    continue
                chosen.append((key, item))
            if len(chosen) >= count:
                break
        if skipped is not None:
            heapq.heappush(self._heaps[skipped[0]], (skipped[1], skipped[2]))
        return self._advance(chosen, limit)

    def _advance(self, chosen: list[tuple[str, _Item[T]]], limit: int) -> list[T]:
        """Count one more transmission of each chosen item; retire those at ``limit``."""
        items = self._items
        out: list[T] = []
        for key, item in chosen:
            item.transmits += 1
            out.append(item.payload)
            if item.transmits >= limit:
                del items[key]
                continue
            while len(self._heaps) <= item.transmits:
                self._heaps.append([])
            heapq.heappush(self._heaps[item.transmits], (-item.order, key))
        return out
