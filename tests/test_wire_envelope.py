"""The signed envelope: one test per rejection code, plus the happy paths."""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack
import pytest

from protocols.codec import MAX_FRAME, packb
from protocols.crypto import Ed25519Verifier
from protocols.envelope import GOSSIP, Wire, WireConfig, signed_bytes
from protocols.errors import REMOTE_CODES, LocalProtocolError, MeshError, RemoteProtocolError
from protocols.identity import node_id_from_public_key
from protocols.trust import CERT_TAG, issue_revocation, parse_revocation
from tests.strategies import (
    NOW,
    TEST_PAYLOADS,
    AnyPayload,
    Named,
    WireWorld,
    make_node,
    make_org,
)

SMALL_ORDER = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")


def code_of(wire: Wire, frame: bytes, now: float = NOW) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        wire.open(frame, now)
    assert info.value.code in REMOTE_CODES
    assert "\n" not in str(info.value)
    return info.value.code


def test_seal_and_open() -> None:
    w = WireWorld()
    frame = w.seal({"x": [1, 2]})
    opened = w.bob.open(frame, NOW)
    assert opened.kind == "any" and opened.sender == w.alice.node_id and opened.org == "acme"
    assert opened.recipients == (w.bob.node_id,)
    assert opened.payload == AnyPayload(data={"x": (1, 2)})
    assert opened.digest == hashlib.sha256(frame).digest() and opened.frame == frame
    assert opened.certificate.name == "alice"


def test_signed_bytes_are_domain_kind_body() -> None:
    w = WireWorld()
    frame = w.seal(1)
    body, sig = msgpack.unpackb(frame)
    assert signed_bytes("any", body) == b"parley/1/any" + body
    assert Ed25519Verifier().verify(w.alice.identity.public_key, sig, b"parley/1/any" + body)


def test_recipient_list_and_gossip() -> None:
    w = WireWorld()
    frame = w.alice.seal("any", AnyPayload(), ["x" * 52, w.bob.node_id], NOW, nonce=w.nonce())
    assert w.bob.open(frame, NOW).recipients == ("x" * 52, w.bob.node_id)
    frame = w.alice.seal("any", AnyPayload(), GOSSIP, NOW, nonce=w.nonce())
    assert w.bob.open(frame, NOW).recipients == (GOSSIP,)


def test_certificate_reference_after_full_certificate() -> None:
    w = WireWorld()
    assert code_of(w.bob, w.seal(1, cert_ref=True)) == "unknown-certificate"
    w.bob.open(w.seal(2), NOW)
    assert w.bob.open(w.seal(3, cert_ref=True), NOW).sender == w.alice.node_id


def test_malformed() -> None:
    w = WireWorld()
    for junk in (b"", b"\xc1", packb([1, 2]), packb([b"x", b"y" * 63]), packb({"a": 1})):
        assert code_of(w.bob, junk) == "malformed"
    frame = w.seal(1)
    assert code_of(w.bob, frame + b"\x00") == "malformed"
    assert code_of(w.bob, frame[:-1]) == "malformed"


def test_too_large() -> None:
    w = WireWorld(config=WireConfig(max_frame=2048))
    w.bob.open(w.seal(b"x" * 1000), NOW)
    big = w.seal(b"x" * 4096)
    assert code_of(w.bob, big) == "too-large"
    assert code_of(WireWorld().bob, bytes(MAX_FRAME + 1)) == "too-large"


def test_duplicate_key() -> None:
    w = WireWorld()
    payload = b"\x82" + packb("data") + packb(1) + packb("data") + packb(2)
    frame = w.alice.seal_bytes("any", payload, w.bob.node_id, NOW, nonce=w.nonce())
    assert code_of(w.bob, frame) == "duplicate-key"


def test_bad_key_small_order_sender() -> None:
    w = WireWorld()
    body = packb([1, "acme", w.acme.root_key, SMALL_ORDER, "weak", 0, 2**42, ["*"], ["*"]])
    cert = packb([body, w.acme.signer.sign(CERT_TAG + body)])
    env = packb(
        [1, "any", node_id_from_public_key(SMALL_ORDER), cert, w.bob.node_id,
         int(NOW * 1000), int(NOW * 1000) + 1000, bytes(16), packb({})]
    )  # fmt: skip
    frame = packb([env, bytes(64)])
    assert code_of(w.bob, frame) == "bad-key"


def test_unknown_kind() -> None:
    w = WireWorld()
    frame = w.alice.seal_bytes("teleport", packb({}), w.bob.node_id, NOW, nonce=w.nonce())
    assert code_of(w.bob, frame) == "unknown-kind"
    with pytest.raises(LocalProtocolError):
        w.alice.seal("teleport", AnyPayload(), w.bob.node_id, NOW, nonce=w.nonce())


def test_bad_signature() -> None:
    w = WireWorld()
    frame = bytearray(w.seal(1))
    frame[-3] ^= 0x10
    assert code_of(w.bob, bytes(frame)) == "bad-signature"


