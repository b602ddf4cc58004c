"""Organization trust: node certificates, revocations and the trust store.

An organization has a root Ed25519 key. It signs short-lived *node
certificates* (node public key, node name, org name, validity window, the
capabilities the node may offer and request) and *revocation lists* with a
monotonic version. A node's ``TrustStore`` lists the org roots it accepts and,
per org, which capabilities that org's nodes may offer to us and may request
from us. Everything here is pure: times come in as ``now`` (unix seconds).

Byte layouts (normative text in ``docs/protocol.md``)::

    certificate = msgpack [cert_body: bin, org_signature: bin64]
    cert_body   = msgpack [1, org: str, org_key: bin32, node_key: bin32, name: str,
                           not_before_ms: int, not_after_ms: int,
                           offers: [str], requests: [str]]
    signed      = b"parley/1/cert" || cert_body

    revocation  = msgpack [rev_body: bin, org_signature: bin64]
    rev_body    = msgpack [1, org: str, org_key: bin32, version: int,
                           issued_ms: int, revoked: [node_id: str]]
    signed      = b"parley/1/revocation" || rev_body

Capability patterns in offers, requests and policies are exact names or
``fnmatch`` globs (``"*"``, ``"translate.*"``).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from protocols.codec import packb, unpack_strict
from protocols.crypto import SIGNATURE_SIZE, Signer, Verifier, check_public_key
from protocols.errors import BadKey, Malformed, RemoteProtocolError
from protocols.identity import node_id_from_public_key

__all__ = [
    "CERT_TAG",
    "REVOCATION_TAG",
    "Certificate",
    "OrgPolicy",
    "Revocation",
    "TrustStore",
    "capability_allowed",
    "issue_certificate",
    "issue_revocation",
    "parse_certificate",
    "parse_revocation",
]

CERT_TAG = b"parley/1/cert"
REVOCATION_TAG = b"parley/1/revocation"
_MAX_CERT = 16 * 1024
_MAX_REVOCATION = 64 * _MAX_CERT


def _ms(t: float) -> int:
    return round(t * 1000)


def capability_allowed(patterns: Iterable[str], capability: str) -> bool:
    """Does any of ``patterns`` (exact names or shell-style wildcards) match ``capability``?"""
    return _allowed(patterns if type(patterns) is tuple else tuple(patterns), capability)


@functools.lru_cache(maxsize=16384)
def _allowed(patterns: tuple[str, ...], capability: str) -> bool:
    # Pure, and asked again for every record a node meets: memoized for the process.
    return any(p == capability or fnmatchcase(capability, p) for p in patterns)


def _str_tuple(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
        raise Malformed(f"{what} must be a list of strings")
    return value


@dataclass(frozen=True, slots=True)
class Certificate:
    """A node certificate as signed by its organization's root key."""

    org: str
    org_key: bytes
    node_key: bytes
    name: str
    not_before: float
    not_after: float
    offers: tuple[str, ...]
    requests: tuple[str, ...]
    raw: bytes = field(repr=False)
    body: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    #: The node id of ``node_key`` (derived once, at parse time).
    node_id: str = field(default="", repr=False)
    #: The reference to this certificate: SHA-256 of its exact bytes.
    digest: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "node_id", node_id_from_public_key(self.node_key))
        object.__setattr__(self, "digest", hashlib.sha256(self.raw).digest())

    def check_time(self, now: float, skew: float = 0.0) -> None:
        if now + skew < self.not_before:
            raise RemoteProtocolError(
                f"certificate of {self.name!r} is not valid before {self.not_before:.0f}",
                code="not-yet-valid",
            )
        if now - skew > self.not_after:
            raise RemoteProtocolError(
                f"certificate of {self.name!r} expired at {self.not_after:.0f}", code="expired"
            )

    def verify_signature(self, verifier: Verifier) -> None:
        if not verifier.verify(self.org_key, self.signature, CERT_TAG + self.body):
            raise RemoteProtocolError(
                f"certificate of {self.name!r} is not signed by org {self.org!r}",
                code="bad-certificate",
            )


def issue_certificate(
    org_signer: Signer,
    org: str,
    node_key: bytes,
    name: str,
    *,
    not_before: float,
    not_after: float,
    offers: Sequence[str] = ("*",),
    requests: Sequence[str] = ("*",),
) -> bytes:
    """Sign a node certificate with the org root key; returns its exact bytes."""
    check_public_key(node_key)
    body = packb(
        [
            1,
            org,
            org_signer.public_key,
            node_key,
            name,
            _ms(not_before),
            _ms(not_after),
            list(offers),
            list(requests),
        ]
    )
    return packb([body, org_signer.sign(CERT_TAG + body)])


