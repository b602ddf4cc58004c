"""The executor machine: bids on cfps, runs awards, fences by epoch (pure, sans-IO).

* Bids with a pluggable ``BidFunction`` after checking that the requester's
  org may request the capability (``OrgPolicy.check_request``).
* Acts only on the highest epoch it has seen for a task. A duplicate award
  (same epoch) does nothing, so the handler never gets a second ``assigned``.
* At-least-once: ``assigned`` at once, nothing sent: the award itself started
  the lease, and a ``started`` would only renew it a few milliseconds later
  while costing a signature, a verification and a message on the task's
  critical path. At-most-once: ``started`` sent (and repeated with each
  heartbeat) and the handler runs only after the requester's ``proceed`` for
  that epoch.
* While it holds a task, a heartbeat every ``lease / 3`` renews the lease.

Per-task state is one small slotted object while the task is live; afterwards
only its highest epoch stays, in a bounded LRU.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

from pydantic import ValidationError

from protocols.codec import decoded_size
from protocols.contract_net._state import (
    EXECUTOR_TABLE,
    EXECUTOR_TERMINAL,
    ExecEvent,
    ExecState,
    transition,
)
from protocols.contract_net.bidding import BidFunction, BidSituation, Quote, default_bid
from protocols.contract_net.host import ExecutorHost, Inbound, OrgPolicy
from protocols.contract_net.messages import (
    Award,
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
from protocols.contract_net.task import Offer
from protocols.errors import MeshError

__all__ = ["INPUTS_BUDGET", "INPUT_KEEP_MAX", "MIN_BEAT", "OVERBOOK", "ExecutorSide"]

#: Fewest seconds between two heartbeats of one job, whatever its lease.
MIN_BEAT = 0.05
#: Longest a bid's input is kept for its award (an award after that fails with
#: ``input-unavailable`` and the requester re-auctions).
INPUT_KEEP_MAX = 60.0

#: Most memory the inputs kept for awards may take (``codec.decoded_size``): a bid's
#: input is held until its award, and a member's cfp flood of large inputs filled
#: memory up to the count cap (2,048 decoded 200 KB inputs: +400 MB).
INPUTS_BUDGET = 64 << 20
#: Jobs of one capability a node holds at most, as a multiple of its
#: ``max_concurrency``: two auctions may award the same free slot (both saw it free),
#: so a node queues a little past its capacity, and refuses an award beyond this
#: with ``failure`` ``full`` (the requester promotes its next backup).
OVERBOOK = 2

_EPOCHS_KEEP = 8192
_INPUTS_KEEP = 2048
#: Bids remembered (requester, task id, capability): an award is accepted only for a
#: task this node bid on. Small entries, kept long after the input (a backup may be
#: promoted, with the input in its award, long after it bid).
_BIDS_KEEP = 16384


class _Job:
    __slots__ = ("capability", "epoch", "lease", "next_beat", "queued", "requester", "state")

    def __init__(
        self, requester: str, capability: str, epoch: int, state: ExecState, lease: float
    ) -> None:
        self.requester = requester
        self.capability = capability
        self.epoch = epoch
        self.state = state
        self.lease = lease
        self.queued = True
        self.next_beat = 0.0


class ExecutorSide:
    """All tasks this node bids on or executes."""

    def __init__(
        self,
        host: ExecutorHost,
        offers: Sequence[Offer],
        *,
        policy: OrgPolicy | None = None,
        bid: BidFunction = default_bid,
    ) -> None:
        self._host = host
        self._offers = {o.capability: o for o in offers}
        self._capacity = sum(o.max_concurrency for o in self._offers.values())
        self._policy = policy
        self._bid = bid
        #: False once the node is leaving: every new cfp is refused ("leaving").
        self.accepting = True
        self._jobs: dict[str, _Job] = {}
        #: (requester, task id) -> highest epoch seen from that requester. Keyed by the
        #: requester too: another member's cancel or award for the same task id must not
        #: fence the real requester's award (a rival bidder did that with one cancel).
        self._epochs: OrderedDict[tuple[str, str], int] = OrderedDict()
        #: (requester, task id) -> (input, kept until, its decoded size)
        self._inputs: OrderedDict[tuple[str, str], tuple[Any, float, int]] = OrderedDict()
        self._inputs_size = 0
        #: (requester, task id) -> the capability this node bid for
        self._bids: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._running: dict[str, int] = {}
        self._pending_input: dict[
            str, tuple[Any, float, str]
        ] = {}  # claiming: input, deadline, risk
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0

    # --- inspection ------------------------------------------------------------

    def running(self, capability: str) -> int:
        return self._running.get(capability, 0)

    def load(self) -> float:
        """Held tasks over total declared concurrency (what gossip publishes)."""
        total = self._capacity  # the offers are fixed; the core asks after every frame
        running = self._running
        return 0.0 if total == 0 or not running else sum(running.values()) / total

    def offer(self, capability: str) -> Offer | None:
        """What this node offers of ``capability`` (None: not offered)."""
        return self._offers.get(capability)

    def expect_award(self, requester: str, task_id: str, capability: str) -> None:
        """Accept an award for this task as if this node had bid on it (its own task,
        awarded to itself: there is no cfp to itself)."""
        self._remember(self._bids, (requester, task_id), capability, _BIDS_KEEP)

    def job_state(self, task_id: str) -> ExecState | None:
        job = self._jobs.get(task_id)
        return None if job is None else job.state

    def highest_epoch(self, task_id: str, requester: str | None = None) -> int:
        if requester is not None:
            return self._epochs.get((requester, task_id), 0)
        return max((e for (_, t), e in self._epochs.items() if t == task_id), default=0)

    # --- messages --------------------------------------------------------------

    def on_message(self, msg: Inbound, now: float) -> None:
        p = msg.payload
        if isinstance(p, Cfp):
            self._on_cfp(msg, p, now)
        elif isinstance(p, Award):
            self._on_award(msg.sender, p, now)
        elif isinstance(p, Proceed):
            self._on_proceed(msg.sender, p, now)
        elif isinstance(p, Cancel):
            self._on_cancel(msg.sender, p)
        else:
            self._host.count("contract.rejected.unexpected-message")

    def _on_cfp(self, msg: Inbound, cfp: Cfp, now: float) -> None:
        host = self._host
        if now > cfp.reply_by:
            host.count("contract.late_cfp")
            return
        offer = self._offers.get(cfp.capability)
        reason = "not-offered" if offer is None else self._forbidden(msg, cfp.capability)
        if not self.accepting:
            reason = "leaving"
        if offer is None or reason:
            refuse = Refuse(task_id=cfp.task_id, round=cfp.round, reason=reason)
            host.send("refuse", refuse, [msg.sender], now)
            return
        running = self.running(cfp.capability)
        queued = sum(
            1 for j in self._jobs.values() if j.queued and j.capability == offer.capability
        )
        decision = self._bid(BidSituation(cfp, offer, running, queued, now))
        if isinstance(decision, Quote):
            valid_until = now + decision.valid_for
            try:
                reply: Propose | Refuse = Propose(
                    task_id=cfp.task_id,
                    round=cfp.round,
                    price=decision.price,
                    eta=decision.eta,
                    load=running / offer.max_concurrency,
                    running=running,
                    capacity=offer.max_concurrency,
                    confidence=decision.confidence,
                    valid_until=valid_until,
                )
            except ValidationError:
                # A bid function's quote (a negative or NaN price, a confidence
                # above 1): no bid, and the requester is told at once.
                host.count("contract.invalid_bid")
                refuse = Refuse(task_id=cfp.task_id, round=cfp.round, reason="invalid-bid")
                host.send("refuse", refuse, [msg.sender], now)
                return
            # kept for the award until the bid expires, and at least until the auction
            # closes (an award comes at the latest at reply-by), but never longer than
            # INPUT_KEEP_MAX: reply-by is the requester's to choose, and a far one kept
            # every input of a cfp flood until the table's count cap (~400 MB).
            keep = min(max(valid_until, cfp.reply_by), now + INPUT_KEEP_MAX)
            key = (msg.sender, cfp.task_id)
            self._cache_input(key, cfp.input, keep, now)
            self._remember(self._bids, key, cfp.capability, _BIDS_KEEP)
            host.send("propose", reply, [msg.sender], now)
        else:
            retry = decision.retry_after
            reply = Refuse(
                task_id=cfp.task_id,
                round=cfp.round,
                reason=short_reason(decision.reason),
                retry_after=retry if retry is None or 0 <= retry < float("inf") else None,
            )
            host.send("refuse", reply, [msg.sender], now)

    def _forbidden(self, msg: Inbound, capability: str) -> str:
        """``"not-permitted"`` if the requester's org may not request ``capability``."""
        if self._policy is None:
            return ""
        try:
            self._policy.check_request(msg.certificate, capability)
        except MeshError:
            self._host.count("contract.rejected.not-permitted")
            return "not-permitted"
        return ""

    def _on_award(self, sender: str, a: Award, now: float) -> None:
        host = self._host
        job = self._jobs.get(a.task_id)
        if job is not None and job.requester != sender:
            # Another requester's job holds this id (a member that learned the id can
            # squat it): say so, so that this requester moves on now, not a lease later.
            host.count("contract.rejected.unexpected-message")
            if a.winner == host.node_id:
                reply = Failure(task_id=a.task_id, epoch=a.epoch, reason="task-id-in-use")
                host.send("failure", reply, [sender], now)
            return
        key = (sender, a.task_id)
        seen = self._epochs.get(key, 0)
        if a.epoch <= seen:
            host.count("contract.duplicate_award" if a.epoch == seen else "contract.stale_award")
            return
        self._remember(self._epochs, key, a.epoch, _EPOCHS_KEEP)
        me = host.node_id
        if a.winner != me:
            self._drop_input(key)
            if job is not None:
                self._end(a.task_id, job, ExecEvent.SUPERSEDED)
                host.cancelled(a.task_id, a.epoch, "superseded")
            return
        if job is not None:
            job.state = transition(EXECUTOR_TABLE, job.state, ExecEvent.REAWARDED)
            job.epoch = a.epoch
            job.lease = a.lease
            self._beat(a.task_id, job, now)
            return
        self._accept(sender, a, now)

    def _accept(self, sender: str, a: Award, now: float) -> None:
        host = self._host
        key = (sender, a.task_id)
        cached = self._drop_input(key)
        offer = self._offers.get(a.capability)
        refusal = ""
        if self._bids.get(key) != a.capability or offer is None:
            # Never bid on (or for another capability): a member's awards are not
            # work orders. 3,000 unsolicited awards with inputs became 3,000 jobs.
            host.count("contract.rejected.unsolicited-award")
            refusal = "not-bid"
        elif self.running(a.capability) >= OVERBOOK * offer.max_concurrency:
            host.count("contract.overbooked")
            refusal = "full"
        elif a.has_input:
            data: Any = a.input
        elif cached is not None:
            data = cached[0]
        else:
            host.count("contract.input_unavailable")
            refusal = "input-unavailable"
        if refusal:
            reply = Failure(task_id=a.task_id, epoch=a.epoch, reason=refusal)
            host.send("failure", reply, [sender], now)
            return
        amo = a.semantics == "at-most-once"
        state = ExecState.CLAIMING if amo else ExecState.RUNNING
        job = _Job(sender, a.capability, a.epoch, state, a.lease)
        self._jobs[a.task_id] = job
        self._running[a.capability] = self._running.get(a.capability, 0) + 1
        if amo:
            self._pending_input[a.task_id] = (data, a.deadline, a.risk)
        self._schedule(a.task_id, job, now)
        if amo:
            host.send("started", Started(task_id=a.task_id, epoch=a.epoch), [sender], now)
        else:
            host.assigned(
                a.task_id, sender, a.capability, data, a.epoch, a.deadline, a.semantics, a.risk
            )

    def _on_proceed(self, sender: str, p: Proceed, now: float) -> None:
        job = self._jobs.get(p.task_id)
        if job is None or job.requester != sender or p.epoch != job.epoch:
            self._host.count("contract.stale_proceed")
            return
        was = job.state
        job.state = transition(EXECUTOR_TABLE, job.state, ExecEvent.PROCEED)
        if was is ExecState.CLAIMING:
            data, deadline, risk = self._pending_input.pop(p.task_id)
            self._host.assigned(
                p.task_id, sender, job.capability, data, job.epoch, deadline, "at-most-once", risk
            )

    def _on_cancel(self, sender: str, c: Cancel) -> None:
        job = self._jobs.get(c.task_id)
        key = (sender, c.task_id)
        if c.epoch > self._epochs.get(key, 0):
            self._remember(self._epochs, key, c.epoch, _EPOCHS_KEEP)
        if job is None or job.requester != sender or c.epoch < job.epoch:
            self._host.count("contract.stale_cancel")
            return
        self._end(c.task_id, job, ExecEvent.CANCEL)
        self._host.cancelled(c.task_id, job.epoch, c.reason)

    # --- local commands (the shell's handler) ------------------------------------

    def report_progress(
        self, task_id: str, now: float, percent: float | None, message: str | None
    ) -> bool:
        job = self._live(task_id)
        if job is None:
            return False
        # Built first: a bad percent raises before the job's state has moved.
        msg = Progress(task_id=task_id, epoch=job.epoch, percent=percent, message=message)
        job.state = transition(EXECUTOR_TABLE, job.state, ExecEvent.PROGRESS)
        job.queued = False
        self._host.send("progress", msg, [job.requester], now)
        self._schedule(task_id, job, now)
        return True

    def complete(self, task_id: str, result: Any, now: float) -> bool:
        """Send the result; ``False`` if the task is no longer ours (cancelled), or if
        the result cannot be encoded (the task then fails with that reason)."""
        job = self._live(task_id)
        if job is None:
            return False
        reply = Result(task_id=task_id, epoch=job.epoch, result=result)
        try:
            self._host.send("result", reply, [job.requester], now)
        except (TypeError, ValueError, OverflowError) as exc:
            # msgpack cannot carry it (a set, an object, an int over 64 bits): the
            # task fails now, rather than the requester waiting out the lease.
            self._host.count("contract.unsendable_result")
            self.fail(task_id, f"result cannot be encoded: {exc}", now, final=True)
            return False
        self._end(task_id, job, ExecEvent.COMPLETE)
        return True

    def fail(self, task_id: str, reason: str, now: float, *, final: bool = False) -> bool:
        job = self._live(task_id)
        if job is None:
            return False
        self._end(task_id, job, ExecEvent.FAIL)
        reply = Failure(task_id=task_id, epoch=job.epoch, reason=reason[:256], final=final)
        self._host.send("failure", reply, [job.requester], now)
        return True

    def _live(self, task_id: str) -> _Job | None:
        job = self._jobs.get(task_id)
        if job is None:
            self._host.count("contract.late_local_report")
        return job

    def _end(self, task_id: str, job: _Job, event: ExecEvent) -> None:
        job.state = transition(EXECUTOR_TABLE, job.state, event)
        assert job.state in EXECUTOR_TERMINAL
        del self._jobs[task_id]
        self._pending_input.pop(task_id, None)
        left = self._running[job.capability] - 1
        if left:
            self._running[job.capability] = left
        else:
            del self._running[job.capability]

    # --- heartbeats ---------------------------------------------------------------

    def _schedule(self, task_id: str, job: _Job, now: float) -> None:
        # Floored: an award's lease is the requester's to choose, and lease / 3 of a
        # tiny lease added to a unix time rounds back to now; the timer loop then
        # beat without end (one award with lease=1e-7 hung a node, signing forever).
        job.next_beat = now + max(job.lease / 3.0, MIN_BEAT)
        self._seq += 1
        heapq.heappush(self._heap, (job.next_beat, self._seq, task_id))

    def _beat(self, task_id: str, job: _Job, now: float) -> None:
        if job.state is ExecState.CLAIMING:
            payload: Started | Progress = Started(task_id=task_id, epoch=job.epoch)
            kind = "started"
        else:
            payload, kind = Progress(task_id=task_id, epoch=job.epoch), "progress"
        self._host.send(kind, payload, [job.requester], now)
        self._schedule(task_id, job, now)

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap:
            when, _, task_id = heap[0]
            job = self._jobs.get(task_id)
            if job is not None and job.next_beat == when:
                return when
            heapq.heappop(heap)
        return None

    def handle_timer(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            when, _, task_id = heapq.heappop(self._heap)
            job = self._jobs.get(task_id)
            if job is not None and job.next_beat == when:
                self._beat(task_id, job, now)

    def _cache_input(self, key: tuple[str, str], data: Any, keep: float, now: float) -> None:
        """Keep a bid's input for its award until the bid expires. Losers are not told
        they lost: expired entries leave (oldest first) as new ones come, and the
        table never holds more than ``_INPUTS_KEEP`` entries nor ``INPUTS_BUDGET``
        bytes (the oldest go first; an award that finds none fails
        ``input-unavailable`` and its requester moves on)."""
        inputs = self._inputs
        while inputs and next(iter(inputs.values()))[1] < now:
            self._drop_input(next(iter(inputs)))
        self._drop_input(key)
        size = decoded_size(data, INPUTS_BUDGET)
        while inputs and (len(inputs) >= _INPUTS_KEEP or self._inputs_size + size > INPUTS_BUDGET):
            self._drop_input(next(iter(inputs)))
        if size <= INPUTS_BUDGET:
            inputs[key] = (data, keep, size)
            self._inputs_size += size

    def _drop_input(self, key: tuple[str, str]) -> tuple[Any, float, int] | None:
        entry = self._inputs.pop(key, None)
        if entry is not None:
            self._inputs_size -= entry[2]
        return entry

    @staticmethod
    def _remember(table: OrderedDict[Any, Any], key: Hashable, value: Any, keep: int) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > keep:
            table.popitem(last=False)