def test_replayed() -> None:
    w = WireWorld()
    frame = w.seal(1)
    w.bob.open(frame, NOW)
    assert code_of(w.bob, frame, NOW + 1) == "replayed"


def test_rejected_frame_does_not_poison_the_replay_cache() -> None:
    w = WireWorld()
    frame = w.seal(1)
    forged = bytearray(frame)
    forged[-1] ^= 1
    assert code_of(w.bob, bytes(forged)) == "bad-signature"
    w.bob.open(frame, NOW)  # the real frame with the same nonce still opens


def test_expired_and_not_yet_valid_frames() -> None:
    w = WireWorld()
    assert code_of(w.bob, w.seal(1, now=NOW - 100, ttl=30)) == "expired"
    assert code_of(w.bob, w.seal(1, now=NOW + 100)) == "not-yet-valid"
    w.bob.open(w.seal(1, now=NOW + 20), NOW)  # inside the 30 s skew


def test_frame_lifetime_over_the_maximum_is_malformed() -> None:
    w = WireWorld()
    assert code_of(w.bob, w.seal(1, ttl=3600)) == "malformed"


def test_wrong_recipient() -> None:
    w = WireWorld()
    assert code_of(w.bob, w.seal(1, to="a" * 52)) == "wrong-recipient"
    frame = w.alice.seal("any", AnyPayload(), ["a" * 52, "b" * 52], NOW, nonce=w.nonce())
    assert code_of(w.bob, frame) == "wrong-recipient"


def test_expired_and_not_yet_valid_certificates() -> None:
    expired = WireWorld(alice_cert={"not_before": NOW - 7200, "not_after": NOW - 3600})
    assert code_of(expired.bob, expired.seal(1)) == "expired"
    early = WireWorld(alice_cert={"not_before": NOW + 3600, "not_after": NOW + 7200})
    assert code_of(early.bob, early.seal(1)) == "not-yet-valid"


def test_untrusted_org() -> None:
    w = WireWorld()
    evil = make_org("evil")
    ident, cert = make_node(evil, "eve")
    eve = Wire(ident, cert, w.trust, Ed25519Verifier(), TEST_PAYLOADS)
    frame = eve.seal("any", AnyPayload(), w.bob.node_id, NOW, nonce=w.nonce())
    assert code_of(w.bob, frame) == "untrusted-org"


def test_org_name_with_another_root_key_is_untrusted() -> None:
    w = WireWorld()
    impostor = make_org("impostor")
    from dataclasses import replace

    ident, cert = make_node(replace(impostor, name="acme"), "eve")
    eve = Wire(ident, cert, w.trust, Ed25519Verifier(), TEST_PAYLOADS)
    frame = eve.seal("any", AnyPayload(), w.bob.node_id, NOW, nonce=w.nonce())
    assert code_of(w.bob, frame) == "untrusted-org"


def test_forged_certificate_is_bad_certificate() -> None:
    w = WireWorld()
    ident, _ = make_node(w.acme, "frank")
    body = packb([1, "acme", w.acme.root_key, ident.public_key, "frank", 0, 2**42, ["*"], ["*"]])
    forged = packb([body, make_org("evil").signer.sign(CERT_TAG + body)])
    env = packb(
        [1, "any", ident.node_id, forged, w.bob.node_id, int(NOW * 1000),
         int(NOW * 1000) + 1000, bytes(16), packb({})]
    )  # fmt: skip
    frame = packb([env, ident.signer.sign(signed_bytes("any", env))])
    assert code_of(w.bob, frame) == "bad-certificate"


def test_revoked() -> None:
    w = WireWorld()
    w.bob.open(w.seal(1), NOW)  # alice's certificate is cached by now
    rev = issue_revocation(w.acme.signer, "acme", 1, [w.alice.node_id], now=NOW)
    assert w.trust.apply_revocation(parse_revocation(rev, Ed25519Verifier()))
    assert code_of(w.bob, w.seal(2)) == "revoked"
    assert code_of(w.bob, w.seal(3, cert_ref=True)) == "revoked"


def test_not_permitted_by_certificate_and_by_policy() -> None:
    w = WireWorld(policy={"may_request": ("translate.*",)}, alice_cert={"offers": ("echo",)})

    def named(capability: str, offer: bool = False) -> bytes:
        payload = Named(capability=capability, offer=offer)
        return w.alice.seal("named", payload, w.bob.node_id, NOW, nonce=w.nonce())

    assert w.bob.open(named("translate.en-fr"), NOW).payload == Named(capability="translate.en-fr")
    assert code_of(w.bob, named("summarize")) == "not-permitted"  # org policy
    assert w.bob.open(named("echo", offer=True), NOW).kind == "named"
    assert code_of(w.bob, named("sing", offer=True)) == "not-permitted"  # certificate


