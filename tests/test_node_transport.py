"""ZeroMQ transport: loopback only, every wait bounded."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import zmq

from node.transport import TransportLimits, ZmqTransport, check_endpoint
from protocols.errors import TransportError


def aio(fn: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    @functools.wraps(fn)
    def run() -> None:
        asyncio.run(asyncio.wait_for(fn(), 30))

    return run


async def _wait_for(cond: object, rounds: int = 200) -> None:
    for _ in range(rounds):
        if cond():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)


def test_check_endpoint() -> None:
    assert check_endpoint("tcp://127.0.0.1:7001") == "tcp://127.0.0.1:7001"
    assert check_endpoint("tcp://[::1]:7001") == "tcp://[::1]:7001"
    wildcards = ("tcp://0.0.0.0:7001", "tcp://[::]:7001")  # a peer dialing these reaches itself
    for bad in (
        "ipc:///tmp/x",
        "inproc://x",
        "tcp://127.0.0.1:0",
        "tcp://a b:1",
        "tcp://h:99999",
        *wildcards,
    ):
        with pytest.raises(TransportError):
            check_endpoint(bad)


@aio
async def test_round_trip_with_sender_endpoint() -> None:
    got_a: list[tuple[str, bytes]] = []
    got_b: list[tuple[str, bytes]] = []
    a = ZmqTransport("tcp://127.0.0.1:*", got_a.extend)
    b = ZmqTransport("tcp://127.0.0.1:*", got_b.extend)
    a.start()
    b.start()
    try:
        for i in range(500):
            assert a.send(b.endpoint, b"x%d" % i)
        await _wait_for(lambda: len(got_b) == 500)
        assert [f for _, f in got_b] == [b"x%d" % i for i in range(500)]
        assert {s for s, _ in got_b} == {a.endpoint}
        b.send(a.endpoint, b"reply")
        await _wait_for(lambda: got_a)
        assert got_a == [(b.endpoint, b"reply")]
    finally:
        a.close()
        b.close()


@aio
async def test_oversized_and_bad_endpoint_dropped() -> None:
    got: list[tuple[str, bytes]] = []
    limits = TransportLimits(max_frame=1000)
    a = ZmqTransport("tcp://127.0.0.1:*", lambda b: None)
    b = ZmqTransport("tcp://127.0.0.1:*", got.extend, limits=limits)
    a.start()
    b.start()
    try:
        assert not a.send("ipc:///tmp/evil", b"x")
        assert a.counters["transport.dropped_bad_endpoint"] == 1
        a.send(b.endpoint, b"y" * 5000)  # cut by MAXMSGSIZE, connection dropped
        await asyncio.sleep(0.2)
        a.forget(b.endpoint)
        a.send(b.endpoint, b"ok")
        await _wait_for(lambda: got)
        assert got == [(a.endpoint, b"ok")]
    finally:
        a.close()
        b.close()


@aio
async def test_lru_bounds_peer_sockets() -> None:
    a = ZmqTransport("tcp://127.0.0.1:*", lambda b: None, limits=TransportLimits(max_peers=3))
    a.start()
    try:
        for port in range(40001, 40011):
            a.send(f"tcp://127.0.0.1:{port}", b"x")
        assert a.peer_count == 3
        assert a.counters["transport.peers_evicted"] == 7
    finally:
        a.close()


def test_port_in_use_is_transport_error() -> None:
    a = ZmqTransport("tcp://127.0.0.1:*", lambda b: None)
    try:
        with pytest.raises(TransportError, match="cannot listen"):
            ZmqTransport(a.endpoint, lambda b: None)
    finally:
        a.close()


@aio
async def test_garbage_multipart_counted() -> None:
    got: list[tuple[str, bytes]] = []
    b = ZmqTransport("tcp://127.0.0.1:*", got.extend)
    b.start()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(b.endpoint)
    try:
        raw.send_multipart([b"a", b"b", b"c"])
        raw.send(b"fine")
        await _wait_for(lambda: got)
        assert got[0][1] == b"fine"
        assert b.counters["transport.dropped_malformed"] == 1
    finally:
        raw.close(linger=0)
        b.close()


@aio
async def test_drain_rearms_after_short_and_long_batches() -> None:
    """A wake-up's drain ends on a ZMQ_EVENTS query (a few messages) or on zmq.Again
    (a burst, cut into batches): either way the next message still wakes the reader."""
    got: list[tuple[str, bytes]] = []
    sizes: list[int] = []

    def sink(batch: list[tuple[str, bytes]]) -> None:
        sizes.append(len(batch))
        got.extend(batch)

    a = ZmqTransport("tcp://127.0.0.1:*", lambda b: None)
    b = ZmqTransport("tcp://127.0.0.1:*", sink, limits=TransportLimits(batch=7))
    a.start()
    b.start()
    try:
        expected: list[bytes] = []
        # One message at a time, then small groups, then a burst of several batches.
        for n in (1, 1, 2, 3, 5, 1, 40, 1):
            frames = [b"m%d" % (len(expected) + i) for i in range(n)]
            for f in frames:
                assert a.send(b.endpoint, f)
            expected += frames
            want = len(expected)
            await _wait_for(lambda want=want: len(got) == want)
            assert [f for _, f in got] == expected
        assert max(sizes) <= 7
    finally:
        a.close()
        b.close()


@aio
async def test_a_stranger_using_a_peers_endpoint_as_routing_id_does_not_silence_it() -> None:
    """The inbound ROUTER kept one connection per routing id (with ROUTER_HANDOVER,
    the newest): a stranger connecting with an honest peer's public endpoint as its
    routing id cut that peer off (its connection stayed open, never read again), and
    one that connected first kept the id from the honest peer. Every connection is
    now read, whatever routing id it claims."""
    got: list[tuple[str, bytes]] = []
    node = ZmqTransport("tcp://127.0.0.1:*", got.extend)
    early = ZmqTransport("tcp://127.0.0.1:*", lambda b: None)
    late = ZmqTransport("tcp://127.0.0.1:*", lambda b: None)
    node.start()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    impostors = []
    try:
        assert early.send(node.endpoint, b"early-0")  # connected before its impostor
        await _wait_for(lambda: len(got) == 1)
        for victim in (early.endpoint, late.endpoint):  # late: the impostor is first
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.ROUTING_ID, victim.encode())
            s.connect(node.endpoint)
            s.send(b"impostor")
            impostors.append(s)
        await _wait_for(lambda: len(got) == 3)
        for i in range(1, 4):
            assert early.send(node.endpoint, b"early-%d" % i)
            assert late.send(node.endpoint, b"late-%d" % i)
        want = {
            b"early-0",
            b"impostor",
            *(b"%s-%d" % (w, i) for w in (b"early", b"late") for i in range(1, 4)),
        }
        await _wait_for(lambda: {f for _, f in got} >= want)
        frames = sorted(f for _, f in got)
        assert frames == sorted([*want, b"impostor"])
        assert {s for s, f in got if f.startswith(b"late")} == {late.endpoint}
    finally:
        for s in impostors:
            s.close(linger=0)
        for t in (node, early, late):
            t.close()


@aio
async def test_the_sender_hint_is_the_routing_id_when_it_is_ascii() -> None:
    got: list[tuple[str, bytes]] = []
    node = ZmqTransport("tcp://127.0.0.1:*", got.extend)
    node.start()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    socks = []
    try:
        for rid in (b"tcp://127.0.0.1:9", b"\xff\xfe\x80", b"", b"x" * 255):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            if rid:
                s.setsockopt(zmq.ROUTING_ID, rid)
            s.connect(node.endpoint)
            s.send(b"from " + rid)
            socks.append(s)
        await _wait_for(lambda: len(got) == 4)
        assert dict((f, s) for s, f in got) == {
            b"from tcp://127.0.0.1:9": "tcp://127.0.0.1:9",
            b"from \xff\xfe\x80": "",
            b"from ": "",
            b"from " + b"x" * 255: "x" * 255,
        }
    finally:
        for s in socks:
            s.close(linger=0)
        node.close()


@aio
async def test_a_message_of_very_many_parts_is_dropped_whole_and_counted_once() -> None:
    """The drop of a multipart message stopped after 10,000 parts: the rest of the
    message was read as new messages (counted again), and its last part went on up as
    a frame. It is dropped whole, in steps, counted once."""
    got: list[tuple[str, bytes]] = []
    node = ZmqTransport("tcp://127.0.0.1:*", got.extend)
    node.start()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.setsockopt(zmq.SNDHWM, 0)
    raw.connect(node.endpoint)
    try:
        for parts in (10_001, 10_002, 25_000):
            for _ in range(parts - 1):
                raw.send(b"p", zmq.SNDMORE)
            raw.send(b"tail of %d" % parts)
        raw.send(b"fine")
        await _wait_for(lambda: any(f == b"fine" for _, f in got), rounds=1000)
        assert [f for _, f in got] == [b"fine"]
        assert node.counters["transport.dropped_malformed"] == 3
    finally:
        raw.close(linger=0)
        node.close()


@aio
async def test_running_out_of_sockets_drops_and_counts_instead_of_raising() -> None:
    """With ``max_peers`` above what the context can open (ZMQ_MAX_SOCKETS, 1023 by
    default; or file descriptors), opening a peer's DEALER raised a bare ZMQError out
    of ``send`` (and out of the runtime's pump, whose other frames and timer were
    lost). The frame is dropped and counted, and the oldest peer is closed to make
    room, so that new peers are reached again."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    got: list[tuple[str, bytes]] = []
    b = ZmqTransport("tcp://127.0.0.1:*", got.extend)
    a = ZmqTransport(
        "tcp://127.0.0.1:*", lambda b: None, limits=TransportLimits(max_peers=5000), context=ctx
    )
    a.start()
    b.start()
    try:
        ceiling = ctx.get(zmq.MAX_SOCKETS)
        for i in range(ceiling + 10):  # closed ports: the DEALERs stay, reconnecting
            a.send(f"tcp://127.0.0.1:{40000 + i}", b"x")
        assert a.counters["transport.dropped_no_socket"] > 0
        assert a.peer_count < ceiling
        for _ in range(200):  # a slot frees when the reaper has closed an evicted socket
            if a.send(b.endpoint, b"hello"):
                break
            await asyncio.sleep(0.01)
        await _wait_for(lambda: got)
        assert [f for _, f in got] == [b"hello"]
    finally:
        a.close()
        b.close()
        ctx.destroy(linger=0)
