"""Node identity: an Ed25519 key and the self-certifying node id derived from it."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from protocols.crypto import Ed25519Signer, Signer, check_public_key

__all__ = ["NodeIdentity", "node_id_from_public_key"]


def node_id_from_public_key(public_key: bytes) -> str:
    """Lowercase RFC 4648 base32, no padding, of SHA-256 of the raw 32-byte key (52 chars)."""
    digest = hashlib.sha256(public_key).digest()
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """A node's signer and its node id."""

    signer: Signer
    node_id: str

    @classmethod
    def from_signer(cls, signer: Signer) -> NodeIdentity:
        check_public_key(signer.public_key)
        return cls(signer=signer, node_id=node_id_from_public_key(signer.public_key))

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeIdentity:
        return cls.from_signer(Ed25519Signer(seed))

    @property
    def public_key(self) -> bytes:
        return self.signer.public_key
