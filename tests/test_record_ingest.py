"""The seen-digest cache in front of record verification: duplicates are skipped,
it keeps the newest max(min_size, 4 x members) digests, and the nodes of one
process share the interned record's digest object."""

from __future__ import annotations

import hashlib

from test_membership_state import info

from protocols.capabilities.records import (
    DIGEST_MEMO_BYTES,
    CapabilityRecord,
    RecordCache,
    RecordInfo,
)
from protocols.capabilities.store import RecordIngest


def frames(n: int) -> list[bytes]:
    return [f"frame-{i}".encode() for i in range(n)]


def test_duplicates_are_skipped_within_and_across_batches() -> None:
    ingest = RecordIngest(min_size=100, cache=RecordCache())
    batch = frames(5)
    fresh, skipped = ingest.unseen([*batch, batch[0], batch[3]], members=10)
    assert [f for f, _ in fresh] == batch and skipped == 2
    assert all(d == hashlib.sha256(f).digest() for f, d in fresh)
    fresh, skipped = ingest.unseen(batch, members=10)
    assert fresh == [] and skipped == 5
    assert not ingest.remember(hashlib.sha256(batch[1]).digest(), members=10)
    assert ingest.remember(b"another digest", members=10)


def test_keeps_the_newest_digests_up_to_four_per_member() -> None:
    ingest = RecordIngest(min_size=8, cache=RecordCache())
    batch = frames(30)
    ingest.unseen(batch, members=2)  # cap max(8, 8) = 8
    assert len(ingest) == 8
    digests = [hashlib.sha256(f).digest() for f in batch]
    assert [d in ingest for d in digests] == [False] * 22 + [True] * 8
    ingest.unseen(frames(40)[30:], members=5)  # cap 20: nothing older is dropped now
    assert len(ingest) == 18
    fresh, _ = ingest.unseen(batch[:1], members=1)  # evicted long ago: new again
    assert len(fresh) == 1 and len(ingest) == 8


def test_nodes_share_the_interned_digest() -> None:
    cache = RecordCache()
    record = cache.intern(info("a", 0, 1))
    a, b = RecordIngest(16, cache), RecordIngest(16, cache)
    for ingest in (a, b):
        fresh, _ = ingest.unseen([record.frame], members=1)
        ((_, digest),) = fresh
        assert digest == record.digest and digest is record.digest


def test_frame_digests_are_remembered_within_a_bound() -> None:
    """The process-wide memo of frame digests: right for every frame, a copy of a
    frame (another bytes object, equal) is found, and it holds at most two
    generations of its bound."""
    cache = RecordCache(max_entries=4)  # memo generations of 4 frames
    batch = frames(20)
    for f in batch:
        assert cache.digest_of(f) == hashlib.sha256(f).digest()
    copy = bytes(bytearray(batch[-1]))
    assert copy is not batch[-1]
    assert cache.digest_of(copy) is cache.digest_of(batch[-1])
    assert len(cache._digests) + len(cache._digests_old) <= 8
    assert batch[0] not in cache._digests and batch[0] not in cache._digests_old
    # A frame that left the memo is hashed again, correctly.
    assert cache.digest_of(batch[0]) == hashlib.sha256(batch[0]).digest()


def test_the_frame_memo_holds_a_bounded_number_of_bytes() -> None:
    """Junk frames (the memo sits before any signature check) cannot fill memory:
    at most two generations of DIGEST_MEMO_BYTES, however large the frames."""
    cache = RecordCache()
    size = 200_000
    for i in range(200):  # 40 MB of distinct frames
        frame = i.to_bytes(4, "big") * (size // 4)
        assert cache.digest_of(frame) == hashlib.sha256(frame).digest()
    held = sum(map(len, cache._digests)) + sum(map(len, cache._digests_old))
    assert held <= 2 * DIGEST_MEMO_BYTES + size


def _info(node: str, seq: int, tag: bytes = b"") -> RecordInfo:
    record = CapabilityRecord(
        node_id=node, endpoints=["tcp://127.0.0.1:1"], capabilities=[], incarnation=0, seq=seq
    )
    frame = node.encode() + seq.to_bytes(4, "big") + tag
    return RecordInfo(record, "acme", frame, hashlib.sha256(frame).digest())


def test_the_record_cache_keeps_only_each_nodes_newest_record() -> None:
    """A member re-signing its own record thousands of times (200 KB schemas each)
    filled the cache with every version; it now holds the newest per node."""
    cache = RecordCache()
    first = cache.intern(_info("mallory", 1))
    assert cache.intern(_info("mallory", 1)) is first  # the same frame: shared
    for seq in range(2, 3000):
        cache.intern(_info("mallory", seq))
    cache.intern(_info("alice", 5))
    assert len(cache) == 2
    newest = cache.intern(_info("mallory", 2999))
    assert newest.version == (0, 2999)
    old = _info("mallory", 7)
    assert cache.intern(old) is old and len(cache) == 2  # an older version: not kept
    rival = _info("mallory", 2999, b"other")  # same version, other bytes: first kept
    assert cache.intern(rival) is rival and cache.intern(_info("mallory", 2999)) is newest


def test_the_record_cache_count_bound_drops_the_oldest_node() -> None:
    cache = RecordCache(max_entries=3)
    for node in ("a", "b", "c", "d"):
        cache.intern(_info(node, 1))
    assert len(cache) == 3
    again = _info("a", 1)
    assert cache.intern(again) is again  # "a" had left: interned anew
    assert len(cache) == 3
