"""One node's view of the cluster: member table, capability index, suspicions,
broadcast queue and probe order, updated together (pure; no events, no I/O).

``mesh/gossip.py`` feeds it verified records and claims and turns the returned
``Outcome`` into events and counters.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from typing import Any

from protocols.capabilities.index import CapabilityIndex
from protocols.capabilities.records import RecordInfo
from protocols.capabilities.store import RecordIngest
from protocols.codec import MAX_COUNTER
from protocols.membership import timing
from protocols.membership.awareness import Awareness
from protocols.membership.config import MembershipConfig
from protocols.membership.formed import FormedMesh
from protocols.membership.messages import Claim, DigestEntry
from protocols.membership.probe import ProbeOrder
from protocols.membership.pushpull import chunk_records, claims_in, compare_digests, in_bucket
from protocols.membership.queue import TransmitLimitedQueue
from protocols.membership.state import ALIVE, DEAD, SUSPECT, MemberTable, Outcome
from protocols.membership.suspicion import Suspicion

__all__ = ["MembershipView", "Update"]

#: A queued update: a record frame or a suspect/dead claim.
Update = bytes | Claim


class MembershipView:
    __slots__ = (
        "_births",
        "_born",
        "_deadlines",
        "awareness",
        "config",
        "index",
        "members",
        "order",
        "queue",
        "rng",
        "self_id",
        "suspicions",
    )

    def __init__(self, self_id: str, config: MembershipConfig, rng: random.Random) -> None:
        self.self_id = self_id
        self.config = config
        self.rng = rng
        self.members = MemberTable(self_id, config.dead_reclaim_time)
        self.index = CapabilityIndex()
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.queue: TransmitLimitedQueue[Update] = TransmitLimitedQueue()
        self.order = ProbeOrder()
        self.suspicions: dict[str, Suspicion] = {}
        # The suspicions' deadlines as a heap of (deadline, node id), asked after every
        # event of the node: an entry is current while that node's suspicion still
        # has that deadline; others are dropped when they reach the top. This class
        # alone changes ``suspicions``. ``_born`` numbers the suspicions in the dict's
        # order, so that expiry reports them in that order.
        self._deadlines: list[tuple[float, str]] = []
        self._born: dict[str, int] = {}
        self._births = 0

    def adopt(self, mesh: FormedMesh) -> None:
        """Start from a formed mesh (``formed.FormedMesh``): every node known and alive.

        Our own record is in the mesh already, so it is no longer queued for gossip;
        the probe round-robin starts at a random position of the shared permutation."""
        self.members.adopt(mesh.members, mesh.entries, mesh.per_status)
        self.index.adopt(mesh.records, mesh.by_capability)
        self.order.adopt(mesh.order, mesh.known, self.rng.randrange(len(mesh.order)))
        self.queue.discard(self.self_id)

    # --- predicates (for ProbeOrder) -------------------------------------------

    def is_live(self, node_id: str) -> bool:
        """Alive or suspect, and not us: probed and gossiped to."""
        member = self.members.get(node_id)
        return member is not None and member.status <= SUSPECT and node_id != self.self_id

    def is_alive(self, node_id: str) -> bool:
        member = self.members.get(node_id)
        return member is not None and member.status == ALIVE and node_id != self.self_id

    def is_dead(self, node_id: str) -> bool:
        member = self.members.get(node_id)
        return member is not None and member.status == DEAD

    def endpoint_of(self, node_id: str) -> str | None:
        member = self.members.get(node_id)
        return None if member is None else member.info.endpoint

    # --- dissemination -------------------------------------------------------

    def piggyback(self, to: str | None) -> tuple[list[bytes], list[Claim]]:
        """Updates for one message to ``to``: never its own record, but claims about it."""
        queue = self.queue
        skip = to if to is not None and isinstance(queue.get(to), bytes) else None
        limit = timing.retransmit_limit(self.config.retransmit_mult, len(self.members))
        updates = queue.take(self.config.max_piggyback, limit, skip=skip)
        records = [u for u in updates if isinstance(u, bytes)]
        claims = [u for u in updates if isinstance(u, Claim)]
        return records, claims

    # --- records -------------------------------------------------------------

    def install_own(self, info: RecordInfo, now: float) -> None:
        self.members.set_self(info, now)
        self.index.upsert(info, alive=not info.record.leaving)
        self.queue.put(self.self_id, info.frame)

    def apply_record(
        self, info: RecordInfo, now: float, rebroadcast: bool = True, *, quiet_join: bool = False
    ) -> str:
        """Apply a verified record of another node; returns the table's ``Outcome``.

        Queued for gossip if ``rebroadcast``, except a first record (``JOINED``) when
        ``quiet_join`` (a push-pull's third-party records: old news for the cluster).
        """
        node_id = info.node_id
        outcome = self.members.apply_record(info, now)
        if outcome == Outcome.STALE:
            return outcome
        member = self.members.get(node_id)
        assert member is not None
        if outcome in (Outcome.JOINED, Outcome.ALIVE):
            self.order.add(node_id, self.rng)
        if outcome in (Outcome.ALIVE, Outcome.LEFT):
            self._end_suspicion(node_id)
        self.index.upsert(info, alive=member.status <= SUSPECT)
        if rebroadcast and not (quiet_join and outcome == Outcome.JOINED):
            self.queue.put(node_id, info.frame)
        return outcome

    def refilter_offers(self, check_offer: Callable[[Any, str], None]) -> list[RecordInfo]:
        """Check every member's offers again under the trust policy as it is now (a
        reload widened or narrowed it): the records whose kept offers change, updated
        in the table and the index. A record's next version would do it, but that can
        be half a record TTL away (30 minutes by default)."""
        changed = []
        for member in list(self.members):
            info = RecordIngest.refilter(member.info, check_offer)
            if info is not None:
                self.members.replace_info(info)
                self.index.upsert(info, alive=member.status <= SUSPECT)
                changed.append(info)
        return changed

    # --- push-pull -------------------------------------------------------------

    def frames_of(self, node_ids: Sequence[str]) -> list[bytes]:
        """The record frames of the known ``node_ids`` (unknown ids are skipped)."""
        out = []
        # Each id once: a peer's ``want`` repeating an id made one frame per copy.
        for node_id in dict.fromkeys(node_ids):
            member = self.members.get(node_id)
            if member is not None:
                out.append(member.info.frame)
        return out

    def answer_push_pull(
        self, digest: Sequence[DigestEntry], part: int = 0, parts: int = 1
    ) -> tuple[list[list[bytes]], list[str], list[DigestEntry]]:
        """Reply to a push-pull: record chunks they lack, ids we want, our non-alive entries.

        For part ``part`` of a digest split in ``parts``, only our members of that
        bucket are compared and reported (``pushpull.bucket_of``)."""
        ours = in_bucket(self.members.digest_map(), part, parts)
        send, want = compare_digests(ours, digest, self.self_id)
        non_alive = [e for e in ours.values() if e[3] != ALIVE and e[0] != self.self_id]
        return chunk_records(self.frames_of(send)), want, non_alive

    def digest_claims(self, digest: Sequence[DigestEntry], sender: str) -> list[Claim]:
        """A peer's suspect/dead statuses as claims. As memberlist's ``mergeState``, a
        remote "dead" only makes us suspect, so a node on the other side of a healed
        partition gets time to refute it; about a member we already hold dead it stays
        "dead" (it can then only raise the incarnation the member died at)."""
        out = []
        for node_id, inc, status in claims_in(digest):
            if inc >= MAX_COUNTER:
                # A claim carries at most MAX_COUNTER - 1 (so a refutation fits): a
                # status at the largest record incarnation is no claim anyone made.
                continue
            # A push-pull digest repeats every non-alive member (~300 at 1,000 nodes with
            # 30 % crashed): what the table would ignore builds no claim.
            if not self.members.claim_changes(node_id, inc, status):
                continue
            # A member we hold dead stays dead; their "dead" may only raise the
            # incarnation it died at (a stale record cannot revive it then).
            member = self.members.get(node_id)
            held_dead = member is not None and member.status == DEAD
            keep = "dead" if status == "dead" and held_dead else "suspect"
            out.append(Claim(node=node_id, incarnation=inc, status=keep, by=sender))
        return out

    # --- claims ----------------------------------------------------------------

    def apply_claim(self, claim: Claim, now: float) -> str:
        """Apply a suspect/dead claim about another node (``REFUTE`` if about us).

        ``CONFIRMED`` is returned only for a new independent confirmation.
        """
        outcome = self.members.apply_claim(claim.node, claim.incarnation, claim.status, now)
        if outcome == Outcome.SUSPECTED:
            if claim.node not in self.suspicions:  # else replaced in place (same order)
                self._births += 1
                self._born[claim.node] = self._births
            fresh = self.suspicions[claim.node] = self._new_suspicion(claim, now)
            self._track(claim.node, fresh)
            self.queue.put(claim.node, claim)
        elif outcome == Outcome.CONFIRMED:
            suspicion = self.suspicions.get(claim.node)
            if suspicion is None or not suspicion.confirm(claim.by):
                return Outcome.IGNORED
            self._track(claim.node, suspicion)
            self.queue.put(claim.node, claim)
        elif outcome == Outcome.DEAD:
            self._end_suspicion(claim.node)
            self.index.set_alive(claim.node, False)
            self.queue.put(claim.node, claim)
        return outcome

    def _new_suspicion(self, claim: Claim, now: float) -> Suspicion:
        cfg = self.config
        n = self.members.count_live()
        k = timing.suspicion_confirmations_needed(cfg.suspicion_mult, n)
        min_t = timing.suspicion_min_timeout(cfg.suspicion_mult, n, cfg.probe_interval)
        max_t = timing.suspicion_max_timeout(cfg.suspicion_max_timeout_mult, min_t)
        return Suspicion(claim.by, claim.incarnation, k, min_t, max_t, now)

    def expired_suspicions(self, now: float) -> list[Claim]:
        """Remove the suspicions whose timeout passed; the dead claims to apply."""
        heap, sus = self._deadlines, self.suspicions
        due: set[str] = set()
        while heap and heap[0][0] <= now:
            deadline, node_id = heapq.heappop(heap)
            current = sus.get(node_id)
            if current is not None and current.deadline() == deadline:
                due.add(node_id)
        claims = []
        for node_id in sorted(due, key=self._born.__getitem__):  # the dict's order
            inc = self._end_suspicion(node_id)
            claims.append(Claim(node=node_id, incarnation=inc, status="dead", by=self.self_id))
        return claims

    def next_deadline(self) -> float | None:
        """The earliest deadline of an open suspicion (None without one)."""
        heap, sus = self._deadlines, self.suspicions
        while heap:
            deadline, node_id = heap[0]
            current = sus.get(node_id)
            if current is not None and current.deadline() == deadline:
                return deadline
            heapq.heappop(heap)  # ended, or its deadline moved
        return None

    def _track(self, node_id: str, suspicion: Suspicion) -> None:
        """A suspicion began or shrank: push its deadline (rebuild when mostly stale)."""
        heap = self._deadlines
        if len(heap) > 64 and len(heap) > 4 * len(self.suspicions):
            heap[:] = [(s.deadline(), n) for n, s in self.suspicions.items()]
            heapq.heapify(heap)
            return
        heapq.heappush(heap, (suspicion.deadline(), node_id))

    def _end_suspicion(self, node_id: str) -> int:
        """Close ``node_id``'s suspicion (if any); its incarnation (-1 without one)."""
        ended = self.suspicions.pop(node_id, None)
        if ended is None:
            return -1
        del self._born[node_id]
        return ended.incarnation
