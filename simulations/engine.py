"""The engine: a virtual clock, one event heap, plain node objects.

Every simulated node is a plain sans-IO object (``SimNode``): no coroutine,
thread or socket per node. The heap holds tuples ``(time, seq, kind, node, a,
b)``; ``seq`` is a global insertion counter, so ties break by insertion order
and never by comparing payloads. A node is woken only when a frame arrives for
it or its timer fires: each node has at most one *live* timer entry; when its
timer moves, a new entry is pushed and the old one is invalidated lazily (it is
skipped when popped because ``timer_at[node]`` no longer matches).

Each node sees ``now + skew[node]`` (clock skew and jumps); the engine converts
the node's timer deadline back to global time.

The trace hash is a running SHA-256 over (time, node, kind, key fields) of every
delivered frame and every event a node emits; it does not depend on
``PYTHONHASHSEED``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import operator
import struct
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from mesh.events import Event, FrameRejected
from simulations.network import SimNetwork

__all__ = ["NodeFactory", "SimNode", "Simulator", "endpoint", "index_of"]

DELIVER, TIMER, CALL, INJECT = 0, 1, 2, 3
_PACK = struct.Struct("<dii").pack
#: a node whose timer stays in the past this many times at one instant is broken
_SPIN_LIMIT = 10_000

Observer = Callable[[float, int, Event], None]
#: (time, dst, src, attack, expected codes, codes got, exempt)
InjectionObserver = Callable[[float, int, int, str, frozenset[str], tuple[str, ...], bool], None]


#: Per event class, a C-level getter of its fields as a tuple (trace hashing).
_FIELD_GETTERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def _getter(cls: type) -> Callable[[Any], tuple[Any, ...]]:
    names = [f.name for f in dataclasses.fields(cls)]
    if len(names) == 1:
        one = operator.attrgetter(names[0])
        return lambda ev: (one(ev),)
    if not names:
        return lambda ev: ()
    return operator.attrgetter(*names)


class SimNode(Protocol):
    """The part of MeshNodeCore's surface that the engine drives."""

    @property
    def node_id(self) -> str: ...

    def receive(self, frame: bytes, endpoint: str, now: float) -> None: ...

    def frames_to_send(self, now: float) -> list[tuple[str, bytes]]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_event(self) -> Event | None: ...

    def join(self, seeds: Sequence[str], now: float) -> None: ...

    def leave(self, now: float) -> None: ...

    def statistics(self) -> dict[str, int]: ...

    def discard(self) -> None:
        """The engine dropped this node (a crash): release what it holds now."""
        ...


class NodeFactory(Protocol):
    """Builds node ``index``; ``restart`` counts restarts (0 at first start)."""

    def create(self, index: int, now: float, *, restart: int, durable: bool) -> SimNode: ...


def endpoint(index: int, move: int = 0) -> str:
    """Node ``index``'s endpoint; after its ``move``-th restart at a new address,
    ``sim://index.move`` (the old one then reaches nobody)."""
    return f"sim://{index}" if move == 0 else f"sim://{index}.{move}"


def index_of(ep: str) -> int | None:
    """The node an endpoint names (whether it is that node's current one or not)."""
    if not ep.startswith("sim://"):
        return None
    head, dot, tail = ep[6:].partition(".")
    if not head.isdigit() or (dot and not tail.isdigit()):
        return None
    return int(head)


