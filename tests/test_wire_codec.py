"""The strict msgpack codec: duplicate keys, size, depth, map keys, trailing bytes."""

from __future__ import annotations

import threading

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.codec import MAX_DEPTH, check_depth, packb, unpack_payload, unpack_strict
from protocols.errors import RemoteProtocolError


def _code(data: bytes, **kw: int) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        unpack_payload(data, **kw)
    return info.value.code


def _nested(depth: int) -> object:
    value: object = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def test_duplicate_map_key() -> None:
    assert _code(b"\x82\xa1a\x01\xa1a\x02") == "duplicate-key"
    assert _code(b"\x91\x82\xa1a\x01\xa1a\x01") == "duplicate-key"  # nested, same value too


def test_too_large() -> None:
    assert _code(packb(b"x" * 100), limit=50) == "too-large"
    assert unpack_payload(packb(b"x" * 40), limit=50) == b"x" * 40


def test_depth_limit() -> None:
    unpack_payload(packb(_nested(MAX_DEPTH)))
    assert _code(packb(_nested(MAX_DEPTH + 1))) == "malformed"
    assert _code(b"\x91" * 5000 + b"\x01") == "malformed"  # far past the C decoder's stack


@given(st.integers(min_value=0, max_value=40))
@settings(max_examples=41)
def test_check_depth_is_exact(depth: int) -> None:
    value = _nested(depth)
    if depth <= MAX_DEPTH:
        check_depth(value)
    else:
        with pytest.raises(RemoteProtocolError):
            check_depth(value)


@pytest.mark.parametrize(
    "data",
    [
        b"\x81\x01\x02",  # integer map key
        b"\xd4\x01\x00",  # extension type
        b"\x01\x02",  # trailing bytes
        b"\xc1",  # never used
        b"\x92\x01",  # truncated
        b"",
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        unpack_strict(data)
    assert info.value.code == "malformed"


def test_arrays_decode_as_tuples_and_bin_as_bytes() -> None:
    assert unpack_strict(packb([1, [b"x", "y"], {"a": None}])) == (1, (b"x", "y"), {"a": None})


_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(_VALUES, _VALUES)
@settings(max_examples=200, deadline=None)
def test_packb_keeps_msgpack_bytes_and_recovers_from_a_failed_encoding(
    a: object, b: object
) -> None:
    # The kept packer gives the bytes a fresh msgpack.packb gives (signatures cover
    # them), call after call, and an object it cannot encode leaves nothing behind.
    expect = msgpack.packb(b, use_bin_type=True)
    assert packb(a) == msgpack.packb(a, use_bin_type=True)
    with pytest.raises(TypeError):
        packb([a, object()])
    assert packb(b) == expect


def test_packb_from_several_threads_at_once() -> None:
    values = [[i, "x" * (i % 50), b"y" * (i % 70), {"k": i}] for i in range(2000)]
    errors: list[str] = []

    def work() -> None:
        for v in values:
            if unpack_strict(packb(v)) != (v[0], v[1], v[2], v[3]):
                errors.append(repr(v))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
