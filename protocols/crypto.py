"""Signing and verifying behind a small interface.

``Signer`` and ``Verifier`` are the only way the rest of Parley touches
signatures, so another backend (libsodium, or the simulator's fast signer)
drops in without changing the wire code. ``Ed25519Signer``/``Ed25519Verifier``
use the ``cryptography`` package (OpenSSL).

``FastSigner``/``FastVerifier`` are for simulations at scale only: a keyed
BLAKE2b "signature" checked through a registry shared by the simulated nodes.
It keeps the 64-byte signature size and real Ed25519 public keys, so the
frames are byte-for-byte the same shape; it offers no security at all.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocols.errors import BadKey, LocalProtocolError

__all__ = [
    "SIGNATURE_SIZE",
    "Ed25519Signer",
    "Ed25519Verifier",
    "FastSigner",
    "FastVerifier",
    "MemoVerifier",
    "Signer",
    "Verifier",
    "check_public_key",
    "public_key_from_seed",
]

SIGNATURE_SIZE = 64
KEY_SIZE = 32

# --- Ed25519 point checks (pure Python, run once per distinct key) --------

_P = 2**255 - 19
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _decode_point(key: bytes) -> tuple[int, int]:
    """RFC 8032 section 5.1.3 point decoding; raises BadKey if not a point."""
    if len(key) != KEY_SIZE:
        raise BadKey(f"public key must be {KEY_SIZE} bytes, got {len(key)}")
    y = int.from_bytes(key, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= _P:
        raise BadKey("public key is not canonically encoded")
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    x2 = u * pow(v, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P != 0:
        raise BadKey("public key is not a point on Ed25519")
    if x == 0 and sign:
        raise BadKey("public key is not canonically encoded")
    if x & 1 != sign:
        x = _P - x
    return x, y


def _add(p: tuple[int, int], q: tuple[int, int]) -> tuple[int, int]:
    x1, y1 = p
    x2, y2 = q
    t = _D * x1 * x2 * y1 * y2 % _P
    x3 = (x1 * y2 + y1 * x2) * pow(1 + t, _P - 2, _P) % _P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, _P - 2, _P) % _P
    return x3, y3


_KEY_CHECKS: OrderedDict[bytes, bool] = OrderedDict()


def check_public_key(key: bytes) -> None:
    """Refuse malformed and small-order Ed25519 public keys (``bad-key``).

    A small-order key (8·P is the identity) lets a "signature" verify for many
    messages; libsodium refuses them too. Results are memoized (bounded).
    """
    known = _KEY_CHECKS.get(key)
    if known is True:
        return
    point = _decode_point(key)
    q = point
    for _ in range(3):
        q = _add(q, q)
    if q == (0, 1):
        raise BadKey("public key has small order")
    _KEY_CHECKS[key] = True
    if len(_KEY_CHECKS) > 65536:
        _KEY_CHECKS.popitem(last=False)


# --- interfaces -------------------------------------------------------------


class Signer(Protocol):
    @property
    def public_key(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


class Verifier(Protocol):
    def verify(self, public_key: bytes, signature: bytes, data: bytes) -> bool:
        """True if ``signature`` is valid for ``data`` under ``public_key``; never raises."""
        ...


def public_key_from_seed(seed: bytes) -> bytes:
    if len(seed) != KEY_SIZE:
        raise LocalProtocolError(f"an Ed25519 seed is {KEY_SIZE} bytes, got {len(seed)}")
    return (
        Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )


class Ed25519Signer:
    """Ed25519 (RFC 8032) signing with a 32-byte seed."""

    __slots__ = ("_key", "_public", "seed")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != KEY_SIZE:
            raise LocalProtocolError(f"an Ed25519 seed is {KEY_SIZE} bytes, got {len(seed)}")
        self.seed = seed
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self._public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def public_key(self) -> bytes:
        return self._public

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


class Ed25519Verifier:
    """Ed25519 verification; keeps a bounded cache of parsed public keys."""

    __slots__ = ("_keys", "_limit")

    def __init__(self, key_cache: int = 4096) -> None:
        self._keys: dict[bytes, Ed25519PublicKey] = {}
        self._limit = key_cache

    def verify(self, public_key: bytes, signature: bytes, data: bytes) -> bool:
        key = self._keys.get(public_key)
        if key is None:
            try:
                key = Ed25519PublicKey.from_public_bytes(public_key)
            except ValueError:
                return False
            if len(self._keys) >= self._limit:
                self._keys.pop(next(iter(self._keys)))
            self._keys[public_key] = key
        try:
            key.verify(signature, data)
        except InvalidSignature:
            return False
        return True


class MemoVerifier:
    """Wraps a verifier and memoizes results by (key, data, signature); they are pure.

    Used by the simulator, where one gossiped frame reaches every node: the
    first check costs a real verification, the others a dictionary lookup.
    """

    __slots__ = ("_inner", "_limit", "_memo", "hits", "misses")

    def __init__(self, inner: Verifier, limit: int = 1 << 20) -> None:
        self._inner = inner
        self._memo: dict[tuple[bytes, bytes, bytes], bool] = {}
        self._limit = limit
        self.hits = 0
        self.misses = 0

    def verify(self, public_key: bytes, signature: bytes, data: bytes) -> bool:
        key = (public_key, signature, data)
        known = self._memo.get(key)
        if known is not None:
            self.hits += 1
            return known
        self.misses += 1
        ok = self._inner.verify(public_key, signature, data)
        if len(self._memo) >= self._limit:
            self._memo.clear()
        self._memo[key] = ok
        return ok


class FastVerifier:
    """Simulation-only verifier: checks keyed BLAKE2b tags via a shared key registry."""

    __slots__ = ("_secrets",)

    def __init__(self) -> None:
        self._secrets: dict[bytes, bytes] = {}

    def register(self, public_key: bytes, secret: bytes) -> None:
        self._secrets[public_key] = secret

    def verify(self, public_key: bytes, signature: bytes, data: bytes) -> bool:
        secret = self._secrets.get(public_key)
        if secret is None:
            return False
        return hashlib.blake2b(data, key=secret, digest_size=SIGNATURE_SIZE).digest() == signature


class FastSigner:
    """Simulation-only signer: a keyed BLAKE2b tag, 64 bytes like Ed25519.

    The public key is the real Ed25519 public key of ``seed`` (so node ids and
    key checks are unchanged); ``registry`` learns the secret so that the
    simulated peers can check tags. Offers no security: never use it on a network.
    """

    __slots__ = ("_public", "_secret")

    def __init__(self, seed: bytes, registry: FastVerifier) -> None:
        self._public = public_key_from_seed(seed)
        self._secret = hashlib.sha256(b"parley-fast-signer" + seed).digest()
        registry.register(self._public, self._secret)

    @property
    def public_key(self) -> bytes:
        return self._public

    def sign(self, data: bytes) -> bytes:
        return hashlib.blake2b(data, key=self._secret, digest_size=SIGNATURE_SIZE).digest()
