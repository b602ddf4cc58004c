"""Certificates, revocation lists and the trust store (pure logic)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from protocols.codec import packb
from protocols.crypto import Ed25519Verifier
from protocols.errors import BadKey, Malformed, RemoteProtocolError
from protocols.trust import (
    OrgPolicy,
    TrustStore,
    capability_allowed,
    issue_revocation,
    parse_certificate,
    parse_revocation,
)
from tests.strategies import NOW, capabilities, make_node, make_org

V = Ed25519Verifier()


def _code(fn: object, *args: object) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.code


def test_certificate_round_trip() -> None:
    acme = make_org("acme")
    ident, raw = make_node(acme, "alice", offers=("echo",), requests=("translate.*",))
    cert = parse_certificate(raw)
    assert (cert.org, cert.name, cert.node_key, cert.org_key) == (
        "acme", "alice", ident.public_key, acme.root_key
    )  # fmt: skip
    assert cert.offers == ("echo",) and cert.requests == ("translate.*",)
    assert cert.node_id == ident.node_id
    assert cert.not_before == NOW - 3600 and cert.not_after == NOW + 86400
    cert.verify_signature(V)


def test_certificate_time_window() -> None:
    _, raw = make_node(make_org("acme"), "a")
    cert = parse_certificate(raw)
    cert.check_time(NOW)
    assert _code(cert.check_time, NOW + 86401) == "expired"
    assert _code(cert.check_time, NOW - 3601) == "not-yet-valid"
    cert.check_time(NOW + 86401, 30)  # within the skew


def test_certificate_from_an_org_outside_the_store() -> None:
    store = TrustStore([make_org("acme").policy()])
    _, raw = make_node(make_org("evil"), "eve")
    assert _code(store.check_certificate, parse_certificate(raw), NOW) == "untrusted-org"
    assert _code(store.check_offer, parse_certificate(raw), "x") == "untrusted-org"
    assert _code(store.check_request, parse_certificate(raw), "x") == "untrusted-org"


def test_tampered_certificate_signature() -> None:
    _, raw = make_node(make_org("acme"), "a")
    tampered = bytearray(raw)
    tampered[-1] ^= 1
    assert _code(parse_certificate(bytes(tampered)).verify_signature, V) == "bad-certificate"


def test_malformed_certificates() -> None:
    for raw in (
        b"",
        packb([b"x"]),
        packb([packb([2]), bytes(64)]),
        packb([packb([1] * 9), bytes(64)]),
    ):
        with pytest.raises(Malformed):
            parse_certificate(raw)
    bad_key = packb([1, "o", bytes(32), b"\x01" + bytes(31), "n", 0, 1, [], []])
    with pytest.raises(BadKey):
        parse_certificate(packb([bad_key, bytes(64)]))


def test_revocation_is_signed_monotonic_and_per_org() -> None:
    acme, evil = make_org("acme"), make_org("evil")
    store = TrustStore([acme.policy()])
    ident, raw = make_node(acme, "mallory")
    cert = parse_certificate(raw)
    store.check_certificate(cert, NOW)
    v2 = parse_revocation(issue_revocation(acme.signer, "acme", 2, [ident.node_id], now=NOW), V)
    v1 = parse_revocation(issue_revocation(acme.signer, "acme", 1, [], now=NOW), V)
    assert store.apply_revocation(v2) and store.revocation_version("acme") == 2
    assert _code(store.check_certificate, cert, NOW) == "revoked"
    assert not store.apply_revocation(v1)  # older version: ignored
    assert _code(store.check_certificate, cert, NOW) == "revoked"
    v3 = parse_revocation(issue_revocation(acme.signer, "acme", 3, [], now=NOW), V)
    assert store.apply_revocation(v3)
    store.check_certificate(cert, NOW)  # un-revoked by a newer list
    forged = parse_revocation(issue_revocation(evil.signer, "acme", 9, [], now=NOW), V)
    assert _code(store.apply_revocation, forged) == "untrusted-org"


def test_tampered_revocation() -> None:
    raw = bytearray(issue_revocation(make_org("acme").signer, "acme", 1, ["x" * 52], now=NOW))
    raw[-1] ^= 1
    assert _code(parse_revocation, bytes(raw), V) == "bad-signature"


def test_large_revocation_lists_parse() -> None:
    acme = make_org("acme")
    ids = [f"{i:052d}" for i in range(2000)]  # > 100 KB
    rev = parse_revocation(issue_revocation(acme.signer, "acme", 1, ids, now=NOW), V)
    assert len(rev.revoked) == 2000


def test_policy_from_certificate_and_org() -> None:
    acme = make_org("acme")
    store = TrustStore([acme.policy(may_offer=("translate.*",), may_request=("echo",))])
    _, raw = make_node(acme, "a", offers=("translate.en-fr", "sing"), requests=("*",))
    cert = parse_certificate(raw)
    store.check_offer(cert, "translate.en-fr")
    assert _code(store.check_offer, cert, "translate.de-fr") == "not-permitted"  # cert
    assert _code(store.check_offer, cert, "sing") == "not-permitted"  # org policy
    store.check_request(cert, "echo")
    assert _code(store.check_request, cert, "summarize") == "not-permitted"


def test_a_policy_change_applies_to_grants_already_checked() -> None:
    acme = make_org("acme")
    store = TrustStore([acme.policy()])
    cert = parse_certificate(make_node(acme, "a")[1])
    store.check_offer(cert, "translate")  # granted (and remembered)
    store.add(acme.policy(may_offer=("summarize",)))  # the org's policy narrows
    assert _code(store.check_offer, cert, "translate") == "not-permitted"
    store.check_request(cert, "translate")  # the other direction is unchanged
    store.remove("acme")
    assert _code(store.check_request, cert, "translate") == "untrusted-org"


def test_store_add_remove_list() -> None:
    store = TrustStore()
    store.add(make_org("b").policy())
    store.add(make_org("a").policy())
    assert [o.name for o in store.orgs()] == ["a", "b"]
    assert store.remove("a") and not store.remove("a")
    assert store.get("b") is not None and store.get("a") is None
    with pytest.raises(BadKey):
        store.add(OrgPolicy("z", b"\x00" * 31))


@given(capabilities)
@settings(max_examples=100)
def test_capability_patterns(capability: str) -> None:
    assert capability_allowed(["*"], capability)
    assert capability_allowed([capability], capability)
    assert not capability_allowed([], capability)
    assert capability_allowed([capability.split(".")[0] + "*"], capability)


def test_replace_takes_orgs_and_newer_revocations_in_place_and_never_unrevokes() -> None:
    """A running node's reload (``mesh-node reload``): the same store object, so the
    wire and the agents see the change; a revocation is never taken back."""
    acme, globex = make_org("acme"), make_org("globex")
    ident, cert = make_node(acme, "n1")
    live = TrustStore([acme.policy()])
    live.apply_revocation(
        parse_revocation(issue_revocation(acme.signer, "acme", 2, [ident.node_id], now=NOW), V)
    )
    fresh = TrustStore([OrgPolicy("acme", acme.signer.public_key, ("x",)), globex.policy()])
    fresh.apply_revocation(
        parse_revocation(issue_revocation(acme.signer, "acme", 1, [], now=NOW), V)
    )
    changes = live.replace(fresh)
    assert changes == {"added": ["globex"], "removed": [], "changed": ["acme"], "revocations": []}
    assert live.get("globex") is not None and live.get("acme").may_offer == ("x",)  # type: ignore[union-attr]
    assert live.revocation_version("acme") == 2 and ident.node_id in live.revoked("acme")
    assert _code(live.check_certificate, parse_certificate(cert), NOW) == "revoked"
    gone = live.replace(TrustStore([globex.policy()]))
    assert gone["removed"] == ["acme"]
    assert _code(live.check_certificate, parse_certificate(cert), NOW) == "untrusted-org"


def test_a_new_root_key_for_an_org_starts_its_revocations_over() -> None:
    """After an org's root key changed (a new `org init`), its lists start at v1
    again: the old key's higher version used to shadow them for good."""
    from protocols.crypto import Ed25519Signer
    from tests.strategies import Org, fixed_seed

    old, new = make_org("acme"), Org("acme", Ed25519Signer(fixed_seed("org acme, rotated")))
    live = TrustStore([old.policy()])
    live.apply_revocation(parse_revocation(issue_revocation(old.signer, "acme", 3, [], now=NOW), V))
    ident, _ = make_node(new, "b")
    fresh = TrustStore([new.policy()])
    fresh.apply_revocation(
        parse_revocation(issue_revocation(new.signer, "acme", 1, [ident.node_id], now=NOW), V)
    )
    assert live.replace(fresh)["revocations"] == ["acme v1"]
    assert ident.node_id in live.revoked("acme") and live.revocation_version("acme") == 1
