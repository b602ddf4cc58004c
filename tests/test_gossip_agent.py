"""GossipAgent in small clusters on the real wire: join, records, rejections, refutation,
leave, load updates, crash detection."""

from __future__ import annotations

from helpers import MeshCluster, Org, SimNode

from mesh.events import (
    CapabilitiesChanged,
    Event,
    PeerAlive,
    PeerDead,
    PeerJoined,
    PeerLeft,
    PeerSuspected,
)
from protocols.capabilities.records import CapabilitySpec
from protocols.membership.messages import Claim, Gossip
from protocols.membership.state import ALIVE, DEAD, LEFT


def events_of(node: SimNode, kind: type[Event]) -> list[Event]:
    return [ev for _, ev in node.events if isinstance(ev, kind)]


def test_nodes_join_through_one_seed_and_learn_everyone() -> None:
    c = MeshCluster(12, seed=11)
    c.start()
    for node in c.nodes[1:]:
        c.join(node, [c.nodes[0]])
    c.run_for(5.0)
    everyone = sorted(n.node_id for n in c.nodes)
    for node in c.nodes:
        others = sorted(m.node_id for m in node.agent.members if m.status == ALIVE)
        assert others == everyone
        assert len(events_of(node, PeerJoined)) == 11
    assert c.stat("rejected.replayed") == 0 and c.stat("probes_failed") == 0
    # Each node verified each distinct record at most once.
    distinct = {n.agent.own.digest for n in c.nodes}
    assert all(n.counters.get("records_verified", 0) <= len(distinct) for n in c.nodes)
    found = c.nodes[3].agent.index.find("cap1", "^1")
    assert [x.node_id for x in found] == sorted(
        (n.node_id for n in c.nodes if n.index % 5 == 1),
        key=lambda nid: (0.0, nid),
    )


def test_bad_records_are_rejected_and_counted_by_code() -> None:
    c = MeshCluster(4, seed=12)
    evil = Org("evil", c._signer("org-evil"))
    stranger = c.add_node(org=evil, label="stranger")
    # Its certificate allows offering cap0 only; it offers cap0 and cap9.
    narrow = c.add_node(
        offers=("cap0",),
        capabilities=[CapabilitySpec(name="cap0"), CapabilitySpec(name="cap9")],
        label="narrow",
    )
    honest = c.nodes[:4]
    c.bootstrap(honest)
    c.start()
    a, b = honest[0], honest[1]
    # A replayed older record: node 2's seq 2, which b never saw, after its seq 3.
    honest[2].agent.update_load(0.5, c.now)
    old = honest[2].agent.own.frame
    honest[2].agent.update_load(0.7, c.now)
    new = honest[2].agent.own.frame
    # A forged record: a valid frame with its signature's last byte flipped.
    forged = new[:-1] + bytes([new[-1] ^ 1])
    c.inject_records(a, b, [new])
    c.run_for(0.05)
    c.inject_records(a, b, [old, forged, stranger.agent.own.frame, narrow.agent.own.frame])
    c.run_for(0.05)
    stats = b.counters
    assert stats.get("dropped.stale-record") == 1
    assert stats.get("dropped.bad-signature") == 1
    assert stats.get("dropped.untrusted-org") == 1
    member = b.agent.members.get(honest[2].node_id)
    assert member is not None and member.info.record.load == 0.7
    assert stranger.node_id not in b.agent.members
    # A member whose record offers one capability it may not: admitted, that offer
    # ignored (refusing the whole record cut the node off from the mesh).
    assert stats.get("records.offers_ignored") == 1 and "dropped.not-permitted" not in stats
    kept = b.agent.members.get(narrow.node_id)
    assert kept is not None and [s.name for s in kept.info.record.capabilities] == ["cap0"]
    assert narrow.node_id in [x.node_id for x in b.agent.index.find("cap0")]
    assert b.agent.index.find("cap9") == []
    # The same bad frames again: skipped by digest before any verification.
    verified = stats["records_verified"]
    skipped = stats.get("records_duplicate_skipped", 0)
    c.inject_records(a, b, [old, forged, stranger.agent.own.frame, narrow.agent.own.frame])
    c.run_for(0.05)
    assert stats["records_verified"] == verified
    assert stats["records_duplicate_skipped"] == skipped + 4
    assert stats.get("dropped.bad-signature") == 1


