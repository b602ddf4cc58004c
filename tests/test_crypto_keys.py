"""Ed25519 keys: RFC 8032 vector, node ids, small-order and malformed keys refused."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings

from protocols.crypto import (
    Ed25519Signer,
    Ed25519Verifier,
    FastSigner,
    FastVerifier,
    MemoVerifier,
    check_public_key,
    public_key_from_seed,
)
from protocols.errors import BadKey, LocalProtocolError, MeshError
from protocols.identity import NodeIdentity, node_id_from_public_key
from protocols.trust import OrgPolicy, TrustStore
from tests.strategies import seeds

# RFC 8032 section 7.1, TEST 1 (empty message).
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

#: Every small-order point of Ed25519 in canonical encoding (orders 1, 2, 4, 8).
SMALL_ORDER = [
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
]
MALFORMED = [
    "",
    "00" * 31,
    "00" * 33,
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p
    "0100000000000000000000000000000000000000000000000000000000000080",  # x = 0, sign 1
    "0200000000000000000000000000000000000000000000000000000000000000",  # y = 2: not a point
]


def test_rfc8032_vector() -> None:
    signer = Ed25519Signer(RFC_SEED)
    assert public_key_from_seed(RFC_SEED) == RFC_PUBLIC == signer.public_key
    assert signer.sign(b"") == RFC_SIGNATURE
    assert Ed25519Verifier().verify(RFC_PUBLIC, RFC_SIGNATURE, b"")
    assert not Ed25519Verifier().verify(RFC_PUBLIC, RFC_SIGNATURE, b"x")


def test_node_id_derivation() -> None:
    expected = base64.b32encode(hashlib.sha256(RFC_PUBLIC).digest()).decode().rstrip("=").lower()
    node_id = node_id_from_public_key(RFC_PUBLIC)
    assert node_id == expected
    assert len(node_id) == 52 and node_id == node_id.lower() and "=" not in node_id
    assert NodeIdentity.from_seed(RFC_SEED).node_id == node_id


@given(seeds)
@settings(max_examples=50)
def test_real_keys_pass_the_point_check(seed: bytes) -> None:
    check_public_key(Ed25519Signer(seed).public_key)


@pytest.mark.parametrize("key_hex", SMALL_ORDER)
def test_small_order_keys_are_refused(key_hex: str) -> None:
    with pytest.raises(BadKey) as info:
        check_public_key(bytes.fromhex(key_hex))
    assert info.value.code == "bad-key"


@pytest.mark.parametrize("key_hex", MALFORMED)
def test_malformed_keys_are_refused(key_hex: str) -> None:
    with pytest.raises(BadKey):
        check_public_key(bytes.fromhex(key_hex))


def test_trust_store_refuses_small_order_root() -> None:
    with pytest.raises(BadKey):
        TrustStore([OrgPolicy("x", bytes.fromhex(SMALL_ORDER[-1]))])


def test_identity_refuses_a_signer_with_a_small_order_key() -> None:
    class Weak:
        public_key = bytes.fromhex(SMALL_ORDER[4])

        def sign(self, data: bytes) -> bytes:
            return bytes(64)

    with pytest.raises(BadKey):
        NodeIdentity.from_signer(Weak())


def test_bad_seed_is_local_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        Ed25519Signer(b"short")
    with pytest.raises(MeshError):
        public_key_from_seed(b"")


def test_verifier_never_raises_on_garbage() -> None:
    v = Ed25519Verifier(key_cache=2)
    for key in (b"", b"\x01" * 32, bytes.fromhex(SMALL_ORDER[1]), RFC_PUBLIC, b"\xff" * 32):
        assert v.verify(key, b"\x00" * 64, b"m") is False
        assert v.verify(key, b"", b"m") is False


def test_memo_and_fast_verifiers() -> None:
    memo = MemoVerifier(Ed25519Verifier())
    assert memo.verify(RFC_PUBLIC, RFC_SIGNATURE, b"") and memo.verify(
        RFC_PUBLIC, RFC_SIGNATURE, b""
    )
    assert (memo.hits, memo.misses) == (1, 1)
    registry = FastVerifier()
    fast = FastSigner(RFC_SEED, registry)
    assert fast.public_key == RFC_PUBLIC
    sig = fast.sign(b"data")
    assert len(sig) == 64 and registry.verify(RFC_PUBLIC, sig, b"data")
    assert not registry.verify(RFC_PUBLIC, sig, b"other")
