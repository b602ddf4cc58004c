"""Generate ``docs/test-vectors.json`` and ``docs/test-vectors.trust`` deterministically.

Run ``python docs/make_test_vectors.py`` (or ``make vectors``); ``--check``
exits 1 if the files on disk differ from what this script makes.

Every seed and nonce is fixed, and Ed25519 signatures are deterministic, so
the output is byte-for-byte reproducible. Frames are built here from the byte
layout of ``docs/protocol.md`` (not through ``Wire.seal``), so the vectors
test the spec and the implementation against each other. All vectors share
one receiver clock ``now`` and one recipient, and are meant to be opened in
their listed order by one receiver (the ``replayed`` vector repeats the first
frame; the certificate-reference vector relies on an earlier full certificate).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from protocols.codec import MAX_FRAME, packb
from protocols.contract_net.messages import Cfp
from protocols.crypto import Ed25519Signer
from protocols.envelope import signed_bytes
from protocols.identity import node_id_from_public_key
from protocols.membership.messages import Ack, Ping
from protocols.trust import CERT_TAG, issue_certificate, issue_revocation

NOW = 1767225600  # 2026-01-01T00:00:00Z, the receiver's clock for every vector
NOW_MS = NOW * 1000
HERE = Path(__file__).resolve().parent
#: An Ed25519 point of order 8 (a "small-order" public key every node must refuse).
SMALL_ORDER_KEY = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
TRUSTED_POLICY = {"may_offer": ["*"], "may_request": ["translate.*", "echo"]}


def seed(name: str) -> bytes:
    return hashlib.sha256(b"parley test vectors: " + name.encode()).digest()


def nonce(i: int) -> bytes:
    return hashlib.sha256(b"parley test vector nonce %d" % i).digest()[:16]


class Party:
    """A signer with a name, its seed, its org's seed and its certificate."""

    def __init__(self, name: str, org: str, **cert: Any) -> None:
        self.name, self.org = name, org
        self.seed = seed(f"node {name}")
        self.signer = Ed25519Signer(self.seed)
        self.org_seed = seed(f"org {org}")
        self.org_signer = Ed25519Signer(self.org_seed)
        self.node_id = node_id_from_public_key(self.signer.public_key)
        self.cert = issue_certificate(
            self.org_signer,
            org,
            self.signer.public_key,
            name,
            not_before=cert.get("not_before", NOW - 3600),
            not_after=cert.get("not_after", NOW + 86400),
            offers=cert.get("offers", ("*",)),
            requests=cert.get("requests", ("*",)),
        )


def body(
    kind: str,
    sender: str,
    cert: bytes,
    to: str | list[str],
    n: int,
    payload: bytes,
    *,
    created_ms: int = NOW_MS - 1000,
    ttl_ms: int = 30_000,
    version: int = 1,
) -> list[Any]:
    return [version, kind, sender, cert, to, created_ms, created_ms + ttl_ms, nonce(n), payload]


def vector(
    name: str, who: Party, fields: list[Any], expect: str, description: str
) -> dict[str, Any]:
    """Encode ``fields`` as an envelope body, sign it as ``who``, and describe it."""
    body_bytes = packb(fields)
    kind = fields[1]
    signed = signed_bytes(kind, body_bytes)
    signature = who.signer.sign(signed)
    return make(name, who, packb([body_bytes, signature]), signed, signature, expect, description)


def make(
    name: str,
    who: Party,
    frame: bytes,
    signed: bytes,
    signature: bytes,
    expect: str,
    description: str,
) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "seed_hex": who.seed.hex(),
        "public_key_hex": who.signer.public_key.hex(),
        "node_id": who.node_id,
        "org_root_seed_hex": who.org_seed.hex(),
        "frame_hex": frame.hex(),
        "signed_bytes_hex": signed.hex(),
        "signature_hex": signature.hex(),
        "now": NOW,
        "recipient": "",
        "expect": expect,
    }