def test_suspicion_of_self_is_refuted_with_a_higher_incarnation() -> None:
    c = MeshCluster(5, seed=13)
    c.bootstrap()
    c.start()
    a, target = c.nodes[0], c.nodes[1]
    claim = Claim(node=target.node_id, incarnation=0, status="suspect", by=a.node_id)
    a.ctx.send("gossip", Gossip(claims=[claim]), target.node_id, c.now, endpoint=target.endpoint)
    c.flush(a)
    c.run_for(3.0)
    assert target.counters.get("refutations") == 1
    assert target.agent.incarnation == 1
    for node in c.nodes:
        member = node.agent.members.get(target.node_id)
        assert member is not None and member.status == ALIVE and member.incarnation == 1
    assert c.stat("suspicion_timeouts") == 0


def test_leave_and_load_update_reach_everyone() -> None:
    c = MeshCluster(10, seed=14)
    c.bootstrap()
    c.start()
    c.run_for(1.0)
    busy, leaver = c.nodes[2], c.nodes[3]
    busy.agent.update_load(0.8, c.now)
    leaver.agent.leave(c.now)
    c.flush(busy)
    c.flush(leaver)
    c.run_for(3.0)
    for node in c.nodes:
        if node is leaver:
            continue
        member = node.agent.members.get(leaver.node_id)
        assert member is not None and member.status == LEFT
        assert [e for e in events_of(node, PeerLeft)] == [PeerLeft(leaver.node_id)]
        assert leaver.node_id not in [x.node_id for x in node.agent.index.find("cap3")]
        rec = node.agent.index.record(busy.node_id)
        assert rec is not None and rec.record.load == 0.8
        if node is not busy:
            changed = [e for e in events_of(node, CapabilitiesChanged) if e.node_id == busy.node_id]
            assert changed and changed[-1].seq == busy.agent.own.record.seq
    assert c.stat("suspicions_started") == 0


def test_crashed_node_is_suspected_then_dead_everywhere() -> None:
    c = MeshCluster(10, seed=15)
    c.bootstrap()
    c.start()
    c.run_for(2.0)
    victim = c.nodes[4]
    c.crash(victim)
    c.run_for(70.0)
    for node in c.live():
        member = node.agent.members.get(victim.node_id)
        assert member is not None and member.status == DEAD
        assert victim.node_id not in [x.node_id for x in node.agent.index.find("cap4")]
        assert any(isinstance(e, PeerDead) and e.node_id == victim.node_id for _, e in node.events)
    assert any(events_of(n, PeerSuspected) for n in c.live())
    alive = sorted(n.node_id for n in c.live())
    for node in c.live():
        assert node.agent.alive_ids() == [x for x in alive if x != node.node_id]


def test_real_ed25519_cluster_joins_and_verifies_each_record_once() -> None:
    c = MeshCluster(6, seed=16, fast=False)
    c.start()
    for node in c.nodes[1:]:
        c.join(node, [c.nodes[0]])
    c.run_for(4.0)
    for node in c.nodes:
        assert len(node.agent.alive_ids()) == 5
        assert node.counters.get("records_verified", 0) <= 6
    assert c.stat("records_duplicate_skipped") > 0


def test_restarted_node_reclaims_its_id_by_refuting_its_death() -> None:
    c = MeshCluster(8, seed=17)
    c.bootstrap()
    c.start()
    victim = c.nodes[5]
    c.crash(victim)
    c.run_for(40.0)
    for node in c.live():
        member = node.agent.members.get(victim.node_id)
        assert member is not None and member.status == DEAD
    back = c.restart(victim, [c.nodes[0]])
    assert back.node_id == victim.node_id and back.agent.incarnation == 0
    c.run_for(5.0)
    assert back.agent.incarnation >= 1  # it heard of its death and refuted it
    for node in c.nodes:
        member = node.agent.members.get(victim.node_id)
        assert member is not None and member.status == ALIVE
        assert member.incarnation == back.agent.incarnation
    alive_again = [e for n in c.nodes for _, e in n.events if isinstance(e, PeerAlive)]
    assert len(alive_again) == 7


