"""Seed derivation: one master seed, one ``random.Random`` per node and component.

Seeds are derived with SHA-256 over the master seed and a path of labels, never
with ``hash()`` (which ``PYTHONHASHSEED`` changes), so a run is reproducible from
its master seed alone.
"""

from __future__ import annotations

import hashlib
import random

__all__ = ["derive_rng", "derive_seed", "link_factor"]

_MASK64 = (1 << 64) - 1


def derive_seed(master: int, *path: str | int) -> int:
    """A 64-bit seed for the component named by ``path`` under ``master``."""
    h = hashlib.sha256(str(master).encode())
    for part in path:
        h.update(b"/")
        h.update(str(part).encode())
    return int.from_bytes(h.digest()[:8], "big")


def derive_rng(master: int, *path: str | int) -> random.Random:
    """A fresh ``random.Random`` for the component named by ``path``."""
    return random.Random(derive_seed(master, *path))


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def link_factor(salt: int, src: int, dst: int, spread: float) -> float:
    """A stable per-link latency factor in ``[1 - spread, 1 + spread]``.

    Computed on demand from ``(salt, src, dst)`` so that no N x N table is kept.
    """
    if spread == 0.0:
        return 1.0
    x = _splitmix64(salt ^ (src * 0x100000001B3) ^ (dst << 32))
    return 1.0 - spread + 2.0 * spread * (x / _MASK64)
