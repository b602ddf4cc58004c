"""GossipAgent: SWIM + Lifeguard membership and signed capability records, sans-IO.

The core (``mesh/core.py``) dispatches opened frames of the membership kinds to
``on_message`` and drives ``get_timer``/``handle_timer``. Everything the agent
sends goes through its ``GossipContext``; time comes in as ``now`` and
randomness from ``ctx.rng``. See ``docs/protocol.md (section 14)``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel

from mesh.events import (
    CapabilitiesChanged,
    IdentityConflict,
    PeerAlive,
    PeerDead,
    PeerJoined,
    PeerLeft,
    PeerSuspected,
)
from mesh.ports import GOSSIP, AgentContext
from protocols.capabilities.records import (
    RECORD_KIND,
    CapabilityRecord,
    CapabilitySpec,
    RecordCache,
    RecordInfo,
)
from protocols.capabilities.store import DUPLICATE, OFFERS_IGNORED, OpenedFrame, RecordIngest
from protocols.codec import MAX_COUNTER, MAX_FRAME, packb
from protocols.errors import RemoteProtocolError
from protocols.membership import timing
from protocols.membership.config import JOIN_CATCH_UPS, MembershipConfig
from protocols.membership.formed import FormedMesh
from protocols.membership.messages import (
    MAX_REVOCATION_GOSSIP,
    MEMBERSHIP_PAYLOADS,
    Ack,
    Claim,
    Gossip,
    IndirectAck,
    Nack,
    Ping,
    PingReq,
    PushPull,
    PushPullRecords,
    PushPullReply,
    RevocationNotice,
)
from protocols.membership.probe import ProbeState
from protocols.membership.pushpull import chunk_records, digest_parts
from protocols.membership.state import DEAD, SUSPECT, Outcome
from protocols.membership.view import MembershipView

__all__ = ["GOSSIP_KINDS", "GossipAgent", "GossipContext", "OfferPolicy", "OpenedFrame"]

#: A helper nacks after this fraction of the probe timeout (see ``_on_ping_req``).
NACK_FRACTION = 0.8

#: Join endpoints remembered to knock on again while we know no live member.
MAX_REMEMBERED_SEEDS = 32
#: Seconds between two ``IdentityConflict`` events about one rival endpoint.
IDENTITY_CONFLICT_EVERY = 60.0

#: Kinds the core dispatches to this agent.
GOSSIP_KINDS: tuple[str, ...] = tuple(MEMBERSHIP_PAYLOADS)  # a tuple: no hash order


class OfferPolicy(Protocol):
    """``TrustStore.check_offer``: raises ``RemoteProtocolError`` (``not-permitted``)."""

    def check_offer(self, certificate: Any, capability: str) -> None: ...


#: The core as seen by this agent (``AgentContext`` has seal, open and trust).
GossipContext = AgentContext


#: Payload bytes a frame can carry: the frame limit less room for the envelope
#: (sender, recipient, nonce, times, certificate, signature).
_FRAME_ROOM = MAX_FRAME - 8 * 1024


def _over_frame(reply: PushPullReply) -> bool:
    """Whether this reply's payload would not fit one frame (a cheap bound first)."""
    bound = sum(len(f) + 5 for f in reply.records) + sum(len(w) + 3 for w in reply.want)
    bound += sum(len(e[0]) + 22 for e in reply.digest)
    return bound > _FRAME_ROOM and len(packb(reply.model_dump())) > _FRAME_ROOM


