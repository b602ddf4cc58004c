"""A trusted but hostile member: frames signed by a certificate the victim's org
trusts, crafted to make the victim raise, grow or amplify. Each test is one attack
that got through once; the victim must now refuse it, or answer it at bounded cost."""

from __future__ import annotations

from helpers import MeshCluster

from protocols.capabilities.records import CapabilitySpec
from protocols.codec import MAX_COUNTER
from protocols.membership.messages import Claim, Gossip, PushPull, PushPullReply
from protocols.membership.state import SUSPECT


def test_a_digest_status_at_the_largest_incarnation_builds_no_claim() -> None:
    """A push-pull digest may carry incarnations up to MAX_COUNTER, a claim only up to
    MAX_COUNTER - 1: a suspect entry at MAX_COUNTER (about a member, or the victim
    itself) raised ValidationError out of ``receive`` while building the claim."""
    c = MeshCluster(4, seed=21)
    c.bootstrap()
    c.start()
    c.run_for(1.0)
    m, v, h = c.nodes[0], c.nodes[1], c.nodes[2]
    for who, status in ((h.node_id, 1), (h.node_id, 2), (v.node_id, 1), (v.node_id, 2)):
        pp = PushPull(digest=[(who, MAX_COUNTER, 0, status)])
        v.core.receive(m.ctx.seal("push-pull", pp, v.node_id, c.now), m.endpoint, c.now)
    assert v.agent.members.get(h.node_id).status < SUSPECT  # type: ignore[union-attr]
    assert v.agent.incarnation == 0  # nothing to refute: no claim could carry it


def test_a_claim_far_above_its_targets_incarnation_is_dropped() -> None:
    """One hostile claim at MAX_COUNTER - 1 made its target refute at MAX_COUNTER:
    no claim about it could be built after that (every failed probe of it raised,
    and it could never be suspected or declared dead again). A node raises its
    incarnation by one per refutation, so a claim more than CLAIM_INCARNATION_LEAP
    above the incarnation held for its node is dropped, by the target and by others;
    a claim within it is refuted as before."""
    from protocols.membership.state import CLAIM_INCARNATION_LEAP

    c = MeshCluster(5, seed=13)
    c.bootstrap()
    c.start()
    c.run_for(1.0)
    m, h, o = c.nodes[0], c.nodes[1], c.nodes[2]
    for target in (h, o):  # the victim itself, and a third node told about the victim
        claim = Claim(node=h.node_id, incarnation=MAX_COUNTER - 1, status="suspect", by=m.node_id)
        m.ctx.send("gossip", Gossip(claims=[claim]), target.node_id, c.now, endpoint=target.endpoint)
        c.flush(m)
        c.run_for(1.0)
        assert target.counters.get("dropped.implausible-claim", 0) == 1
    assert h.agent.incarnation == 0
    assert o.agent.members.get(h.node_id).status < SUSPECT  # type: ignore[union-attr]
    near = Claim(node=h.node_id, incarnation=CLAIM_INCARNATION_LEAP, status="suspect", by=m.node_id)
    m.ctx.send("gossip", Gossip(claims=[near]), h.node_id, c.now, endpoint=h.endpoint)
    c.flush(m)
    c.run_for(1.0)
    assert h.agent.incarnation == CLAIM_INCARNATION_LEAP + 1  # refuted, as before
    c.crash(h)
    c.run_for(30.0)  # and it can still be found dead
    assert c.stat("probes_failed") > 0
    assert all(
        n.agent.members.get(h.node_id).status > SUSPECT  # type: ignore[union-attr]
        for n in c.nodes
        if n is not h
    )


def test_a_reply_wanting_one_record_many_times_gets_it_once() -> None:
    """A ``push-pull-reply`` whose ``want`` repeats one id (its sender's own 150 KB
    record) made the victim sign and queue one ``push-pull-records`` frame per copy:
    a 54 KB frame cost 1,000 signatures and 151 MB of outbox."""
    c = MeshCluster(3, seed=13)
    big = CapabilitySpec(name="big", input_schema={"d": "x" * 150_000})
    m = c.add_node(capabilities=[big])
    c.bootstrap()
    c.start()
    c.run_for(1.0)
    v = c.nodes[1]
    c.flush(v)
    reply = PushPullReply(want=[m.node_id] * 1000 + [c.nodes[2].node_id] * 1000)
    v.core.receive(m.ctx.seal("push-pull-reply", reply, v.node_id, c.now), m.endpoint, c.now)
    out = v.core.frames_to_send(c.now)
    assert len(out) <= 2
    assert sum(len(frame) for _, frame in out) < 2 * len(m.agent.own.frame)


