"""docs/test-vectors.json: reproducible, opened in order give the expected codes, and
their signatures check under PyNaCl (libsodium), an independent Ed25519."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack
import nacl.exceptions
import nacl.signing
import pytest

from node.cli_keys import open_frames
from node.files import load_trust_store
from protocols.crypto import Ed25519Verifier
from protocols.envelope import Wire
from protocols.identity import NodeIdentity
from protocols.kinds import PAYLOADS
from protocols.membership.messages import Ping
from protocols.trust import TrustStore

DOCS = Path(__file__).resolve().parent.parent / "docs"
VECTORS: list[dict[str, Any]] = json.loads((DOCS / "test-vectors.json").read_text())
REQUIRED = {
    "bad-signature", "replayed", "expired", "not-yet-valid", "wrong-recipient", "untrusted-org",
    "revoked", "not-permitted", "malformed", "too-large", "duplicate-key", "bad-key",
    "unknown-kind",
}  # fmt: skip
FIELDS = {
    "name", "seed_hex", "public_key_hex", "node_id", "org_root_seed_hex", "frame_hex",
    "signed_bytes_hex", "signature_hex", "now", "recipient", "expect",
}  # fmt: skip


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_test_vectors", DOCS / "make_test_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _trust() -> TrustStore:
    return load_trust_store(DOCS / "test-vectors.trust", Ed25519Verifier())


def test_regenerating_gives_identical_bytes() -> None:
    vectors, trust = _generator().render()
    assert vectors == (DOCS / "test-vectors.json").read_text()
    assert trust == (DOCS / "test-vectors.trust").read_text()


def test_shape_and_coverage() -> None:
    assert isinstance(VECTORS, list)
    for v in VECTORS:
        assert set(v) >= FIELDS, v["name"]
    assert len({v["name"] for v in VECTORS}) == len(VECTORS)
    assert len({v["now"] for v in VECTORS}) == 1 and len({v["recipient"] for v in VECTORS}) == 1
    assert {v["expect"] for v in VECTORS} >= REQUIRED
    ok_kinds = {_kind(v) for v in VECTORS if v["expect"] == "ok"}
    assert len(ok_kinds) >= 2


def _kind(v: dict[str, Any]) -> str:
    body, _ = msgpack.unpackb(bytes.fromhex(v["frame_hex"]))
    kind: str = msgpack.unpackb(body)[1]
    return kind


def test_opening_in_order_gives_the_expected_codes() -> None:
    frames = [(v["name"], bytes.fromhex(v["frame_hex"])) for v in VECTORS]
    rows = open_frames(frames, _trust(), VECTORS[0]["recipient"], VECTORS[0]["now"])
    got = [(r["file"], "ok" if r["ok"] else r["error"]) for r in rows]
    assert got == [(v["name"], v["expect"]) for v in VECTORS]


def test_keys_and_node_ids() -> None:
    for v in VECTORS:
        key = nacl.signing.SigningKey(bytes.fromhex(v["seed_hex"]))
        assert key.verify_key.encode().hex() == v["public_key_hex"], v["name"]
        digest = hashlib.sha256(bytes.fromhex(v["public_key_hex"])).digest()
        assert base64.b32encode(digest).decode().rstrip("=").lower() == v["node_id"]


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_signatures_under_pynacl(v: dict[str, Any]) -> None:
    signed, sig = bytes.fromhex(v["signed_bytes_hex"]), bytes.fromhex(v["signature_hex"])
    frame = bytes.fromhex(v["frame_hex"])
    if not signed:  # unsigned vectors (not msgpack at all, too large)
        assert v["expect"] in {"malformed", "too-large"}
        return
    body, frame_sig = msgpack.unpackb(frame)
    assert frame_sig == sig
    kind = msgpack.unpackb(body)[1]
    assert signed == b"parley/1/" + kind.encode() + body
    verify_key = nacl.signing.VerifyKey(bytes.fromhex(v["public_key_hex"]))
    if v["expect"] == "bad-signature":
        with pytest.raises(nacl.exceptions.BadSignatureError):
            verify_key.verify(signed, sig)
    else:
        verify_key.verify(signed, sig)  # raises if invalid
        assert nacl.signing.SigningKey(bytes.fromhex(v["seed_hex"])).sign(signed).signature == sig


def test_wire_seal_reproduces_the_first_vector() -> None:
    gen = _generator()
    v = VECTORS[0]
    alice = gen.Party("alice", "acme")
    wire = Wire(
        NodeIdentity.from_seed(bytes.fromhex(v["seed_hex"])),
        alice.cert,
        _trust(),
        Ed25519Verifier(),
        PAYLOADS,
    )
    frame = wire.seal(
        "ping",
        Ping(seq=1, target=v["recipient"]),
        v["recipient"],
        v["now"] - 1,
        nonce=gen.nonce(1),
    )
    assert frame.hex() == v["frame_hex"]
