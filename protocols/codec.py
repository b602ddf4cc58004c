"""Strict msgpack encoding and decoding for everything on the wire.

msgpack has no canonical form, so Parley signs bytes, never objects; this
module only has to be strict about what it *accepts*:

* a duplicate map key is ``duplicate-key`` (two decoders could disagree on it);
* a frame over the size limit is ``too-large``; containers nested deeper than
  ``MAX_DEPTH`` are ``malformed``;
* map keys must be strings; extension types and trailing bytes are ``malformed``.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import msgpack

from protocols.errors import Malformed, RemoteProtocolError, TooLarge

__all__ = [
    "MAX_COUNTER",
    "MAX_DEPTH",
    "MAX_FRAME",
    "check_depth",
    "decoded_size",
    "packb",
    "unpack_array",
    "unpack_payload",
    "unpack_strict",
]

#: Default largest frame accepted (bytes); the real shell also sets ZMQ_MAXMSGSIZE.
MAX_FRAME = 256 * 1024
#: Deepest nesting of arrays and maps accepted in a payload.
MAX_DEPTH = 32
#: Largest incarnation or record sequence number a frame may carry. Well inside
#: msgpack's 64-bit integers, so that a node can always count one up: a claim about
#: a node at 2**64 - 1 made its refutation unencodable, dead for good.
MAX_COUNTER = 2**62


_CONTAINERS = frozenset({tuple, list, dict})


class _DuplicateKey(Exception):
    pass


def _pairs_hook(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKey
    return out


class _Packers(threading.local):
    """One reusable packer per thread: ``msgpack.packb`` builds a new ``Packer`` on
    every call (~1.4 µs for a frame's envelope, ~0.6 µs with a kept one). A packer
    is not thread-safe; it resets its buffer after each object, and on an error."""

    def __init__(self) -> None:
        self.packer = msgpack.Packer(use_bin_type=True, strict_types=False, autoreset=True)


_PACKERS = _Packers()


def packb(obj: Any) -> bytes:
    """Encode with the one set of options Parley uses (bin type, no ext types)."""
    data: bytes = _PACKERS.packer.pack(obj)
    return data


def unpack_strict(data: bytes, *, limit: int = MAX_FRAME) -> Any:
    """Decode one msgpack object strictly; raises a ``RemoteProtocolError``."""
    if len(data) > limit:
        raise TooLarge(f"{len(data)} bytes is over the {limit}-byte limit")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=False,
            strict_map_key=True,
            object_pairs_hook=_pairs_hook,
            max_ext_len=0,
        )
    except _DuplicateKey:
        raise RemoteProtocolError("a map has the same key twice", code="duplicate-key") from None
    except msgpack.ExtraData:
        raise Malformed("trailing bytes after the msgpack object") from None
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise Malformed(f"not valid msgpack: {type(exc).__name__}") from None


def unpack_array(data: bytes, *, limit: int = MAX_FRAME) -> Any:
    """Decode a structure that must be an array of scalars (envelope, certificate).

    No duplicate-key hook: the callers reject any map by type, so none is needed,
    and the C decoder runs without calling back into Python.
    """
    if len(data) > limit:
        raise TooLarge(f"{len(data)} bytes is over the {limit}-byte limit")
    try:
        return msgpack.unpackb(data, raw=False, use_list=False, strict_map_key=True, max_ext_len=0)
    except msgpack.ExtraData:
        raise Malformed("trailing bytes after the msgpack object") from None
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise Malformed(f"not valid msgpack: {type(exc).__name__}") from None


def check_depth(obj: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse containers nested deeper than ``limit`` (level by level, bounded by the frame size)."""
    level = [obj] if type(obj) in _CONTAINERS else []
    depth = 0
    while level:
        if depth >= limit:
            raise Malformed(f"nested deeper than {limit} levels")
        below: list[Any] = []
        for item in level:
            for x in item.values() if type(item) is dict else item:
                if type(x) in _CONTAINERS:
                    below.append(x)
        level = below
        depth += 1


def decoded_size(obj: Any, limit: int) -> int:
    """Bytes a decoded value takes in memory (``sys.getsizeof`` of every object in
    it; a shared small object counted each time), counted until over ``limit``.

    What a node keeps of a peer's payload is charged by this, not by its wire size:
    msgpack is compact and Python objects are not (an empty map is one byte on the
    wire and a 64-byte dict; 200 KB of them decode to ~14 MB)."""
    size = sys.getsizeof
    containers = _CONTAINERS
    total = size(obj)
    stack = [obj] if type(obj) in containers else []
    while stack and total <= limit:
        x = stack.pop()
        items = x.values() if type(x) is dict else x
        if type(x) is dict:
            total += sum(map(size, x))
        total += sum(map(size, items))
        stack.extend([v for v in items if type(v) in containers])
    return total


def unpack_payload(data: bytes, *, limit: int = MAX_FRAME) -> Any:
    """Decode a payload: strict, depth-checked. Small payloads cannot be deep."""
    obj = unpack_strict(data, limit=limit)
    if len(data) > MAX_DEPTH:
        check_depth(obj)
    return obj