class GossipAgent:
    """Membership, failure detection and capability records of one node."""

    def __init__(
        self,
        ctx: GossipContext,
        config: MembershipConfig,
        *,
        endpoints: str | Sequence[str],
        capabilities: Sequence[CapabilitySpec],
        now: float,
        org: str = "",
        load: float = 0.0,
        incarnation: int = 0,
        record_cache: RecordCache | None = None,
    ) -> None:
        self._ctx = ctx
        self.config = config
        self.node_id = ctx.node_id
        self.org = org
        self._endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        self._capabilities = list(capabilities)
        self._load = load
        self.incarnation = incarnation
        #: Endpoints whose records of our id we moved past (restarts, or a rival).
        self._rivals: dict[str, float] = {}
        self._seq = 0
        cache = record_cache if record_cache is not None else RecordCache(1 << 16)
        self.view = view = MembershipView(self.node_id, config, ctx.rng)
        self.members = view.members
        self.index = view.index
        self.awareness = view.awareness
        self._queue = view.queue
        self._order = view.order
        self._ingest = RecordIngest(config.seen_cache_size, cache)
        self._indirect: dict[int, tuple[str, int, str, float]] = {}
        self._probe: ProbeState | None = None
        self._ping_seq = 0
        self._left = False
        rng = ctx.rng
        self._next_probe = now + rng.uniform(0, config.probe_interval)
        self._next_gossip = now + rng.uniform(0, config.gossip_interval)
        self._next_push_pull = now + rng.uniform(0, max(config.push_pull_interval, 1e-9))
        self._catch_ups = 0  # catch-up push-pulls still due after a join
        self._catch_up_extra = 0  # catch-ups that may still follow past the third
        self._new_members = 0  # members we did not know, learned since the last catch-up
        self._seeds: dict[str, None] = {}  # endpoints we were told to join through
        self._told_record: dict[str, float] = {}  # claimant -> when we last answered it
        self._catch_up_delay = 0.0
        self._refresh_at = now
        self.own: RecordInfo = self._resign(now, leaving=False)

    # --- commands -------------------------------------------------------------

    def join(self, seeds: Sequence[str], now: float) -> None:
        """Push-pull with every seed endpoint (recipient GOSSIP: their ids are unknown),
        then catch up with random live members a few times (``join_catch_up``)."""
        if seeds and self.config.join_catch_up > 0:
            self._catch_ups = JOIN_CATCH_UPS
            self._catch_up_extra = self.config.join_catch_ups_max - JOIN_CATCH_UPS
            self._new_members = 0
            self._catch_up_delay = self.config.join_catch_up
            self._next_push_pull = min(self._next_push_pull, now + self._catch_up_delay)
        for seed in seeds:
            if seed in self._endpoints:
                continue
            self._seeds.pop(seed, None)
            self._seeds[seed] = None
            if len(self._seeds) > MAX_REMEMBERED_SEEDS:
                del self._seeds[next(iter(self._seeds))]
            self._knock(seed, now)

    def adopt(self, mesh: FormedMesh, now: float) -> None:
        """Start as a member of a mesh that has already formed (``FormedMesh``), instead
        of joining it: the simulator's start for meshes too large to hold one member
        table per node. The mesh must hold our current record.

        Our next push-pull falls anywhere in the period scaled to the mesh's size, as
        for a node that has been running for a while (not within the unscaled period
        of a node that just started: at 10,000 members, every node at once)."""
        if mesh.records.get(self.node_id) is not self.own:
            raise ValueError("the formed mesh does not hold this node's current record")
        self.view.adopt(mesh)
        interval = self.config.push_pull_interval
        if interval > 0:
            period = timing.push_pull_scale(interval, len(mesh))
            self._next_push_pull = now + self._ctx.rng.uniform(0, period)

    def _knock(self, endpoint: str, now: float) -> None:
        for payload in self._push_pulls(join=True):
            self._ctx.send("push-pull", payload, GOSSIP, now, endpoint=endpoint)
        self._ctx.count("push_pull_sent")
        for raw in self._gossipable_lists():  # what we know of revocations
            notice = RevocationNotice(revocation=raw)
            self._ctx.send("revoke", notice, GOSSIP, now, endpoint=endpoint)

    # --- revocation lists -----------------------------------------------------

    def take_revocation(self, raw: bytes, now: float) -> bool:
        """Apply a signed revocation list (from a peer); a newer one is handed on to a
        few live members. Frames of a revoked node are refused from then on."""
        ctx = self._ctx
        try:
            newer = ctx.trust.apply_revocation(ctx.revocation(raw))
        except RemoteProtocolError as exc:  # a forged list, or an org we do not trust
            ctx.count(f"dropped.{exc.code}")
            return False
        if not newer:
            ctx.count("revocations_known")
            return False
        ctx.count("revocations_applied")
        self.spread_revocations(now, [raw])
        return True

    def trust_changed(self) -> list[str]:
        """The trust policy changed (a reload): check the offers of every member again
        and tell of each whose kept offers changed (``CapabilitiesChanged``); their ids."""
        changed = self.view.refilter_offers(self._ctx.trust.check_offer)
        for info in changed:
            rec = info.record
            self._ctx.emit(
                CapabilitiesChanged(node_id=info.node_id, incarnation=rec.incarnation, seq=rec.seq)
            )
        return [info.node_id for info in changed]

    def spread_revocations(self, now: float, lists: Sequence[bytes] | None = None) -> None:
        """Send revocation lists (default: every list in effect) to ``2 x gossip_nodes``
        live members: each node that applies a newer list does the same, and a node
        answering a push-pull sends its lists too (a node that missed the rumour
        learns at its next push-pull, or when it joins)."""
        if lists is None:
            lists = self._gossipable_lists()
        else:
            lists = [raw for raw in lists if len(raw) <= MAX_REVOCATION_GOSSIP]
        if not lists:
            return
        fanout = 2 * max(1, self.config.gossip_nodes)
        peers = self._order.sample(fanout, self.view.is_live, self._ctx.rng)
        for raw in lists:
            notice = RevocationNotice(revocation=raw)
            for peer in peers:
                self._send(peer, "revoke", notice, now)

    def _push_pulls(self, *, join: bool = False) -> list[PushPull]:
        """Our digest as push-pull requests: one, or one per bucket when it is too large
        for a frame (above ~1,300 members); our record rides in the first."""
        parts = digest_parts(self.members.digest())
        if len(parts) > 1:
            self._ctx.count("push_pull_split")
        return [
            PushPull(
                digest=digest,
                records=[self.own.frame] if k == 0 else [],
                join=join,
                part=k,
                parts=len(parts),
            )
            for k, digest in enumerate(parts)
        ]

    def leave(self, now: float) -> None:
        """Sign a final ``leaving`` record at a higher incarnation and push it out now."""
        if self._left:
            return
        self._gossip_clock(now)
        self.incarnation += 1
        self._resign(now, leaving=True)
        self._left = True
        self._probe = None
        self._gossip(now, fanout=2 * max(1, self.config.gossip_nodes))

    def update_load(self, load: float, now: float) -> None:
        """New load figure: bump seq, re-sign and disseminate our record."""
        self._load = load
        if not self._queue:
            self._gossip_clock(now)
        self._resign(now, leaving=self._left)

    def update_capabilities(self, capabilities: Sequence[CapabilitySpec], now: float) -> None:
        self._capabilities = list(capabilities)
        self.republish(now)

    def republish(self, now: float) -> None:
        """Re-sign and disseminate our record as it is (e.g. under a renewed certificate,
        which every frame we seal now carries)."""
        if not self._queue:
            self._gossip_clock(now)
        self._resign(now, leaving=self._left)

    # --- accessors ---------------------------------------------------------

    def endpoint_of(self, node_id: str) -> str | None:
        return self.view.endpoint_of(node_id)

    def has_seen(self, digest: bytes) -> bool:
        """Whether a gossiped frame with this sha256 was handled already: the core can
        skip opening a duplicate top-level ``record`` frame (dedup before verify)."""
        return digest in self._ingest

    def alive_ids(self) -> list[str]:
        """Alive or suspect members other than us, sorted."""
        return sorted(
            m.node_id for m in self.members if m.status <= SUSPECT and m.node_id != self.node_id
        )

    def statistics(self) -> dict[str, int]:
        return {
            "members": len(self.members),
            "members_live": self.members.count_live(),
            "suspicions": len(self.view.suspicions),
            "queue": len(self._queue),
            "awareness": self.awareness.score,
        }

    # --- timers -------------------------------------------------------------

    def get_timer(self) -> float | None:
        # Called after every pump of the shell: plain comparisons, no list and no min().
        at = self._refresh_at
        if self._queue and self._next_gossip < at:
            at = self._next_gossip
        if self._left:
            return at
        if self._next_probe < at:
            at = self._next_probe
        if self.config.push_pull_interval > 0 and self._next_push_pull < at:
            at = self._next_push_pull
        probe = self._probe
        if probe is not None:
            t = probe.end if probe.indirect else probe.direct_deadline
            if t < at:
                at = t
        if self.view.suspicions:
            deadline = self.view.next_deadline()
            if deadline is not None and deadline < at:
                at = deadline
        for entry in self._indirect.values():
            if entry[3] < at:
                at = entry[3]
        return at

    def _gossip_clock(self, now: float) -> None:
        """Gossip ticks sit on a fixed grid (random phase): move to the first tick > now."""
        if self._next_gossip <= now:
            interval = self.config.gossip_interval
            self._next_gossip += interval * (math.floor((now - self._next_gossip) / interval) + 1)

    def handle_timer(self, now: float) -> None:
        if self._queue and now >= self._next_gossip:
            self._gossip(now, self.config.gossip_nodes)
        self._gossip_clock(now)
        if now >= self._refresh_at:
            self._resign(now, leaving=self._left)
        if self._left:
            return
        self._expire_suspicions(now)
        self._expire_indirect(now)
        self._advance_probe(now)
        if now >= self._next_probe:
            self._start_probe(now)
        if self.config.push_pull_interval > 0 and now >= self._next_push_pull:
            self._push_pull(now)

    def _expire_suspicions(self, now: float) -> None:
        for claim in self.view.expired_suspicions(now):
            self._ctx.count("suspicion_timeouts")
            self._apply_claim(claim, now)

    def _expire_indirect(self, now: float) -> None:
        due = [seq for seq, entry in self._indirect.items() if entry[3] <= now]
        for seq in due:
            requester, req_seq, target, _ = self._indirect.pop(seq)
            self._send(requester, "nack", Nack(seq=req_seq, target=target), now)

    # --- probing (SWIM + Lifeguard) ------------------------------------------

    def _start_probe(self, now: float) -> None:
        cfg = self.config
        interval = self.awareness.scale(cfg.probe_interval)
        self._next_probe = now + interval
        target = self._order.next(self.view.is_live, self._ctx.rng)
        if target is None:
            self._probe = None
            return
        self._ping_seq += 1
        direct = now + min(self.awareness.scale(cfg.probe_timeout), interval)
        self._probe = ProbeState(target, self._ping_seq, direct, now + interval)
        records, claims = self.view.piggyback(target)
        ping = Ping(seq=self._ping_seq, target=target, records=records, claims=claims)
        self._send(target, "ping", ping, now)
        self._ctx.count("probes_sent")

    def _advance_probe(self, now: float) -> None:
        probe = self._probe
        if probe is None:
            return
        if not probe.indirect and now >= probe.direct_deadline:
            probe.indirect = True
            # Helpers must be alive, not suspect (memberlist): a suspect helper is likely
            # down and its missing nack would wrongly raise our own awareness score.
            peers = self._order.sample(
                self.config.indirect_checks, self.view.is_alive, self._ctx.rng, exclude=probe.target
            )
            probe.expected_nacks = len(peers)
            for peer in peers:
                records, claims = self.view.piggyback(peer)
                req = PingReq(seq=probe.seq, target=probe.target, records=records, claims=claims)
                self._send(peer, "ping-req", req, now)
            self._ctx.count("indirect_probes")
        if probe.indirect and now >= probe.end:
            self._probe = None
            self.awareness.apply_delta(
                timing.probe_failure_delta(probe.expected_nacks, probe.nacks)
            )
            self._ctx.count("probes_failed")
            member = self.members.get(probe.target)
            if member is not None and member.status <= SUSPECT:
                # A member refuted up to MAX_COUNTER (a hostile claim at the largest
                # incarnation a claim carries) cannot be suspected any more: the claim
                # at MAX_COUNTER - 1 is stale. Building one at MAX_COUNTER raised.
                claim = Claim(
                    node=probe.target,
                    incarnation=min(member.incarnation, MAX_COUNTER - 1),
                    status="suspect",
                    by=self.node_id,
                )
                self._apply_claim(claim, now)

    def _probe_succeeded(self, now: float) -> None:
        self._probe = None
        self.awareness.apply_delta(-1)

    # --- dissemination -------------------------------------------------------

    def _gossip(self, now: float, fanout: int) -> None:
        for peer in self._order.sample(fanout, self.view.is_live, self._ctx.rng):
            records, claims = self.view.piggyback(peer)
            if not records and not claims:
                break
            self._send(peer, "gossip", Gossip(records=records, claims=claims), now)
            self._ctx.count("gossip_sent")

    def _push_pull(self, now: float) -> None:
        n = self.members.count_live()
        rng = self._ctx.rng
        period = timing.push_pull_scale(self.config.push_pull_interval, n)
        # Jitter (mean one period) keeps the nodes' push-pulls spread over time.
        after = period * rng.uniform(0.5, 1.5)
        if self._catch_ups > 0:
            self._catch_ups -= 1
            self._catch_up_delay *= 2
            if not self._catch_ups and self._new_members and self._catch_up_extra:
                # Members we did not know kept arriving since the last catch-up: the
                # mesh is still forming (a mass join whose gossip ran out of
                # retransmits). One more, at twice the delay, before the scaled period.
                self._catch_up_extra -= 1
                self._catch_ups = 1
                self._ctx.count("push_pull_catch_up_extended")
            self._new_members = 0
            if self._catch_ups:
                after = self._catch_up_delay
            self._ctx.count("push_pull_catch_up")
        self._next_push_pull = now + after
        # Anti-entropy with a live member every period, always (memberlist): it is the
        # only repair for an update whose retransmits ran out while we were cut off.
        peers = self._order.sample(1, self.view.is_live, rng)
        if peers:
            self._send_push_pull(peers[0], now)
        elif self._seeds and not self._left:
            # Alone: our join went unanswered (a seed not up yet, a lost frame) or
            # everyone we knew is gone. Knock on the seeds again (serf's retry-join):
            # at each catch-up, then once per period.
            self._ctx.count("join_retried")
            for seed in self._seeds:
                self._knock(seed, now)
        # Reconnect (serf): a dead member may be alive behind a healed partition; a
        # push-pull with it lets both sides refute and merge. Chance dead / live, so a
        # few crashed members cost little while a split cluster reconnects every period.
        dead = self.members.count_dead()
        if dead and rng.random() < dead / max(1, n):
            peers = self._order.sample(1, self.view.is_dead, rng)
            if peers:
                self._ctx.count("push_pull_reconnect")
                self._send_push_pull(peers[0], now)

    def _send_push_pull(self, peer: str, now: float) -> None:
        for payload in self._push_pulls():
            self._send(peer, "push-pull", payload, now)
        self._ctx.count("push_pull_sent")

    def _send(self, node_id: str, kind: str, payload: BaseModel, now: float) -> None:
        endpoint = self.endpoint_of(node_id)
        if endpoint is None:
            self._ctx.count("send_unknown_endpoint")
            return
        self._ctx.send(kind, payload, node_id, now, endpoint=endpoint)

    # --- our own record -----------------------------------------------------

    def _resign(self, now: float, *, leaving: bool) -> RecordInfo:
        self._seq += 1
        record = CapabilityRecord(
            node_id=self.node_id,
            endpoints=self._endpoints,
            capabilities=self._capabilities,
            load=self._load,
            incarnation=self.incarnation,
            seq=self._seq,
            leaving=leaving,
        )
        frame = self._ctx.seal(RECORD_KIND, record, GOSSIP, now, ttl=self.config.record_ttl)
        digest = hashlib.sha256(frame).digest()
        info = RecordInfo(record, self.org, frame, digest)
        self._ingest.remember(digest, len(self.members))
        self.own = info
        self.view.install_own(info, now)
        self._refresh_at = now + self.config.record_ttl / 2
        return info

    def _refute(self, incarnation: int, now: float) -> None:
        # Claims carry at most MAX_COUNTER - 1: the result stays a valid record.
        self.incarnation = min(MAX_COUNTER, max(self.incarnation, incarnation) + 1)
        self.awareness.apply_delta(1)
        self._ctx.count("refutations")
        self._resign(now, leaving=self._left)

    # --- inbound ------------------------------------------------------------

    def on_message(self, msg: OpenedFrame, endpoint: str, now: float) -> None:
        if not self._queue:
            self._gossip_clock(now)
        sender = self.members.get(msg.sender)
        if sender is not None and sender.status == DEAD:
            self._tell_dead(msg.sender, sender.incarnation, now)
        handler = _HANDLERS.get(msg.kind)
        if handler is None:
            self._ctx.count("dropped.unknown-kind")
            return
        handler(self, msg, endpoint, now)

    def _tell_dead(self, node_id: str, incarnation: int, now: float) -> None:
        """A node we hold dead talks to us: tell it, so it refutes (heals partitions fast)."""
        claim = Claim(node=node_id, incarnation=incarnation, status="dead", by=self.node_id)
        self._send(node_id, "gossip", Gossip(claims=[claim]), now)
        self._ctx.count("told_dead")

    def _absorb(
        self,
        records: Sequence[bytes],
        claims: Sequence[Claim],
        now: float,
        *,
        news_of: str | None = None,
    ) -> str | None:
        """Apply piggybacked records and claims. With ``news_of`` (a push-pull), a record
        of a member we did not know is not queued for gossip unless it is that node's
        own: a state exchange brings a joiner the whole table, old news the cluster has
        spread already, and re-gossiping it kept every queue ~N updates deep (a fresh
        update then waited behind them). A record that moves a known member forward
        (a repair) is queued as always: other nodes likely miss it too.

        Returns the endpoint ``news_of``'s own record among them announces (signed by
        it), stale or not: where it asks to be answered."""
        announced = None
        if records:
            fresh, duplicates = self._ingest.unseen(records, len(self.members))
            if duplicates:
                self._ctx.count("records_duplicate_skipped", duplicates)
            ctx = self._ctx
            for frame, digest in fresh:
                verdict, info, verified = self._ingest.ingest_unseen(
                    frame, digest, now, ctx.open, ctx.trust.check_offer
                )
                if verified:
                    ctx.count("records_verified")
                quiet = news_of is not None and (info is None or info.node_id != news_of)
                if not quiet and info is not None and news_of is not None:
                    announced = info.endpoint
                self._record_verdict(verdict, info, now, True, quiet_join=quiet)
        for claim in claims:
            self._apply_claim(claim, now)
        return announced

    def _on_ping(self, msg: OpenedFrame, endpoint: str, now: float) -> None:
        ping = msg.payload
        assert isinstance(ping, Ping)
        self._absorb(ping.records, ping.claims, now)
        if ping.target != self.node_id:
            self._ctx.count("dropped.wrong-recipient")
            return
        records, claims = self.view.piggyback(msg.sender)
        ack = Ack(seq=ping.seq, records=records, claims=claims)
        to = self.endpoint_of(msg.sender) or endpoint
        self._ctx.send("ack", ack, msg.sender, now, endpoint=to)

    def _on_ack(self, msg: OpenedFrame, endpoint: str, now: float) -> None:
        ack = msg.payload
        assert isinstance(ack, Ack)
        self._absorb(ack.records, ack.claims, now)
        probe = self._probe
        if probe is not None and ack.seq == probe.seq and msg.sender == probe.target:
            self._probe_succeeded(now)
            return
        entry = self._indirect.get(ack.seq)
        if entry is not None and entry[2] == msg.sender:
            del self._indirect[ack.seq]
            self._send(entry[0], "indirect-ack", IndirectAck(seq=entry[1], target=entry[2]), now)

    def _on_ping_req(self, msg: OpenedFrame, endpoint: str, now: float) -> None:
        req = msg.payload
        assert isinstance(req, PingReq)
        self._absorb(req.records, req.claims, now)
        if self.endpoint_of(req.target) is None or req.target == self.node_id:
            return
        self._ping_seq += 1
        # Nack a little before the requester's probe ends, or it arrives too late to count.
        deadline = now + NACK_FRACTION * self.config.probe_timeout
        self._indirect[self._ping_seq] = (msg.sender, req.seq, req.target, deadline)
        records, claims = self.view.piggyback(req.target)
        ping = Ping(seq=self._ping_seq, target=req.target, records=records, claims=claims)
        self._send(req.target, "ping", ping, now)

    def _on_indirect_ack(self, msg: OpenedFrame, endpoint: str, now: float) -> None:
        ind = msg.payload
        assert isinstance(ind, IndirectAck)
        probe = self._probe
        if probe is not None and ind.seq == probe.seq and ind.target == probe.target:
            self._probe_succeeded(now)

    def _on_nack(self, msg: OpenedFrame, endpoint: str, now: float) -> None:
        nack = msg.payload
        assert isinstance(nack, Nack)
        probe = self._probe
        if probe is not None and nack.seq == probe.seq and nack.target == probe.target:
            probe.nacks += 1

    def _on_gossip(self, msg: OpenedFrame, endpoint: str, now: float) -> None:
        gossip = msg.payload
        assert isinstance(gossip, Gossip)
        self._absorb(gossip.records, gossip.claims, now)

    def _on_push_pull(self, msg: OpenedFrame, endpoint: str, now: float) -> None:
        req = msg.payload
        assert isinstance(req, PushPull)
        announced = self._absorb(req.records, (), now, news_of=msg.sender)
        self._absorb_digest_claims(req.digest, msg.sender, now)
        chunks, want, non_alive = self.view.answer_push_pull(req.digest, req.part, req.parts)
        reply = PushPullReply(records=chunks[0], want=want, digest=non_alive)
        held = self.endpoint_of(msg.sender)
        if held is None:
            self._ctx.count("push_pull_unknown_sender")
            return
        to = held
        if announced is None and req.records and req.part == 0:
            announced = self._endpoint_claimed(req.records[0], msg.sender, now)
        if announced and announced != held:
            # Its own signed record names another endpoint than our newer one of it: it
            # restarted elsewhere (a new port or address) at a lower version, or another
            # process holds its key. Answer where it asks: our newer record of its id (or
            # our claim that it is dead) moves it past the old one. Answered where we
            # held it, the restarted node was never answered and stayed alone for good.
            to = announced
            self._ctx.count("push_pull_answered_elsewhere")
            for frame in self.view.frames_of([msg.sender]):  # even at the same version
                if frame not in chunks[0]:
                    chunks[0].append(frame)
                    reply = PushPullReply(records=chunks[0], want=want, digest=non_alive)
        if chunks[0] and _over_frame(reply):
            # Records, wants and statuses together would not fit one frame (a large
            # bucket, many wants after a partition): the records go on their own.
            reply = PushPullReply(want=want, digest=non_alive)
            chunks = [[], *chunks]
            self._ctx.count("push_pull_reply_split")
        send, sender = self._ctx.send, msg.sender
        send("push-pull-reply", reply, sender, now, endpoint=to)
        for chunk in chunks[1:]:
            send("push-pull-records", PushPullRecords(records=chunk), sender, now, endpoint=to)
        for raw in self._gossipable_lists():  # anti-entropy of revocations
            send("revoke", RevocationNotice(revocation=raw), sender, now, endpoint=to)
        self._ctx.count("push_pull_answered")

    def _endpoint_claimed(self, frame: bytes, sender: str, now: float) -> str | None:
        """The endpoint in ``sender``'s own record ``frame`` (a push-pull's first record),
        when it is not the record we hold of it: a copy we had seen already, so
        ``_absorb`` skipped it (a node that keeps knocking with its stale record)."""
        member = self.members.get(sender)
        digest = self._ingest.digest_of(frame)
        if member is not None and member.info.digest == digest:
            return None
        try:
            opened = self._ctx.open(frame, now, digest)
        except RemoteProtocolError:
            return None
        record = opened.payload
        if opened.kind != RECORD_KIND or not isinstance(record, CapabilityRecord):
            return None
        if record.node_id != sender or opened.sender != sender or not record.endpoints:
            return None
        return record.endpoints[0]

    def _on_push_pull_reply(self, msg: OpenedFrame, endpoint: str, now: float) -> None:
        reply = msg.payload
        assert isinstance(reply, PushPullReply)
        self._absorb(reply.records, (), now, news_of=msg.sender)
        self._absorb_digest_claims(reply.digest, msg.sender, now)
        records = self.view.frames_of(reply.want)
        for chunk in chunk_records(records) if records else []:
            self._send(msg.sender, "push-pull-records", PushPullRecords(records=chunk), now)

    def _on_push_pull_records(self, msg: OpenedFrame, endpoint: str, now: float) -> None:
        body = msg.payload
        assert isinstance(body, PushPullRecords)
        self._absorb(body.records, (), now, news_of=msg.sender)

    def _gossipable_lists(self) -> list[bytes]:
        """The revocation lists in effect that fit a frame (a trust file may hold a
        list of up to 1 MiB: such a list holds where the file is, and is not gossiped)."""
        lists = self._ctx.trust.revocation_lists()
        fit = [raw for raw in lists if len(raw) <= MAX_REVOCATION_GOSSIP]
        if len(fit) < len(lists):
            self._ctx.count("revocations_too_large", len(lists) - len(fit))
        return fit

    def _on_revocation(self, msg: OpenedFrame, endpoint: str, now: float) -> None:
        notice = msg.payload
        assert isinstance(notice, RevocationNotice)
        self.take_revocation(notice.revocation, now)

    def _on_record(self, msg: OpenedFrame, endpoint: str, now: float) -> None:
        """A record sent as a top-level frame (already opened and verified by the core)."""
        self.accept_record(msg, now)

    def accept_record(self, opened: OpenedFrame, now: float, *, rebroadcast: bool = True) -> None:
        """Apply a record frame that was already opened (verified) elsewhere."""
        if not self._ingest.remember(opened.digest, len(self.members)):
            self._ctx.count("records_duplicate_skipped")
            return
        self._ctx.count("records_verified")
        check = self._ctx.trust.check_offer
        verdict, info = self._ingest.check(opened, opened.frame, opened.digest, check)
        self._record_verdict(verdict, info, now, rebroadcast)

    def _absorb_digest_claims(
        self, digest: Sequence[tuple[str, int, int, int]], sender: str, now: float
    ) -> None:
        for claim in self.view.digest_claims(digest, sender):
            self._apply_claim(claim, now)

    # --- records and claims -------------------------------------------------

    def absorb_record(self, frame: bytes, now: float, *, rebroadcast: bool = True) -> None:
        """Deduplicate by digest, then verify once, then apply a gossiped record frame.

        ``rebroadcast=False`` (bootstrapping from a snapshot) does not queue it.
        """
        ctx = self._ctx
        verdict, info, verified = self._ingest.ingest(
            frame, now, len(self.members), ctx.open, ctx.trust.check_offer
        )
        if verdict == DUPLICATE:
            ctx.count("records_duplicate_skipped")
            return
        if verified:
            ctx.count("records_verified")
        self._record_verdict(verdict, info, now, rebroadcast)

    def _record_verdict(
        self,
        verdict: str,
        info: RecordInfo | None,
        now: float,
        rebroadcast: bool,
        *,
        quiet_join: bool = False,
    ) -> None:
        ctx = self._ctx
        if info is None:
            ctx.count(f"dropped.{verdict}")
            return
        if verdict == OFFERS_IGNORED:
            ctx.count("records.offers_ignored")
        if info.node_id == self.node_id:
            self._own_record_seen(info, now)
        else:
            self._apply_record(info, now, rebroadcast, quiet_join=quiet_join)

    def _own_record_seen(self, info: RecordInfo, now: float) -> None:
        """Our id with a newer record than ours, or another at our version: we
        restarted; move past it. Unless it comes again from an endpoint we moved past
        already, still signing: another live process holds our key. Then we yield
        (``IdentityConflict``) rather than outbid each other for good; its leaving
        record, or a claim that it is dead, lets us take over again."""
        own = self.own
        if info.version > own.version or (
            info.version == own.version and info.digest != own.digest
        ):
            other = info.endpoint
            if other and other not in self._endpoints and not info.record.leaving:
                rivals = self._rivals
                if other in rivals:
                    self._ctx.count("identity_conflicts")
                    if now - rivals[other] >= IDENTITY_CONFLICT_EVERY:
                        rivals[other] = now
                        self._ctx.emit(
                            IdentityConflict(endpoint=other, incarnation=info.record.incarnation)
                        )
                    return
                if len(rivals) >= 16:
                    del rivals[next(iter(rivals))]
                rivals[other] = -math.inf
            self.incarnation = min(MAX_COUNTER, info.record.incarnation + 1)
            self._seq = info.record.seq
            self._ctx.count("own_record_superseded")
            self._resign(now, leaving=self._left)

    def _apply_record(
        self, info: RecordInfo, now: float, rebroadcast: bool = True, *, quiet_join: bool = False
    ) -> None:
        outcome = self.view.apply_record(info, now, rebroadcast, quiet_join=quiet_join)
        ctx, node_id, rec = self._ctx, info.node_id, info.record
        if outcome == Outcome.STALE:
            ctx.count("dropped.stale-record")
            return
        if outcome == Outcome.JOINED:
            self._new_members += 1
            ctx.emit(PeerJoined(node_id=node_id, endpoint=info.endpoint, org=info.org))
        elif outcome == Outcome.ALIVE:
            ctx.emit(PeerAlive(node_id=node_id, incarnation=rec.incarnation))
        elif outcome == Outcome.LEFT:
            ctx.emit(PeerLeft(node_id=node_id))
        ctx.emit(CapabilitiesChanged(node_id=node_id, incarnation=rec.incarnation, seq=rec.seq))

    def _apply_claim(self, claim: Claim, now: float) -> None:
        outcome = self.view.apply_claim(claim, now)
        if outcome == Outcome.IMPLAUSIBLE:
            self._ctx.count("dropped.implausible-claim")
        elif outcome == Outcome.REFUTE:
            self._refute(claim.incarnation, now)
        elif outcome == Outcome.STALE and claim.node == self.node_id:
            self._answer_old_claim(claim.by, now)
        elif outcome == Outcome.SUSPECTED:
            self._ctx.count("suspicions_started")
            self._ctx.emit(PeerSuspected(node_id=claim.node, incarnation=claim.incarnation))
        elif outcome == Outcome.CONFIRMED:
            self._ctx.count("suspicion_confirmations")
        elif outcome == Outcome.DEAD:
            self._ctx.emit(PeerDead(node_id=claim.node, incarnation=claim.incarnation))

    def _answer_old_claim(self, by: str, now: float) -> None:
        """``by`` still holds a claim against an incarnation we refuted already: our
        refutation missed it (its retransmits ran out while it was cut off). Send it
        our record directly, at most once per probe interval per claimant."""
        told = self._told_record
        if by == self.node_id or now - told.get(by, -math.inf) < self.config.probe_interval:
            return
        if len(told) >= 1024:
            told.clear()
        told[by] = now
        self._send(by, "gossip", Gossip(records=[self.own.frame]), now)
        self._ctx.count("record_sent_to_old_claim")


_Handler = Callable[[GossipAgent, OpenedFrame, str, float], None]
_HANDLERS: dict[str, _Handler] = {
    "ping": GossipAgent._on_ping,
    "ack": GossipAgent._on_ack,
    "ping-req": GossipAgent._on_ping_req,
    "indirect-ack": GossipAgent._on_indirect_ack,
    "nack": GossipAgent._on_nack,
    "gossip": GossipAgent._on_gossip,
    "push-pull": GossipAgent._on_push_pull,
    "revoke": GossipAgent._on_revocation,
    "push-pull-reply": GossipAgent._on_push_pull_reply,
    "push-pull-records": GossipAgent._on_push_pull_records,
    RECORD_KIND: GossipAgent._on_record,
}
