"""ContractAgent end to end over the in-memory FakeNet (no wire)."""

from __future__ import annotations

from collections import Counter

import pytest
from test_contracts_fakes import CAP, FakeNet, Msg, Packet, make_net, offer

from mesh.events import (
    TaskAssigned,
    TaskAwarded,
    TaskBid,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskOutcomeUnknown,
    TaskReassigned,
    TaskStaleResult,
)
from protocols.contract_net import Offer, ReqState, TaskSpec
from protocols.contract_net.bidding import Quote, Refusal
from protocols.contract_net.messages import Award, Cfp, Result
from protocols.errors import LocalProtocolError, RemoteProtocolError


def replies_to_cfps(net: FakeNet, now: float) -> list[Packet]:
    """Deliver the queued cfps to their bidders; return (and unqueue) their replies."""
    cfps = [p for p in net.queue if p.kind == "cfp"]
    net.queue = []
    for p in cfps:
        net.agents[p.to].on_message(Msg(p.kind, p.sender, p.payload, None, p.sent_at), "", now)
    replies, net.queue = net.queue, []
    return replies


def completed(net: FakeNet) -> dict[str, TaskCompleted]:
    return {e.task_id: e for _, e in net.events(TaskCompleted)}


def test_happy_path_message_and_signature_counts() -> None:
    n = 5
    net = make_net(executors=n)
    task_id = net.submit("req", TaskSpec(CAP, input="text"))
    # negotiation: n cfp copies, n replies, one award (to the winner); n + 2 signatures
    assert (net.copies["cfp"], net.copies["propose"], net.copies["award"]) == (n, n, 1)
    before_exec = net.signatures["cfp"] + net.signatures["propose"] + net.signatures["award"]
    assert before_exec == n + 2
    ((_, awarded),) = net.events(TaskAwarded)
    assert awarded.epoch == 1 and awarded.bidders == n and len(awarded.backups) == n - 1
    net.run_until(5.0)
    done = completed(net)
    assert list(done) == [task_id]
    assert done[task_id].executor == awarded.winner
    assert done[task_id].result == f"done:{task_id}"
    # execution: result only (at-least-once sends no `started`; heartbeats only if
    # the work outlasts lease/3)
    assert net.copies.get("started", 0) == 0 and net.copies["result"] == 1
    assert net.copies["award"] == 1 and net.signatures["award"] == 1  # 2n + 2 messages
    losers = [e for e in net.executors if e != awarded.winner]
    assert all(net.agents[e].executor.highest_epoch(task_id) == 0 for e in losers)
    assert net.agents["req"].task_state(task_id) is ReqState.COMPLETED
    assert len([e for _, e in net.events(TaskBid) if e.accepted]) == n


def test_losers_are_never_told_and_drop_their_cached_input_when_the_bid_expires() -> None:
    net = make_net(executors=3, work_time=10.0)
    task_id = net.submit("req", TaskSpec(CAP, lease=6.0, timeout=100.0))
    ((_, awarded),) = net.events(TaskAwarded)
    losers = [e for e in net.executors if e != awarded.winner]
    net.run_until(20.0)
    assert completed(net)[task_id].executor == awarded.winner
    assert [p.to for p in net.sent if p.kind == "award"] == [awarded.winner]
    loser = net.agents[losers[0]].executor
    assert ("req", task_id) in loser._inputs  # kept while its bid could still be awarded
    # the next cfp after the bid's expiry (Quote.valid_for, 5 s) sweeps it out
    later = net.submit("req", TaskSpec(CAP, lease=6.0, timeout=100.0))
    assert ("req", task_id) not in loser._inputs
    assert set(loser._inputs) <= {("req", later)}


def test_a_backup_promoted_after_the_winner_died_gets_the_input_in_its_award() -> None:
    net = make_net(executors=3, work_time=10.0)
    task_id = net.submit("req", TaskSpec(CAP, input="text", lease=6.0, timeout=100.0))
    ((_, awarded),) = net.events(TaskAwarded)
    backup = awarded.backups[0]
    net.agents[backup].executor._inputs.clear()  # its cached copy is long gone
    net.crash(awarded.winner)
    net.run_until(30.0)
    ((_, moved),) = net.events(TaskReassigned)
    assert moved.winner == backup
    # (the re-award also goes to the old holder: it fences it if the death was false)
    awards = [p.payload for p in net.sent if isinstance(p.payload, Award)]
    assert [(a.epoch, a.winner, a.has_input) for a in awards] == [
        (1, awarded.winner, False),
        (2, backup, True),
        (2, backup, True),
    ]
    assert [p.to for p in net.sent if isinstance(p.payload, Award)][1:] == [
        backup,
        awarded.winner,
    ]
    assert completed(net)[task_id].executor == backup


def test_task_id_is_idempotency_key_and_duplicate_submit_is_misuse() -> None:
    net = make_net(executors=1)
    net.submit("req", TaskSpec(CAP, task_id="job-1"))
    with pytest.raises(LocalProtocolError):
        net.agents["req"].submit(TaskSpec(CAP, task_id="job-1"), net.now)
    ((_, assigned),) = net.events(TaskAssigned)
    assert assigned.task_id == "job-1"


def test_executor_refuses_when_full_with_retry_after() -> None:
    net = FakeNet(auto_work=False)
    net.add("req")
    net.add("x00", [Offer(CAP, max_concurrency=1, eta=0.5)])
    net.submit("req", TaskSpec(CAP))
    net.submit("req", TaskSpec(CAP, max_auctions=1, timeout=3.0))
    refusals = [e for _, e in net.events(TaskBid) if not e.accepted]
    assert len(refusals) == 1
    net.run_until(5.0)
    # It waited for capacity (retry_after = 0.5 s, doubled each busy round), then its
    # deadline passed.
    ((_, failed),) = net.events(TaskFailed)
    assert "all 1 bidders full; waiting for capacity" in failed.attempts[0]
    assert net.ctxs["req"].counters["contract.busy_round"] >= 2
    assert net.agents["x00"].executor.running(CAP) == 1


