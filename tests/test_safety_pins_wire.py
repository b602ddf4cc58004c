"""Safety checks of the envelope and the trust policy that no test held.

Pinned after a mutation run (session 15): each test below failed to fail when the
check it names was removed from the code (the sender/certificate match, the replay purge, the expiry bound, exact capability names, no unverified NotPermitted); each one fails on that mutant and
passes on the code as it is."""

from __future__ import annotations

import pytest

from protocols.codec import packb
from protocols.envelope import signed_bytes
from protocols.errors import RemoteProtocolError
from tests.strategies import NOW, AnyPayload, WireWorld, make_node


def code_of(wire, frame, now=NOW):
    with pytest.raises(RemoteProtocolError) as info:
        wire.open(frame, now)
    return info.value.code


def test_sender_must_match_certificate():
    # alice signs a frame whose sender field names carol, carrying alice's certificate
    w = WireWorld()
    carol_id, _ = make_node(w.acme, "carol")
    created = round(NOW * 1000)
    body = packb(
        [
            1,
            "any",
            carol_id.node_id,
            w.alice.certificate_bytes,
            w.bob.node_id,
            created,
            created + 30_000,
            w.nonce(),
            packb(AnyPayload(data=1).model_dump()),
        ]
    )
    frame = packb([body, w.alice.identity.signer.sign(signed_bytes("any", body))])
    assert code_of(w.bob, frame) == "malformed"


def test_replay_of_long_lived_frame_after_skew_horizon():
    # a direct frame with the longest allowed ttl must stay in the replay cache until it expires
    w = WireWorld()
    frame = w.seal(1, ttl=600)
    w.bob.open(frame, NOW)
    w.bob.open(w.seal(2, now=NOW + 40), NOW + 40)  # any later frame: triggers the purge
    assert code_of(w.bob, frame, NOW + 41) == "replayed"


def test_expiry_boundary_is_exactly_max_skew():
    w = WireWorld()
    # expires 31 s before now: 1 s past the 30 s skew
    assert code_of(w.bob, w.seal(1, now=NOW - 61, ttl=30)) == "expired"
    w.bob.open(w.seal(2, now=NOW - 59, ttl=30), NOW)  # 29 s past expiry: still inside the skew


def test_short_lived_frame_cannot_be_replayed_after_purge():
    w = WireWorld()
    frame = w.seal(1, ttl=5)
    w.bob.open(frame, NOW)
    w.bob.open(w.seal(2, now=NOW + 40), NOW + 40)  # purges the first entry (expired + skew)
    assert code_of(w.bob, frame, NOW + 40) in ("expired", "replayed")


def test_capability_patterns_are_not_prefixes():
    from protocols.trust import capability_allowed

    assert capability_allowed(("echo",), "echo")
    assert not capability_allowed(("echo",), "echo-admin")
    assert not capability_allowed(("translate",), "translate.secret")
    assert capability_allowed(("translate.*",), "translate.en")


def test_capability_policy_exact_name_not_prefix():
    w = WireWorld(alice_cert={"offers": ("echo",)})
    opened = w.bob.open(w.seal(1), NOW)
    with pytest.raises(RemoteProtocolError) as info:
        w.bob.trust.check_offer(opened.certificate, "echo-admin")
    assert info.value.code == "not-permitted"


def test_deferred_not_permitted_frame_is_not_handed_back_unverified():
    from protocols.envelope import NotPermitted
    from tests.strategies import Named

    w = WireWorld(alice_cert={"offers": ("echo",)})
    frame = w.alice.seal(
        "named", Named(capability="other", offer=True), w.bob.node_id, NOW, nonce=w.nonce()
    )
    with pytest.raises(RemoteProtocolError) as info:
        w.bob.open(frame, NOW, defer=frozenset({"named"}))
    assert info.value.code == "not-permitted" and not isinstance(info.value, NotPermitted)
