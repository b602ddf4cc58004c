"""The signed envelope: one frame format for every Parley message.

Byte layout (normative text in ``docs/protocol.md``)::

    frame  = msgpack [body: bin, signature: bin64]
    body   = msgpack [1, kind: str, sender: str, cert: bin, to: str | [str],
                      created_ms: int, expires_ms: int, nonce: bin16, payload: bin]
    signed = b"parley/1/" || kind || body          (Ed25519 over these exact bytes)

``cert`` is the sender's full certificate, or the 32-byte SHA-256 of one the
receiver already knows. ``to`` is one node id, a list of node ids (one
signature for a recipient set), or ``"gossip"`` for frames forwarded
unchanged. ``payload`` is the msgpack encoding of the kind's payload model;
it is decoded only after every check below has passed.

``Wire.open`` checks, in this order, and raises the first failure:
size (``too-large``), structure (``malformed``), kind (``unknown-kind``),
recipient (``wrong-recipient``), time window (``not-yet-valid``, ``expired``),
replay cache (``replayed``), certificate (``malformed``, ``bad-key``,
``bad-certificate``, ``untrusted-org``, ``expired``, ``not-yet-valid``,
``revoked``), signature (``bad-signature``), payload (``malformed``,
``duplicate-key``) and finally the trust policy for the capabilities the
payload names (``not-permitted``).
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from protocols.codec import MAX_FRAME, packb, unpack_array, unpack_payload
from protocols.crypto import SIGNATURE_SIZE, Verifier
from protocols.errors import LocalProtocolError, Malformed, RemoteProtocolError, TooLarge
from protocols.identity import NodeIdentity
from protocols.trust import Certificate, TrustStore, parse_certificate

__all__ = [
    "DOMAIN",
    "GOSSIP",
    "GOSSIPED_KINDS",
    "NONCE_SIZE",
    "FrameMemo",
    "NotPermitted",
    "Opened",
    "ReplayCache",
    "Wire",
    "WireConfig",
    "signed_bytes",
]

DOMAIN = b"parley/1/"
GOSSIP = "gossip"
NONCE_SIZE = 16
VERSION = 1
#: Kinds forwarded unchanged: idempotent, exempt from the replay cache (receivers
#: deduplicate them by digest and keep the newest by (incarnation, seq)).
GOSSIPED_KINDS = frozenset({"record", "revocation"})
_KIND_RE = re.compile(r"[a-z][a-z0-9-]{0,31}\Z")
_CERT_REF_SIZE = 32


def signed_bytes(kind: str, body: bytes) -> bytes:
    """The exact bytes the sender signs: the domain tag ``parley/1/<kind>`` then the body."""
    return DOMAIN + kind.encode("ascii") + body


@runtime_checkable
class NamesCapabilities(Protocol):
    """A payload that names capabilities: ``open`` checks them against the trust policy.

    ``permissions()`` yields ``("offer", capability)`` or ``("request", capability)``.
    """

    def permissions(self) -> Iterable[tuple[str, str]]: ...


@dataclass(frozen=True, slots=True)
class WireConfig:
    """Limits of the envelope layer. Times in seconds, sizes in bytes."""

    max_frame: int = MAX_FRAME
    #: Clock difference tolerated between sender and receiver.
    max_skew: float = 30.0
    #: Lifetime given to a frame when the caller names none.
    default_ttl: float = 30.0
    #: Longest lifetime accepted for a direct (non-gossiped) frame.
    max_ttl: float = 600.0
    #: Longest lifetime accepted for a gossiped frame (records, revocations).
    max_gossip_ttl: float = 7 * 86400.0
    #: Most (sender, nonce) entries kept; older ones raise the replay floor.
    replay_capacity: int = 16384
    #: Most certificates kept (by their bytes and by their digest).
    cert_cache: int = 4096


class ReplayCache:
    """Bounded memory of (sender, nonce) pairs seen inside the time window.

    When full, the oldest entry is evicted and the *floor* rises to its creation
    time: any later frame created at or before the floor is refused as a
    possible replay. So memory is bounded and a replay is never accepted.

    An ``OrderedDict``, not a dict: removing a dict's oldest entries leaves holes at
    the front of its entry table that ``next(iter(d))`` walks over every time (at
    ~6,000 live entries, 100 frames/s: ~10 us per frame, vs ~1 us here).
    """

    __slots__ = ("_capacity", "_entries", "floor")

    def __init__(self, capacity: int) -> None:
        self._capacity = max(1, capacity)
        self._entries: OrderedDict[bytes, tuple[float, float]] = OrderedDict()
        self.floor = float("-inf")

    def __len__(self) -> int:
        return len(self._entries)

    def seen(self, key: bytes, created_at: float) -> bool:
        return created_at <= self.floor or key in self._entries

    def add(self, key: bytes, created_at: float, expires_at: float, horizon: float) -> None:
        """Remember ``key``; drop entries that expired before ``horizon`` (now - skew)."""
        entries = self._entries
        for _ in range(4):  # bounded purge of expired entries, oldest first
            if not entries:
                break
            first = next(iter(entries))
            if entries[first][1] >= horizon:
                break
            del entries[first]
        if len(entries) >= self._capacity:
            self.floor = max(self.floor, entries.popitem(last=False)[1][0])
        entries[key] = (created_at, expires_at)

    def forget(self, key: bytes) -> None:
        """Withdraw an entry (a frame whose deferred signature check failed)."""
        self._entries.pop(key, None)


class FrameMemo:
    """The node-independent work of opening frames, done once per process.

    Parsing a certificate and decoding an envelope and its payload are pure
    functions of the bytes. Where many nodes share a process (the simulator, a
    process of embedded nodes) and open the same frames (gossiped records, a cfp
    to a recipient set, a certificate met by every node), a ``Wire`` given a
    memo reuses them. Every node-specific check still runs on every open:
    recipient, time window, replay cache, the certificate's org signature and
    trust, the frame's signature (through the node's own verifier) and the
    capability policy. Only frames that opened successfully somewhere are
    stored, keyed by their SHA-256; both tables are bounded (oldest out first).
    """

    __slots__ = ("_cert_cap", "_certs", "_frame_cap", "_frames", "payloads")

    def __init__(
        self,
        payloads: Mapping[str, type[BaseModel]],
        *,
        certificates: int = 1 << 16,
        frames: int = 1 << 14,
    ) -> None:
        self.payloads = payloads
        self._certs: dict[bytes, Certificate] = {}
        # oldest out first: an OrderedDict (see ReplayCache)
        self._frames: OrderedDict[bytes, _Decoded] = OrderedDict()
        self._cert_cap = max(1, certificates)
        self._frame_cap = max(1, frames)

    def certificate(self, raw: bytes) -> Certificate:
        """``parse_certificate(raw)``, parsed once (failures are not remembered)."""
        cert = self._certs.get(raw)
        if cert is None:
            cert = parse_certificate(raw)
            if len(self._certs) >= self._cert_cap:
                del self._certs[next(iter(self._certs))]
            self._certs[cert.raw] = cert
        return cert

    def get(self, digest: bytes) -> _Decoded | None:
        return self._frames.get(digest)

    def put(self, digest: bytes, decoded: _Decoded) -> None:
        frames = self._frames
        if len(frames) >= self._frame_cap:
            frames.popitem(last=False)
        frames[digest] = decoded


#: the envelope body's nine fields (type-checked), signature, signed bytes, payload model
_Decoded = tuple[tuple[Any, ...], bytes, bytes, BaseModel]


@dataclass(frozen=True, slots=True)
class Opened:
    """A frame that passed every check, with its payload decoded.

    With ``Wire.open(..., defer=kinds)`` a frame of one of those kinds passed every
    check but the signature: ``proof`` then holds what ``Wire.confirm`` verifies.
    """

    kind: str
    sender: str
    org: str
    recipients: tuple[str, ...]
    created_at: float
    expires_at: float
    nonce: bytes
    payload: BaseModel
    frame: bytes = field(repr=False)
    digest: bytes = field(repr=False)
    certificate: Certificate = field(repr=False)
    #: ``(public key, signature, signed bytes, replay key)`` while the signature is
    #: unchecked (``Wire.confirm`` checks it)
    proof: tuple[bytes, bytes, bytes, bytes] | None = field(default=None, repr=False)


class NotPermitted(RemoteProtocolError):
    """Check 12 failed on an authentic frame (every other check passed, the signature
    too): ``opened`` is that frame, so that the receiver may answer it (a bidder
    refuses a cfp it may not take with ``not-permitted`` instead of leaving the
    requester to wait out its auction)."""

    def __init__(self, message: str, opened: Opened) -> None:
        super().__init__(message, code="not-permitted")
        self.opened = opened


class Wire:
    """Seals frames with one node's key and opens frames against its trust store."""

    def __init__(
        self,
        identity: NodeIdentity,
        certificate: bytes,
        trust: TrustStore,
        verifier: Verifier,
        payloads: Mapping[str, type[BaseModel]],
        config: WireConfig | None = None,
        *,
        memo: FrameMemo | None = None,
    ) -> None:
        self._init_receiver(identity.node_id, trust, verifier, payloads, config)
        # A memo made for another payload registry is not used.
        self.memo: FrameMemo | None = (
            memo if memo is not None and memo.payloads is payloads else None
        )
        self.identity = identity
        self.certificate_bytes = certificate
        self.certificate = parse_certificate(certificate)
        if self.certificate.node_key != identity.public_key:
            raise LocalProtocolError("the certificate is for another key than this node's")
        self._can_seal = True

    def replace_certificate(self, certificate: bytes) -> Certificate:
        """Seal from now on with ``certificate`` (a renewal: the same key and org).

        Frames already sealed keep the certificate they carry; a receiver checks each
        frame against the certificate in it.
        """
        if not self._can_seal:
            raise LocalProtocolError("this Wire was made with Wire.receiver and cannot seal")
        cert = parse_certificate(certificate)
        if cert.node_key != self.identity.public_key:
            raise LocalProtocolError("the certificate is for another key than this node's")
        if cert.org != self.certificate.org:
            raise LocalProtocolError(
                f"the certificate is of org {cert.org!r}, this node is of {self.certificate.org!r}"
            )
        self.certificate_bytes = certificate
        self.certificate = cert
        return cert

    @classmethod
    def receiver(
        cls,
        node_id: str | None,
        trust: TrustStore,
        verifier: Verifier,
        payloads: Mapping[str, type[BaseModel]],
        config: WireConfig | None = None,
    ) -> Wire:
        """A Wire that only opens frames, as node ``node_id``; needs no private key.

        With ``node_id=None`` every recipient is accepted (inspection tools).
        ``seal`` raises ``LocalProtocolError``.
        """
        wire = cls.__new__(cls)
        wire._init_receiver(node_id, trust, verifier, payloads, config)
        wire._any_recipient = node_id is None
        return wire

    def _init_receiver(
        self,
        node_id: str | None,
        trust: TrustStore,
        verifier: Verifier,
        payloads: Mapping[str, type[BaseModel]],
        config: WireConfig | None,
    ) -> None:
        self.node_id = node_id or ""
        self.trust = trust
        self.verifier = verifier
        self.payloads = payloads
        self.config = config or WireConfig()
        self.replay = ReplayCache(self.config.replay_capacity)
        self._certs: dict[bytes, Certificate] = {}
        self._cert_refs: dict[bytes, Certificate] = {}
        self._permission_kinds: dict[str, bool] = {}
        self._can_seal = False
        self._any_recipient = False
        self.memo = None

    # -- sealing ---------------------------------------------------------------

    def seal(
        self,
        kind: str,
        payload: BaseModel,
        to: str | Sequence[str],
        now: float,
        *,
        nonce: bytes,
        ttl: float | None = None,
        cert_ref: bool = False,
    ) -> bytes:
        """Encode and sign one frame; ``to`` is a node id, a list of them, or GOSSIP."""
        if kind not in self.payloads:
            raise LocalProtocolError(f"unknown message kind {kind!r}")
        if len(nonce) != NONCE_SIZE:
            raise LocalProtocolError(f"a nonce is {NONCE_SIZE} bytes")
        return self.seal_bytes(
            kind, packb(payload.model_dump()), to, now, nonce=nonce, ttl=ttl, cert_ref=cert_ref
        )

    def seal_bytes(
        self,
        kind: str,
        payload: bytes,
        to: str | Sequence[str],
        now: float,
        *,
        nonce: bytes,
        ttl: float | None = None,
        cert_ref: bool = False,
    ) -> bytes:
        """Like ``seal`` with an already encoded payload (test vectors, adversaries)."""
        if not self._can_seal:
            raise LocalProtocolError("this Wire was made with Wire.receiver and cannot seal")
        life = self.config.default_ttl if ttl is None else ttl
        recipients: str | list[str] = to if isinstance(to, str) else list(to)
        cert = self.certificate.digest if cert_ref else self.certificate_bytes
        created = round(now * 1000)
        body = packb(
            [
                VERSION,
                kind,
                self.node_id,
                cert,
                recipients,
                created,
                created + round(life * 1000),
                nonce,
                payload,
            ]
        )
        return packb([body, self.identity.signer.sign(signed_bytes(kind, body))])

    # -- opening ---------------------------------------------------------------

    def open(
        self,
        frame: bytes,
        now: float,
        *,
        digest: bytes | None = None,
        defer: frozenset[str] = frozenset(),
    ) -> Opened:
        """Check everything, then decode the payload. Raises ``RemoteProtocolError``.

        ``digest`` is ``sha256(frame)`` when the caller already computed it.
        For a kind in ``defer`` every check runs but the signature's: the result
        carries a ``proof`` and the caller must ``confirm`` it before acting on
        the frame (a requester's bids: only the one it awards is ever checked).
        """
        cfg = self.config
        if len(frame) > cfg.max_frame:
            raise TooLarge(f"frame of {len(frame)} bytes is over the {cfg.max_frame}-byte limit")
        memo = self.memo
        hit: _Decoded | None = None
        if memo is not None:
            if digest is None:
                digest = hashlib.sha256(frame).digest()
            hit = memo.get(digest)
        if hit is None:
            body, signature = _split(frame, cfg.max_frame)
            fields = unpack_array(body, limit=cfg.max_frame)
            if type(fields) is not tuple or len(fields) != 9:
                raise Malformed("envelope body must be a 9-element array")
        else:
            fields, signature, signed, model = hit
        version, kind, sender, cert_field, to, created_ms, expires_ms, nonce, payload = fields
        if hit is None:
            _check_types(version, kind, sender, cert_field, created_ms, expires_ms, nonce, payload)
        if kind not in self.payloads:
            raise RemoteProtocolError(f"unknown message kind {kind!r}", code="unknown-kind")
        # A memo hit was opened somewhere already: the shape of `to` is known good.
        recipients = self._check_recipient(to, shaped=hit is not None)
        created, expires = created_ms / 1000, expires_ms / 1000
        gossiped = kind in GOSSIPED_KINDS
        self._check_window(created, expires, now, gossiped)
        replay_key = b""
        if not gossiped:
            replay_key = nonce + sender.encode()
            if kind in defer:
                # Unverified yet: a forgery carrying a genuine frame's nonce must not
                # shadow it. Ed25519 signatures are not malleable: one frame, one key.
                replay_key += signature
            if self.replay.seen(replay_key, created):
                raise RemoteProtocolError("this frame was seen before", code="replayed")
        cert = self._certificate(cert_field, now)
        if cert.node_id != sender:
            raise Malformed("the sender id does not match the certificate's key")
        if hit is None:
            signed = signed_bytes(kind, body)
        proof: tuple[bytes, bytes, bytes, bytes] | None = None
        if kind in defer:
            proof = (cert.node_key, signature, signed, replay_key)
        elif not self.verifier.verify(cert.node_key, signature, signed):
            raise RemoteProtocolError("the signature does not verify", code="bad-signature")
        if not gossiped:
            self.replay.add(replay_key, created, expires, now - cfg.max_skew)
        if hit is None:
            model = self._decode(kind, payload)
            if memo is not None and digest is not None and (gossiped or type(to) is tuple):
                memo.put(digest, (fields, signature, signed, model))
        opened = Opened(
            kind,
            sender,
            cert.org,
            recipients,
            created,
            expires,
            nonce,
            model,
            frame,
            hashlib.sha256(frame).digest() if digest is None else digest,
            cert,
            proof,
        )
        if self._names_capabilities(kind):
            try:
                for what, capability in model.permissions():  # type: ignore[attr-defined]
                    if what == "offer":
                        self.trust.check_offer(cert, capability)
                    else:
                        self.trust.check_request(cert, capability)
            except RemoteProtocolError as exc:
                if exc.code != "not-permitted" or proof is not None:
                    raise
                raise NotPermitted(exc.message, opened) from None
        return opened

    def confirm(self, proof: tuple[bytes, bytes, bytes, bytes] | None) -> None:
        """Check the signature ``open`` deferred (``Opened.proof``).

        Raises ``RemoteProtocolError`` (bad-signature); a forgery's replay-cache
        entry is then withdrawn, so it leaves no trace there (§7)."""
        if proof is None:
            return
        key, signature, signed, replay_key = proof
        if not self.verifier.verify(key, signature, signed):
            self.replay.forget(replay_key)
            raise RemoteProtocolError("the signature does not verify", code="bad-signature")

    def _names_capabilities(self, kind: str) -> bool:
        """Does this kind's payload class define ``permissions()``? (cached per kind)"""
        known = self._permission_kinds.get(kind)
        if known is None:
            known = callable(getattr(self.payloads[kind], "permissions", None))
            self._permission_kinds[kind] = known
        return known

    def _check_recipient(self, to: Any, *, shaped: bool = False) -> tuple[str, ...]:
        """Check 5. ``shaped``: ``to`` is known to be a str or a non-empty tuple of str."""
        if type(to) is str:
            if to == self.node_id or to == GOSSIP or self._any_recipient:
                return (to,)
            raise RemoteProtocolError(
                "the frame is addressed to another node", code="wrong-recipient"
            )
        if type(to) is tuple and (shaped or (to and all(type(r) is str for r in to))):
            if self.node_id in to or self._any_recipient:
                return to
            raise RemoteProtocolError(
                "the frame is addressed to other nodes", code="wrong-recipient"
            )
        raise Malformed("recipient must be a node id, a non-empty list of them, or 'gossip'")

    def _check_window(self, created: float, expires: float, now: float, gossiped: bool) -> None:
        cfg = self.config
        if expires < created:
            raise Malformed("the frame expires before it was created")
        if expires - created > (cfg.max_gossip_ttl if gossiped else cfg.max_ttl):
            raise Malformed("the frame's lifetime is longer than allowed")
        if created > now + cfg.max_skew:
            raise RemoteProtocolError("the frame was created in the future", code="not-yet-valid")
        if expires < now - cfg.max_skew:
            raise RemoteProtocolError("the frame has expired", code="expired")

    def _certificate(self, cert_field: bytes, now: float) -> Certificate:
        if len(cert_field) == _CERT_REF_SIZE:
            cert = self._cert_refs.get(cert_field)
            if cert is None:
                raise RemoteProtocolError(
                    "the frame refers to a certificate we do not know", code="unknown-certificate"
                )
        else:
            memo = self.memo
            if memo is None:
                found = self._certs.get(cert_field)
            else:
                # The process parses it once; whether *we* checked it is our digest table
                # (no second table by raw bytes per node: one entry per peer and node).
                shared = memo.certificate(cert_field)
                found = self._cert_refs.get(shared.digest)
            if found is None:
                cert = parse_certificate(cert_field) if memo is None else shared
                cert.verify_signature(self.verifier)
                self.trust.check_certificate(cert, now, self.config.max_skew)
                self._remember(cert)
                return cert
            cert = found
        self.trust.check_certificate(cert, now, self.config.max_skew)
        return cert

    def _remember(self, cert: Certificate) -> None:
        refs = self._cert_refs
        if len(refs) >= self.config.cert_cache:
            old = refs.pop(next(iter(refs)))
            self._certs.pop(old.raw, None)
        if self.memo is None:
            self._certs[cert.raw] = cert
        refs[cert.digest] = cert

    def known_certificate(self, digest: bytes) -> Certificate | None:
        return self._cert_refs.get(digest)

    def _decode(self, kind: str, payload: bytes) -> BaseModel:
        data = unpack_payload(payload, limit=self.config.max_frame)
        if type(data) is not dict:
            raise Malformed(f"the {kind} payload must be a map")
        try:
            return self.payloads[kind].model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "payload"
            raise Malformed(f"bad {kind} payload at {where}: {first['msg']}") from None