def _a_held_task(semantics: str) -> tuple[MeshCluster, str, int, int]:
    from mesh.events import TaskAssigned
    from protocols.contract_net import TaskSpec

    c = MeshCluster(5, seed=3, capabilities=lambda i: [CapabilitySpec(name="cap")])
    c.bootstrap()
    c.start()
    c.run_for(1.0)
    r = c.nodes[0]
    task_id = r.core.submit(TaskSpec("cap", semantics=semantics, input="x"), c.now)
    c.flush(r)
    c.schedule_timer(r)
    c.run_for(0.5)
    (holder,) = [n.index for n in c.nodes if any(isinstance(e, TaskAssigned) for _, e in n.events)]
    # A fifth member, not the holder, tells the requester the holder is dead.
    liar = next(n for n in c.nodes[1:] if n.index != holder)
    h = c.nodes[holder]
    inc = r.agent.members.get(h.node_id).incarnation  # type: ignore[union-attr]
    claim = Claim(node=h.node_id, incarnation=inc, status="dead", by=liar.node_id)
    liar.ctx.send("gossip", Gossip(claims=[claim]), r.node_id, c.now, endpoint=r.endpoint)
    c.flush(liar)
    c.run_for(0.3)
    return c, task_id, 0, holder


def test_one_members_dead_claim_does_not_end_a_started_at_most_once_task() -> None:
    """A member's false dead claim about the holder ended a started at-most-once task
    as ``TaskOutcomeUnknown`` at once, though the holder was alive and finished it
    (its result then counted stale). The lease decides now: the result is taken."""
    from mesh.events import TaskCompleted, TaskOutcomeUnknown

    c, task_id, req, holder = _a_held_task("at-most-once")
    r, h = c.nodes[req], c.nodes[holder]
    assert not [e for _, e in r.events if isinstance(e, TaskOutcomeUnknown)]
    h.core.complete(task_id, "done", c.now)
    c.flush(h)
    c.run_for(0.5)
    done = [e for _, e in r.events if isinstance(e, TaskCompleted)]
    assert [(e.task_id, e.result) for e in done] == [(task_id, "done")]


def test_a_holder_falsely_declared_dead_is_fenced_when_its_task_moves() -> None:
    """On a member's false dead claim an at-least-once task moves to a backup; the old
    holder was not told (a dead holder is sent nothing) and ran alongside it."""
    from mesh.events import TaskAssigned, TaskCancelled

    c, task_id, _req, holder = _a_held_task("at-least-once")
    runs = [n for n in c.nodes if any(isinstance(e, TaskAssigned) for _, e in n.events)]
    assert len(runs) == 2  # the backup got it
    cancelled = [e for _, e in c.nodes[holder].events if isinstance(e, TaskCancelled)]
    assert [(e.task_id, e.reason) for e in cancelled] == [(task_id, "superseded")]


def test_an_award_for_a_task_id_another_requester_holds_is_answered_at_once() -> None:
    """A member that learned (or guessed) a task id squats it at an executor with its
    own cfp and award. The honest requester's award for that id was dropped unanswered
    and cost it a lease; the executor now answers ``failure`` ``task-id-in-use``, so the
    requester moves on at once."""
    from mesh.events import TaskAssigned, TaskFailed
    from protocols.contract_net import TaskSpec
    from protocols.contract_net.messages import Award, Cfp

    spec = CapabilitySpec(name="cap", max_concurrency=4)
    c = MeshCluster(3, seed=5, capabilities=lambda i: [spec] if i == 2 else [])
    c.bootstrap()
    c.start()
    c.run_for(1.0)
    r, m, e = c.nodes
    tid = "order-42-1"
    cfp = Cfp(task_id=tid, round=1, capability="cap", reply_by=c.now + 1, deadline=c.now + 60)
    m.ctx.send("cfp", cfp, [e.node_id], c.now, endpoint=e.endpoint)
    c.flush(m)
    c.run_for(0.2)  # e bids to m
    award = Award(
        task_id=tid,
        round=1,
        epoch=1,
        winner=e.node_id,
        capability="cap",
        semantics="at-least-once",
        deadline=c.now + 60,
        lease=30.0,
    )
    m.ctx.send("award", award, [e.node_id], c.now, endpoint=e.endpoint)
    c.flush(m)
    c.run_for(0.2)
    assert [ev.task_id for _, ev in e.events if isinstance(ev, TaskAssigned)] == [tid]
    r.core.submit(TaskSpec("cap", task_id=tid, timeout=20.0, max_auctions=1), c.now)
    c.flush(r)
    c.schedule_timer(r)
    c.run_for(1.0)  # far less than a lease
    (failed,) = [ev for _, ev in r.events if isinstance(ev, TaskFailed)]
    assert any("task-id-in-use" in a for a in failed.attempts), failed.attempts