def test_no_candidates_fails_after_bounded_auctions_listing_attempts() -> None:
    net = make_net(executors=0)
    net.submit("req", TaskSpec(CAP, max_auctions=3, reply_timeout=0.5))
    net.run_until(10.0)
    ((_, failed),) = net.events(TaskFailed)
    assert failed.reason == "attempts exhausted: no-bidders"
    assert len(failed.attempts) == 3
    assert all("0 invited" in a for a in failed.attempts)


def test_late_bid_is_rejected_and_counted() -> None:
    net = make_net(executors=2)
    net.agents["req"].submit(TaskSpec(CAP, reply_timeout=1.0), net.now)
    held = replies_to_cfps(net, 0.5)  # held back: reply-by passes first
    net.now = 1.0
    net.agents["req"].handle_timer(1.0)  # auction closes with no bids
    for p in held:
        net.agents["req"].on_message(Msg(p.kind, p.sender, p.payload, None, 0.5), "", 1.1)
    assert net.ctxs["req"].counters["contract.late_bid"] == 2
    assert not net.events(TaskAwarded)


def _award_time(net: FakeNet, until: float, step: float = 0.01) -> float | None:
    """Advance in small steps; the first time a TaskAwarded is seen (None: not by ``until``)."""
    while net.now < until - 1e-9:
        net.run_until(round(net.now + step, 6))
        if net.events(TaskAwarded):
            return net.now
    return None


def test_a_silent_bidder_costs_the_grace_not_the_reply_window() -> None:
    # x01 is dead and not yet detected: it is invited and never answers. The others bid
    # at once, so the auction closes bid_grace (50 ms) after the first bid, not at
    # reply_by (1 s), and awards among the bids it has.
    net = make_net(executors=3, detect_delay=30.0)
    net.crash("x01")
    net.submit("req", TaskSpec(CAP, reply_timeout=1.0))
    at = _award_time(net, 1.5)
    assert at is not None and 0.04 < at <= 0.06
    ((_, awarded),) = net.events(TaskAwarded)
    assert awarded.bidders == 2 and "x01" not in (awarded.winner, *awarded.backups)


def test_without_a_grace_the_auction_waits_for_every_answer_or_reply_by() -> None:
    net = make_net(executors=3, detect_delay=30.0)
    net.crash("x01")
    net.submit("req", TaskSpec(CAP, reply_timeout=1.0, bid_grace=None))
    at = _award_time(net, 1.5)
    assert at is not None and 0.99 <= at <= 1.01


def test_the_grace_scales_with_the_first_bids_delay() -> None:
    # Bids that took 0.2 s to come (a slow link): the others get 3 x 0.2 = 0.6 s more,
    # not 50 ms; the auction closes at 0.8 s.
    net = make_net(executors=3, detect_delay=30.0)
    net.crash("x01")
    net.agents["req"].submit(TaskSpec(CAP, reply_timeout=2.0), net.now)
    held = replies_to_cfps(net, 0.0)
    net.now = 0.2
    for p in held:
        if p.sender != "x01":
            net.agents["req"].on_message(Msg(p.kind, p.sender, p.payload, None, 0.0), "", 0.2)
    assert not net.events(TaskAwarded)
    at = _award_time(net, 2.5)
    assert at is not None and 0.79 <= at <= 0.81


def test_a_grace_never_outlasts_reply_by() -> None:
    net = make_net(executors=3, detect_delay=30.0)
    net.crash("x01")
    net.agents["req"].submit(TaskSpec(CAP, reply_timeout=0.5, bid_grace=5.0), net.now)
    held = replies_to_cfps(net, 0.0)
    net.now = 0.1
    for p in held:
        if p.sender != "x01":
            net.agents["req"].on_message(Msg(p.kind, p.sender, p.payload, None, 0.0), "", 0.1)
    at = _award_time(net, 2.0)
    assert at is not None and 0.49 <= at <= 0.51


def test_bid_grace_must_be_a_duration_or_none() -> None:
    with pytest.raises(LocalProtocolError):
        TaskSpec(CAP, bid_grace=-0.1)


def test_winner_dead_reawards_to_backup_without_new_auction() -> None:
    net = make_net(executors=3, work_time=10.0)
    task_id = net.submit("req", TaskSpec(CAP, lease=30.0, timeout=100.0))
    ((_, awarded),) = net.events(TaskAwarded)
    net.crash(awarded.winner)
    net.run_until(30.0)
    ((_, moved),) = net.events(TaskReassigned)
    assert moved.new_auction is False and moved.reason == "peer-dead"
    assert moved.winner == awarded.backups[0] and moved.epoch == 2
    assert net.signatures["cfp"] == 1  # no new auction
    done = completed(net)[task_id]
    assert (done.executor, done.epoch) == (awarded.backups[0], 2)
    assert done.attempts == (f"epoch 1 {awarded.winner}: peer-dead",)


def test_missed_lease_reawards_and_fences_the_old_holder() -> None:
    net = make_net(executors=2, work_time=100.0)
    task_id = net.submit("req", TaskSpec(CAP, lease=3.0, timeout=500.0))
    ((_, awarded),) = net.events(TaskAwarded)
    old = awarded.winner
    # the old holder's heartbeats get lost: drop every frame it sends to the requester
    original = net.deliver_one

    def lossy(index: int = 0) -> None:
        if net.queue[index].sender == old and net.queue[index].kind == "progress":
            net.queue.pop(index)
            return
        original(index)

    net.deliver_one = lossy  # type: ignore[method-assign]
    net.run_until(4.0)
    ((_, moved),) = net.events(TaskReassigned)
    assert moved.reason == "lease-expired" and moved.previous == old
    # the re-award went to the old holder as a fencing notice: it was cancelled
    cancelled = [e for n, e in net.events(TaskCancelled) if n == old]
    assert cancelled and cancelled[0].reason == "superseded"
    assert net.agents[old].complete(task_id, "late", net.now) is False
    net.run_until(200.0)
    assert completed(net)[task_id].executor == moved.winner


