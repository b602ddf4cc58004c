"""A mapping over a shared, read-only base: reads fall through, writes stay local.

Nodes that start from the same formed mesh (``protocols.membership.formed``) hold
the same member table, capability index and probe list. An ``Overlay`` lets each
of them keep only what changed: the base is shared, never written, and the
overlay behaves as a plain ``dict`` that was copied from the base and then given
the same writes, iteration order included (a key written in place keeps its
position; a key deleted and set again moves to the end).

``copy`` (optional) is applied to a base value the first time it is read through
``[]`` or ``get``, and the copy is kept here: the table's rows are mutable and
edited in place, so a node must never hold the shared row itself. ``values`` and
``items`` do not copy (they are read-only walks over the whole table).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import TypeVar

__all__ = ["Overlay"]

K = TypeVar("K")
V = TypeVar("V")
_MISSING = object()


class Overlay(MutableMapping[K, V]):
    __slots__ = ("_base", "_copy", "_gone", "_new", "_over")

    def __init__(self, base: Mapping[K, V], copy: Callable[[V], V] | None = None) -> None:
        self._base = base
        self._copy = copy
        self._over: dict[K, V] = {}  # base keys written (or copied) here, base order
        self._new: dict[K, V] = {}  # keys not in the base, or deleted then set again
        self._gone: set[K] = set()  # base keys deleted here

    def __getitem__(self, key: K) -> V:
        new = self._new
        if key in new:
            return new[key]
        if key in self._gone:
            raise KeyError(key)
        over = self._over
        value = over.get(key, _MISSING)
        if value is not _MISSING:
            return value  # type: ignore[return-value]
        value = self._base[key]
        if self._copy is not None:
            value = over[key] = self._copy(value)
        return value

    def get(self, key: K, default: V | None = None) -> V | None:  # type: ignore[override]
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return key in self._new or (key not in self._gone and key in self._base)

    def __setitem__(self, key: K, value: V) -> None:
        if key in self._new or key in self._gone or key not in self._base:
            self._new[key] = value
        else:
            self._over[key] = value

    def __delitem__(self, key: K) -> None:
        if key in self._new:
            del self._new[key]
        elif key in self._base and key not in self._gone:
            self._gone.add(key)
            self._over.pop(key, None)
        else:
            raise KeyError(key)

    def __len__(self) -> int:
        return len(self._base) - len(self._gone) + len(self._new)

    def __iter__(self) -> Iterator[K]:
        gone = self._gone
        for key in self._base:
            if key not in gone:
                yield key
        yield from self._new

    def values(self) -> Iterator[V]:  # type: ignore[override]
        gone, over = self._gone, self._over
        for key, value in self._base.items():
            if key not in gone:
                yield over.get(key, value)
        yield from self._new.values()

    def items(self) -> Iterator[tuple[K, V]]:  # type: ignore[override]
        gone, over = self._gone, self._over
        for key, value in self._base.items():
            if key not in gone:
                yield key, over.get(key, value)
        yield from self._new.items()

    def local_size(self) -> int:
        """Entries held here rather than in the shared base (the node's own cost)."""
        return len(self._over) + len(self._new) + len(self._gone)
