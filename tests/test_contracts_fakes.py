"""An in-memory router of ContractAgents (no wire), and tests of the router itself.

``FakeNet`` plays the core and the shell for several ContractAgents: each
``ctx.send`` is one signature and one queued copy per recipient; delivery can
drop, duplicate and reorder; crashed nodes neither send nor receive; the
"shell" runs each TaskAssigned handler for a while then calls ``complete``.
Other test modules import it (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from mesh.contracts import ContractAgent
from mesh.events import Event, TaskAssigned, TaskCancelled
from protocols.contract_net import Offer, TaskSpec
from protocols.contract_net.messages import DEFERRED_KINDS

CAP = "summarize"


@dataclass(frozen=True)
class Msg:
    kind: str
    sender: str
    payload: BaseModel
    certificate: Any
    created_at: float
    #: bids arrive with their signature check deferred (as on the real wire):
    #: FakeCtx.confirm accepts b"good" and rejects anything else
    proof: Any = None


@dataclass(frozen=True)
class FakeCandidate:
    node_id: str
    alive: bool


@dataclass
class Packet:
    sender: str
    to: str
    kind: str
    payload: BaseModel
    sent_at: float


class FakeCtx:
    def __init__(self, net: FakeNet, node_id: str, seed: int) -> None:
        self.net = net
        self._node_id = node_id
        self._rng = random.Random(seed)
        self.events: list[Event] = []
        self.counters: Counter[str] = Counter()

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def rng(self) -> random.Random:
        return self._rng

    def send(
        self,
        kind: str,
        payload: BaseModel,
        to: str | Sequence[str],
        now: float,
        *,
        endpoint: str | None = None,
        ttl: float | None = None,
    ) -> bytes:
        recipients = [to] if isinstance(to, str) else list(to)
        assert recipients, "send with no recipient"
        self.net.signatures[kind] += 1
        frame = f"frame-{len(self.net.frames)}".encode()
        self.net.frames[frame] = (kind, payload, now)
        if endpoint is not None:  # one copy, to the recipient at that endpoint
            recipients = [r for r in recipients if self.endpoint_of(r) == endpoint]
            assert recipients, "endpoint of no recipient"
        for r in recipients:
            self.net.copies[kind] += 1
            self.net.queue.append(Packet(self._node_id, r, kind, payload, now))
            self.net.sent.append(self.net.queue[-1])
        return frame

    def send_frame(self, endpoint: str, frame: bytes) -> None:
        """Another copy of a frame this node sealed earlier (held-back award copies)."""
        kind, payload, sealed_at = self.net.frames[frame]
        self.net.copies[kind] += 1
        to = endpoint.removeprefix("fake://")
        self.net.queue.append(Packet(self._node_id, to, kind, payload, sealed_at))
        self.net.sent.append(self.net.queue[-1])

    def endpoint_of(self, node_id: str) -> str | None:
        return f"fake://{node_id}"

    def confirm(self, msg: Any, endpoint: str) -> bool:
        self.net.confirms[msg.kind] += 1
        if msg.proof is None or msg.proof[0] == b"good":
            return True
        self.counters["rejected.bad-signature"] += 1
        return False

    def emit(self, event: Event) -> None:
        self.events.append(event)
        self.net.log.append((self._node_id, event))

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n


class FakeIndex:
    def __init__(self, net: FakeNet) -> None:
        self.net = net

    def find(self, capability: str, version_spec: str) -> list[FakeCandidate]:
        return [
            FakeCandidate(n, n not in self.net.declared_dead)
            for n in self.net.executors
            if capability in self.net.offers.get(n, ())
        ]


@dataclass
class FakeNet:
    """Requesters and executors on one virtual clock."""

    seed: int = 1
    loss: float = 0.0
    dup: float = 0.0
    reorder: bool = False
    work_time: float = 0.5
    detect_delay: float = 2.0
    now: float = 0.0
    agents: dict[str, ContractAgent] = field(default_factory=dict)
    ctxs: dict[str, FakeCtx] = field(default_factory=dict)
    offers: dict[str, set[str]] = field(default_factory=dict)
    executors: list[str] = field(default_factory=list)
    queue: list[Packet] = field(default_factory=list)
    frames: dict[bytes, tuple[str, BaseModel, float]] = field(default_factory=dict)
    sent: list[Packet] = field(default_factory=list)  # every copy queued, in order
    signatures: Counter[str] = field(default_factory=Counter)
    copies: Counter[str] = field(default_factory=Counter)
    confirms: Counter[str] = field(default_factory=Counter)  # deferred signature checks
    forged_by: set[str] = field(default_factory=set)  # their bids carry a bad signature
    log: list[tuple[str, Event]] = field(default_factory=list)
    crashed: set[str] = field(default_factory=set)
    declared_dead: set[str] = field(default_factory=set)
    auto_work: bool = True
    completions: Counter[str] = field(default_factory=Counter)  # task -> handler completions

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._work: list[tuple[float, int, str, str]] = []  # (when, seq, node, task)
        self._deaths: list[tuple[float, str]] = []
        self._seq = 0
        self._seen_events: dict[str, int] = defaultdict(int)

    def add(self, node_id: str, offers: Sequence[Offer] = (), **kw: Any) -> ContractAgent:
        ctx = FakeCtx(self, node_id, self.rng.getrandbits(32))
        agent = ContractAgent(ctx, FakeIndex(self), offers=offers, **kw)
        self.agents[node_id] = agent
        self.ctxs[node_id] = ctx
        if offers:
            self.offers[node_id] = {o.capability for o in offers}
            self.executors.append(node_id)
        return agent

    def submit(self, node_id: str, spec: TaskSpec) -> str:
        task_id = self.agents[node_id].submit(spec, self.now)
        self.pump()
        return task_id

    def crash(self, node_id: str) -> None:
        """The node stops; membership declares it dead ``detect_delay`` later."""
        self.crashed.add(node_id)
        self._deaths.append((self.now + self.detect_delay, node_id))

    # --- delivery ---------------------------------------------------------------

    def deliver_one(self, index: int = 0) -> None:
        p = self.queue.pop(index)
        if p.sender in self.crashed or p.to in self.crashed:
            return
        proof = None
        if p.kind in DEFERRED_KINDS:
            proof = (b"bad" if p.sender in self.forged_by else b"good", b"", b"")
        msg = Msg(p.kind, p.sender, p.payload, None, p.sent_at, proof)
        self.agents[p.to].on_message(msg, "fake", self.now)

    def pump(self, limit: int = 100_000) -> None:
        """Deliver everything queued (with loss/dup/reorder) and react to events."""
        for _ in range(limit):
            self._react()
            if not self.queue:
                return
            i = self.rng.randrange(len(self.queue)) if self.reorder else 0
            if self.loss and self.rng.random() < self.loss:
                self.queue.pop(i)
                continue
            if self.dup and self.rng.random() < self.dup:
                self.queue.append(self.queue[i])
            self.deliver_one(i)
        raise AssertionError("pump did not settle")

    def _react(self) -> None:
        """The shells: run handlers for TaskAssigned, drop them on TaskCancelled."""
        for node, ctx in self.ctxs.items():
            start = self._seen_events[node]
            new = ctx.events[start:]
            self._seen_events[node] = len(ctx.events)
            if not self.auto_work or node in self.crashed:
                continue
            for ev in new:
                if isinstance(ev, TaskAssigned):
                    self._seq += 1
                    heapq.heappush(
                        self._work, (self.now + self.work_time, self._seq, node, ev.task_id)
                    )
                elif isinstance(ev, TaskCancelled):
                    pass  # complete() will return False for it

    def next_time(self) -> float | None:
        times = [
            t
            for n, a in self.agents.items()
            if n not in self.crashed and (t := a.get_timer()) is not None
        ]
        times += [w[0] for w in self._work[:1]]
        times += [d[0] for d in self._deaths]
        return min(times) if times else None

    def run_until(self, t_end: float, max_steps: int = 1_000_000) -> None:
        self.pump()
        for _ in range(max_steps):
            t = self.next_time()
            if t is None or t > t_end:
                self.now = max(self.now, t_end)
                return
            self.now = max(self.now, t)
            self._fire(self.now)
            self.pump()
        raise AssertionError("run_until did not settle")

    def _fire(self, now: float) -> None:
        for when, node in sorted(self._deaths):
            if when <= now:
                self._deaths.remove((when, node))
                self.declared_dead.add(node)
                for other, agent in self.agents.items():
                    if other not in self.crashed:
                        agent.on_peer_dead(node, now)
        while self._work and self._work[0][0] <= now:
            _, _, node, task_id = heapq.heappop(self._work)
            if node not in self.crashed and self.agents[node].complete(
                task_id, f"done:{task_id}", now
            ):
                self.completions[task_id] += 1
        for node, agent in self.agents.items():
            timer = agent.get_timer()
            if node not in self.crashed and timer is not None and timer <= now:
                agent.handle_timer(now)

    def events(self, kind: type[Event]) -> list[tuple[str, Any]]:
        return [(n, e) for n, e in self.log if isinstance(e, kind)]


def offer(max_concurrency: int = 4, cost: float = 1.0) -> list[Offer]:
    return [Offer(CAP, max_concurrency=max_concurrency, cost=cost, eta=0.5)]


def make_net(executors: int = 3, **kw: Any) -> FakeNet:
    net = FakeNet(**kw)
    net.add("req")
    for i in range(executors):
        net.add(f"x{i:02d}", offer())
    return net


# --- tests of the fake itself -----------------------------------------------------


def test_fake_net_counts_one_signature_per_send_and_one_copy_per_recipient() -> None:
    net = make_net(executors=3)
    net.submit("req", TaskSpec(CAP, input="hi"))
    assert net.signatures["cfp"] == 1
    assert net.copies["cfp"] == 3


def test_fake_net_crashed_nodes_neither_send_nor_receive() -> None:
    net = make_net(executors=2)
    net.crash("x00")
    net.crash("x01")
    net.submit("req", TaskSpec(CAP, input="hi"))
    # cfp copies were queued but never delivered: nobody answered
    assert net.copies["cfp"] == 2
    assert net.copies["propose"] == 0