def _split_signed(raw: bytes, what: str, limit: int = _MAX_CERT) -> tuple[bytes, bytes]:
    outer = unpack_strict(raw, limit=limit)
    if (
        not isinstance(outer, tuple)
        or len(outer) != 2
        or not isinstance(outer[0], bytes)
        or not isinstance(outer[1], bytes)
        or len(outer[1]) != SIGNATURE_SIZE
    ):
        raise Malformed(f"{what} must be [body: bin, signature: bin64]")
    return outer[0], outer[1]


def parse_certificate(raw: bytes) -> Certificate:
    """Parse (not verify) a certificate; raises ``malformed`` or ``bad-key``."""
    body, signature = _split_signed(raw, "certificate")
    f = unpack_strict(body, limit=_MAX_CERT)
    if not isinstance(f, tuple) or len(f) != 9 or f[0] != 1:
        raise Malformed("certificate body must be a 9-element array of version 1")
    _, org, org_key, node_key, name, nb, na, offers, requests = f
    if not (isinstance(org, str) and isinstance(name, str)):
        raise Malformed("certificate org and name must be strings")
    if not (isinstance(org_key, bytes) and isinstance(node_key, bytes)):
        raise Malformed("certificate keys must be bin")
    if not (isinstance(nb, int) and isinstance(na, int)) or na < nb:
        raise Malformed("certificate validity must be integers, not_after >= not_before")
    check_public_key(org_key)
    check_public_key(node_key)
    return Certificate(
        org=org,
        org_key=org_key,
        node_key=node_key,
        name=name,
        not_before=nb / 1000,
        not_after=na / 1000,
        offers=_str_tuple(offers, "offers"),
        requests=_str_tuple(requests, "requests"),
        raw=raw,
        body=body,
        signature=signature,
    )


@dataclass(frozen=True, slots=True)
class Revocation:
    org: str
    org_key: bytes
    version: int
    issued_at: float
    revoked: frozenset[str]
    raw: bytes = field(repr=False)


def issue_revocation(
    org_signer: Signer, org: str, version: int, revoked: Sequence[str], *, now: float
) -> bytes:
    """Sign a cumulative revocation list; a higher ``version`` replaces a lower one."""
    body = packb([1, org, org_signer.public_key, version, _ms(now), sorted(revoked)])
    return packb([body, org_signer.sign(REVOCATION_TAG + body)])


def parse_revocation(raw: bytes, verifier: Verifier) -> Revocation:
    body, signature = _split_signed(raw, "revocation", _MAX_REVOCATION)
    f = unpack_strict(body, limit=_MAX_REVOCATION)
    if not isinstance(f, tuple) or len(f) != 6 or f[0] != 1:
        raise Malformed("revocation body must be a 6-element array of version 1")
    _, org, org_key, version, issued, revoked = f
    if not (isinstance(org, str) and isinstance(org_key, bytes) and isinstance(version, int)):
        raise Malformed("revocation fields have the wrong types")
    if not isinstance(issued, int):
        raise Malformed("revocation issued_ms must be an integer")
    check_public_key(org_key)
    if not verifier.verify(org_key, signature, REVOCATION_TAG + body):
        raise RemoteProtocolError(
            f"revocation of org {org!r} has a bad signature", code="bad-signature"
        )
    return Revocation(
        org, org_key, version, issued / 1000, frozenset(_str_tuple(revoked, "revoked")), raw
    )


@dataclass(frozen=True, slots=True)
class OrgPolicy:
    """One accepted organization: its root key and what its nodes may do with us."""

    name: str
    root_key: bytes
    may_offer: tuple[str, ...] = ("*",)
    may_request: tuple[str, ...] = ("*",)