def build() -> tuple[list[dict[str, Any]], str]:
    """All vectors, in order, and the trust store text."""
    bob = Party("bob", "acme")  # the receiver: needs no private key to open
    alice = Party("alice", "acme")
    carol = Party("carol", "acme", requests=("echo",))
    dave = Party("dave", "acme", not_before=NOW - 86400 * 2, not_after=NOW - 3600)
    mallory = Party("mallory", "acme")
    eve = Party("eve", "evil")
    frank = Party("frank", "acme")
    grace = Party("grace", "acme")
    me = bob.node_id
    forged = packb([_cert_body(frank), eve.org_signer.sign(CERT_TAG + _cert_body(frank))])
    small_body = _cert_body(alice, node_key=SMALL_ORDER_KEY)
    small_cert = packb([small_body, alice.org_signer.sign(CERT_TAG + small_body)])

    def ping(seq: int, target: str = me) -> bytes:
        return packb(Ping(seq=seq, target=target).model_dump())

    def cfp(task: str, capability: str) -> bytes:
        model = Cfp(
            task_id=task, round=1, capability=capability, reply_by=NOW + 5.0, deadline=NOW + 60.0
        )
        return packb(model.model_dump())

    a = alice
    vs = [
        vector(
            "ok-ping",
            a,
            body("ping", a.node_id, a.cert, me, 1, ping(1)),
            "ok",
            "membership ping from alice (org acme) to the receiver, full certificate",
        ),
        vector(
            "ok-cfp-recipient-list",
            a,
            body("cfp", a.node_id, a.cert, [carol.node_id, me], 2, cfp("t-1", "translate.en-fr")),
            "ok",
            "contract-net cfp to a list of two recipients; requests translate.en-fr, allowed",
        ),
        vector(
            "ok-ack-certificate-reference",
            a,
            body(
                "ack",
                a.node_id,
                hashlib.sha256(a.cert).digest(),
                me,
                3,
                packb(Ack(seq=1).model_dump()),
            ),
            "ok",
            "ack that names alice's certificate by its SHA-256 (learned from ok-ping)",
        ),
    ]
    vs.append(
        dict(
            vs[0],
            name="replayed",
            expect="replayed",
            description="the exact bytes of ok-ping again",
        )
    )
    bad = vector("bad-signature", a, body("ping", a.node_id, a.cert, me, 5, ping(2)), "", "")
    frame = bytearray.fromhex(bad["frame_hex"])
    frame[-1] ^= 0x01
    bad.update(
        frame_hex=frame.hex(),
        signature_hex=frame[-64:].hex(),
        expect="bad-signature",
        description="a ping whose signature has its last bit flipped",
    )
    vs.append(bad)
    vs += [
        vector(
            "wrong-recipient",
            a,
            body("ping", a.node_id, a.cert, carol.node_id, 6, ping(3, carol.node_id)),
            "wrong-recipient",
            "a ping addressed to carol, not the receiver",
        ),
        vector(
            "expired-frame",
            a,
            body("ping", a.node_id, a.cert, me, 7, ping(4), created_ms=NOW_MS - 200_000),
            "expired",
            "created 200 s ago with a 30 s lifetime: expired even with 30 s of skew",
        ),
        vector(
            "not-yet-valid-frame",
            a,
            body("ping", a.node_id, a.cert, me, 8, ping(5), created_ms=NOW_MS + 120_000),
            "not-yet-valid",
            "created 120 s in the receiver's future (beyond 30 s of skew)",
        ),
        vector(
            "expired-certificate",
            dave,
            body("ping", dave.node_id, dave.cert, me, 9, ping(1)),
            "expired",
            "dave's certificate expired an hour before now",
        ),
        vector(
            "untrusted-org",
            eve,
            body("ping", eve.node_id, eve.cert, me, 10, ping(1)),
            "untrusted-org",
            "eve's certificate is issued by org evil, not in the trust store",
        ),
        vector(
            "revoked",
            mallory,
            body("ping", mallory.node_id, mallory.cert, me, 11, ping(1)),
            "revoked",
            "mallory is in acme's revocation list (version 1) in the trust store",
        ),
        vector(
            "not-permitted-certificate",
            carol,
            body("cfp", carol.node_id, carol.cert, me, 12, cfp("t-2", "translate.en-fr")),
            "not-permitted",
            "carol's certificate only allows requesting echo; the cfp requests translate.en-fr",
        ),
        vector(
            "not-permitted-policy",
            a,
            body("cfp", a.node_id, a.cert, me, 13, cfp("t-3", "summarize")),
            "not-permitted",
            "the trust store lets acme request only translate.* and echo; cfp requests summarize",
        ),
        vector(
            "unknown-kind",
            a,
            body("teleport", a.node_id, a.cert, me, 14, packb({})),
            "unknown-kind",
            "kind teleport is not in the registry",
        ),
        vector(
            "duplicate-key",
            a,
            body("ping", a.node_id, a.cert, me, 15, _dup_key_payload(me)),
            "duplicate-key",
            "a correctly signed ping whose payload map has the key seq twice",
        ),
        vector(
            "malformed-body",
            a,
            body("ping", a.node_id, a.cert, me, 16, ping(6))[:8],
            "malformed",
            "a signed body of 8 elements instead of 9 (no payload)",
        ),
        make(
            "malformed-not-msgpack",
            a,
            b"\xc1\x00",
            b"",
            b"",
            "malformed",
            "0xc1 is never used in msgpack: not a frame at all (unsigned)",
        ),
        make(
            "too-large",
            a,
            _too_large(),
            b"",
            bytes(64),
            "too-large",
            f"{MAX_FRAME + 1} bytes, one over the limit; checked before anything else (unsigned)",
        ),
        vector(
            "bad-key",
            a,
            body("ping", node_id_from_public_key(SMALL_ORDER_KEY), small_cert, me, 17, ping(7)),
            "bad-key",
            "the sender's certificate (signed by acme) names a small-order key of order 8; "
            "the envelope is signed by alice's seed, never checked",
        ),
        vector(
            "bad-certificate",
            frank,
            body("ping", frank.node_id, forged, me, 18, ping(1)),
            "bad-certificate",
            "frank's certificate claims org acme but is signed by evil's root",
        ),
        vector(
            "unknown-certificate",
            grace,
            body("ping", grace.node_id, hashlib.sha256(grace.cert).digest(), me, 19, ping(1)),
            "unknown-certificate",
            "grace refers to her certificate by digest, but the receiver never saw it",
        ),
    ]
    for v in vs:
        v["recipient"] = me
    revocation = issue_revocation(
        Ed25519Signer(seed("org acme")), "acme", 1, [mallory.node_id], now=NOW - 600
    )
    return vs, _trust_text(revocation)