def test_has_seen_reports_handled_record_digests() -> None:
    c = MeshCluster(3, seed=18)
    c.bootstrap()
    a, b = c.nodes[0], c.nodes[1]
    assert a.agent.has_seen(b.agent.own.digest)
    b.agent.update_load(0.3, c.now)
    assert not a.agent.has_seen(b.agent.own.digest)
    a.agent.absorb_record(b.agent.own.frame, c.now)
    assert a.agent.has_seen(b.agent.own.digest)
    assert a.agent.index.find("cap1")[0].load == 0.3


def test_push_pull_queues_only_the_counterparts_own_record() -> None:
    """A joiner learns the whole table by push-pull; re-gossiping all of it (and each
    seed re-gossiping the joiner's table) kept every queue ~N updates deep."""
    c = MeshCluster(12, seed=13)
    c.bootstrap()
    c.start()
    c.run_for(3.0)  # the bootstrap queues drain
    newcomer = c.add_node()
    seed = c.nodes[0]
    c.join(newcomer, [seed])
    c.run_for(0.05)  # the push-pull exchange, before any gossip round
    assert len(newcomer.agent.members) == 13
    queued = [m.node_id for m in newcomer.agent.members if m.node_id in newcomer.agent.view.queue]
    assert queued in ([newcomer.node_id], [newcomer.node_id, seed.node_id])
    assert newcomer.node_id in seed.agent.view.queue  # news for the seed: gossiped on