class TrustStore:
    """The org roots a node accepts, their policies, and the revocations seen."""

    def __init__(self, orgs: Iterable[OrgPolicy] = ()) -> None:
        self._orgs: dict[str, OrgPolicy] = {}
        self._revoked: dict[str, tuple[int, frozenset[str]]] = {}
        #: org -> the signed list in effect (what gossip hands on)
        self._revocation_lists: dict[str, bytes] = {}
        for org in orgs:
            self.add(org)

    def add(self, org: OrgPolicy) -> None:
        try:
            check_public_key(org.root_key)
        except BadKey as exc:
            raise BadKey(f"root key of org {org.name!r}: {exc}") from None
        self._orgs[org.name] = org

    def remove(self, name: str) -> bool:
        return self._orgs.pop(name, None) is not None

    def orgs(self) -> list[OrgPolicy]:
        return [self._orgs[k] for k in sorted(self._orgs)]

    def get(self, name: str) -> OrgPolicy | None:
        return self._orgs.get(name)

    def replace(self, other: TrustStore) -> dict[str, list[str]]:
        """Take ``other``'s orgs and policies, in place (a running node's wire, gossip
        and contract agents hold this object), and its revocation lists where they are
        newer: a reload never takes a revocation back. What changed, by kind."""
        before = self._orgs
        self._orgs = dict(other._orgs)
        for name, policy in before.items():  # a new root: its lists start over at v1
            now_policy = self._orgs.get(name)
            if now_policy is None or now_policy.root_key != policy.root_key:
                self._revoked.pop(name, None)
                self._revocation_lists.pop(name, None)
        revoked = []
        for org, (version, nodes) in other._revoked.items():
            if version > self.revocation_version(org):
                self._revoked[org] = (version, nodes)
                self._revocation_lists[org] = other._revocation_lists[org]
                revoked.append(f"{org} v{version}")
        return {
            "added": sorted(set(self._orgs) - set(before)),
            "removed": sorted(set(before) - set(self._orgs)),
            "changed": sorted(
                n for n in set(self._orgs) & set(before) if self._orgs[n] != before[n]
            ),
            "revocations": revoked,
        }

    def revocation_version(self, org: str) -> int:
        return self._revoked.get(org, (0, frozenset()))[0]

    def revoked(self, org: str) -> frozenset[str]:
        return self._revoked.get(org, (0, frozenset()))[1]

    def apply_revocation(self, rev: Revocation) -> bool:
        """Apply a verified revocation list; True if it was newer than what we had."""
        policy = self._orgs.get(rev.org)
        if policy is None or policy.root_key != rev.org_key:
            raise RemoteProtocolError(
                f"revocation from unknown org {rev.org!r}", code="untrusted-org"
            )
        if rev.version <= self.revocation_version(rev.org):
            return False
        self._revoked[rev.org] = (rev.version, rev.revoked)
        self._revocation_lists[rev.org] = rev.raw
        return True

    def revocation_lists(self) -> list[bytes]:
        """The signed revocation lists in effect, one per org (sorted by org)."""
        return [self._revocation_lists[org] for org in sorted(self._revocation_lists)]

    def check_certificate(self, cert: Certificate, now: float, skew: float = 0.0) -> None:
        """Org accepted, root key matches, time window, not revoked (signature checked by caller)."""
        policy = self._orgs.get(cert.org)
        if policy is None:
            raise RemoteProtocolError(
                f"org {cert.org!r} is not in the trust store", code="untrusted-org"
            )
        if policy.root_key != cert.org_key:
            raise RemoteProtocolError(
                f"certificate claims org {cert.org!r} but is signed by another root key",
                code="untrusted-org",
            )
        cert.check_time(now, skew)
        revoked = self._revoked.get(cert.org)
        if revoked is not None and cert.node_id in revoked[1]:
            raise RemoteProtocolError(
                f"node {cert.name!r} of {cert.org!r} is revoked", code="revoked"
            )

    def check_offer(self, cert: Certificate, capability: str) -> None:
        """May this node offer ``capability`` to us? (its certificate and its org's policy)"""
        self._check(cert, capability, offer=True)

    def check_request(self, cert: Certificate, capability: str) -> None:
        """May this node request ``capability`` from us?"""
        self._check(cert, capability, offer=False)

    def _check(self, cert: Certificate, capability: str, *, offer: bool) -> None:
        policy = self._orgs.get(cert.org)
        if policy is None:
            raise RemoteProtocolError(
                f"org {cert.org!r} is not in the trust store", code="untrusted-org"
            )
        if offer:
            granted, allowed, verb, tail = cert.offers, policy.may_offer, "offer", "to us"
        else:
            granted, allowed, verb, tail = cert.requests, policy.may_request, "request", "from us"
        if not capability_allowed(granted, capability):
            raise RemoteProtocolError(
                f"{cert.name!r}'s certificate does not allow {verb}ing {capability!r}",
                code="not-permitted",
            )
        if not capability_allowed(allowed, capability):
            raise RemoteProtocolError(
                f"org {cert.org!r} may not {verb} {capability!r} {tail}", code="not-permitted"
            )