def _cert_body(who: Party, node_key: bytes | None = None) -> bytes:
    return packb(
        [
            1,
            "acme",
            who.org_signer.public_key,
            node_key or who.signer.public_key,
            who.name,
            (NOW - 3600) * 1000,
            (NOW + 86400) * 1000,
            ["*"],
            ["*"],
        ]
    )


def _dup_key_payload(target: str) -> bytes:
    # fixmap of 4 entries: records, seq, target, seq (msgpack allows it; Parley does not)
    return (
        b"\x84"
        + packb("records")
        + packb([])
        + packb("seq")
        + packb(1)
        + packb("target")
        + packb(target)
        + packb("seq")
        + packb(2)
    )


def _too_large() -> bytes:
    # [bin32 of N zero bytes, bin8 of 64 zero bytes]: 1 + 5 + N + 2 + 64 bytes
    frame = packb([bytes(MAX_FRAME + 1 - 72), bytes(64)])
    assert len(frame) == MAX_FRAME + 1, len(frame)
    return frame


def _trust_text(revocation: bytes) -> str:
    root = Ed25519Signer(seed("org acme")).public_key.hex()
    return (
        "# Trust store of docs/test-vectors.json (made by docs/make_test_vectors.py)\n"
        "\n[[org]]\n"
        'name = "acme"\n'
        f'root_key = "{root}"\n'
        f"may_offer = {json.dumps(TRUSTED_POLICY['may_offer'])}\n"
        f"may_request = {json.dumps(TRUSTED_POLICY['may_request'])}\n"
        f'revocations_hex = ["{revocation.hex()}"]\n'
    )


def render() -> tuple[str, str]:
    vectors, trust = build()
    return json.dumps(vectors, indent=1) + "\n", trust


def main(argv: list[str]) -> int:
    vectors, trust = render()
    targets = {HERE / "test-vectors.json": vectors, HERE / "test-vectors.trust": trust}
    if "--check" in argv:
        stale = [p.name for p, text in targets.items() if not p.exists() or p.read_text() != text]
        for name in stale:
            print(f"{name} is stale: run python docs/make_test_vectors.py")
        return 1 if stale else 0
    for path, text in targets.items():
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