class Simulator:
    """Runs ``n`` nodes on one virtual clock. Single-threaded, deterministic."""

    __slots__ = (
        "_capture",
        "_ep_cache",
        "_eps",
        "_heap",
        "_seq",
        "_spin",
        "_trace",
        "alive",
        "events",
        "factory",
        "generation",
        "injection_observer",
        "last_delivery",
        "n",
        "network",
        "node_ids",
        "nodes",
        "now",
        "observer",
        "restarts",
        "skew",
        "timer_at",
        "trace_frames",
    )

    def __init__(
        self,
        n: int,
        factory: NodeFactory,
        network: SimNetwork,
        *,
        observer: Observer | None = None,
        trace_frames: bool = True,
    ) -> None:
        self.n = n
        self.factory = factory
        self.network = network
        self.observer = observer
        self.trace_frames = trace_frames
        self.now = 0.0
        self.events = 0
        self.nodes: list[SimNode | None] = [None] * n
        self.node_ids: list[str] = [""] * n
        self.alive = [False] * n
        self.generation = [0] * n
        self.restarts = [0] * n
        self.skew = [0.0] * n
        self.timer_at: list[float | None] = [None] * n
        self._heap: list[tuple[Any, ...]] = []
        self._seq = 0
        self._spin = 0
        self._trace = hashlib.sha256()
        self._ep_cache: dict[str, int | None] = {}
        self._eps = [endpoint(i) for i in range(n)]
        self._capture: list[str] | None = None
        self.injection_observer: InjectionObserver | None = None
        #: the last (time, seq, kind, dst, src, frame) delivered (replay attacks tap it)
        self.last_delivery: tuple[Any, ...] | None = None

    # --- scheduling ---------------------------------------------------------

    def at(self, t: float, fn: Callable[[float], object]) -> None:
        """Run ``fn(now)`` at virtual time ``t`` (never earlier than now)."""
        self._seq += 1
        heapq.heappush(self._heap, (max(t, self.now), self._seq, CALL, -1, fn, None))

    def trace_hash(self) -> str:
        return self._trace.hexdigest()

    def trace_note(self, text: str) -> None:
        """Mix a shell-level fact (a fault, a crash) into the trace hash."""
        self._trace.update(f"{self.now!r}|{text}\n".encode())

    # --- node lifecycle -----------------------------------------------------

    def start(self, i: int, *, seeds: Sequence[str] = (), durable: bool = True) -> None:
        """Create node ``i`` now (or re-create it after a crash) and join."""
        assert not self.alive[i], f"node {i} is already running"
        restart = self.restarts[i]
        node = self.factory.create(i, self.local_now(i), restart=restart, durable=durable)
        self.nodes[i] = node
        self.node_ids[i] = node.node_id
        self.alive[i] = True
        self.generation[i] += 1
        self.trace_note(f"start {i} {restart} {int(durable)}")
        node.join(list(seeds), self.local_now(i))
        self.flush(i)

    def move(self, i: int, ep: str) -> None:
        """Node ``i`` (down) comes back at endpoint ``ep``: frames to its old endpoint
        reach nobody from now on, as after a restart at another address."""
        assert not self.alive[i], f"node {i} moves only while down"
        old = self._eps[i]
        self.trace_note(f"move {i} {ep}")
        self._eps[i] = ep
        self._ep_cache[old] = None
        self._ep_cache[ep] = i

    def crash(self, i: int) -> None:
        """Stop node ``i`` abruptly: its object, timer and pending work are gone."""
        if not self.alive[i]:
            return
        node = self.nodes[i]
        self.trace_note(f"crash {i}")
        self.alive[i] = False
        self.nodes[i] = None
        if node is not None:
            node.discard()
        self.timer_at[i] = None
        self.generation[i] += 1
        self.restarts[i] += 1

    def set_skew(self, i: int, skew: float) -> None:
        """Set node ``i``'s clock offset (a jump when changed mid-run)."""
        self.trace_note(f"skew {i} {skew!r}")
        self.skew[i] = skew
        if self.alive[i]:
            self.timer_at[i] = None
            self.flush(i)

    def local_now(self, i: int) -> float:
        return self.now + self.skew[i]

    def call(self, i: int, fn: Callable[[Any, float], object]) -> bool:
        """Run ``fn(node, local_now)`` on a live node, then flush. False if down."""
        node = self.nodes[i]
        if node is None:
            return False
        fn(node, self.now + self.skew[i])
        self.flush(i)
        return True

    # --- the loop -----------------------------------------------------------

    def flush(self, i: int) -> None:
        """Collect node ``i``'s outbound frames, events and timer."""
        node = self.nodes[i]
        assert node is not None
        now = self.now
        local = now + self.skew[i]
        out = node.frames_to_send(local)
        if out:
            self._send_all(i, out)
        ev = node.next_event()
        while ev is not None:
            self._on_event(i, ev)
            if self.nodes[i] is not node:  # the observer crashed it
                return
            ev = node.next_event()
        t = node.get_timer()
        if t is None:
            self.timer_at[i] = None
            return
        g = t - self.skew[i]
        if g < now:
            g = now
        if g != self.timer_at[i]:
            self.timer_at[i] = g
            self._seq += 1
            heapq.heappush(self._heap, (g, self._seq, TIMER, i, t, None))

    def _send_all(self, src: int, out: list[tuple[str, bytes]]) -> None:
        route = self.network.route
        cache = self._ep_cache
        heap = self._heap
        now = self.now
        for ep, frame in out:
            dst = cache.get(ep, -1)
            if dst == -1:
                dst = index_of(ep)
                if dst is not None and dst < self.n and self._eps[dst] != ep:
                    dst = None  # an address the node had before it moved
                cache[ep] = dst
            if dst is None or dst >= self.n:
                self.network.stats.dropped_unroutable += 1
                continue
            for t in route(src, dst, now):
                self._seq += 1
                heapq.heappush(heap, (t, self._seq, DELIVER, dst, src, frame))

    def inject(
        self, src: int, dst: int, frame: bytes, attack: str, expected: frozenset[str]
    ) -> bool:
        """Send a bad frame from ``src`` to ``dst`` through the network (adversaries).

        On delivery, the codes of the ``FrameRejected`` events it causes are
        reported to ``injection_observer`` with the expected codes. A delivery to
        a node restarted since the injection is exempt (its replay cache is new).
        """
        arrivals = self.network.route(src, dst, self.now)
        for t in arrivals:
            self._seq += 1
            data = (frame, attack, expected, self.generation[dst])
            heapq.heappush(self._heap, (t, self._seq, INJECT, dst, src, data))
        return bool(arrivals)

    def _deliver_injected(self, t: float, i: int, src: int, data: Any) -> None:
        frame, attack, expected, gen = data
        node = self.nodes[i]
        if node is None:
            return
        got: list[str] = []
        self._capture = got
        try:
            node.receive(frame, self._eps[src], t + self.skew[i])
            self.flush(i)
        finally:
            self._capture = None
        if self.injection_observer is not None:
            exempt = attack == "replay" and gen != self.generation[i]
            self.injection_observer(t, i, src, attack, expected, tuple(got), exempt)

    def _on_event(self, i: int, ev: Event) -> None:
        if self._capture is not None and type(ev) is FrameRejected:
            self._capture.append(ev.code)
        # the kind and every field, in a fixed order (a dataclass repr, without its cost)
        cls = type(ev)
        get = _FIELD_GETTERS.get(cls)
        if get is None:
            get = _FIELD_GETTERS[cls] = _getter(cls)
        self._trace.update(f"{self.now!r}|{i}|{cls.__name__}{get(ev)!r}\n".encode())
        if self.observer is not None:
            self.observer(self.now, i, ev)

    def run_until(self, t_end: float, progress: Callable[[float, int], None] | None = None) -> None:
        """Process every heap entry with time <= ``t_end``; the clock ends at ``t_end``."""
        heap = self._heap
        pop = heapq.heappop
        nodes = self.nodes
        skew = self.skew
        timer_at = self.timer_at
        stats = self.network.stats
        trace = self._trace
        eps = self._eps
        next_progress = self.now + 1.0
        next_events = self.events + 5000
        while heap and heap[0][0] <= t_end:
            item = pop(heap)
            t, _seq, kind, i, a, b = item
            if t != self.now:
                self._spin = 0
                self.now = t
                if progress is not None and (t >= next_progress or self.events >= next_events):
                    progress(t, self.events)
                    next_progress = t + 1.0
                    next_events = self.events + 5000
            if kind == DELIVER:
                node = nodes[i]
                if node is None:
                    stats.dropped_down += 1
                    continue
                self.events += 1
                stats.delivered += 1
                self.last_delivery = item
                if self.trace_frames:
                    trace.update(_PACK(t, i, a))
                    trace.update(b)
                node.receive(b, eps[a], t + skew[i])
                self.flush(i)
            elif kind == TIMER:
                node = nodes[i]
                if node is None or timer_at[i] != t:
                    continue
                self.events += 1
                timer_at[i] = None
                self._spin += 1
                assert self._spin < _SPIN_LIMIT, f"node {i}: timer does not advance at {t}"
                local = t + skew[i]
                # the node asked for local time ``a``; float rounding of the skew
                # conversion must not wake it a hair early (it would not advance)
                node.handle_timer(local if local >= a else a)
                self.flush(i)
            elif kind == CALL:
                self.events += 1
                a(t)
            else:
                self.events += 1
                stats.delivered += 1
                self._deliver_injected(t, i, a, b)
        self.now = max(self.now, t_end)
        if progress is not None:
            progress(self.now, self.events)

    def pending(self) -> int:
        return len(self._heap)
