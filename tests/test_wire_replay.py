"""The replay cache stays bounded, and the floor keeps refusing replays after eviction."""

from __future__ import annotations

import pytest

from protocols.envelope import ReplayCache, WireConfig
from protocols.errors import RemoteProtocolError
from tests.strategies import NOW, WireWorld


def test_cache_memory_is_bounded_under_traffic() -> None:
    w = WireWorld(config=WireConfig(replay_capacity=64))
    for i in range(1000):
        w.bob.open(w.seal(i, now=NOW + i * 0.001), NOW + i * 0.001)
        assert len(w.bob.replay) <= 64
    assert len(w.bob.replay) == 64


def test_replay_is_refused_after_eviction_thanks_to_the_floor() -> None:
    w = WireWorld(config=WireConfig(replay_capacity=8))
    first = w.seal("first", now=NOW)
    w.bob.open(first, NOW)
    for i in range(1, 50):  # push `first` out of the cache
        w.bob.open(w.seal(i, now=NOW + i * 0.01), NOW + 0.5)
    assert len(w.bob.replay) == 8
    assert w.bob.replay.floor >= NOW
    with pytest.raises(RemoteProtocolError) as info:
        w.bob.open(first, NOW + 1)
    assert info.value.code == "replayed"


def test_expired_entries_are_purged() -> None:
    cache = ReplayCache(100)
    for i in range(10):
        cache.add(bytes([i]), NOW, NOW + 1, horizon=NOW)
    cache.add(b"late", NOW + 100, NOW + 130, horizon=NOW + 50)
    assert len(cache) < 11


def test_floor_semantics() -> None:
    cache = ReplayCache(2)
    cache.add(b"a", 10.0, 40.0, horizon=0.0)
    cache.add(b"b", 11.0, 41.0, horizon=0.0)
    cache.add(b"c", 12.0, 42.0, horizon=0.0)  # evicts a: floor 10
    assert cache.floor == 10.0 and len(cache) == 2
    assert cache.seen(b"a", 10.0)  # evicted, but at the floor
    assert cache.seen(b"zz", 9.0)  # anything created at or before the floor
    assert cache.seen(b"b", 11.0) and not cache.seen(b"new", 10.5)


def test_frames_after_the_floor_still_open() -> None:
    w = WireWorld(config=WireConfig(replay_capacity=4))
    for i in range(20):
        t = NOW + i
        w.bob.open(w.seal(i, now=t), t)
