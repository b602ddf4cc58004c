"""A process-wide memo of successful signature verifications.

Several ``Node`` objects may live in one process (a bench or a test harness,
an application embedding a few agents). A call for proposals or an award sent
to several of them is one frame: the same signed bytes reach every node, and
each node's wire verifies the same (public key, signature, message) triple.
The result of Ed25519 verification is a pure function of those bytes, so the
nodes of one process share this memo:

* only a *positive* result is remembered, and only for the exact same bytes:
  the key is ``sha256(public key || signature || message)`` with the key and
  signature of their fixed sizes (32 and 64 bytes; other sizes bypass the memo
  and go to the real verifier, which refuses them);
* a failed verification is never remembered: a forgery costs a full
  verification every time, as without the memo;
* it is bounded (the oldest entries go first) and guarded by a lock, so nodes
  running on loops in different threads may share it;
* it only works while at least two nodes of the process are registered
  (``register``): a lone node can never meet a frame another node verified, so
  it pays nothing for the memo.

Every other check of a frame (recipient, time window, replay cache, trust and
policy) still runs in each node's own wire.
"""

from __future__ import annotations

import hashlib
import threading
import weakref

from protocols.crypto import Ed25519Verifier, Verifier

__all__ = ["VerifyMemo", "shared_verifier"]

_KEY_SIZE = 32
_SIG_SIZE = 64


class VerifyMemo:
    """A ``Verifier`` that remembers successful verifications (bounded, thread-safe)."""

    __slots__ = ("_capacity", "_inner", "_lock", "_ok", "_users", "hits", "misses")

    def __init__(self, inner: Verifier | None = None, capacity: int = 8192) -> None:
        self._inner: Verifier = inner if inner is not None else Ed25519Verifier()
        self._capacity = max(1, capacity)
        self._ok: dict[bytes, None] = {}
        self._lock = threading.Lock()
        self._users = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._ok)

    @property
    def users(self) -> int:
        """Registered owners (nodes) still alive."""
        return self._users

    def register(self, owner: object) -> None:
        """Count ``owner`` (a node's core) as a user until it is garbage collected."""
        with self._lock:
            self._users += 1
        weakref.finalize(owner, self._release)

    def _release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users < 2:
                self._ok.clear()

    def verify(self, public_key: bytes, signature: bytes, data: bytes) -> bool:
        if self._users < 2 or len(public_key) != _KEY_SIZE or len(signature) != _SIG_SIZE:
            return self._inner.verify(public_key, signature, data)
        key = hashlib.sha256(public_key + signature + data).digest()
        ok = self._ok
        if key in ok:
            self.hits += 1
            return True
        self.misses += 1
        if not self._inner.verify(public_key, signature, data):
            return False
        with self._lock:
            if len(ok) >= self._capacity:
                del ok[next(iter(ok))]
            ok[key] = None
        return True


_shared: VerifyMemo | None = None
_shared_lock = threading.Lock()


def shared_verifier() -> VerifyMemo:
    """The memo every ``Node`` of this process verifies through."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = VerifyMemo()
        return _shared