def test_a_digest_too_large_for_one_frame_is_exchanged_in_buckets(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Above ~1,300 members a push-pull digest no longer fits one frame (at 10,000 it is
    580 kB against a 256 kB limit, and every push-pull was refused as too large). It
    travels in parts, one per bucket of node ids; each part is a complete exchange for
    its bucket: the records the requester lacks there, and no others."""
    from protocols.membership import pushpull

    monkeypatch.setattr(pushpull, "DIGEST_BUDGET", 300)  # ~4 entries a part here
    c = MeshCluster(12, seed=21)
    x, peer = c.nodes[0], c.nodes[1]
    c.bootstrap(c.nodes[1:])
    c.bootstrap(c.nodes[:6])  # x knows nodes 1-5; the peer knows all twelve
    assert len(x.agent.members) == 6
    verified = x.counters.get("records_verified", 0)
    skipped = x.counters.get("records_duplicate_skipped", 0)
    x.agent._send_push_pull(peer.node_id, c.now)
    c.flush(x)
    c.run_for(0.05)
    assert x.counters.get("push_pull_split") == 1
    parts = len(pushpull.digest_parts(x.agent.members.digest()))
    assert parts >= 2
    assert peer.counters.get("push_pull_answered") >= 2  # one answer per part it got
    assert sorted(m.node_id for m in x.agent.members) == sorted(n.node_id for n in c.nodes)
    # Each missing record came once, from the part of its bucket: nothing twice.
    assert x.counters.get("records_verified", 0) - verified == 6
    assert x.counters.get("records_duplicate_skipped", 0) == skipped


def test_a_reply_too_large_for_one_frame_sends_its_records_apart(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Records, wants and statuses of one reply could exceed the frame limit (a large
    bucket after a partition); the records then follow in push-pull-records frames."""
    import mesh.gossip

    monkeypatch.setattr(mesh.gossip, "_FRAME_ROOM", 500)  # below one record's frame
    c = MeshCluster(8, seed=22)
    x, peer = c.nodes[0], c.nodes[1]
    c.bootstrap(c.nodes[1:])
    c.bootstrap(c.nodes[:3])  # x knows nodes 1 and 2 only
    x.agent._send_push_pull(peer.node_id, c.now)
    c.flush(x)
    c.run_for(0.05)
    assert peer.counters.get("push_pull_reply_split") == 1
    assert sorted(m.node_id for m in x.agent.members) == sorted(n.node_id for n in c.nodes)


def test_a_claim_at_the_largest_incarnation_neither_overflows_nor_kills() -> None:
    """A trusted peer claimed a node dead at incarnation 2**64 - 1: its refutation
    (one more) could not be encoded, every retry raised, and the node stayed dead
    for good. Claims now carry at most MAX_COUNTER - 1, so a refutation always fits;
    a larger one is malformed. And a claim that far above its node's incarnation is
    dropped as implausible (``CLAIM_INCARNATION_LEAP``): the node stays alive, and
    keeps its incarnations."""
    import pytest
    from pydantic import ValidationError

    from protocols.codec import MAX_COUNTER

    for too_big in (MAX_COUNTER, 2**64 - 1):
        with pytest.raises(ValidationError):
            Claim(node="n", incarnation=too_big, status="dead", by="m")
    c = MeshCluster(5, seed=13)
    c.bootstrap()
    c.start()
    a, target = c.nodes[0], c.nodes[1]
    claim = Claim(node=target.node_id, incarnation=MAX_COUNTER - 1, status="dead", by=a.node_id)
    for _ in range(2):
        for to in c.nodes[1:]:
            a.ctx.send("gossip", Gossip(claims=[claim]), to.node_id, c.now, endpoint=to.endpoint)
        c.flush(a)
        c.run_for(3.0)
        assert target.agent.incarnation == 0
        for node in c.nodes:
            member = node.agent.members.get(target.node_id)
            assert member is not None and member.status == ALIVE and member.incarnation == 0


def test_a_revocation_list_spreads_by_gossip_and_the_revoked_node_is_refused() -> None:
    """One node learns a signed revocation list (a reload of its trust file): every
    node applies it within a few gossip rounds and refuses the revoked node's frames;
    a node that joins later learns it from its seed. A forged list is dropped."""
    from protocols.trust import issue_revocation

    c = MeshCluster(12, seed=31)
    c.bootstrap()
    c.start()
    c.run_for(1.0)
    victim = c.nodes[11]
    raw = issue_revocation(c.org.signer, "acme", 1, [victim.node_id], now=c.now)
    first = c.nodes[0]
    assert first.agent.take_revocation(raw, c.now)
    c.flush(first)
    c.run_for(10.0)
    for node in c.nodes[:11]:
        assert node.core.trust.revocation_version("acme") == 1, node.index
    assert sum(n.counters.get("rejected.revoked", 0) for n in c.nodes[:11]) > 0
    late = c.add_node(label="late-joiner")
    c.join(late, [c.nodes[3]])
    c.run_for(3.0)
    assert late.core.trust.revocation_version("acme") == 1
    evil = Org("acme", c._signer("org-acme-forged"))
    forged = issue_revocation(evil.signer, "acme", 9, [c.nodes[1].node_id], now=c.now)
    assert not c.nodes[2].agent.take_revocation(forged, c.now)
    assert c.nodes[2].counters.get("dropped.untrusted-org") == 1
    assert c.nodes[2].core.trust.revocation_version("acme") == 1


def test_a_revocation_list_too_large_for_a_frame_holds_locally_and_is_not_gossiped() -> None:
    """A trust file may hold a list of up to 1 MiB; gossip carries 200,000 bytes.
    Sending a larger one raised inside the core on every push-pull answered."""
    from protocols.trust import issue_revocation, parse_revocation

    c = MeshCluster(4, seed=33)
    c.bootstrap()
    c.start()
    ids = [f"{i:052d}" for i in range(5000)] + [c.nodes[3].node_id]
    raw = issue_revocation(c.org.signer, "acme", 1, ids, now=c.now)
    assert len(raw) > 200_000
    holder = c.nodes[0]
    holder.core.trust.apply_revocation(parse_revocation(raw, c.verifier))
    holder.agent.spread_revocations(c.now)
    c.flush(holder)
    c.run_for(40.0)  # push-pulls answered meanwhile
    assert holder.counters.get("revocations_too_large", 0) >= 1
    assert c.nodes[1].core.trust.revocation_version("acme") == 0
    assert holder.counters.get("rejected.revoked", 0) > 0  # it holds where it was loaded
