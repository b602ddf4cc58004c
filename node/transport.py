"""ZeroMQ transport of the real shell.

* Inbound: one DEALER bound to the node's listen endpoint (it was a ROUTER: see
  below). Senders set their routing id to their own listen endpoint; it
  reaches us as the message's ``Identity`` property, so we hand on (endpoint,
  frame) pairs. The endpoint is a hint only (a peer may lie about it): trust comes
  from the signed frame. Why not a ROUTER: it keys its connections by routing id
  and keeps one per id. With ``ZMQ_ROUTER_HANDOVER`` a stranger that connects with
  an honest peer's (public) endpoint as its routing id takes that id over, and the
  honest peer's connection stays open but is never read again; without handover
  whoever connects first keeps the id and the other connection is never read. A
  bound DEALER has no routing table: every connection is read.
* Outbound: one DEALER per destination endpoint, kept in a bounded LRU cache.
  Sends never block: when a peer's queue is full (high-water mark) the frame is
  dropped and counted; the protocols above tolerate loss.
* The inbound socket is driven by ``loop.add_reader`` on its (edge-triggered) file
  descriptor and drained with ``zmq.NOBLOCK`` until ``zmq.Again`` on each
  wake-up, in batches so one busy socket cannot starve the loop.
* Oversized frames are cut by ``ZMQ_MAXMSGSIZE`` (the offending connection is
  dropped by libzmq). Every zmq error is translated into ``TransportError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import zmq

from protocols.errors import TransportError

__all__ = [
    "TransportLimits",
    "ZmqTransport",
    "check_endpoint",
    "endpoint_problem",
    "listens_everywhere",
]

_ENDPOINT = re.compile(r"^tcp://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.\-]{1,253}):(\d{1,5})$")
#: What a node may bind: a dialable endpoint, a wildcard host, or port ``*`` (any free one).
_LISTEN = re.compile(r"^tcp://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.\-]{1,253}|\*):(\d{1,5}|\*)$")

# Plain ints: zmq's enum flags cost an enum construction on every ``&``.
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_NOBLOCK = int(zmq.NOBLOCK)
_RCVMORE = int(zmq.RCVMORE)
#: Messages of a drain after which it stops asking ZMQ_EVENTS and runs to zmq.Again.
_PEEK = 4

#: Called with (sender endpoint, frame) for each inbound frame of a batch.
FrameSink = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class TransportLimits:
    max_frame: int = 1 << 20
    rcvhwm: int = 10_000
    sndhwm: int = 1_000
    max_peers: int = 256
    batch: int = 2_000


_WILDCARDS = frozenset({"*", "0.0.0.0", "[::]", "[::0]", "[0:0:0:0:0:0:0:0]"})


def check_endpoint(endpoint: str) -> str:
    """Accept only ``tcp://host:port`` with a host one can dial (endpoints come from
    peers: never ipc/inproc, never a wildcard, which would reach our own machine)."""
    m = _ENDPOINT.match(endpoint)
    if m is None or not 0 < int(m.group(2)) < 65536 or m.group(1) in _WILDCARDS:
        raise TransportError(f"not a tcp endpoint: {endpoint!r}", code="bad-endpoint")
    return endpoint


def listens_everywhere(endpoint: str) -> bool:
    """True for ``tcp://*:port``, ``tcp://0.0.0.0:port`` and the IPv6 wildcard: an
    address to bind, not one a peer can dial (a peer dialing 0.0.0.0 reaches itself)."""
    host = endpoint.removeprefix("tcp://").rpartition(":")[0]
    return host in _WILDCARDS


def endpoint_problem(
    listen: str, advertise: str | None, seeds: Sequence[str]
) -> tuple[str, str, str] | None:
    """The first of a node's endpoints that peers could not use, as ``(key, value,
    why)``: ``why`` is ``"wildcard"`` (an ``advertise`` that is a bind-all address, or
    a ``listen`` on one with no ``advertise``) or ``"not-tcp"`` (a seed or an
    ``advertise`` that is not ``tcp://host:port``); None if all are fine. The config
    file and the embedding API word the error each in their own terms."""
    if advertise is not None and listens_everywhere(advertise):
        return "advertise", advertise, "wildcard"
    for key, value in [*(("seeds", s) for s in seeds), ("advertise", advertise)]:
        if value is None:
            continue
        try:
            check_endpoint(value)
        except TransportError:
            return key, value, "not-tcp"
    m = _LISTEN.match(listen)
    if m is None or (m.group(2) != "*" and not 0 < int(m.group(2)) < 65536):
        # (libzmq takes port 99999 modulo 65536 and binds some other port)
        return "listen", listen, "not-tcp"
    if advertise is None and listens_everywhere(listen):
        return "listen", listen, "wildcard"
    return None


def _sender(msg: zmq.Frame) -> str:
    """The sender's routing id (its endpoint, a hint), from the connection's
    handshake; "" when it is missing, not ASCII, or longer than a routing id can be."""
    try:
        ident = msg.get("Identity")
    except (zmq.ZMQError, UnicodeDecodeError):
        return ""
    return ident if isinstance(ident, str) and len(ident) <= 255 and ident.isascii() else ""


class ZmqTransport:
    """A bound DEALER in, per-peer DEALERs out. Not thread-safe; lives on one event loop."""

    def __init__(
        self,
        listen: str,
        on_frames: Callable[[list[tuple[str, bytes]]], None],
        *,
        limits: TransportLimits | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        advertised: str | None = None,
    ) -> None:
        self.limits = limits or TransportLimits()
        self._ctx = context or zmq.Context.instance()
        self._on_frames = on_frames
        self._peers: OrderedDict[str, zmq.Socket[bytes]] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        #: in the middle of dropping a message of more parts than one drain reads
        self._skipping = False
        self.counters: dict[str, int] = {
            "transport.frames_in": 0,
            "transport.frames_out": 0,
            "transport.dropped_hwm": 0,
            "transport.dropped_bad_endpoint": 0,
            "transport.dropped_malformed": 0,
            "transport.dropped_no_socket": 0,
            "transport.peers_evicted": 0,
        }
        # A DEALER, not a ROUTER (module docstring): it never sends.
        sock = self._ctx.socket(zmq.DEALER)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, self.limits.rcvhwm)
            sock.setsockopt(zmq.MAXMSGSIZE, self.limits.max_frame)
            sock.bind(listen)
            self.endpoint: str = advertised or sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise TransportError(f"cannot listen on {listen}: {exc.strerror}") from exc
        self._inbound = sock
        self._identity = self.endpoint.encode()

    # -- lifecycle ---------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        fd = int(self._inbound.getsockopt(zmq.FD))
        self._loop.add_reader(fd, self._on_readable)
        # An edge may have fired before the reader was installed.
        self._loop.call_soon(self._on_readable)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(zmq.ZMQError, ValueError, OSError):
                self._loop.remove_reader(int(self._inbound.getsockopt(zmq.FD)))
        for sock in self._peers.values():
            sock.close(linger=0)
        self._peers.clear()
        self._inbound.close(linger=0)

    def flush_and_close(self, linger_ms: int = 200) -> None:
        """Close, giving queued outbound frames ``linger_ms`` to leave (used on leave)."""
        if self._closed:
            return
        for sock in self._peers.values():
            sock.setsockopt(zmq.LINGER, linger_ms)
            sock.close()
        self._peers.clear()
        self.close()

    # -- inbound -----------------------------------------------------------

    def _on_readable(self) -> None:
        if self._closed:
            return
        batch: list[tuple[str, bytes]] = []
        sock = self._inbound
        limit = self.limits.batch
        recv = sock.recv
        opt = sock.getsockopt
        more = False
        try:
            # One recv per message (its single part). The drain ends either with a ZMQ_EVENTS
            # query saying nothing is left or with zmq.Again; both process the
            # socket's commands and so re-arm the edge-triggered fd (this socket
            # never sends). A wake-up usually brings one to a few messages, where
            # the query is cheaper than raising zmq.Again: draining one message
            # right after the fd fired takes ~11 µs ending on the query, ~22-27 µs
            # ending on Again (2-vCPU VM). In a burst, one Again per batch is
            # cheaper than a query per message.
            while True:
                n = len(batch)
                if n >= limit:
                    more = bool(cast(int, opt(_EVENTS)) & _POLLIN)
                    break
                try:
                    msg = recv(_NOBLOCK, copy=False)
                except zmq.Again:
                    break
                if self._skipping or opt(_RCVMORE):  # more than one part: drop it whole
                    if not self._skipping:
                        self.counters["transport.dropped_malformed"] += 1
                    for _ in range(10_000):  # bounded: a longer message goes on next call
                        if not opt(_RCVMORE):
                            break
                        recv(_NOBLOCK)
                    self._skipping = bool(opt(_RCVMORE))
                    if self._skipping:  # its other parts are read after a yield
                        more = True
                        break
                    continue
                batch.append((_sender(msg), msg.bytes))
                if n < _PEEK and not cast(int, opt(_EVENTS)) & _POLLIN:
                    break
        except zmq.ZMQError as exc:
            if self._closed:
                return
            raise TransportError(f"receive failed: {exc.strerror}") from exc
        if batch:
            self.counters["transport.frames_in"] += len(batch)
            self._on_frames(batch)
        if more and self._loop is not None and not self._closed:
            # Yield to other callbacks, then keep draining (the fd will not fire again).
            self._loop.call_soon(self._on_readable)

    def poke(self) -> None:
        """Re-check the inbound socket (cheap); guards against a missed edge."""
        if not self._closed and cast(int, self._inbound.getsockopt(_EVENTS)) & _POLLIN:
            self._on_readable()

    # -- outbound ----------------------------------------------------------

    def _peer(self, endpoint: str) -> zmq.Socket[bytes]:
        sock = self._peers.get(endpoint)
        if sock is not None:
            self._peers.move_to_end(endpoint)
            return sock
        check_endpoint(endpoint)
        try:
            sock = self._ctx.socket(zmq.DEALER)
        except zmq.ZMQError as exc:
            # Out of sockets (the context's ZMQ_MAX_SOCKETS, 1023 by default) or of
            # file descriptors: a max_peers too large for them. Close the oldest peer
            # so that a later new peer finds room (its slot frees once libzmq's
            # reaper has closed it).
            if self._peers:
                self._peers.popitem(last=False)[1].close(linger=0)
                self.counters["transport.peers_evicted"] += 1
            raise TransportError(
                f"cannot open a socket for {endpoint}: {exc.strerror}", code="no-socket"
            ) from exc
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, self.limits.sndhwm)
            sock.setsockopt(zmq.ROUTING_ID, self._identity)
            # Inbound on a DEALER is never read: keep it tiny and capped.
            sock.setsockopt(zmq.RCVHWM, 1)
            sock.setsockopt(zmq.MAXMSGSIZE, 1024)
            sock.setsockopt(zmq.RECONNECT_IVL, 100)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise TransportError(f"cannot connect {endpoint}: {exc.strerror}") from exc
        self._peers[endpoint] = sock
        while len(self._peers) > self.limits.max_peers:
            _, old = self._peers.popitem(last=False)
            old.close(linger=0)
            self.counters["transport.peers_evicted"] += 1
        return sock

    def send(self, endpoint: str, frame: bytes) -> bool:
        """Queue ``frame`` for ``endpoint``; False when dropped (bad endpoint, full queue,
        no socket to be had)."""
        if self._closed:
            return False
        try:
            sock = self._peer(endpoint)
        except TransportError as exc:
            if exc.code == "no-socket":
                self.counters["transport.dropped_no_socket"] += 1
            else:
                self.counters["transport.dropped_bad_endpoint"] += 1
            return False
        try:
            sock.send(frame, _NOBLOCK, copy=len(frame) < 4096)
        except zmq.Again:
            self.counters["transport.dropped_hwm"] += 1
            return False
        except zmq.ZMQError as exc:
            raise TransportError(f"send to {endpoint} failed: {exc.strerror}") from exc
        self.counters["transport.frames_out"] += 1
        return True

    def forget(self, endpoint: str) -> None:
        """Drop the connection to a peer (it left or died)."""
        sock = self._peers.pop(endpoint, None)
        if sock is not None:
            sock.close(linger=0)

    @property
    def peer_count(self) -> int:
        return len(self._peers)
