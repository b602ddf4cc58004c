"""FrameMemo: decoding shared between the Wires of one process, checks still per node."""

from __future__ import annotations

import pytest

from protocols.crypto import Ed25519Verifier, Verifier
from protocols.envelope import DOMAIN, FrameMemo, Wire, WireConfig
from protocols.errors import RemoteProtocolError
from protocols.trust import TrustStore
from tests.strategies import NOW, TEST_PAYLOADS, AnyPayload, WireWorld, make_node, make_org


class CountingVerifier:
    """Counts calls; with ``accept=False`` it refuses every frame signature."""

    def __init__(self, accept: bool = True) -> None:
        self.calls = 0
        self.accept = accept
        self.inner = Ed25519Verifier()

    def verify(self, public_key: bytes, signature: bytes, data: bytes) -> bool:
        self.calls += 1
        if not self.accept and data.startswith(DOMAIN + b"any"):
            return False
        return self.inner.verify(public_key, signature, data)


def _wire(name: str, trust: TrustStore, memo: FrameMemo, verifier: Verifier) -> Wire:
    ident, cert = make_node(make_org("acme"), name)
    return Wire(ident, cert, trust, verifier, TEST_PAYLOADS, memo=memo)


def _code(wire: Wire, frame: bytes, now: float = NOW) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        wire.open(frame, now)
    return info.value.code


def test_shared_decode_keeps_every_node_check() -> None:
    w = WireWorld()
    memo = FrameMemo(TEST_PAYLOADS)
    v1, v2, bad = CountingVerifier(), CountingVerifier(), CountingVerifier(accept=False)
    carol = _wire("carol", w.trust, memo, v1)
    dave = _wire("dave", w.trust, memo, v2)
    eve = _wire("eve", w.trust, memo, bad)
    outsider = _wire("zed", TrustStore([make_org("other").policy()]), memo, CountingVerifier())
    to = [carol.node_id, dave.node_id, eve.node_id, outsider.node_id]
    frame = w.alice.seal("any", AnyPayload(data=[1, 2]), to, NOW, nonce=w.nonce())

    first = carol.open(frame, NOW)
    assert len(memo._frames) == 1  # a frame to a recipient set is remembered
    second = dave.open(frame, NOW)
    assert second.payload is first.payload  # decoded once, shared
    assert v1.calls == 2 and v2.calls == 2  # each node verified cert + frame itself
    # A memo hit does not skip a node's own checks.
    assert _code(eve, frame) == "bad-signature"
    assert _code(outsider, frame) == "untrusted-org"
    assert _code(carol, frame) == "replayed"
    assert _code(dave, frame, NOW + 3600) == "expired"
    assert _code(w.bob, frame) == "wrong-recipient"  # bob has no memo; not a recipient
    bob_memo = Wire(
        w.bob.identity,
        w.bob.certificate_bytes,
        w.trust,
        Ed25519Verifier(),
        TEST_PAYLOADS,
        memo=memo,
    )
    assert _code(bob_memo, frame) == "wrong-recipient"


def test_frames_to_one_node_are_not_remembered_and_memo_is_bounded() -> None:
    w = WireWorld()
    memo = FrameMemo(TEST_PAYLOADS, frames=2, certificates=1)
    carol = _wire("carol", w.trust, memo, Ed25519Verifier())
    carol.open(w.seal(1, to=carol.node_id), NOW)
    assert len(memo._frames) == 0
    for i in range(5):
        frame = w.alice.seal(
            "any", AnyPayload(data=i), [carol.node_id, "x" * 52], NOW, nonce=w.nonce()
        )
        carol.open(frame, NOW)
    assert len(memo._frames) == 2 and len(memo._certs) == 1


def test_memo_for_another_registry_is_ignored() -> None:
    memo = FrameMemo({})
    w = WireWorld()
    wire = _wire("carol", w.trust, memo, Ed25519Verifier())
    assert wire.memo is None


def test_a_node_checks_each_certificate_once_until_its_cache_evicts_it() -> None:
    """With a memo, the node's own table of checked certificates decides (by digest):
    the memo re-parsing a certificate it evicted does not make the node check it
    again; the node evicting it does."""
    w = WireWorld()
    memo = FrameMemo(TEST_PAYLOADS, certificates=1)
    counting = CountingVerifier()
    ident, cert = make_node(make_org("acme"), "carol")
    carol = Wire(ident, cert, w.trust, counting, TEST_PAYLOADS, WireConfig(cert_cache=1), memo=memo)

    def from_(sender: Wire) -> int:
        before = counting.calls
        frame = sender.seal("any", AnyPayload(data=1), carol.node_id, NOW, nonce=w.nonce())
        carol.open(frame, NOW)
        return counting.calls - before

    assert from_(w.alice) == 2  # certificate + frame
    assert from_(w.alice) == 1  # frame only
    memo.certificate(w.bob.certificate_bytes)  # the memo evicts alice's parsed certificate
    assert from_(w.alice) == 1  # re-parsed by the memo, still known to carol
    assert from_(w.bob) == 2  # carol's cache holds one: alice's goes
    assert from_(w.alice) == 2