def test_stale_result_is_rejected_counted_and_reported() -> None:
    net = make_net(executors=2, auto_work=False)
    task_id = net.submit("req", TaskSpec(CAP, lease=100.0))
    ((_, awarded),) = net.events(TaskAwarded)
    net.agents[awarded.winner].fail(task_id, "oops", net.now)
    net.pump()
    ((_, moved),) = net.events(TaskReassigned)
    assert moved.epoch == 2
    # a forged/replayed result from the old holder with epoch 1 is stale
    stale = Result(task_id=task_id, epoch=1, result="x")
    net.agents["req"].on_message(Msg("result", awarded.winner, stale, None, 0.0), "", net.now)
    ((_, ev),) = net.events(TaskStaleResult)
    assert (ev.executor, ev.epoch, ev.current_epoch) == (awarded.winner, 1, 2)
    assert net.ctxs["req"].counters["contract.stale_result"] == 1
    assert not net.events(TaskCompleted)


def test_duplicate_award_gives_no_second_assignment() -> None:
    net = make_net(executors=1, auto_work=False)
    net.submit("req", TaskSpec(CAP))
    award = next(p for p in net.log if isinstance(p[1], TaskAwarded))[1]
    x = net.agents[award.winner]
    dup = Award(
        task_id=award.task_id,
        round=1,
        epoch=1,
        winner=award.winner,
        capability=CAP,
        semantics="at-least-once",
        deadline=99.0,
        lease=6.0,
    )
    x.on_message(Msg("award", "req", dup, None, 0.0), "", net.now)
    assert len(net.events(TaskAssigned)) == 1
    assert net.ctxs[award.winner].counters["contract.duplicate_award"] == 1


def test_at_most_once_started_then_dead_ends_outcome_unknown() -> None:
    net = make_net(executors=3, work_time=50.0)
    task_id = net.submit("req", TaskSpec(CAP, semantics="at-most-once", lease=30.0))
    ((_, awarded),) = net.events(TaskAwarded)
    assert net.agents["req"].task_state(task_id) is ReqState.STARTED
    net.crash(awarded.winner)
    net.run_until(100.0)
    ((_, unknown),) = net.events(TaskOutcomeUnknown)
    # Membership's "dead" alone does not end it (it may be one member's false claim):
    # the lease does, when no heartbeat renews it.
    assert (unknown.executor, unknown.reason) == (awarded.winner, "lease-expired")
    assert not net.events(TaskReassigned) and not net.events(TaskCompleted)
    assert len(net.events(TaskAssigned)) == 1


def test_at_most_once_runs_only_after_proceed() -> None:
    net = make_net(executors=1, auto_work=False)
    net.agents["req"].submit(TaskSpec(CAP, semantics="at-most-once"), 0.0)
    # deliver until the award is in, but drop the requester's `proceed`
    for _ in range(100):
        if not net.queue:
            break
        if net.queue[0].kind == "proceed":
            net.queue.pop(0)
            continue
        net.deliver_one()
    assert not net.events(TaskAssigned)  # claiming: no handler yet
    # the executor repeats `started` on its heartbeat, the requester re-confirms
    net.run_until(10.0)
    assert len(net.events(TaskAssigned)) == 1


def test_at_most_once_lost_started_reawards_and_never_runs_twice() -> None:
    net = make_net(executors=2, work_time=1.0)
    old: list[str] = []
    original = net.deliver_one

    def drop_first_holder(index: int = 0) -> None:
        p = net.queue[index]
        if p.kind == "started" and (not old or p.sender == old[0]):
            old[:1] = [p.sender]
            net.queue.pop(index)
            return
        original(index)

    net.deliver_one = drop_first_holder  # type: ignore[method-assign]
    task_id = net.submit("req", TaskSpec(CAP, semantics="at-most-once", lease=3.0))
    net.run_until(50.0)
    assert completed(net)[task_id].executor != old[0]
    assert net.completions[task_id] == 1
    assert [e.task_id for _, e in net.events(TaskAssigned)] == [task_id]


def test_backups_exhausted_start_a_new_auction_then_fail() -> None:
    net = make_net(executors=2, auto_work=False)
    task_id = net.submit("req", TaskSpec(CAP, max_auctions=2, lease=100.0))
    for _ in range(4):
        holders = [n for n in ("x00", "x01") if net.agents[n].executor.job_state(task_id)]
        holder = holders[0] if holders else None
        if holder is None:
            break
        net.agents[holder].fail(task_id, "boom", net.now)
        net.pump()
        net.run_until(net.now + 2.0)
    moves = [e for _, e in net.events(TaskReassigned)]
    assert [m.new_auction for m in moves] == [False, True, False]
    ((_, failed),) = net.events(TaskFailed)
    assert failed.reason == "attempts exhausted: failure: boom"
    assert len(failed.attempts) == 4 and all("failure: boom" in a for a in failed.attempts)


def test_org_policy_is_checked_on_both_sides() -> None:
    class Deny:
        def check_offer(self, cert: object, capability: str) -> None:
            raise RemoteProtocolError("no", code="not-permitted")

        def check_request(self, cert: object, capability: str) -> None:
            raise RemoteProtocolError("no", code="not-permitted")

    net = FakeNet()
    net.add("req")
    net.add("x00", offer(), policy=Deny())
    net.submit("req", TaskSpec(CAP, max_auctions=1))
    net.run_until(5.0)
    ((_, failed),) = net.events(TaskFailed)
    assert "not-permitted" in failed.attempts[0]
    net2 = FakeNet()
    net2.add("req", policy=Deny())
    net2.add("x00", offer())
    net2.submit("req", TaskSpec(CAP, max_auctions=1))
    assert net2.ctxs["req"].counters["contract.rejected.not-permitted"] == 1
    assert not net2.events(TaskAwarded)


