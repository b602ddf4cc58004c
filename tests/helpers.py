"""Test helpers: a cluster of N gossip nodes pumped on virtual time.

``MeshCluster`` is h11's ConnectionPair grown to N nodes: every node is a real
``mesh.core.MeshNodeCore`` (its wire with the fast signer or real Ed25519, its
``GossipAgent`` and ``ContractAgent``); frames travel through an event heap with
an explicit ``now``, seeded loss and delay, and partitions.
Everything is deterministic given the seed.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mesh.core import CoreConfig, MeshNodeCore
from mesh.events import Event
from mesh.gossip import GossipAgent
from protocols.capabilities.records import CapabilitySpec, RecordCache
from protocols.crypto import Ed25519Signer, Ed25519Verifier, FastSigner, FastVerifier, Verifier
from protocols.identity import NodeIdentity
from protocols.membership.config import MembershipConfig, lan
from protocols.membership.messages import Gossip
from protocols.trust import OrgPolicy, TrustStore, issue_certificate

START = 1_800_000_000.0  # virtual unix time of every test cluster


def seed32(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


@dataclass
class Org:
    name: str
    signer: Ed25519Signer | FastSigner

    @property
    def policy(self) -> OrgPolicy:
        return OrgPolicy(self.name, self.signer.public_key)


@dataclass
class SimNode:
    index: int
    endpoint: str
    core: MeshNodeCore
    events: list[tuple[float, Event]] = field(default_factory=list)
    crashed: bool = False
    scheduled: float | None = None

    @property
    def ctx(self) -> MeshNodeCore:
        return self.core

    @property
    def agent(self) -> GossipAgent:
        return self.core.gossip

    @property
    def node_id(self) -> str:
        return self.agent.node_id

    @property
    def counters(self) -> dict[str, int]:
        return self.ctx.counters


class MeshCluster:
    """N nodes, one virtual clock, a lossy, delaying, partitionable network."""

    def __init__(
        self,
        n: int,
        *,
        seed: int = 1,
        config: MembershipConfig | None = None,
        loss: float = 0.0,
        delay: tuple[float, float] = (0.005, 0.015),
        fast: bool = True,
        capabilities: Callable[[int], Sequence[CapabilitySpec]] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.now = START
        self.config = config or lan()
        self.loss = loss
        self.delay = delay
        self.fast = fast
        self.registry = FastVerifier()
        self.verifier: Verifier = self.registry if fast else Ed25519Verifier()
        self.org = Org("acme", self._signer(f"org-acme-{seed}"))
        self.trust_orgs: list[OrgPolicy] = [self.org.policy]
        self.record_cache = RecordCache()
        self.capabilities = capabilities or (
            lambda i: [CapabilitySpec(name=f"cap{i % 5}", version=f"1.{i % 3}")]
        )
        self.nodes: list[SimNode] = []
        self.by_endpoint: dict[str, SimNode] = {}
        self.blocked: Callable[[int, int], bool] | None = None
        self._heap: list[tuple[float, int, int, str, bytes]] = []
        self._seq = 0
        self.delivered = 0
        for _ in range(n):
            self.add_node()

    # --- building -------------------------------------------------------------

    def _signer(self, label: str) -> Ed25519Signer | FastSigner:
        if self.fast:
            return FastSigner(seed32(label), self.registry)
        return Ed25519Signer(seed32(label))

    def certificate(
        self, public_key: bytes, name: str, org: Org | None = None, offers: Sequence[str] = ("*",)
    ) -> bytes:
        org = org or self.org
        return issue_certificate(
            org.signer,
            org.name,
            public_key,
            name,
            not_before=START - 3600,
            not_after=START + 30 * 86400,
            offers=offers,
        )

    def add_node(
        self,
        *,
        org: Org | None = None,
        offers: Sequence[str] = ("*",),
        capabilities: Sequence[CapabilitySpec] | None = None,
        label: str | None = None,
        index: int | None = None,
    ) -> SimNode:
        """A new node; with ``index`` (restart), it replaces that node, same key and endpoint."""
        i = len(self.nodes) if index is None else index
        label = label or f"node-{self.seed}-{i}"
        identity = NodeIdentity.from_signer(self._signer(label))
        cert = self.certificate(identity.public_key, f"n{i}", org, offers)
        endpoint = f"sim://{i}"
        caps = self.capabilities(i) if capabilities is None else capabilities
        core = MeshNodeCore(
            CoreConfig(membership=self.config),
            identity,
            cert,
            TrustStore(self.trust_orgs),
            rng=random.Random(f"{self.seed}-{i}-{self.now}"),
            verifier=self.verifier,
            endpoint=endpoint,
            capabilities=caps,
            now=self.now,
            record_cache=self.record_cache,
        )
        node = SimNode(i, endpoint, core)
        if index is None:
            self.nodes.append(node)
        else:
            self.nodes[i] = node
        self.by_endpoint[endpoint] = node
        self.flush(node)
        return node

    def bootstrap(self, nodes: Sequence[SimNode] | None = None) -> None:
        """Every node already knows every other's record (a converged start)."""
        group = list(nodes if nodes is not None else self.nodes)
        opened = [group[0].ctx.open(n.agent.own.frame, self.now) for n in group]
        for node in group:
            for msg in opened:
                node.agent.accept_record(msg, self.now, rebroadcast=False)
            node.events.clear()
            self._drain(node)
            node.events.clear()
            self.schedule_timer(node)

    # --- running ------------------------------------------------------------

    def _push(self, t: float, index: int, endpoint: str, frame: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, index, endpoint, frame))

    def schedule_timer(self, node: SimNode) -> None:
        t = node.core.get_timer()
        if t is None or node.crashed:
            node.scheduled = None
            return
        t = max(t, self.now)
        if node.scheduled is not None and node.scheduled <= t:
            return  # an earlier wake-up is pending; it reschedules
        node.scheduled = t
        self._push(t, node.index, "", b"")

    def flush(self, node: SimNode) -> None:
        for endpoint, frame in node.ctx.frames_to_send(self.now):
            dest = self.by_endpoint.get(endpoint)
            if dest is None or dest.crashed:
                continue
            if self.blocked is not None and self.blocked(node.index, dest.index):
                continue
            if self.loss and self.rng.random() < self.loss:
                continue
            self._push(self.now + self.rng.uniform(*self.delay), dest.index, endpoint, frame)
        self._drain(node)

    def _drain(self, node: SimNode) -> None:
        while (ev := node.ctx.next_event()) is not None:
            node.events.append((self.now, ev))

    def run_until(self, t_end: float) -> None:
        while self._heap and self._heap[0][0] <= t_end:
            t, _, index, endpoint, frame = heapq.heappop(self._heap)
            self.now = t
            node = self.nodes[index]
            if node.crashed:
                continue
            if frame:
                node.core.receive(frame, endpoint, t)
                self.delivered += 1
            else:
                if node.scheduled != t:
                    continue  # superseded wake-up
                node.scheduled = None
                node.core.handle_timer(t)
            self.flush(node)
            self.schedule_timer(node)
        self.now = max(self.now, t_end)

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def start(self) -> None:
        for node in self.nodes:
            self.schedule_timer(node)

    def join(self, node: SimNode, seeds: Sequence[SimNode]) -> None:
        node.agent.join([s.endpoint for s in seeds], self.now)
        self.flush(node)
        self.schedule_timer(node)

    def inject_records(self, via: SimNode, to: SimNode, frames: Sequence[bytes]) -> None:
        """``via`` (a legitimate member) forwards ``frames`` to ``to`` in a signed gossip frame."""
        via.ctx.send(
            "gossip", Gossip(records=list(frames)), to.node_id, self.now, endpoint=to.endpoint
        )
        self.flush(via)

    # --- faults -------------------------------------------------------------

    def crash(self, node: SimNode) -> None:
        node.crashed = True
        node.scheduled = None

    def restart(self, node: SimNode, seeds: Sequence[SimNode]) -> SimNode:
        """The node comes back with the same key and endpoint but no state (incarnation 0)."""
        fresh = self.add_node(index=node.index)
        self.join(fresh, seeds)
        return fresh

    def partition(self, group_a: Sequence[int]) -> None:
        side = set(group_a)
        self.blocked = lambda a, b: (a in side) != (b in side)

    def heal(self) -> None:
        self.blocked = None

    # --- observations -------------------------------------------------------

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes if not n.crashed]

    def stat(self, name: str) -> int:
        return sum(n.counters.get(name, 0) for n in self.nodes)
