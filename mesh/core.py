"""MeshNodeCore: one sans-IO object per node.

It composes the wire (``protocols.envelope.Wire``) with two protocol agents:
``GossipAgent`` (SWIM membership, signed capability records, push-pull) and
``ContractAgent`` (contract net: requester and executor machines). It never
performs I/O and never reads a clock: every call takes ``now`` (unix seconds),
and randomness comes from the injected ``random.Random``. The surface follows
aioquic's shape::

    core.receive(frame, endpoint, now)        # one inbound frame
    core.frames_to_send(now)                  # [(endpoint, frame)] to transmit
    core.get_timer() / core.handle_timer(now) # one timer for the whole node
    core.next_event()                         # Event or None
    core.join(seeds, now) / core.leave(now)
    core.submit(task, now) -> task_id         # contract net, requester side
    core.report_progress / complete / fail    # contract net, executor side

A bad frame never raises out of ``receive``: it is counted under its code in
``statistics()`` and reported as a ``FrameRejected`` event.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from mesh.events import Event, FrameRejected, PeerDead, PeerLeft
from protocols.capabilities.records import CapabilitySpec, RecordCache
from protocols.contract_net.bidding import DEFAULT_BIDDER_CAP, BidFunction, default_bid
from protocols.contract_net.host import Inbound
from protocols.contract_net.messages import DEFERRED_KINDS
from protocols.contract_net.strategies import Strategy
from protocols.contract_net.task import Offer, TaskSpec
from protocols.crypto import Verifier
from protocols.envelope import NONCE_SIZE, FrameMemo, NotPermitted, Opened, Wire, WireConfig
from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.identity import NodeIdentity
from protocols.membership import config as membership_presets
from protocols.membership.config import MembershipConfig
from protocols.membership.formed import FormedMesh
from protocols.trust import Certificate, Revocation, TrustStore, parse_revocation

__all__ = ["Agent", "CoreConfig", "CoreContext", "MeshNodeCore"]


class Agent(Protocol):
    """A protocol agent composed into the core (gossip, contract net)."""

    def on_message(self, msg: Opened, endpoint: str, now: float) -> None: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


class CoreContext:
    """The plumbing every agent shares: wire, outbox, events, counters.

    It implements ``mesh.ports.AgentContext``; ``MeshNodeCore`` extends it
    with the agents themselves.
    """

    def __init__(
        self,
        wire: Wire,
        rng: random.Random,
    ) -> None:
        self.wire = wire
        self._rng = rng
        self.trust: TrustStore = wire.trust
        self._outbox: list[tuple[str, bytes]] = []
        self._events: deque[Event] = deque()
        self.counters: dict[str, int] = {}
        self._endpoints: dict[str, str] = {}

    # -- AgentContext ----------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self.wire.node_id

    @property
    def rng(self) -> random.Random:
        return self._rng

    def nonce(self) -> bytes:
        return self._rng.getrandbits(8 * NONCE_SIZE).to_bytes(NONCE_SIZE, "big")

    def seal(
        self,
        kind: str,
        payload: BaseModel,
        to: str | Sequence[str],
        now: float,
        *,
        ttl: float | None = None,
    ) -> bytes:
        """Seal one frame without queuing it (own records, which are forwarded later)."""
        self.count("signatures")
        return self.wire.seal(kind, payload, to, now, nonce=self.nonce(), ttl=ttl)

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
        frame = self.seal(kind, payload, to, now, ttl=ttl)
        if endpoint is not None:
            self.send_frame(endpoint, frame)
            return frame
        for node in (to,) if isinstance(to, str) else to:
            where = self.endpoint_of(node)
            if where is None:
                self.count("send.no-endpoint")
                continue
            self.send_frame(where, frame)
        return frame

    def send_frame(self, endpoint: str, frame: bytes) -> None:
        self._outbox.append((endpoint, frame))
        self.counters["frames_out"] = self.counters.get("frames_out", 0) + 1

    def open(self, frame: bytes, now: float, digest: bytes | None = None) -> Opened:
        """Open a nested frame (a gossiped record) through the same checks."""
        return self.wire.open(frame, now, digest=digest)

    def confirm(self, msg: Inbound, endpoint: str) -> bool:
        """Check a signature that ``open`` deferred; a forgery is rejected here."""
        try:
            self.wire.confirm(msg.proof)
        except RemoteProtocolError as exc:
            self.reject(exc, endpoint)
            return False
        return True

    def endpoint_of(self, node_id: str) -> str | None:
        return self._endpoints.get(node_id)

    def revocation(self, raw: bytes) -> Revocation:
        return parse_revocation(raw, self.wire.verifier)

    def set_endpoint(self, node_id: str, endpoint: str | None) -> None:
        if endpoint is None:
            self._endpoints.pop(node_id, None)
        else:
            self._endpoints[node_id] = endpoint

    def emit(self, event: Event) -> None:
        self._events.append(event)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def reject(self, error: RemoteProtocolError, endpoint: str) -> None:
        self.count(f"rejected.{error.code}")
        self.emit(FrameRejected(error.code, error.message, endpoint))

    # -- shell side ---------------------------------------------------------

    def frames_to_send(self, now: float) -> list[tuple[str, bytes]]:
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def statistics(self) -> dict[str, int]:
        stats = dict(sorted(self.counters.items()))
        stats["replay_cache_size"] = len(self.wire.replay)
        return stats


def make_wire(
    identity: NodeIdentity,
    certificate: bytes,
    trust: TrustStore,
    verifier: Verifier,
    config: Any = None,
) -> Wire:
    from protocols.kinds import PAYLOADS

    return Wire(identity, certificate, trust, verifier, PAYLOADS, config)


def dispatch(
    ctx: CoreContext,
    routes: dict[str, Agent],
    frame: bytes,
    endpoint: str,
    now: float,
    digest: bytes | None = None,
    defer: frozenset[str] = frozenset(),
) -> None:
    """Open one frame and hand it to the agent of its kind; count and report rejections.

    Frames of a kind in ``defer`` reach their agent with the signature unchecked
    (``Opened.proof``): the agent confirms it before it acts on the frame.
    """
    ctx.counters["frames_in"] = ctx.counters.get("frames_in", 0) + 1
    try:
        msg = ctx.wire.open(frame, now, digest=digest, defer=defer)
        agent = routes.get(msg.kind)
        if agent is None:
            raise LocalProtocolError(f"no agent handles kind {msg.kind!r}")
        agent.on_message(msg, endpoint, now)
    except NotPermitted as exc:
        ctx.reject(exc, endpoint)
        answer = getattr(routes.get(exc.opened.kind), "on_not_permitted", None)
        if answer is not None:
            answer(exc.opened, endpoint, now)
    except RemoteProtocolError as exc:
        ctx.reject(exc, endpoint)


def is_departure(event: Event) -> str | None:
    """The node id an event says is gone (dead or left), if any."""
    if isinstance(event, PeerDead | PeerLeft):
        return event.node_id
    return None


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Everything a core is tuned by. Presets: ``lan()``, ``wan()``, ``local()``."""

    membership: MembershipConfig = field(default_factory=membership_presets.lan)
    wire: WireConfig = field(default_factory=WireConfig)
    #: Most bidders invited to one call for proposals (a fair seeded sample).
    bidder_cap: int = DEFAULT_BIDDER_CAP
    #: Smallest change of our load (0..1) worth re-signing our record for. Every
    #: record version floods the whole mesh, while bids carry the exact load, so
    #: records carry a coarse figure: idle, busy, full (and any return to idle).
    load_publish_delta: float = 0.5
    #: Fewest seconds between two load publications of one node (a burst of
    #: task starts and ends makes one new record, not one per task).
    load_publish_interval: float = 1.0
    #: A node runs its own task when no other node can: the auction invited nobody,
    #: or ended with no bid and not every answer "full". It needs the capability
    #: itself (at a matching version) and a free slot; the award, heartbeats and
    #: result then travel to its own endpoint like any peer's. (A node never bids
    #: in its own auctions: peers are preferred, and this is the fallback.)
    local_fallback: bool = True

    @classmethod
    def lan(cls) -> CoreConfig:
        return cls(membership=membership_presets.lan())

    @classmethod
    def wan(cls) -> CoreConfig:
        return cls(membership=membership_presets.wan())

    @classmethod
    def local(cls) -> CoreConfig:
        return cls(membership=membership_presets.local())