@pytest.mark.parametrize("strategy", ["least_loaded", "first_idle"])
def test_a_burst_of_500_equal_tasks_is_balanced_over_10_executors(strategy: str) -> None:
    # first_idle too: a bidder we awarded since the cfp is not idle any more.
    net = FakeNet(seed=7, work_time=3.0)
    net.add("req")
    for i in range(10):
        net.add(f"x{i:02d}", [Offer(CAP, max_concurrency=100, eta=0.5)])
    for _ in range(500):
        net.agents["req"].submit(TaskSpec(CAP, strategy=strategy, timeout=1000.0), net.now)
    net.run_until(200.0)
    done = completed(net)
    assert len(done) == 500
    per = Counter(e.executor for e in done.values())
    assert len(per) == 10
    assert max(per.values()) <= 1.5 * min(per.values()), per


def test_load_is_published_and_freed() -> None:
    net = make_net(executors=1, auto_work=False)
    task_id = net.submit("req", TaskSpec(CAP))
    assert net.agents["x00"].load() == pytest.approx(1 / 4)
    net.agents["x00"].complete(task_id, 1, net.now)
    assert net.agents["x00"].load() == 0.0


def test_award_history_forgets_dead_and_idle_bidders() -> None:
    """The requester's recent-award counts (load correction) stay bounded."""
    net = make_net(executors=3, work_time=10.0)
    net.submit("req", TaskSpec(CAP, lease=30.0, timeout=100.0))
    ((_, awarded),) = net.events(TaskAwarded)
    agent = net.agents["req"]
    assert awarded.winner in agent._recent
    net.crash(awarded.winner)
    net.run_until(30.0)
    assert awarded.winner not in agent._recent  # dead: forgotten
    for i in range(1100):  # many short-lived bidders long ago ...
        agent._note_award(f"gone-{i}", 0.0)
    agent._note_award("fresh", 500.0)  # ... are swept when a new one comes
    assert len(agent._recent) <= 3


# --- bids are verified only when acted on --------------------------------------


def test_only_the_winning_bid_is_verified_and_a_backup_when_promoted() -> None:
    n = 5
    net = make_net(executors=n, work_time=10.0)
    task_id = net.submit("req", TaskSpec(CAP, lease=30.0, timeout=100.0))
    ((_, awarded),) = net.events(TaskAwarded)
    assert awarded.bidders == n and net.confirms["propose"] == 1
    bids = [e for _, e in net.events(TaskBid)]
    assert len(bids) == n and not any(b.verified for b in bids)
    net.crash(awarded.winner)
    net.run_until(40.0)
    ((_, moved),) = net.events(TaskReassigned)
    assert moved.winner == awarded.backups[0]
    assert net.confirms["propose"] == 2  # the promoted backup's bid, checked then
    assert completed(net)[task_id].executor == moved.winner


def test_a_forged_winning_bid_is_rejected_and_the_next_bid_wins() -> None:
    net = FakeNet()
    net.add("req")
    net.add("x00", offer(cost=0.1))  # the cheapest: its (forged) bid would win
    for i in (1, 2):
        net.add(f"x{i:02d}", offer(cost=1.0))
    net.forged_by.add("x00")
    task_id = net.submit("req", TaskSpec(CAP, strategy="lowest_cost"))
    ((_, awarded),) = net.events(TaskAwarded)
    assert awarded.winner != "x00" and "x00" not in awarded.backups
    assert net.ctxs["req"].counters["rejected.bad-signature"] == 1
    net.run_until(5.0)
    assert completed(net)[task_id].executor == awarded.winner


def test_every_bid_forged_means_no_bids_then_a_bounded_failure() -> None:
    net = make_net(executors=2)
    net.forged_by.update(net.executors)
    task_id = net.submit("req", TaskSpec(CAP, max_auctions=2, reply_timeout=0.5))
    net.run_until(10.0)
    ((_, failed),) = net.events(TaskFailed)
    assert failed.task_id == task_id and "attempts exhausted" in failed.reason
    assert not net.events(TaskAwarded)
    assert net.ctxs["req"].counters["rejected.bad-signature"] == 4  # 2 rounds x 2 bids


def test_a_bid_dropped_for_a_protocol_reason_is_verified_first() -> None:
    net = make_net(executors=3)
    net.agents["req"].submit(TaskSpec(CAP, reply_timeout=1.0), net.now)
    (first, second, third) = replies_to_cfps(net, 0.5)
    req = net.agents["req"]
    good, bad = (b"good", b"", b""), (b"bad", b"", b"")
    req.on_message(Msg(first.kind, first.sender, first.payload, None, 0.5, good), "", 0.6)
    # a forged copy of a bid we hold: reported as a forgery, not as a duplicate
    req.on_message(Msg(first.kind, first.sender, first.payload, None, 0.5, bad), "", 0.6)
    counters = net.ctxs["req"].counters
    assert counters["rejected.bad-signature"] == 1
    assert counters["contract.rejected.unexpected-message"] == 0
    # a genuine duplicate: both checked, counted as unexpected
    req.on_message(Msg(first.kind, first.sender, first.payload, None, 0.5, good), "", 0.6)
    assert counters["contract.rejected.unexpected-message"] == 1
    # a forgery that came first does not shut out the genuine bid that follows
    req.on_message(Msg(second.kind, second.sender, second.payload, None, 0.5, bad), "", 0.7)
    req.on_message(Msg(second.kind, second.sender, second.payload, None, 0.5, good), "", 0.7)
    assert counters["rejected.bad-signature"] == 2
    assert not net.events(TaskAwarded)
    req.on_message(Msg(third.kind, third.sender, third.payload, None, 0.5, good), "", 0.7)
    ((_, awarded),) = net.events(TaskAwarded)  # every genuine bid in: closed at once
    assert awarded.bidders == 3
    # late: the auction is closed; a forged late bid is a forgery
    req.on_message(Msg(second.kind, second.sender, second.payload, None, 0.5, bad), "", 0.8)
    assert counters["rejected.bad-signature"] == 3 and counters["contract.late_bid"] == 0


