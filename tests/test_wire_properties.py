"""Properties of the envelope: round trips, and every corruption is a typed rejection."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.codec import packb, unpack_payload, unpack_strict
from protocols.errors import RemoteProtocolError
from protocols.trust import parse_certificate
from tests.strategies import NOW, AnyPayload, WireWorld, msgpack_values, normalize

PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WORLD = WireWorld()
FRAME = WORLD.seal({"task": "t-1", "input": [1, 2.5, "x", b"\x00"]})


def _rejected(frame: bytes) -> None:
    try:
        WORLD.fresh_receiver().open(frame, NOW)
    except RemoteProtocolError:
        return
    raise AssertionError("a corrupted frame was accepted")


@PROPS
@given(msgpack_values)
def test_seal_open_round_trips_any_payload(data: Any) -> None:
    frame = WORLD.seal(data)
    opened = WORLD.fresh_receiver().open(frame, NOW)
    assert isinstance(opened.payload, AnyPayload)
    assert normalize(opened.payload.data) == normalize(data)
    assert opened.frame == frame


@PROPS
@given(msgpack_values)
def test_codec_round_trips(data: Any) -> None:
    assert normalize(unpack_payload(packb(data))) == normalize(data)


@PROPS
@given(st.integers(min_value=0, max_value=len(FRAME) * 8 - 1))
def test_any_bit_flip_is_rejected(bit: int) -> None:
    frame = bytearray(FRAME)
    frame[bit // 8] ^= 1 << (bit % 8)
    _rejected(bytes(frame))


@PROPS
@given(st.integers(min_value=0, max_value=len(FRAME) - 1), st.integers(1, 255))
def test_any_byte_change_is_rejected(index: int, delta: int) -> None:
    frame = bytearray(FRAME)
    frame[index] = (frame[index] + delta) % 256
    _rejected(bytes(frame))


@PROPS
@given(st.integers(min_value=0, max_value=len(FRAME) - 1))
def test_truncation_is_rejected(length: int) -> None:
    _rejected(FRAME[:length])


@PROPS
@given(st.binary(min_size=1, max_size=64))
def test_appending_is_rejected(tail: bytes) -> None:
    _rejected(FRAME + tail)


@PROPS
@given(st.binary(max_size=512))
def test_random_bytes_only_raise_tree_errors(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        WORLD.fresh_receiver().open(data, NOW)


@PROPS
@given(st.binary(max_size=512))
def test_random_bytes_decoding_and_certificates_only_raise_tree_errors(data: bytes) -> None:
    for parse in (unpack_strict, unpack_payload, parse_certificate):
        with contextlib.suppress(RemoteProtocolError):
            parse(data)


@PROPS
@given(msgpack_values)
def test_well_formed_msgpack_that_is_not_a_frame_is_rejected(value: Any) -> None:
    _rejected(packb(value))


@PROPS
@given(st.lists(msgpack_values, min_size=9, max_size=9), st.binary(min_size=64, max_size=64))
def test_structured_garbage_is_rejected(fields: list[Any], signature: bytes) -> None:
    fields[0] = 1
    fields[1] = "any"
    _rejected(packb([packb(fields), signature]))
