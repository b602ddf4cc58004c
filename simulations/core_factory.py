"""CoreFactory: builds real ``MeshNodeCore`` objects for the simulated world.

Keys are derived from the master seed (one per node, one per org), so node ids
are the same in every run of a seed. ``crypto="real"`` signs with Ed25519;
``crypto="fast"`` swaps in ``FastSigner``/``FastVerifier`` behind the same
Signer/Verifier interface (the wire code does not change). All nodes share one
``RecordCache`` (records are immutable; each node still runs its own checks).

Certificates are valid over the whole virtual time line; the simulator's clock
starts at 0.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any

import msgpack

from mesh.core import CoreConfig, MeshNodeCore
from protocols.capabilities.records import CapabilitySpec, RecordCache
from protocols.codec import MAX_FRAME
from protocols.contract_net.task import TaskSpec
from protocols.crypto import (
    Ed25519Signer,
    Ed25519Verifier,
    FastSigner,
    FastVerifier,
    Signer,
    Verifier,
)
from protocols.envelope import GOSSIPED_KINDS, FrameMemo
from protocols.identity import NodeIdentity
from protocols.kinds import PAYLOADS
from protocols.membership.formed import FormedMesh
from protocols.membership.state import SUSPECT
from protocols.trust import OrgPolicy, TrustStore, issue_certificate
from simulations.rng import derive_seed
from simulations.world import UNTRUSTED_ORG, World

__all__ = ["CoreFactory"]

_VALID_FROM = -86_400.0
_VALID_TO = 10.0 * 365 * 86_400


class CoreFactory:
    """Builds ``MeshNodeCore`` objects; see ``simulations.factories.ShellFactory``."""

    def __init__(self, world: World, *, crypto: str = "real") -> None:
        self.world = world
        self.fast = crypto == "fast"
        self.registry = FastVerifier()
        # One verifier for every node of the process, as ``registry`` is with fast
        # crypto: a parsed public key is the same object for every node that checks
        # it (360 B each; a verifier per node held one per (node, peer) pair, about
        # 360 MB at 1,000 nodes). Each node still verifies every frame it accepts.
        self.shared_verifier = Ed25519Verifier(key_cache=4096 + 2 * len(world.specs))
        self.records = RecordCache(1 << 18)
        # Decoding a frame or a certificate is the same work for every node: done
        # once per process; each node still runs its own checks and verification.
        self.memo = FrameMemo(PAYLOADS)
        sc = world.scenario
        self.config = CoreConfig(membership=sc.membership.resolve())
        self.max_frame = self.config.wire.max_frame or MAX_FRAME
        names = sorted({o.name for o in sc.orgs} | {UNTRUSTED_ORG})
        self.org_signers = {name: self._signer("org", name) for name in names}
        self.policies = {n: OrgPolicy(n, s.public_key) for n, s in self.org_signers.items()}
        self._identities: dict[int, tuple[NodeIdentity, bytes]] = {}
        self.incarnations: dict[int, int] = {}

    def _signer(self, *path: str | int) -> Signer:
        seed = hashlib.sha256(str(derive_seed(self.world.scenario.run.seed, "key", *path)).encode())
        raw = seed.digest()
        return FastSigner(raw, self.registry) if self.fast else Ed25519Signer(raw)

    def _verifier(self) -> Verifier:
        return self.registry if self.fast else self.shared_verifier

    def identity(self, index: int) -> tuple[NodeIdentity, bytes]:
        """The node's identity and certificate (made once; kept across restarts)."""
        found = self._identities.get(index)
        if found is None:
            spec = self.world.specs[index]
            signer = self._signer("node", index)
            cert = issue_certificate(
                self.org_signers[spec.org],
                spec.org,
                signer.public_key,
                f"sim-{index}",
                not_before=_VALID_FROM,
                not_after=_VALID_TO,
            )
            found = (NodeIdentity.from_signer(signer), cert)
            self._identities[index] = found
        return found

    def create(self, index: int, now: float, *, restart: int, durable: bool) -> MeshNodeCore:
        spec = self.world.specs[index]
        identity, cert = self.identity(index)
        trust = TrustStore(self.policies[o] for o in sorted(spec.trusted))
        # Durable state keeps the incarnation; without it the node starts at 0
        # and must refute its own death at a higher incarnation.
        inc = self.incarnations.get(index, -1) + 1 if durable else 0
        self.incarnations[index] = inc
        caps = [
            CapabilitySpec(name=c, max_concurrency=4, cost={"bid": spec.price})
            for c in spec.capabilities
        ]
        return MeshNodeCore(
            self.config,
            identity,
            cert,
            trust,
            rng=self.world.rng("node", index, "core", restart),
            verifier=self._verifier(),
            endpoint=self.world.addresses[index],
            capabilities=caps,
            now=now,
            record_cache=self.records,
            incarnation=inc,
            memo=self.memo,
        )

    # --- shell-level operations -------------------------------------------------

    def submit(self, node: Any, spec: dict[str, Any], now: float) -> str:
        task = TaskSpec(
            capability=spec["capability"],
            input=spec.get("input"),
            semantics=spec.get("semantics", "at-least-once"),
            timeout=float(spec.get("timeout", 120.0)),
            strategy=str(spec.get("strategy", "least_loaded")),
        )
        return str(node.submit(task, now))

    def complete(self, node: Any, task_id: str, result: Any, now: float) -> None:
        node.complete(task_id, result, now)

    def fail(self, node: Any, task_id: str, reason: str, now: float) -> None:
        node.fail(task_id, reason, now)

    def publish_record(self, node: Any, now: float) -> None:
        gossip = node.gossip
        gossip.update_capabilities(list(gossip._capabilities), now)

    def view(self, node: Any) -> dict[str, tuple[int, int]] | None:
        me = node.node_id
        return {
            m.node_id: (m.info.record.incarnation, m.info.record.seq)
            for m in node.members
            if m.status <= SUSPECT and m.node_id != me
        }

    def member_count(self, node: Any) -> int:
        return int(node.members.count_live()) - 1

    def own_version(self, node: Any) -> tuple[int, int] | None:
        rec = node.gossip.own.record
        return (int(rec.incarnation), int(rec.seq))

    def forge(self, frame: bytes, rng: random.Random) -> bytes | None:
        """Re-sign nothing: change the nonce of an authentic frame and keep its
        signature, so the frame is fresh (not a replay) but the signature fails."""
        try:
            body, sig = msgpack.unpackb(frame)
            fields = msgpack.unpackb(body)
        except Exception:
            return None
        if not isinstance(fields, list) or len(fields) != 9:
            return None
        fields[7] = rng.randbytes(len(fields[7]))
        return bytes(msgpack.packb([msgpack.packb(fields), sig]))

    def form(self, nodes: Sequence[Any], rng: random.Random, now: float) -> Any:
        return FormedMesh.of([node.gossip.own for node in nodes], rng, now)

    def adopt(self, node: Any, mesh: Any, now: float) -> None:
        node.adopt_formed(mesh, now)

    def replayable(self, frame: bytes) -> bool:
        try:
            body, _sig = msgpack.unpackb(frame)
            kind = msgpack.unpackb(body)[1]
        except Exception:
            return False
        return kind not in GOSSIPED_KINDS