def test_a_bidder_keeps_the_input_until_the_auction_can_no_longer_award_it() -> None:
    net = make_net(executors=1)
    x = net.agents["x00"].executor

    def cfp_at(t: float, reply_timeout: float) -> str:
        net.now = t
        task_id = net.agents["req"].submit(TaskSpec(CAP, reply_timeout=reply_timeout), t)
        replies_to_cfps(net, t)
        return task_id

    slow = cfp_at(0.0, reply_timeout=10.0)  # its auction may award until t = 10
    cfp_at(1.0, reply_timeout=1.0)  # its bid expires at t = 6 (valid_for 5 s)
    cfp_at(7.0, reply_timeout=1.0)
    assert ("req", slow) in x._inputs  # past its bid's expiry, but its auction is still open
    last = cfp_at(11.0, reply_timeout=1.0)
    assert ("req", slow) not in x._inputs and ("req", last) in x._inputs  # swept oldest first


def test_first_idle_awards_the_first_idle_bid_at_once_and_reads_no_other() -> None:
    n = 5
    net = make_net(executors=n)
    task_id = net.submit("req", TaskSpec(CAP, strategy="first_idle"))
    ((_, awarded),) = net.events(TaskAwarded)
    assert awarded.bidders == 1 and not awarded.backups
    counters = net.ctxs["req"].counters
    # The other bids arrive after the award: expected, so not counted as late (each is
    # still verified before it is dropped, so that a forgery is reported as one).
    assert counters["contract.bid_after_first_idle"] == n - 1
    assert counters["contract.late_bid"] == 0
    net.run_until(5.0)
    assert completed(net)[task_id].executor == awarded.winner


def test_first_idle_waits_past_a_busy_bid_for_an_idle_one() -> None:
    net = make_net(executors=3, work_time=10.0)
    net.submit("req", TaskSpec(CAP, strategy="first_idle", lease=30.0, timeout=100.0))
    ((_, first),) = net.events(TaskAwarded)
    net.agents["req"].submit(TaskSpec(CAP, strategy="first_idle", timeout=100.0), net.now)
    replies = replies_to_cfps(net, net.now)
    busy = next(p for p in replies if p.sender == first.winner)
    idle = next(p for p in replies if p.sender != first.winner)

    def deliver(p: Packet) -> None:
        net.agents["req"].on_message(Msg(p.kind, p.sender, p.payload, None, p.sent_at), "", 0.0)

    # The first winner answers first, but it runs a task now: not idle, the auction
    # goes on; the next bid is idle and closes it.
    deliver(busy)
    assert len(net.events(TaskAwarded)) == 1
    deliver(idle)
    second = net.events(TaskAwarded)[1][1]
    assert second.winner == idle.sender
    assert second.bidders == 2 and second.backups == (first.winner,)


def test_first_idle_with_no_idle_bidder_is_least_loaded_over_every_bid() -> None:
    net = make_net(executors=3, work_time=10.0)
    spec = TaskSpec(CAP, strategy="first_idle", lease=30.0, timeout=100.0)
    for _ in range(3):
        net.submit("req", spec)
    net.submit("req", spec)  # everyone runs one task now
    last = net.events(TaskAwarded)[-1][1]
    assert last.bidders == 3 and len(last.backups) == 2


def test_first_idle_winner_crash_costs_a_new_auction_and_the_task_completes() -> None:
    net = make_net(executors=3, work_time=10.0)
    task_id = net.submit("req", TaskSpec(CAP, strategy="first_idle", lease=30.0, timeout=100.0))
    ((_, awarded),) = net.events(TaskAwarded)
    assert not awarded.backups  # the price of closing early
    net.crash(awarded.winner)
    net.run_until(60.0)
    assert net.ctxs["req"].counters["contract.reauction"] == 1
    assert completed(net)[task_id].executor != awarded.winner


def test_first_idle_a_forger_answering_first_does_not_close_the_auction() -> None:
    net = make_net(executors=3)
    net.forged_by.add("x00")
    net.agents["req"].submit(TaskSpec(CAP, strategy="first_idle"), net.now)
    replies = replies_to_cfps(net, net.now)
    order = sorted(replies, key=lambda p: p.sender != "x00")  # the forgery first
    for p in order:
        proof = (b"bad" if p.sender == "x00" else b"good", b"", b"")
        msg = Msg(p.kind, p.sender, p.payload, None, p.sent_at, proof)
        net.agents["req"].on_message(msg, "fake", 0.0)
    ((_, awarded),) = net.events(TaskAwarded)
    assert awarded.winner == order[1].sender and awarded.bidders == 1
    assert net.ctxs["req"].counters["rejected.bad-signature"] == 1


def _one_busy_executor(work_time: float) -> FakeNet:
    net = FakeNet(seed=3, work_time=work_time)
    net.add("req")
    net.add("x00", [Offer(CAP, max_concurrency=1, eta=0.5)])
    return net


def test_when_every_executor_is_full_a_task_waits_for_capacity() -> None:
    # One executor, one task at a time, each 1 s: three tasks at once. The second and
    # third find it full; they wait (retry_after) instead of failing after three rounds.
    net = _one_busy_executor(work_time=1.0)
    ids = [net.submit("req", TaskSpec(CAP, timeout=30.0)) for _ in range(3)]
    net.run_until(10.0)
    assert sorted(completed(net)) == sorted(ids)
    assert not net.events(TaskFailed)
    counters = net.ctxs["req"].counters
    assert counters["contract.busy_round"] >= 2
    assert counters["contract.reauction"] == 0