def _offer(spec: CapabilitySpec) -> Offer:
    cost = spec.cost
    return Offer(
        capability=spec.name,
        max_concurrency=spec.max_concurrency,
        cost=float(cost.get("cost", cost.get("bid", 1.0))),
        eta=float(cost.get("eta", cost.get("latency_s", 1.0))),
    )


class MeshNodeCore(CoreContext):
    """One node: wire + gossip (membership, records) + contract net. Sans-IO."""

    def __init__(
        self,
        config: CoreConfig,
        identity: NodeIdentity,
        certificate: Certificate | bytes,
        trust: TrustStore,
        *,
        rng: random.Random,
        verifier: Verifier,
        endpoint: str,
        capabilities: Sequence[CapabilitySpec],
        now: float,
        record_cache: RecordCache | None = None,
        bid: BidFunction = default_bid,
        strategies: dict[str, Strategy] | None = None,
        incarnation: int = 0,
        memo: FrameMemo | None = None,
    ) -> None:
        from mesh.contracts import ContractAgent
        from mesh.gossip import GOSSIP_KINDS, GossipAgent
        from protocols.contract_net.messages import CONTRACT_NET_PAYLOADS
        from protocols.kinds import PAYLOADS

        raw = certificate.raw if isinstance(certificate, Certificate) else certificate
        self._departed: deque[str] = deque()
        wire = Wire(identity, raw, trust, verifier, PAYLOADS, config.wire, memo=memo)
        super().__init__(wire, rng)
        self.config = config
        self.endpoint = endpoint
        self.gossip = GossipAgent(
            self,
            config.membership,
            endpoints=endpoint,
            capabilities=capabilities,
            now=now,
            org=self.wire.certificate.org,
            incarnation=incarnation,
            record_cache=record_cache,
        )
        self.contracts = ContractAgent(
            self,
            self.gossip.index,
            offers=[_offer(c) for c in capabilities],
            policy=trust,
            bid=bid,
            strategies=strategies,
            bidder_cap=config.bidder_cap,
            local_fallback=config.local_fallback,
        )
        self._routes: dict[str, Agent] = dict.fromkeys(GOSSIP_KINDS, self.gossip)
        self._routes.update(dict.fromkeys(CONTRACT_NET_PAYLOADS, self.contracts))
        self._published_load = 0.0
        self._load_next_at = now
        self._load_pending = False
        self._stopping = False

    # -- views -----------------------------------------------------------------

    @property
    def index(self) -> Any:
        return self.gossip.index

    @property
    def members(self) -> Any:
        return self.gossip.members

    def endpoint_of(self, node_id: str) -> str | None:
        if node_id == self.wire.node_id:
            return self.endpoint  # a task this node runs itself (local fallback)
        return self.gossip.endpoint_of(node_id)

    # -- the sans-IO surface -------------------------------------------------

    def receive(self, frame: bytes, endpoint: str, now: float) -> None:
        # A gossiped record forwarded to us again is skipped before any verification
        # (only gossiped frames are remembered by digest; others use the replay cache).
        digest = hashlib.sha256(frame).digest()
        if self.gossip.has_seen(digest):
            self.count("frames_in")
            self.count("records_duplicate_skipped")
            return
        dispatch(self, self._routes, frame, endpoint, now, digest, DEFERRED_KINDS)
        self._after(now)

    def get_timer(self) -> float | None:
        at = self.gossip.get_timer()
        t = self.contracts.get_timer()
        if t is not None and (at is None or t < at):
            at = t
        if self._load_pending and (at is None or self._load_next_at < at):
            at = self._load_next_at
        return at

    def handle_timer(self, now: float) -> None:
        t = self.gossip.get_timer()
        if t is not None and t <= now:
            self.gossip.handle_timer(now)
        t = self.contracts.get_timer()
        if t is not None and t <= now:
            self.contracts.handle_timer(now)
        self._after(now)

    def emit(self, event: Event) -> None:
        super().emit(event)
        gone = is_departure(event)
        if gone is not None:
            self._departed.append(gone)

    def _after(self, now: float) -> None:
        """Cross-agent effects: departures re-award tasks; load goes into our record."""
        while self._departed:
            self.contracts.on_peer_dead(self._departed.popleft(), now)
        load = self.contracts.load()
        published = self._published_load
        self._load_pending = abs(load - published) >= self.config.load_publish_delta or (
            load != published and (load == 0.0 or load >= 1.0)
        )
        if self._load_pending and now >= self._load_next_at:
            self._published_load = load
            self._load_pending = False
            self._load_next_at = now + self.config.load_publish_interval
            self.gossip.update_load(load, now)

    # -- commands ----------------------------------------------------------------

    def join(self, seeds: Sequence[str], now: float) -> None:
        self.gossip.join(seeds, now)

    def adopt_formed(self, mesh: FormedMesh, now: float) -> None:
        """Start as a member of an already formed mesh instead of joining one
        (``protocols.membership.formed``; the simulator's start for large meshes)."""
        self.gossip.adopt(mesh, now)

    def stop_bidding(self, now: float) -> None:
        """Refuse every new call for proposals (reason ``leaving``); running work goes on.

        The graceful-shutdown path: stop bidding, finish or hand back in-flight
        work, then ``leave``.
        """
        self.contracts.executor.accepting = False

    def trust_changed(self, now: float) -> list[str]:
        """The trust store was changed in place (``TrustStore.replace``, a reload): the
        members' offers are checked again now, not at their next record. The ids of
        the members whose offers changed."""
        return self.gossip.trust_changed()

    def replace_certificate(self, certificate: bytes, now: float) -> Certificate:
        """Adopt a renewed certificate (same key, same org: ``Wire.replace_certificate``)
        and republish our record under it, so members check our offers against it."""
        cert = self.wire.replace_certificate(certificate)
        self.gossip.republish(now)
        return cert

    def leave(self, now: float) -> None:
        self._stopping = True
        self.gossip.leave(now)

    def discard(self) -> None:
        """Let go of this core now: its shell dropped it (a crashed simulated node).

        The agents refer back to the core (it is their context), so a dropped core
        and every table it holds would otherwise wait for the garbage collector's
        next full collection. Dropping the agents breaks that cycle, and reference
        counting frees them at once. The core must not be used afterwards.
        """
        self._routes.clear()
        del self.gossip
        del self.contracts

    def submit(self, task: TaskSpec, now: float) -> str:
        task_id = self.contracts.submit(task, now)
        self._after(now)
        return task_id

    def cancel(self, task_id: str, now: float) -> None:
        self.contracts.cancel(task_id, now)

    def report_progress(
        self, task_id: str, now: float, percent: float | None = None, message: str | None = None
    ) -> bool:
        return self.contracts.report_progress(task_id, now, percent, message)

    def complete(self, task_id: str, result: Any, now: float) -> bool:
        ok = self.contracts.complete(task_id, result, now)
        self._after(now)
        return ok

    def fail(self, task_id: str, reason: str, now: float, *, final: bool = False) -> bool:
        """Fail a task we hold; ``final``: the requester should not retry it elsewhere."""
        ok = self.contracts.fail(task_id, reason, now, final=final)
        self._after(now)
        return ok

    def statistics(self) -> dict[str, int]:
        stats = super().statistics()
        stats.update({f"gossip.{k}": v for k, v in self.gossip.statistics().items()})
        return stats