def _split(frame: bytes, limit: int) -> tuple[bytes, bytes]:
    outer = unpack_array(frame, limit=limit)
    if (
        type(outer) is not tuple
        or len(outer) != 2
        or type(outer[0]) is not bytes
        or type(outer[1]) is not bytes
        or len(outer[1]) != SIGNATURE_SIZE
    ):
        raise Malformed("a frame must be [body: bin, signature: bin64]")
    return outer[0], outer[1]


def _check_types(
    version: Any,
    kind: Any,
    sender: Any,
    cert: Any,
    created_ms: Any,
    expires_ms: Any,
    nonce: Any,
    payload: Any,
) -> None:
    if version != VERSION or type(version) is not int:
        raise Malformed(f"unsupported envelope version {version!r}")
    if type(kind) is not str or not _KIND_RE.match(kind):
        raise Malformed("the kind must be a short lowercase name")
    if type(sender) is not str or len(sender) != 52:
        raise Malformed("the sender must be a 52-character node id")
    if type(cert) is not bytes:
        raise Malformed("the certificate field must be bin")
    if type(created_ms) is not int or type(expires_ms) is not int:
        raise Malformed("created and expires must be integers (milliseconds)")
    if type(nonce) is not bytes or len(nonce) != NONCE_SIZE:
        raise Malformed(f"the nonce must be {NONCE_SIZE} bytes")
    if type(payload) is not bytes:
        raise Malformed("the payload must be bin")