def test_busy_rounds_do_not_use_up_the_auctions() -> None:
    # max_auctions=1 and the executor busy for 3 s: the task still runs once it frees.
    net = _one_busy_executor(work_time=3.0)
    first = net.submit("req", TaskSpec(CAP, timeout=30.0))
    second = net.submit("req", TaskSpec(CAP, timeout=30.0, max_auctions=1))
    net.run_until(10.0)
    assert net.ctxs["req"].counters["contract.busy_round"] >= 1
    assert set(completed(net)) == {first, second}


def test_a_task_that_cannot_get_capacity_before_its_deadline_fails_saying_so() -> None:
    net = _one_busy_executor(work_time=20.0)
    net.submit("req", TaskSpec(CAP, timeout=30.0))
    late = net.submit("req", TaskSpec(CAP, timeout=2.0))
    net.run_until(5.0)
    ((_, failed),) = [(t, e) for t, e in net.events(TaskFailed) if e.task_id == late]
    assert any("all 1 bidders full; waiting for capacity" in a for a in failed.attempts)


def _fill(net: FakeNet, executor: str) -> None:
    """Award ``executor`` a task it bid on: with max_concurrency=1 it is full."""
    cfp = Cfp(task_id=f"t-{executor}", round=1, capability=CAP, reply_by=50.0, deadline=100.0)
    net.agents[executor].executor.on_message(Msg("cfp", "req", cfp, None, 0.0), 0.0)
    award = _award(f"t-{executor}", executor)
    net.agents[executor].executor.on_message(Msg("award", "req", award, None, 0.0), 0.0)


def test_a_busy_round_asks_the_candidates_not_asked_yet_before_waiting() -> None:
    # 20 executors, the cap invites 16 per round. The 16 asked first are all full; the
    # next round goes at once to the 4 not asked yet, one of which is idle.
    net = FakeNet(seed=5, work_time=5.0, auto_work=False)
    net.add("req")
    for i in range(20):
        net.add(f"x{i:02d}", [Offer(CAP, max_concurrency=1, eta=0.5)])
    first = net.submit("req", TaskSpec(CAP, timeout=60.0, bid_grace=None))
    ((_, one),) = net.events(TaskAwarded)
    assert one.bidders >= 16
    # Make everyone but one executor full: award them a task each directly.
    busy = [x for x in net.executors if x != "x07"]
    for x in busy:
        if x != one.winner:
            _fill(net, x)
    late = net.submit("req", TaskSpec(CAP, timeout=60.0, bid_grace=None))
    awarded = [e for _, e in net.events(TaskAwarded) if e.task_id == late]
    assert awarded and awarded[0].winner == "x07"
    assert net.ctxs["req"].counters["contract.busy_round"] >= 1
    assert first != late


def test_a_refusal_with_a_nonsense_retry_after_is_refused_by_the_message_model() -> None:
    from protocols.contract_net.messages import Refuse

    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError):
            Refuse(task_id="t", round=1, reason="full", retry_after=bad)


def test_after_a_busy_spell_a_later_auction_asks_everyone_again() -> None:
    # 20 executors, all but x07 full: the task goes to x07 after a busy round. When x07
    # then dies, the new auction must not leave out the nodes that were full back then.
    net = FakeNet(seed=5, work_time=50.0, auto_work=False, detect_delay=1.0)
    net.add("req")
    for i in range(20):
        net.add(f"x{i:02d}", [Offer(CAP, max_concurrency=1, eta=0.5)])
    for x in net.executors:
        if x != "x07":
            _fill(net, x)
    task = net.submit("req", TaskSpec(CAP, timeout=60.0, bid_grace=None, lease=30.0))
    (first,) = [e for _, e in net.events(TaskAwarded) if e.task_id == task]
    assert first.winner == "x07"
    assert net.agents["req"]._tasks[task].full == []


def _fail_every_assignment(net: FakeNet, reason: str, until: float) -> None:
    """Executors fail each task they are assigned, at once, with ``reason``."""
    handled = 0
    while net.now < until:
        assigned = net.events(TaskAssigned)
        for node, ev in assigned[handled:]:
            net.agents[node].fail(ev.task_id, reason, net.now)
        handled = len(assigned)
        net.pump()
        net.run_until(net.now + 0.1)


@pytest.mark.parametrize("semantics", ["at-least-once", "at-most-once"])
def test_a_long_failure_reason_ends_the_task_at_once(semantics: str) -> None:
    """A handler's failure reason may be 256 characters; giving up tells the holder
    with a cancel, whose reason is at most 64: it is cut, not an exception that left
    the task half-ended until its lease ran out (found on real daemons: a missing
    command's 'cannot start ...: No such file or directory')."""
    net = FakeNet(auto_work=False)
    net.add("req")
    net.add("x00", offer())
    reason = "cannot start /nonexistent/tool: No such file or directory " + "x" * 150
    task_id = net.submit("req", TaskSpec(CAP, semantics=semantics, max_auctions=3, lease=30.0))
    _fail_every_assignment(net, reason, until=5.0)
    ((_, failed),) = net.events(TaskFailed)
    assert failed.task_id == task_id
    assert reason[:100] in failed.reason
    assert not any("lease-expired" in a for a in failed.attempts)
    cancels = [p for p in net.sent if p.kind == "cancel"]
    assert cancels and all(len(p.payload.reason) <= 64 for p in cancels)


