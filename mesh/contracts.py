"""ContractAgent: the contract-net requester and executor machines of one node.

The core dispatches opened frames of the contract-net kinds to ``on_message``,
asks ``get_timer`` / ``handle_timer``, forwards ``submit`` / ``cancel`` (requester)
and ``report_progress`` / ``complete`` / ``fail`` (executor), and calls
``on_peer_dead`` when membership declares a node dead. State changes go through
the transition tables of ``protocols.contract_net._state``; a message that does
not fit the current state is counted and dropped, never raised to the core.

Requester: cfp → bids until reply-by (or every invitee answered) → one award
(a lease with an epoch) → result. When the holder dies, misses its lease or
fails, the next live backup gets a new award with a new epoch (sent to it and,
when the old holder may still be alive, to the old holder as a fencing notice);
when backups run out, a new auction, up to ``TaskSpec.max_auctions``; then
``TaskFailed`` listing every attempt. At-most-once tasks are re-awarded only
while their holder has not said ``started``; after that, losing the holder ends
the task as ``TaskOutcomeUnknown``.

Executor: bids with a pluggable bid function, acts only on the highest epoch it
has seen for a task, renews its lease with ``progress`` heartbeats, and for
at-most-once tasks runs the handler only after the requester's ``proceed``
(so a lost ``started`` can never lead to two executions).
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from mesh.events import (
    TaskAssigned,
    TaskAwarded,
    TaskBid,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskOutcomeUnknown,
    TaskProgress,
    TaskReassigned,
    TaskStaleResult,
)
from mesh.ports import AgentContext
from protocols.contract_net._state import (
    REQUESTER_TABLE,
    REQUESTER_TERMINAL,
    ReqEvent,
    ReqState,
    transition,
)
from protocols.contract_net.bidding import (
    DEFAULT_BIDDER_CAP,
    BidFunction,
    CandidateSource,
    default_bid,
    select_bidders,
)
from protocols.contract_net.executor import ExecutorSide
from protocols.contract_net.host import Inbound, OrgPolicy
from protocols.contract_net.messages import (
    Cancel,
    Cfp,
    Failure,
    Proceed,
    Progress,
    Propose,
    Refuse,
    Result,
    Started,
    short_reason,
)
from protocols.contract_net.requester import RequesterTask
from protocols.contract_net.strategies import FIRST_IDLE, STRATEGIES, Bid, Strategy, rank
from protocols.contract_net.task import STRAGGLER_FACTOR, Offer, TaskSpec
from protocols.errors import LocalProtocolError, MeshError

__all__ = ["ContractAgent", "Inbound", "OrgPolicy"]

_LIVE = (ReqState.AUCTION, ReqState.AWARDED, ReqState.STARTED)
_DONE_KEEP = 4096  # finished tasks remembered to classify late messages
_RECENT_HORIZON = 120.0  # seconds of our own awards kept for load correction
#: After a busy round (every answer "full"), the next round starts after the shortest
#: ``retry_after`` of the refusals, bounded to this range (seconds).
BUSY_WAIT_MIN = 0.05
BUSY_WAIT_MAX = 5.0
_RECENT_SWEEP = 256  # sweep idle bidders out of the award history above 4x this many


class _Host:
    """Adapts the core's AgentContext to the executor machine's ``ExecutorHost``."""

    def __init__(self, ctx: AgentContext) -> None:
        self._ctx = ctx

    @property
    def node_id(self) -> str:
        return self._ctx.node_id

    @property
    def rng(self) -> random.Random:
        return self._ctx.rng

    def send(self, kind: str, payload: BaseModel, to: Sequence[str], now: float) -> None:
        self._ctx.send(kind, payload, list(to), now)

    def count(self, name: str, n: int = 1) -> None:
        self._ctx.count(name, n)

    def assigned(
        self,
        task_id: str,
        requester: str,
        capability: str,
        input: Any,
        epoch: int,
        deadline: float,
        semantics: str,
        risk: str,
    ) -> None:
        self._ctx.count("contract.assigned")
        self._ctx.emit(
            TaskAssigned(task_id, requester, capability, input, epoch, deadline, semantics, risk)
        )

    def cancelled(self, task_id: str, epoch: int, reason: str) -> None:
        self._ctx.count("contract.cancelled")
        self._ctx.emit(TaskCancelled(task_id, epoch, reason))


class ContractAgent:
    """Requester and executor sides of contract net for one node."""

    def __init__(
        self,
        ctx: AgentContext,
        candidates: CandidateSource,
        *,
        offers: Sequence[Offer] = (),
        policy: OrgPolicy | None = None,
        bid: BidFunction = default_bid,
        strategies: Mapping[str, Strategy] | None = None,
        bidder_cap: int = DEFAULT_BIDDER_CAP,
        local_fallback: bool = True,
    ) -> None:
        if bidder_cap < 1:
            raise LocalProtocolError("bidder_cap must be >= 1")
        self._ctx = ctx
        self._candidates = candidates
        self._policy = policy
        self._strategies: dict[str, Strategy] = {**STRATEGIES, **(strategies or {})}
        self._bidder_cap = bidder_cap
        self._local_fallback = local_fallback
        self._tasks: dict[str, RequesterTask] = {}
        self._done: OrderedDict[str, RequesterTask] = OrderedDict()
        self._recent: dict[str, deque[float]] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self.executor = ExecutorSide(_Host(ctx), offers, policy=policy, bid=bid)

    # --- core-facing surface -------------------------------------------------

    def on_message(self, msg: Inbound, endpoint: str, now: float) -> None:
        p = msg.payload
        if isinstance(p, Propose | Refuse):
            self._on_reply(msg, p, endpoint, now)
        elif isinstance(p, Started | Progress):
            self._on_renewal(msg.sender, p, now)
        elif isinstance(p, Result | Failure):
            self._on_outcome(msg.sender, p, now)
        else:
            self.executor.on_message(msg, now)

    def on_not_permitted(self, msg: Inbound, endpoint: str, now: float) -> None:
        """A signed cfp whose requester may not request its capability here (refused by
        the wire, check 12): answer ``refuse`` ``not-permitted`` so that its auction
        does not wait for us, and its failure says why."""
        p = msg.payload
        if not isinstance(p, Cfp):
            return
        refuse = Refuse(task_id=p.task_id, round=p.round, reason="not-permitted")
        where = self._ctx.endpoint_of(msg.sender) or endpoint
        self._ctx.send("refuse", refuse, msg.sender, now, endpoint=where)
        self._ctx.count("contract.refused.not-permitted")

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap:
            when, _, task_id = heap[0]
            rec = self._tasks.get(task_id)
            if rec is not None and rec.timer_at == when:
                break
            heapq.heappop(heap)
        mine = heap[0][0] if heap else None
        theirs = self.executor.get_timer()
        if mine is None:
            return theirs
        return mine if theirs is None else min(mine, theirs)

    def handle_timer(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            when, _, task_id = heapq.heappop(self._heap)
            rec = self._tasks.get(task_id)
            if rec is None or rec.timer_at != when:
                continue
            if now >= rec.deadline:
                self._give_up(rec, "timeout", now)
            elif rec.state is ReqState.AUCTION and rec.waiting:
                rec.waiting = False  # the wait after a busy round is over
                self._start_round(rec, now)
            elif rec.state is ReqState.AUCTION:
                self._close_auction(rec, now)
            else:
                self._lost_holder(rec, "lease-expired", now, notify_old=True)
        self.executor.handle_timer(now)

    def on_peer_dead(self, node_id: str, now: float) -> None:
        self._recent.pop(node_id, None)  # a returning node starts with a fresh count
        for rec in list(self._tasks.values()):
            if node_id in rec.backups:
                rec.backups.remove(node_id)
                rec.unchecked.pop(node_id, None)
            if rec.state is ReqState.AUCTION or rec.holder != node_id:
                continue
            if rec.state is ReqState.STARTED and rec.spec.semantics == "at-most-once":
                # Nothing can be re-awarded: the lease decides. A death may be false
                # (one member's dead claim, a lost ack); ending the task unknown at
                # once lost the result of a holder that was alive and finished it.
                continue
            # The old holder is told too (the award fences it), as on a lease expiry:
            # if the death was false, it stops instead of running alongside the backup.
            self._lost_holder(rec, "peer-dead", now, notify_old=True)

    # --- requester commands --------------------------------------------------

    def submit(self, task: TaskSpec, now: float) -> str:
        """Start a negotiation; returns the task id (the idempotency key)."""
        if task.strategy not in self._strategies:
            raise LocalProtocolError(f"unknown award strategy {task.strategy!r}")
        task_id = task.task_id or f"{self._ctx.rng.getrandbits(128):032x}"
        if task_id in self._tasks or task_id in self._done:
            raise LocalProtocolError(f"task id {task_id!r} already submitted")
        deadline = task.deadline if task.deadline is not None else now + task.timeout
        rec = RequesterTask(task_id, task, deadline)
        self._tasks[task_id] = rec
        self._ctx.count("contract.submitted")
        self._start_round(rec, now)
        return task_id

    def cancel(self, task_id: str, now: float) -> None:
        """Cancel one of our tasks (TaskFailed with reason ``cancelled``)."""
        rec = self._tasks.get(task_id)
        if rec is None:
            raise LocalProtocolError(f"no live task {task_id!r}")
        self._notify_holder(rec, "cancelled", now)
        self._finish(rec, ReqEvent.CANCEL)
        self._ctx.emit(TaskFailed(task_id, "cancelled", tuple(rec.attempts)))

    def task_state(self, task_id: str) -> ReqState | None:
        rec = self._tasks.get(task_id) or self._done.get(task_id)
        return None if rec is None else rec.state

    def live_tasks(self) -> int:
        return len(self._tasks)

    # --- executor commands (forwarded) ---------------------------------------

    def report_progress(
        self, task_id: str, now: float, percent: float | None = None, message: str | None = None
    ) -> bool:
        return self.executor.report_progress(task_id, now, percent, message)

    def complete(self, task_id: str, result: Any, now: float) -> bool:
        return self.executor.complete(task_id, result, now)

    def fail(self, task_id: str, reason: str, now: float, *, final: bool = False) -> bool:
        return self.executor.fail(task_id, reason, now, final=final)

    def load(self) -> float:
        return self.executor.load()

    # --- requester internals -------------------------------------------------

    def _set_timer(self, rec: RequesterTask, when: float) -> None:
        rec.timer_at = min(when, rec.deadline)
        self._seq += 1
        heapq.heappush(self._heap, (rec.timer_at, self._seq, rec.task_id))

    def _send(self, kind: str, payload: BaseModel, to: Sequence[str], now: float) -> None:
        if to:
            self._ctx.send(kind, payload, list(to), now)

    def _start_round(self, rec: RequesterTask, now: float) -> None:
        spec = rec.spec
        rec.round += 1
        rec.auctions += 1
        rec.bids = {}
        rec.refused = {}
        rec.busy_wait = None
        exclude = [*rec.excluded, *rec.full, self._ctx.node_id]
        found = self._candidates.find(spec.capability, spec.version_spec)
        rec.invited = tuple(
            select_bidders(found, self._ctx.rng, cap=self._bidder_cap, exclude=exclude)
        )
        rec.cfp_at = now
        if not rec.invited and self._self_award(rec, now):
            return
        reply_by = now + spec.reply_timeout
        cfp = Cfp(
            task_id=rec.task_id,
            round=rec.round,
            capability=spec.capability,
            version_spec=spec.version_spec,
            input=spec.input,
            constraints=spec.constraints,
            reply_by=reply_by,
            deadline=rec.deadline,
            risk=spec.risk,
            budget=spec.budget,
            semantics=spec.semantics,
        )
        self._send("cfp", cfp, rec.invited, now)
        self._ctx.count("contract.cfp")
        self._set_timer(rec, reply_by)

    def _checked(self, msg: Inbound, endpoint: str) -> bool:
        """Is the frame's signature good? (Checked now if its kind defers it.)"""
        return msg.proof is None or self._ctx.confirm(msg, endpoint)

    def _bid_checked(self, rec: RequesterTask, bidder: str) -> bool:
        """Check the signature of ``bidder``'s bid before acting on it (award, re-award)."""
        held = rec.unchecked.pop(bidder, None)
        return held is None or self._checked(*held)

    def _on_reply(self, msg: Inbound, p: Propose | Refuse, endpoint: str, now: float) -> None:
        rec = self._tasks.get(p.task_id)
        sender = msg.sender
        # A bid's signature is checked only when the bid is acted on, or (below) when
        # the bid is dropped, so that a forgery is reported as one, not as late.
        if (
            rec is None
            or rec.state is not ReqState.AUCTION
            or p.round != rec.round
            or rec.waiting  # between rounds (waiting for capacity)
        ):
            if self._checked(msg, endpoint):
                early = (
                    rec is not None
                    and p.round == rec.round
                    and rec.spec.strategy == FIRST_IDLE
                    and rec.state is not ReqState.AUCTION
                )
                # After a first_idle award the other bids are expected, not late.
                self._ctx.count("contract.bid_after_first_idle" if early else "contract.late_bid")
            return
        # Two bids from one bidder: if the first is a forgery, this one may be real.
        if sender in rec.unchecked and not self._bid_checked(rec, sender):
            del rec.bids[sender]
        if sender not in rec.invited or sender in rec.bids or sender in rec.refused:
            if self._checked(msg, endpoint):
                self._ctx.count("contract.rejected.unexpected-message")
            return
        accepted = isinstance(p, Propose)
        if isinstance(p, Propose) and self._policy is not None:
            try:
                self._policy.check_offer(msg.certificate, rec.spec.capability)
            except MeshError:
                if not self._checked(msg, endpoint):
                    return
                self._ctx.count("contract.rejected.not-permitted")
                accepted = False
        if isinstance(p, Propose) and accepted:
            recent = self._recent_awards(sender, rec.cfp_at)
            rec.bids[sender] = Bid(
                sender, p.price, p.eta, p.running, p.capacity, p.confidence, recent
            )
            verified = msg.proof is None
            if not verified:
                rec.unchecked[sender] = (msg, endpoint)
            self._ctx.emit(TaskBid(p.task_id, sender, True, p.price, p.load, verified))
            grace = rec.spec.bid_grace
            if grace is not None and len(rec.bids) == 1:
                # The first bid: the others get max(grace, factor x its delay) more.
                close_at = now + max(grace, STRAGGLER_FACTOR * (now - rec.cfp_at))
                if close_at < rec.timer_at:
                    self._set_timer(rec, close_at)
        else:
            reason = p.reason if isinstance(p, Refuse) else "not-permitted"
            rec.refused[sender] = reason
            if isinstance(p, Refuse) and reason == "full" and p.retry_after is not None:
                # (finite and >= 0: the message model refuses anything else)
                wait = min(max(p.retry_after, BUSY_WAIT_MIN), BUSY_WAIT_MAX)
                rec.busy_wait = wait if rec.busy_wait is None else min(rec.busy_wait, wait)
            self._ctx.emit(TaskBid(p.task_id, sender, False))
        transition(REQUESTER_TABLE, rec.state, ReqEvent.PROPOSE if accepted else ReqEvent.REFUSE)
        if len(rec.bids) + len(rec.refused) >= len(rec.invited) or (
            accepted and rec.spec.strategy == FIRST_IDLE and self._idle(rec, sender)
        ):
            self._close_auction(rec, now)

    def _idle(self, rec: RequesterTask, bidder: str) -> bool:
        """``first_idle``: may this bid close the auction now? Nothing can outrank it on
        load (nothing running, no award of ours since the cfp), it is within budget,
        and its signature is good (checked now: a forger answering first must not
        close the auction on a bid that the award would then reject)."""
        b = rec.bids[bidder]
        budget = rec.spec.budget
        if b.running or b.recent or (budget is not None and b.price > budget):
            return False
        if self._bid_checked(rec, bidder):
            return True
        del rec.bids[bidder]  # forged: counted by the check; the auction goes on
        return False

    def _recent_awards(self, node: str, since: float) -> int:
        times = self._recent.get(node)
        if times is None:
            return 0
        n = 0  # times are in award order: count from the newest, stop at the first older
        for t in reversed(times):
            if t < since:
                break
            n += 1
        return n

    def _note_award(self, node: str, now: float) -> None:
        times = self._recent.setdefault(node, deque())
        times.append(now)
        horizon = now - _RECENT_HORIZON
        while times and times[0] < horizon:
            times.popleft()
        if len(self._recent) > 4 * _RECENT_SWEEP and len(times) == 1:
            # Bounded: forget bidders we have not awarded anything within the horizon.
            for gone in [k for k, q in self._recent.items() if not q or q[-1] < horizon]:
                del self._recent[gone]

    def _close_auction(self, rec: RequesterTask, now: float) -> None:
        spec = rec.spec
        # Recount, at close, the awards we made to each bidder since our cfp: auctions
        # that overlap would otherwise all see the same stale load and pick one node.
        # (Bid built directly: dataclasses.replace costs ~10x more, per bid, per round.)
        eligible = [
            Bid(
                b.bidder,
                b.price,
                b.eta,
                b.running,
                b.capacity,
                b.confidence,
                self._recent_awards(b.bidder, rec.cfp_at),
                hashlib.sha256(f"{rec.task_id}|{b.bidder}".encode()).hexdigest(),
            )
            for b in rec.bids.values()
            if spec.budget is None or b.price <= spec.budget
        ]
        ranked = rank(eligible, spec.strategy, self._strategies) if eligible else []
        proposers = [b.bidder for b in ranked]
        # The winner's signature is checked now (its bid was opened with it deferred);
        # a forged winner is rejected and the next bid wins. Backups wait for promotion.
        while proposers and not self._bid_checked(rec, proposers[0]):
            proposers.pop(0)
        if not proposers:
            if self._wait_for_capacity(rec, now):
                return
            refused = ",".join(sorted(set(rec.refused.values()))) or "-"
            rec.attempts.append(
                f"round {rec.round}: no bids ({len(rec.invited)} invited, "
                f"{len(rec.refused)} refused: {refused})"
            )
            if not self._self_award(rec, now):
                self._next_auction_or_fail(rec, "no-bidders", now)
            return
        self._award(rec, proposers, now)

    def _self_award(self, rec: RequesterTask, now: float) -> bool:
        """Local fallback: no other node will take the task, so this node runs it if
        it offers the capability (at a matching version, within the budget, with its
        eta before the deadline) and has not failed it already in this auction; with every slot of its own taken, the
        task waits for one (a busy round). The award goes to its own endpoint. True if
        the round was handled here."""
        me = self._ctx.node_id
        spec = rec.spec
        if not self._local_fallback or me in rec.excluded:
            return False
        offer = self.executor.offer(spec.capability)
        if (
            offer is None
            or (spec.budget is not None and offer.cost > spec.budget)
            or not any(
                c.node_id == me for c in self._candidates.find(spec.capability, spec.version_spec)
            )
        ):
            return False
        if rec.deadline <= now + offer.eta:
            # A bidder refuses a deadline its eta cannot meet (``default_bid``): so do
            # we, and say so once (a lone node's request used to end in a bare timeout).
            note = f"this node's eta ({offer.eta:g} s) does not fit before the deadline"
            if not any(a.endswith(note) for a in rec.attempts):
                rec.attempts.append(f"round {rec.round}: {note}")
            return False
        # Our own tasks awarded to ourselves count from the award on (the executor
        # counts them only once their award frame has come back to us).
        own = sum(
            1
            for r in self._tasks.values()
            if r.holder == me and r.spec.capability == spec.capability and r is not rec
        )
        if max(own, self.executor.running(spec.capability)) >= offer.max_concurrency:
            # Every slot of ours is taken: wait for one, as for peers that say "full".
            if rec.busy_rounds == 0:
                rec.attempts.append(f"round {rec.round}: this node's slots full; waiting")
            backoff = min(offer.eta * 2 ** min(rec.busy_rounds, 16), BUSY_WAIT_MAX)
            delay = max(backoff, BUSY_WAIT_MIN) * self._ctx.rng.uniform(0.5, 1.5)
            self._busy_round(rec, now, delay)
            return True
        self.executor.expect_award(me, rec.task_id, spec.capability)
        self._ctx.count("contract.self_award")
        self._award(rec, [me], now)
        return True

    def _award(self, rec: RequesterTask, proposers: list[str], now: float) -> None:
        """Award the round to ``proposers[0]``; the others are its backups."""
        rec.state = transition(REQUESTER_TABLE, rec.state, ReqEvent.AWARD)
        rec.full = []  # a busy spell is over: later auctions may ask everyone again
        rec.epoch += 1
        rec.holder = proposers[0]
        rec.backups = proposers[1:]
        rec.bids = {}
        rec.refused = {}
        rec.invited = ()
        for bidder in [b for b in rec.unchecked if b not in rec.backups]:
            del rec.unchecked[bidder]  # over budget: never acted on
        # The award goes to the winner only (it names the backups). Losers are not told:
        # nothing is reserved for a bid, and a loser drops the input it cached for the
        # award once its bid expired and the auction closed. Telling them cost n - 1
        # frames per auction, each opened by a node that has nothing to do with it.
        # A task of our own carries its input: there was no cfp to ourselves.
        local = rec.holder == self._ctx.node_id
        self._send("award", rec.award(with_input=local), [rec.holder], now)
        self._note_award(rec.holder, now)
        self._ctx.count("contract.award")
        if rec.pending is not None:
            previous, reason = rec.pending
            rec.pending = None
            self._ctx.emit(
                TaskReassigned(rec.task_id, previous, rec.holder, rec.epoch, reason, True)
            )
        self._ctx.emit(
            TaskAwarded(rec.task_id, rec.holder, rec.epoch, tuple(rec.backups), len(proposers))
        )
        self._set_timer(rec, now + rec.spec.lease)

    def _on_renewal(self, sender: str, p: Started | Progress, now: float) -> None:
        rec = self._tasks.get(p.task_id)
        if rec is None or rec.state is ReqState.AUCTION or sender != rec.holder:
            self._stale_notice(sender, p.task_id, p.epoch, rec, now)
            return
        if p.epoch != rec.epoch:
            self._stale_notice(sender, p.task_id, p.epoch, rec, now)
            return
        event = ReqEvent.STARTED if isinstance(p, Started) else ReqEvent.PROGRESS
        rec.state = transition(REQUESTER_TABLE, rec.state, event)
        if isinstance(p, Started) and rec.spec.semantics == "at-most-once":
            self._send("proceed", Proceed(task_id=rec.task_id, epoch=rec.epoch), [sender], now)
        elif isinstance(p, Progress) and (p.percent is not None or p.message is not None):
            self._ctx.emit(TaskProgress(rec.task_id, sender, rec.epoch, p.percent, p.message))
        self._set_timer(rec, now + rec.spec.lease)

    def _stale_notice(
        self, sender: str, task_id: str, epoch: int, rec: RequesterTask | None, now: float
    ) -> None:
        """A renewal from someone who does not hold the current lease: tell it to stop."""
        self._ctx.count("contract.stale_renewal")
        known = rec if rec is not None else self._done.get(task_id)
        if known is not None and epoch <= known.epoch:
            cancel = Cancel(task_id=task_id, epoch=known.epoch, reason="superseded")
            self._send("cancel", cancel, [sender], now)

    def _on_outcome(self, sender: str, p: Result | Failure, now: float) -> None:
        rec = self._tasks.get(p.task_id)
        if rec is None:
            done = self._done.get(p.task_id)
            if done is None:
                self._ctx.count("contract.rejected.unknown-task")
            elif done.state is ReqState.COMPLETED and (sender, p.epoch) == (
                done.holder,
                done.epoch,
            ):
                self._ctx.count("contract.duplicate_result")
            else:
                self._stale(sender, p, done.epoch)
            return
        if rec.state is ReqState.AUCTION or sender != rec.holder or p.epoch != rec.epoch:
            self._stale(sender, p, rec.epoch)
            return
        if isinstance(p, Result):
            self._finish(rec, ReqEvent.RESULT)
            self._ctx.count("contract.completed")
            self._ctx.emit(
                TaskCompleted(rec.task_id, sender, rec.epoch, p.result, tuple(rec.attempts))
            )
        elif rec.state is ReqState.STARTED and rec.spec.semantics == "at-most-once":
            rec.attempts.append(f"epoch {rec.epoch} {sender}: failure after start: {p.reason}")
            self._give_up(rec, f"failed after start: {p.reason}", now, attempt=False)
        elif p.final:  # the holder says retrying cannot help: no backup, no new auction
            rec.attempts.append(f"epoch {rec.epoch} {sender}: failure (final): {p.reason}")
            rec.holder = ""  # it ended the task itself: nothing to cancel
            self._give_up(rec, f"failed: {p.reason}", now, attempt=False)
        else:
            self._lost_holder(rec, f"failure: {p.reason}", now, notify_old=False)

    def _stale(self, sender: str, p: Result | Failure, current: int) -> None:
        self._ctx.count("contract.stale_result")
        self._ctx.emit(TaskStaleResult(p.task_id, sender, p.epoch, current))

    def _lost_holder(self, rec: RequesterTask, why: str, now: float, *, notify_old: bool) -> None:
        """The holder died, missed its lease or failed: re-award, re-auction or end."""
        old = rec.holder
        rec.attempts.append(f"epoch {rec.epoch} {old}: {why}")
        if old not in rec.excluded:
            rec.excluded.append(old)
        if rec.state is ReqState.STARTED and rec.spec.semantics == "at-most-once":
            if notify_old:
                self._notify_holder(rec, "outcome-unknown", now)
            self._finish(rec, ReqEvent.UNKNOWN)
            self._ctx.count("contract.outcome_unknown")
            self._ctx.emit(TaskOutcomeUnknown(rec.task_id, old, rec.epoch, why))
            return
        while rec.backups and (
            rec.backups[0] in rec.excluded or not self._bid_checked(rec, rec.backups[0])
        ):
            rec.backups.pop(0)
        if not rec.backups:
            if notify_old:
                self._notify_holder(rec, "superseded", now)
            self._next_auction_or_fail(rec, why, now)
            return
        rec.state = transition(REQUESTER_TABLE, rec.state, ReqEvent.REAWARD)
        rec.holder = rec.backups.pop(0)
        rec.epoch += 1
        to = [rec.holder, old] if notify_old else [rec.holder]
        self._send("award", rec.award(with_input=True), to, now)
        self._note_award(rec.holder, now)
        self._ctx.count("contract.reaward")
        self._ctx.emit(TaskReassigned(rec.task_id, old, rec.holder, rec.epoch, why, False))
        self._set_timer(rec, now + rec.spec.lease)

    def _wait_for_capacity(self, rec: RequesterTask, now: float) -> bool:
        """Graceful degradation: a round with no bids in which every answer was "full"
        (with a ``retry_after``) is a busy round, not a failed auction, and does not use up
        ``max_auctions``. While some candidates have not been asked yet, the next round
        asks them at once (leaving out those that said full); once every candidate is
        full, it waits the shortest ``retry_after``, doubled at each further busy round,
        +-50 % jitter (tasks refused together do not come back together), bounded to
        ``BUSY_WAIT_MAX``, then asks everyone again. The deadline bounds it all: under
        overload a task waits for capacity until then instead of failing at once."""
        wait = rec.busy_wait
        rec.busy_wait = None
        # Every answer was "full" (an invitee that did not answer is not counted: it may
        # be down, and then membership will drop it from the next round's invitees).
        if wait is None or not rec.refused or not all(r == "full" for r in rec.refused.values()):
            return False
        if rec.busy_rounds == 0:
            rec.attempts.append(
                f"round {rec.round}: all {len(rec.refused)} bidders full; waiting for capacity"
            )
        rec.full.extend(rec.refused)
        spec = rec.spec
        exclude = {*rec.excluded, *rec.full, self._ctx.node_id}
        untried = any(
            c.alive and c.node_id not in exclude
            for c in self._candidates.find(spec.capability, spec.version_spec)
        )
        if untried:
            delay = 0.0  # ask the candidates not asked yet, now
        else:
            rec.full = []
            backoff = min(wait * 2 ** min(rec.busy_rounds, 16), BUSY_WAIT_MAX)
            delay = backoff * self._ctx.rng.uniform(0.5, 1.5)
        if now + delay >= rec.deadline:
            untried = False
            rec.full = []
        self._busy_round(rec, now, None if untried else delay)
        return True

    def _busy_round(self, rec: RequesterTask, now: float, delay: float | None) -> None:
        """End a round in which everyone (this node too, for a task of its own) was
        full: it is not a failed auction. ``delay`` None: the next round now; else
        after ``delay`` s. A delay that would pass the deadline becomes one last round
        just before it if there is room for one, else a wait until the deadline (a
        timeout, its attempts saying why). Failing the round instead started new
        auctions at once, each answered "full", and the task ended "attempts
        exhausted" seconds before its deadline."""
        if delay is not None and now + delay >= rec.deadline:
            last = rec.deadline - now - rec.spec.reply_timeout
            delay = last if last > 0 else rec.deadline - now
        rec.busy_rounds += 1
        rec.auctions -= 1  # a busy round is not a failed auction
        rec.invited = ()
        rec.bids = {}
        rec.refused = {}
        rec.unchecked = {}
        self._ctx.count("contract.busy_round")
        if delay is None:
            self._start_round(rec, now)
        else:
            rec.waiting = True
            self._set_timer(rec, now + delay)

    def _next_auction_or_fail(self, rec: RequesterTask, why: str, now: float) -> None:
        if rec.auctions >= rec.spec.max_auctions:
            self._give_up(rec, f"attempts exhausted: {why}", now, attempt=False)
            return
        if rec.state is not ReqState.AUCTION:
            rec.pending = (rec.holder, why)
        rec.state = transition(REQUESTER_TABLE, rec.state, ReqEvent.REAUCTION)
        rec.holder = ""
        rec.backups = []
        rec.full = []
        rec.unchecked = {}
        rec.excluded = []  # a new auction gives everyone alive a fresh chance
        self._ctx.count("contract.reauction")
        self._start_round(rec, now)

    def _notify_holder(self, rec: RequesterTask, reason: str, now: float) -> None:
        if rec.state in (ReqState.AWARDED, ReqState.STARTED) and rec.holder:
            # The reason given up with may hold a handler's failure (up to 256 chars).
            cancel = Cancel(task_id=rec.task_id, epoch=rec.epoch, reason=short_reason(reason))
            self._send("cancel", cancel, [rec.holder], now)

    def _give_up(
        self, rec: RequesterTask, reason: str, now: float, *, attempt: bool = True
    ) -> None:
        if attempt:
            where = f"epoch {rec.epoch} {rec.holder}" if rec.holder else f"round {rec.round}"
            rec.attempts.append(f"{where}: {reason}")
        self._notify_holder(rec, reason, now)
        self._finish(rec, ReqEvent.GIVE_UP)
        self._ctx.count("contract.failed")
        self._ctx.emit(TaskFailed(rec.task_id, reason, tuple(rec.attempts)))

    def _finish(self, rec: RequesterTask, event: ReqEvent) -> None:
        rec.state = transition(REQUESTER_TABLE, rec.state, event)
        assert rec.state in REQUESTER_TERMINAL
        del self._tasks[rec.task_id]
        rec.bids, rec.refused, rec.backups, rec.invited, rec.excluded = {}, {}, [], (), []
        rec.unchecked = {}
        self._done[rec.task_id] = rec
        while len(self._done) > _DONE_KEEP:
            self._done.popitem(last=False)