def test_receive_only_wire() -> None:
    w = WireWorld()
    receiver = w.fresh_receiver()
    assert receiver.open(w.seal(1), NOW).sender == w.alice.node_id
    with pytest.raises(LocalProtocolError):
        receiver.seal("any", AnyPayload(), w.bob.node_id, NOW, nonce=bytes(16))
    anyone = Wire.receiver(None, w.trust, Ed25519Verifier(), TEST_PAYLOADS)
    assert anyone.open(w.seal(1, to="z" * 52), NOW).recipients == ("z" * 52,)


def test_certificate_for_another_key_is_local_misuse() -> None:
    w = WireWorld()
    ident, _ = make_node(w.acme, "x")
    _, other_cert = make_node(w.acme, "y")
    with pytest.raises(LocalProtocolError):
        Wire(ident, other_cert, w.trust, Ed25519Verifier(), TEST_PAYLOADS)


def test_every_error_is_a_mesh_error_with_a_one_line_message() -> None:
    for code in REMOTE_CODES:
        err = RemoteProtocolError("one line", code=code)
        assert isinstance(err, MeshError) and str(err) == "one line" and err.code == code


def test_deferred_signature_check_runs_every_other_check_and_confirms_later() -> None:
    w = WireWorld()
    later = frozenset({"any"})
    good = w.seal(1)
    opened = w.bob.open(good, NOW, defer=later)
    assert opened.proof is not None and opened.payload == AnyPayload(data=1)
    w.bob.confirm(opened.proof)  # a good signature: no error
    w.bob.confirm(None)  # nothing deferred: nothing to check
    forged = bytearray(w.seal(2))
    forged[-3] ^= 0x10
    opened = w.bob.open(bytes(forged), NOW, defer=later)
    with pytest.raises(RemoteProtocolError) as info:
        w.bob.confirm(opened.proof)
    assert info.value.code == "bad-signature"
    # every other check still runs on arrival
    assert code_of_deferred(w.bob, w.seal(3, to="a" * 52)) == "wrong-recipient"
    assert code_of_deferred(w.bob, w.seal(3, now=NOW - 100, ttl=30)) == "expired"
    assert code_of_deferred(w.bob, good) == "replayed"
    # kinds not listed are verified on arrival as always
    assert code_of(w.bob, bytes(forged)) == "bad-signature"


def test_a_deferred_forgery_does_not_shadow_the_genuine_frame_in_the_replay_cache() -> None:
    w = WireWorld()
    later = frozenset({"any"})
    frame = w.seal(1)
    forged = bytearray(frame)
    forged[-1] ^= 1  # same nonce, another signature: arrives first
    w.bob.open(bytes(forged), NOW, defer=later)
    genuine = w.bob.open(frame, NOW, defer=later)
    w.bob.confirm(genuine.proof)
    assert code_of_deferred(w.bob, frame) == "replayed"


def code_of_deferred(wire: Wire, frame: bytes) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        wire.open(frame, NOW, defer=frozenset({"any"}))
    return info.value.code


def test_a_deferred_forgery_found_out_leaves_no_replay_entry() -> None:
    w = WireWorld()
    later = frozenset({"any"})
    forged = bytearray(w.seal(1))
    forged[-3] ^= 0x10
    size = len(w.bob.replay)
    for _ in range(2):  # the same forgery twice (a network duplicate): found out twice
        opened = w.bob.open(bytes(forged), NOW, defer=later)
        with pytest.raises(RemoteProtocolError) as info:
            w.bob.confirm(opened.proof)
        assert info.value.code == "bad-signature"
        assert len(w.bob.replay) == size


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        (
            "cfp",
            {"task_id": "t", "round": 1, "capability": "c", "reply_by": NOW, "deadline": "nan"},
        ),
        (
            "cfp",
            {"task_id": "t", "round": 1, "capability": "c", "reply_by": "inf", "deadline": NOW},
        ),
        ("progress", {"task_id": "t", "epoch": 1, "percent": "nan"}),
    ],
)
def test_a_non_finite_number_in_a_payload_is_malformed(kind: str, fields: dict[str, Any]) -> None:
    """A trusted peer with a bug (or an insider) must not plant NaN or infinity in a
    deadline or a timer: comparisons with NaN are all false, so a job would never
    expire and a timer heap would lose its order."""
    from protocols.kinds import PAYLOADS

    w = WireWorld()
    alice = Wire(w.alice.identity, w.alice.certificate_bytes, w.trust, Ed25519Verifier(), PAYLOADS)
    bob = Wire(w.bob.identity, w.bob.certificate_bytes, w.trust, Ed25519Verifier(), PAYLOADS)
    bad = ("nan", "inf")
    payload = packb({k: float(v) if v in bad else v for k, v in fields.items()})
    frame = alice.seal_bytes(kind, payload, bob.node_id, NOW, nonce=w.nonce())
    assert code_of(bob, frame) == "malformed"
    finite = packb({k: 1.0 if v in bad else v for k, v in fields.items()})
    bob.open(alice.seal_bytes(kind, finite, bob.node_id, NOW, nonce=w.nonce()), NOW)