def test_a_bid_function_with_a_bad_quote_or_a_long_refusal_refuses_cleanly() -> None:
    """A user's bid function is outside the protocol's control: a negative price (or
    NaN) becomes a refusal 'invalid-bid', a long refusal reason is cut to 64."""
    net = FakeNet(auto_work=False)
    net.add("req")
    net.add("x00", offer(), bid=lambda s: Quote(price=-1.0, eta=1.0))
    net.add("x01", offer(), bid=lambda s: Refusal("busy " * 40, retry_after=float("nan")))
    net.submit("req", TaskSpec(CAP, max_auctions=1))
    refusals = {p.sender: p.payload for p in net.sent if p.kind == "refuse"}
    assert refusals["x00"].reason == "invalid-bid"
    assert net.ctxs["x00"].counters["contract.invalid_bid"] == 1
    assert len(refusals["x01"].reason) == 64 and refusals["x01"].reason.endswith("...")
    assert refusals["x01"].retry_after is None
    net.run_until(5.0)
    ((_, failed),) = net.events(TaskFailed)
    assert "no bids" in failed.attempts[0]


def test_a_result_msgpack_cannot_carry_fails_the_task_at_once() -> None:
    net = FakeNet(auto_work=False)
    net.add("req")
    net.add("x00", offer())
    net.submit("req", TaskSpec(CAP, max_auctions=1))
    ((node, assigned),) = net.events(TaskAssigned)

    def refuse_to_encode(kind: str, payload: object, *args: object, **kw: object) -> bytes:
        if kind == "result":
            raise TypeError("can not serialize 'set' object")
        return original(kind, payload, *args, **kw)  # type: ignore[arg-type]

    original = net.ctxs[node].send
    net.ctxs[node].send = refuse_to_encode  # type: ignore[method-assign]
    assert net.agents[node].complete(assigned.task_id, {1, 2}, net.now) is False
    net.ctxs[node].send = original  # type: ignore[method-assign]
    net.run_until(1.0)
    ((_, failed),) = net.events(TaskFailed)
    assert "result cannot be encoded: can not serialize 'set' object" in failed.reason
    assert net.ctxs[node].counters["contract.unsendable_result"] == 1
    assert net.agents[node].executor.running(CAP) == 0


def test_a_tiny_lease_does_not_make_the_heartbeat_loop_spin() -> None:
    """lease / 3 of an award's lease=1e-7, added to a unix time, rounds back to now:
    the executor's timer loop beat without end (one award hung a node). Beats are now
    at least MIN_BEAT apart, whatever the lease."""
    from protocols.contract_net.executor import MIN_BEAT

    now = 1_800_000_000.0
    net = FakeNet(auto_work=False, now=now)
    net.add("req")
    net.add("x00", offer())
    net.submit("req", TaskSpec(CAP, lease=1e-7, timeout=60.0))
    ((node, _assigned),) = net.events(TaskAssigned)
    executor = net.agents[node]
    sends = 0
    real_send = net.ctxs[node].send

    def counting_send(*args: object, **kw: object) -> bytes:
        nonlocal sends
        sends += 1
        if sends > 100:
            raise AssertionError("the heartbeat loop does not end")
        return real_send(*args, **kw)  # type: ignore[arg-type]

    net.ctxs[node].send = counting_send  # type: ignore[method-assign]
    executor.handle_timer(now + 1e-6)
    timer = executor.get_timer()
    assert timer is not None and timer >= now + MIN_BEAT - 1e-6
    assert sends <= 1


def test_a_rival_member_cannot_fence_an_award_with_its_own_cancel() -> None:
    """Another bidder, which saw the same cfp, sent the executor a cancel for that task
    at a huge epoch: the executor recorded the epoch for the task id and refused the
    real requester's award as stale (the task failed a lease later, three times)."""
    from protocols.contract_net.messages import Cancel

    net = FakeNet(auto_work=False)
    net.add("req")
    net.add("x00", offer())
    task_id = net.agents["req"].submit(TaskSpec(CAP), net.now)  # cfp queued, not delivered
    rival = Cancel(task_id=task_id, epoch=2**40, reason="superseded")
    net.agents["x00"].on_message(Msg("cancel", "mallory", rival, None, net.now), "", net.now)
    net.pump()
    ((_, assigned),) = net.events(TaskAssigned)
    assert assigned.task_id == task_id and assigned.epoch == 1
    assert net.ctxs["x00"].counters["contract.stale_award"] == 0
    # The requester's own cancel still fences a late award of an older epoch.
    executor = net.agents["x00"].executor
    assert executor.highest_epoch(task_id, "req") == 1
    assert executor.highest_epoch(task_id, "mallory") == 2**40


def test_a_far_reply_by_does_not_keep_a_bid_input_past_the_cap() -> None:
    """reply_by is the requester's to choose: a cfp flood with reply_by far ahead kept
    every input until the table's count cap and never let it go. Inputs now leave
    INPUT_KEEP_MAX seconds after the bid at the latest."""
    from protocols.contract_net.executor import INPUT_KEEP_MAX
    from protocols.contract_net.messages import Cfp

    net = FakeNet(auto_work=False)
    net.add("x00", offer())
    executor = net.agents["x00"].executor

    def cfp(task_id: str) -> Cfp:
        return Cfp(
            task_id=task_id,
            round=1,
            capability=CAP,
            input="x" * 1000,
            reply_by=net.now + 1e8,
            deadline=net.now + 2e8,
        )

    net.agents["x00"].on_message(Msg("cfp", "mallory", cfp("t1"), None, net.now), "", net.now)
    assert ("mallory", "t1") in executor._inputs
    net.now += INPUT_KEEP_MAX + 1
    net.agents["x00"].on_message(Msg("cfp", "mallory", cfp("t2"), None, net.now), "", net.now)
    assert ("mallory", "t1") not in executor._inputs
    assert ("mallory", "t2") in executor._inputs


