"""Transmit-limited broadcast queue (memberlist ``queue.go``).

Holds at most one pending update per member (a newer update about a node
replaces the older one). ``take`` hands out the updates sent the fewest times
first (newest first among equals) and retires an update once it has been sent
``retransmit_limit(λ, N)`` times.
"""

from __future__ import annotations

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
    """Pending updates keyed by the node they are about."""

    __slots__ = ("_items", "_order")

    def __init__(self) -> None:
        self._items: dict[str, _Item[T]] = {}
        self._order = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def put(self, key: str, payload: T) -> None:
        """Queue ``payload`` about ``key``, invalidating anything queued about it."""
        self._order += 1
        self._items.pop(key, None)
        self._items[key] = _Item(payload, self._order)

    def get(self, key: str) -> T | None:
        item = self._items.get(key)
        return None if item is None else item.payload

    def discard(self, key: str) -> None:
        self._items.pop(key, None)

    def transmits(self, key: str) -> int | None:
        item = self._items.get(key)
        return None if item is None else item.transmits

    def take(self, count: int, limit: int, skip: str | None = None) -> list[T]:
        """Up to ``count`` payloads to piggyback on one message, fewest-sent first.

        Each returned payload's transmit counter goes up; payloads that reach
        ``limit`` are retired. ``skip`` leaves out the update about that key
        (no point telling a node about itself).
        """
        if not self._items or count <= 0:
            return []
        items = self._items
        if len(items) <= count + (skip is not None):
            chosen = [(k, it) for k, it in items.items() if k != skip]
        else:
            ranked = sorted(items.items(), key=lambda kv: (kv[1].transmits, -kv[1].order))
            chosen = [(k, it) for k, it in ranked if k != skip][:count]
        out: list[T] = []
        for key, item in chosen[:count]:
            item.transmits += 1
            out.append(item.payload)
            if item.transmits >= limit:
                del items[key]
        return out
