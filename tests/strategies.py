"""Shared Hypothesis strategies and small builders for wire-level tests.

Strategies: ``seeds``, ``node_ids``, ``msgpack_values`` (what a payload field
may carry), ``capabilities``, ``nonces``. Builders: ``make_org``/``make_node``
and ``WireWorld`` (one org, a sender and a receiver, sealing and opening with
the real Ed25519 code) so tests stay short and deterministic.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from protocols.crypto import Ed25519Signer, Ed25519Verifier
from protocols.envelope import NONCE_SIZE, Wire, WireConfig
from protocols.identity import NodeIdentity, node_id_from_public_key
from protocols.trust import OrgPolicy, TrustStore, issue_certificate

__all__ = [
    "NOW",
    "AnyPayload",
    "Named",
    "Org",
    "WireWorld",
    "capabilities",
    "fixed_seed",
    "make_node",
    "make_org",
    "msgpack_values",
    "node_ids",
    "nonces",
    "normalize",
    "seeds",
]

NOW = 1_767_225_600.0

seeds = st.binary(min_size=32, max_size=32)
nonces = st.binary(min_size=NONCE_SIZE, max_size=NONCE_SIZE)
node_ids = seeds.map(lambda s: node_id_from_public_key(Ed25519Signer(s).public_key))
capabilities = st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z0-9]{1,8}){0,2}", fullmatch=True)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
#: Values msgpack carries and Parley accepts in a payload (string map keys, bounded depth).
msgpack_values: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)


def normalize(value: Any) -> Any:
    """Tuples (how the strict decoder returns arrays) as lists, recursively."""
    if isinstance(value, tuple | list):
        return [normalize(v) for v in value]
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    return value


class AnyPayload(BaseModel):
    """A test kind whose one field carries any msgpack value."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    data: Any = None


class Named(BaseModel):
    """A test kind that requests (or offers) a capability, like the contract-net cfp."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    capability: str
    offer: bool = False

    def permissions(self) -> tuple[tuple[str, str], ...]:
        return (("offer" if self.offer else "request", self.capability),)


TEST_PAYLOADS: dict[str, type[BaseModel]] = {"any": AnyPayload, "named": Named}


def fixed_seed(name: str) -> bytes:
    return hashlib.sha256(b"parley tests: " + name.encode()).digest()


@dataclass(frozen=True)
class Org:
    name: str
    signer: Ed25519Signer

    @property
    def root_key(self) -> bytes:
        return self.signer.public_key

    def policy(self, **kwargs: Any) -> OrgPolicy:
        return OrgPolicy(self.name, self.root_key, **kwargs)


def make_org(name: str) -> Org:
    return Org(name, Ed25519Signer(fixed_seed(f"org {name}")))


def make_node(
    org: Org,
    name: str,
    *,
    now: float = NOW,
    not_before: float | None = None,
    not_after: float | None = None,
    offers: tuple[str, ...] = ("*",),
    requests: tuple[str, ...] = ("*",),
) -> tuple[NodeIdentity, bytes]:
    """A node identity and its certificate, issued by ``org``."""
    identity = NodeIdentity.from_seed(fixed_seed(f"node {org.name}/{name}"))
    cert = issue_certificate(
        org.signer,
        org.name,
        identity.public_key,
        name,
        not_before=now - 3600 if not_before is None else not_before,
        not_after=now + 86400 if not_after is None else not_after,
        offers=offers,
        requests=requests,
    )
    return identity, cert


@dataclass
class WireWorld:
    """Org ``acme``; ``alice`` seals, ``bob`` opens (both trust acme)."""

    config: WireConfig = field(default_factory=WireConfig)
    policy: dict[str, Any] = field(default_factory=dict)
    alice_cert: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.acme = make_org("acme")
        self.trust = TrustStore([self.acme.policy(**self.policy)])
        a_id, a_cert = make_node(self.acme, "alice", **self.alice_cert)
        b_id, b_cert = make_node(self.acme, "bob")
        self.alice = Wire(a_id, a_cert, self.trust, Ed25519Verifier(), TEST_PAYLOADS, self.config)
        self.bob = Wire(b_id, b_cert, self.trust, Ed25519Verifier(), TEST_PAYLOADS, self.config)
        self._n = 0

    def nonce(self) -> bytes:
        self._n += 1
        return self._n.to_bytes(NONCE_SIZE, "big")

    def seal(
        self, data: Any = None, *, now: float = NOW, to: str | None = None, **kw: Any
    ) -> bytes:
        return self.alice.seal(
            "any", AnyPayload(data=data), to or self.bob.node_id, now, nonce=self.nonce(), **kw
        )

    def fresh_receiver(self) -> Wire:
        return Wire.receiver(
            self.bob.node_id, self.trust, Ed25519Verifier(), TEST_PAYLOADS, self.config
        )