def _award(task_id: str, winner: str, *, capability: str = CAP, has_input: bool = True) -> Award:
    return Award(
        task_id=task_id,
        round=1,
        epoch=1,
        winner=winner,
        backups=[],
        capability=capability,
        semantics="at-least-once",
        risk="low",
        deadline=100.0,
        lease=30.0,
        has_input=has_input,
        input="x" if has_input else None,
    )


def _failures(net: FakeNet, sender: str) -> list[str]:
    return [
        p.payload.reason
        for p in net.sent
        if p.kind == "failure" and p.sender == sender and hasattr(p.payload, "reason")
    ]


def test_an_award_for_a_task_the_node_never_bid_on_is_refused() -> None:
    """A member's awards are not work orders: 3,000 unsolicited awards with inputs
    used to become 3,000 jobs (its whole capacity, and 600 MB of inputs)."""
    net = FakeNet(auto_work=False)
    net.add("x00", offer(max_concurrency=4))
    x = net.agents["x00"].executor
    for i in range(50):
        x.on_message(Msg("award", "mallory", _award(f"u{i}", "x00"), None, 0.0), 0.0)
    assert x.running(CAP) == 0 and not net.events(TaskAssigned)
    assert _failures(net, "x00") == ["not-bid"] * 50
    assert net.ctxs["x00"].counters["contract.rejected.unsolicited-award"] == 50
    # a bid from this node for this requester and task is what an award needs
    cfp = Cfp(task_id="b1", round=1, capability=CAP, input="in", reply_by=5.0, deadline=60.0)
    x.on_message(Msg("cfp", "mallory", cfp, None, 0.0), 0.0)
    x.on_message(Msg("award", "eve", _award("b1", "x00"), None, 0.1), 0.1)  # not the bid's
    assert x.running(CAP) == 0
    x.on_message(Msg("award", "mallory", _award("b1", "x00", has_input=False), None, 0.1), 0.1)
    assert x.running(CAP) == 1
    ((_, assigned),) = net.events(TaskAssigned)
    assert assigned.input == "in"


def test_an_award_for_another_capability_than_the_bid_is_refused() -> None:
    net = FakeNet(auto_work=False)
    net.add("x00", [*offer(), Offer("translate", max_concurrency=1, eta=0.5)])
    x = net.agents["x00"].executor
    cfp = Cfp(task_id="b1", round=1, capability="translate", reply_by=5.0, deadline=60.0)
    x.on_message(Msg("cfp", "req", cfp, None, 0.0), 0.0)
    x.on_message(Msg("award", "req", _award("b1", "x00", capability=CAP), None, 0.1), 0.1)
    assert x.running(CAP) == 0 and x.running("translate") == 0
    assert _failures(net, "x00") == ["not-bid"]


def test_awards_past_twice_the_capacity_are_refused_full() -> None:
    """Two auctions may both award one free slot, so a node queues a little past its
    capacity; beyond OVERBOOK times it answers ``full`` and its requester moves on."""
    from protocols.contract_net.executor import OVERBOOK

    net = FakeNet(auto_work=False)
    net.add("x00", offer(max_concurrency=2))
    x = net.agents["x00"].executor
    for i in range(10):  # every bid made while the node was idle
        cfp = Cfp(task_id=f"b{i}", round=1, capability=CAP, reply_by=5.0, deadline=60.0)
        x.on_message(Msg("cfp", "req", cfp, None, 0.0), 0.0)
    for i in range(10):
        x.on_message(Msg("award", "req", _award(f"b{i}", "x00"), None, 0.1), 0.1)
    assert x.running(CAP) == OVERBOOK * 2
    assert _failures(net, "x00") == ["full"] * (10 - OVERBOOK * 2)


def test_inputs_kept_for_awards_stay_within_a_memory_budget() -> None:
    """Inputs are charged by their decoded size: 200 KB of empty maps is ~14 MB of
    dicts. A flood of such cfps keeps at most INPUTS_BUDGET, the oldest going first."""
    from protocols.codec import decoded_size, packb, unpack_payload
    from protocols.contract_net.executor import INPUTS_BUDGET

    net = FakeNet(auto_work=False)
    net.add("x00", offer(max_concurrency=4))
    x = net.agents["x00"].executor
    heavy = unpack_payload(packb([{}] * 200_000))
    size = decoded_size(heavy, 1 << 40)
    assert size > 10_000_000
    for i in range(20):
        cfp = Cfp(
            task_id=f"h{i}", round=1, capability=CAP, input=heavy, reply_by=30.0, deadline=60.0
        )
        x.on_message(Msg("cfp", "mallory", cfp, None, 0.0), 0.0)
    kept = [k for k in x._inputs]
    assert 0 < len(kept) <= INPUTS_BUDGET // size
    assert kept[-1] == ("mallory", "h19")  # the newest stay
    assert sum(e[2] for e in x._inputs.values()) <= INPUTS_BUDGET
    # an award whose input left answers input-unavailable; the requester moves on
    x.on_message(Msg("award", "mallory", _award("h0", "x00", has_input=False), None, 1.0), 1.0)
    assert _failures(net, "x00") == ["input-unavailable"]


def test_a_task_waiting_for_capacity_waits_out_its_deadline_and_says_why() -> None:
    """When the backoff would pass the deadline, the round used to count as a failed
    auction: new auctions followed at once, each answered "full", and the task ended
    "attempts exhausted" seconds early. It now gets one last round before its
    deadline and then times out, its attempts saying everyone was full."""
    net = FakeNet(seed=3, auto_work=False)
    net.add("req")
    net.add("x00", [Offer(CAP, max_concurrency=1, eta=1.0)])
    _fill(net, "x00")
    net.submit("req", TaskSpec(CAP, timeout=8.0, bid_grace=None))
    net.run_until(30.0)
    ((_, failed),) = net.events(TaskFailed)
    assert failed.reason == "timeout", failed
    assert failed.attempts[0] == "round 1: all 1 bidders full; waiting for capacity"
    assert not any("no bids" in a for a in failed.attempts)
