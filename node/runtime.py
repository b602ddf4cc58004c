"""The asyncio loop around one sans-IO ``MeshNodeCore``.

The shell owns the real clock (``time.time()``: the core needs unix seconds
for envelope expiry), OS entropy (the core's ``random.Random`` is seeded from
``os.urandom``), the ZeroMQ transport and the task handlers. It runs the loop
of ``mesh/ports.py``: feed inbound frames, send what the core queued, react to
its events, sleep until its timer. After every input, ``_pump`` runs once; it
is never re-entered (inputs that arrive while pumping mark it dirty).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mesh.events import (
    CapabilitiesChanged,
    Event,
    PeerAlive,
    PeerDead,
    PeerJoined,
    PeerLeft,
    PeerSuspected,
    TaskAssigned,
    TaskAwarded,
    TaskBid,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskOutcomeUnknown,
    TaskProgress,
    TaskReassigned,
    TaskRunEnded,
)
from node.handlers import Handler, HandlerFailed, Task
from node.supervision import WAITING_FOR_APPROVAL, Approver
from node.transport import TransportLimits, ZmqTransport
from protocols.codec import MAX_DEPTH, MAX_FRAME, packb, unpack_payload
from protocols.contract_net.messages import short_reason
from protocols.errors import ContractNetError, LocalProtocolError, MeshError, first_line

__all__ = ["CoreLike", "Result", "Runtime"]

log = logging.getLogger("parley.node")
_MAX_TASK_VIEWS = 1000
_EVENT_QUEUE = 10_000
#: Why a task waiting for approval stops waiting when its node stops.
STOPPING = "node stopping"
#: ... when its requester cancels it, or awards it anew (a newer epoch).
CANCELLED = "cancelled by its requester"
SUPERSEDED = "superseded by a newer award"
#: The state of the view of a task run here that went back to its requester unfinished
#: because this node stopped (its ``reason`` says at which point).
HANDED_BACK = "handed-back"
#: Bytes of a frame left for the envelope and payload fields around a result or an
#: input (header, certificate, signature, the cfp's other fields: well under 2 KiB).
_ENVELOPE_ROOM = 4096
#: Seconds between two logs of internal errors (each one is counted).
_CORE_ERROR_LOG_EVERY = 60.0


class CoreLike(Protocol):
    """The surface of ``mesh.core.MeshNodeCore`` the shell uses (docs/CONTRACTS.md)."""

    def receive(self, frame: bytes, endpoint: str, now: float) -> None: ...
    def frames_to_send(self, now: float) -> list[tuple[str, bytes]]: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...
    def next_event(self) -> Event | None: ...
    def join(self, seeds: Sequence[str], now: float) -> None: ...
    def leave(self, now: float) -> None: ...
    def submit(self, task: Any, now: float) -> str: ...
    def complete(self, task_id: str, result: Any, now: float) -> object: ...
    def fail(self, task_id: str, reason: str, now: float, *, final: bool = False) -> object: ...
    def statistics(self) -> dict[str, int]: ...


@dataclass(frozen=True, slots=True)
class Result:
    """The committed result of a request."""

    value: Any
    executor: str
    task_id: str
    attempts: tuple[str, ...]
    timings: dict[str, float]


@dataclass(slots=True)
class TaskView:
    task_id: str
    capability: str
    role: str  # "requester" or "executor"
    state: str
    started: float
    winner: str = ""
    epoch: int = 0
    bids: int = 0
    refusals: int = 0
    awarded_at: float | None = None
    finished_at: float | None = None
    reason: str = ""
    strategy: str = ""
    risk: str = "low"
    #: the executor's last progress report (``task.progress``): percent and message
    progress: float | None = None
    progress_message: str = ""
    #: the decision summary: one line per award, re-award and outcome, in order
    decisions: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__slots__}
        out["decisions"] = list(self.decisions)
        return out


@dataclass(slots=True)
class PeerView:
    node_id: str
    endpoint: str
    org: str
    state: str = "alive"
    since: float = field(default_factory=time.time)

    def as_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def _run_key(task_id: str) -> str:
    """Where the view of a task run here is kept: apart from the view of the same
    task requested here (a task a node runs itself has both; the executor's view
    used to replace the requester's, and with it the award decisions)."""
    return f"{task_id}\x00run"


def as_json(value: Any) -> Any:
    """A decoded payload value as JSON-shaped Python: arrays as lists. The strict
    decoder gives tuples (immutable, hashable: what the protocol code wants); a
    handler's input or a request's result is the user's JSON, whose arrays are
    lists (``task.input["items"].append(x)`` raised AttributeError)."""
    t = type(value)
    if t is tuple or t is list:
        return [as_json(v) for v in value]
    if t is dict:
        return {k: as_json(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, slots=True)
class _Closed(Event):
    """Put in every event subscriber's queue when the node stops (not a core event)."""


CLOSED = _Closed()


class Runtime:
    """Drives a core on the running asyncio loop."""

    def __init__(
        self,
        core_factory: Callable[[str], CoreLike],
        *,
        listen: str = "tcp://127.0.0.1:*",
        advertise: str | None = None,
        limits: TransportLimits | None = None,
        handlers: dict[str, Handler] | None = None,
        concurrency: dict[str, int] | None = None,
        approvers: dict[str, Approver] | None = None,
        listeners: list[Callable[[Event], None]] | None = None,
    ) -> None:
        self.transport = ZmqTransport(listen, self._on_frames, limits=limits, advertised=advertise)
        self.endpoint = self.transport.endpoint
        try:
            self.core = core_factory(self.endpoint)
        except BaseException:
            self.transport.close()
            raise
        self.handlers: dict[str, Handler] = dict(handlers or {})
        #: handlers running at once per capability, at most its ``max_concurrency``:
        #: overlapping auctions can award more (bids reserve nothing); the extra tasks
        #: wait here, their leases renewed by the core's heartbeats, within their deadline
        self._slots = {name: asyncio.Semaphore(n) for name, n in (concurrency or {}).items()}
        #: capability -> who must say yes before its handler runs (node.supervision)
        self._approvers: dict[str, Approver] = dict(approvers or {})
        self.peers: dict[str, PeerView] = {}
        self.tasks: OrderedDict[str, TaskView] = OrderedDict()
        self.running: dict[str, asyncio.Task[None]] = {}
        #: the Task each running handler was given (its ``cancelled`` event is set
        #: before the handler's asyncio task is cancelled)
        self._given: dict[str, Task] = {}
        #: Tasks whose handler has started (past its approval and its slot).
        self._started: set[str] = set()
        self._waiters: dict[str, asyncio.Future[Result]] = {}
        #: a move to a new auction, told in the line of the award that follows it
        self._moving: dict[str, str] = {}
        self._subscribers: list[asyncio.Queue[Event]] = []
        self._stopping: asyncio.Future[dict[str, int]] | None = None
        #: called with every event as it happens, in order, none dropped (audit logs)
        self._listeners: list[Callable[[Event], None]] = list(listeners or [])
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pumping = False
        self._dirty = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._joined: dict[str, float] = {}
        self.accepting = True
        self.closed = False
        self.counters: dict[str, int] = {
            "runtime.handler_errors": 0,
            "runtime.pump": 0,
            "runtime.core_errors": 0,
        }
        self._core_error_logged = -_CORE_ERROR_LOG_EVERY  # monotonic time of the last log

    # -- lifecycle ---------------------------------------------------------

    def start(self, seeds: Sequence[str] = ()) -> None:
        self._loop = asyncio.get_running_loop()
        self.transport.start(self._loop)
        if seeds:
            self.core.join(list(seeds), time.time())
        self._pump()

    def add_candidate(self, endpoint: str, *, min_interval: float = 5.0) -> None:
        """A join candidate from discovery (or the user); re-knocks at most every few s."""
        now = time.time()
        if endpoint == self.endpoint or self.closed:
            return
        if now - self._joined.get(endpoint, -1e9) < min_interval:
            return
        self._joined[endpoint] = now
        self.core.join([endpoint], now)
        self._pump()

    async def stop(self, grace: float = 5.0) -> dict[str, int]:
        """Stop bidding, finish (or hand back) in-flight work, announce leave, close.
        A second call waits for the first (two concurrent calls used to count the same
        task twice, once finished and once handed back)."""
        if self._stopping is None:
            if self.closed:
                return {"finished": 0, "handed_back": 0}
            self._stopping = asyncio.ensure_future(self._stop(grace))
        return dict(await asyncio.shield(self._stopping))

    async def _stop(self, grace: float) -> dict[str, int]:
        self.accepting = False
        stop_bidding = getattr(self.core, "stop_bidding", None)
        if callable(stop_bidding):
            stop_bidding(time.time())
            self._pump()
        finished = handed_back = 0
        # Work not started yet (waiting for a person's approval or for a slot) goes
        # back at once: a task approved during the grace period used to be refused
        # by its slot check while the approval said it would run.
        for task_id in [k for k in self.running if k not in self._started]:
            view = self.tasks.get(_run_key(task_id))
            waited = (
                "undecided (it waited for a person's approval)"
                if view is not None and view.state == "awaiting-approval"
                else "before its handler started"
            )
            self._hand_back(task_id, waited, STOPPING)
            handed_back += 1
        pending = list(self.running.values())
        if pending:
            before = handed_back
            _done, not_done = await asyncio.wait(pending, timeout=grace)
            for task_id in [k for k, v in self.running.items() if v in not_done]:
                self._hand_back(task_id, f"unfinished after the {grace:.3g} s grace period")
                handed_back += 1
            finished = len(pending) - (handed_back - before)
            self._pump()
        # Our requests still in flight end here, and in the mesh: their holders are
        # told (cancel) instead of running on for a requester that is gone.
        live = [task_id for task_id, fut in self._waiters.items() if not fut.done()]
        for task_id in live:
            self._waiters[task_id].set_exception(ContractNetError("node stopped", code="cancelled"))
            self.cancel(task_id)
        self.core.leave(time.time())
        self._pump()
        self.closed = True
        self.peers.clear()
        for q in self._subscribers:  # every events() iterator ends
            if q.full():
                q.get_nowait()
            q.put_nowait(CLOSED)
        if self._timer is not None:
            self._timer.cancel()
        self.transport.flush_and_close(linger_ms=300)
        return {"finished": finished, "handed_back": handed_back}

    def _hand_back(self, task_id: str, why: str, cancel_why: str | None = None) -> None:
        """Stop a task run here and give it back to its requester as this node stops;
        its view says so (it read "running" or "awaiting-approval" for good), and so
        does a ``TaskRunEnded`` (an audit log had no end line for it)."""
        task = self._given.get(task_id)
        self._stop_handler(task_id, cancel_why)
        now = time.time()
        reason = f"{STOPPING}: handed back {why}"
        view = self.tasks.get(_run_key(task_id))
        if view is not None:
            view.state, view.finished_at, view.reason = HANDED_BACK, now, reason
        self.core.fail(task_id, "executor shutting down", now)
        if task is not None:
            self._run_ended(task, False, reason, final=False)

    def abort(self) -> None:
        """Vanish without a word (demos and tests of crash recovery): no leave, no
        hand-back; in-flight handlers are cancelled and the sockets closed at once."""
        if self.closed:
            return
        self.closed = True
        self.accepting = False
        for task_id in list(self.running):
            self._stop_handler(task_id)
        self.running.clear()
        if self._timer is not None:
            self._timer.cancel()
        self.transport.close()

    # -- inputs ------------------------------------------------------------

    def _on_frames(self, batch: list[tuple[str, bytes]]) -> None:
        now = time.time()
        receive = self.core.receive
        for endpoint, frame in batch:
            try:
                receive(frame, endpoint, now)
            except Exception as exc:  # a core bug costs one frame, never the batch
                self._core_error("a frame", exc)
        self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self.closed:
            return
        try:
            self.core.handle_timer(time.time())
        except Exception as exc:  # the next timer and frames still run
            self._core_error("a timer", exc)
        self.transport.poke()
        self._pump()

    def _core_error(self, what: str, exc: Exception) -> None:
        """The core raised on bad input it should have refused (a bug): count it, log
        it with its traceback at most once a minute, and go on serving."""
        self.counters["runtime.core_errors"] += 1
        at = time.monotonic()
        if at - self._core_error_logged >= _CORE_ERROR_LOG_EVERY:
            self._core_error_logged = at
            log.error(
                "internal error on %s (%s: %s); the node goes on, counted as "
                "runtime.core_errors (%d so far)",
                what,
                type(exc).__name__,
                first_line(exc, default=""),
                self.counters["runtime.core_errors"],
                exc_info=exc,
            )

    def submit(self, spec: Any) -> tuple[str, asyncio.Future[Result]]:
        if self.closed:
            raise LocalProtocolError("node is stopped", code="closed")
        ok, why = self._sendable(spec.input, "input")
        if not ok:  # no cfp could carry it: say so now, not "no bids" three auctions later
            raise LocalProtocolError(why, code="bad-input")
        now = time.time()
        task_id = self.core.submit(spec, now)
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiters[task_id] = fut
        view = TaskView(task_id, spec.capability, "requester", "bidding", now)
        view.strategy, view.risk = str(spec.strategy), str(spec.risk)
        self._remember(view)
        self._pump()
        return task_id, fut

    def trust_changed(self) -> list[str]:
        """The trust store changed in place: the members' offers are checked again
        (the ids of those whose offers changed)."""
        changed = getattr(self.core, "trust_changed", None)
        if not callable(changed) or self.closed:
            return []
        ids: list[str] = changed(time.time())
        self._pump()
        return ids

    def spread_revocations(self) -> None:
        """Hand the trust store's revocation lists on to a few live members (gossip)."""
        gossip = getattr(self.core, "gossip", None)
        if gossip is not None and not self.closed:
            gossip.spread_revocations(time.time())
            self._pump()

    def replace_certificate(self, certificate: bytes) -> None:
        """Seal with a renewed certificate from now on and republish our record under it."""
        replace = getattr(self.core, "replace_certificate", None)
        if not callable(replace):
            raise LocalProtocolError("this node's core cannot change its certificate")
        if not self.closed:
            replace(certificate, time.time())
            self._pump()

    def cancel(self, task_id: str) -> bool:
        """Cancel one of our requests that is still live; False if it already ended."""
        cancel = getattr(self.core, "cancel", None)
        if self.closed or not callable(cancel):
            return False
        try:
            cancel(task_id, time.time())
        except LocalProtocolError:
            return False  # ended (or never ours)
        self._pump()
        return True

    # -- the pump ----------------------------------------------------------

    def _pump(self) -> None:
        if self._pumping:
            self._dirty = True
            return
        self._pumping = True
        try:
            for _ in range(100):  # bounded: events may queue more frames
                self._dirty = False
                self.counters["runtime.pump"] += 1
                now = time.time()
                for endpoint, frame in self.core.frames_to_send(now):
                    self.transport.send(endpoint, frame)
                while (ev := self.core.next_event()) is not None:
                    self._dispatch(ev)
                if not self._dirty:
                    break
            self._arm_timer()
        finally:
            self._pumping = False

    def _arm_timer(self) -> None:
        if self.closed or self._loop is None:
            return
        at = self.core.get_timer()
        if at is None or at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_later(max(0.0, at - time.time()), self._on_timer)

    # -- events ------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[Event]:
        q: asyncio.Queue[Event] = asyncio.Queue(_EVENT_QUEUE)
        self._subscribers.append(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Event]) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(q)

    def _dispatch(self, ev: Event) -> None:
        for listener in self._listeners:
            try:
                listener(ev)
            except Exception as exc:  # a listener bug must not stop the node
                log.error("event listener failed on %s: %s", type(ev).__name__, exc)
        for q in self._subscribers:
            if q.full():
                q.get_nowait()  # drop the oldest: a slow reader never stalls the node
            q.put_nowait(ev)
        handler = _HANDLERS.get(type(ev))
        if handler is not None:
            handler(self, ev)

    def _remember(self, view: TaskView) -> None:
        key = view.task_id if view.role == "requester" else _run_key(view.task_id)
        self.tasks[key] = view
        self.tasks.move_to_end(key)
        while len(self.tasks) > _MAX_TASK_VIEWS:
            self.tasks.popitem(last=False)

    def _on_peer(self, ev: Event) -> None:
        if isinstance(ev, PeerJoined):
            self.peers[ev.node_id] = PeerView(ev.node_id, ev.endpoint, ev.org)
            return
        node_id: str = ev.node_id  # type: ignore[attr-defined]
        peer = self.peers.get(node_id)
        if peer is None and isinstance(ev, PeerAlive | PeerSuspected):
            # A peer we dropped (dead or left) is back: a restart with the same key
            # comes as PeerAlive at a higher incarnation, not as PeerJoined.
            peer = self._peer_view(node_id)
            if peer is not None:
                self.peers[node_id] = peer
        if peer is None:
            return
        state = {PeerSuspected: "suspect", PeerAlive: "alive", PeerDead: "dead", PeerLeft: "left"}
        peer.state = state[type(ev)]
        peer.since = time.time()
        if isinstance(ev, PeerDead | PeerLeft):
            self.transport.forget(peer.endpoint)
            self.peers.pop(node_id, None)

    def _on_record(self, ev: CapabilitiesChanged) -> None:
        """A peer's new record may name a new endpoint (it restarted elsewhere)."""
        peer = self.peers.get(ev.node_id)
        if peer is None:
            return
        now = self._peer_view(ev.node_id)
        if now is not None and now.endpoint != peer.endpoint:
            self.transport.forget(peer.endpoint)
            peer.endpoint = now.endpoint

    def _peer_view(self, node_id: str) -> PeerView | None:
        """A view of a member from the core's member table (None if unknown there)."""
        members = getattr(self.core, "members", None)
        member = members.get(node_id) if members is not None else None
        if member is None:
            return None
        return PeerView(node_id, member.info.endpoint, member.info.org)

    def _on_bid(self, ev: TaskBid) -> None:
        view = self.tasks.get(ev.task_id)
        if view is not None:
            if ev.accepted:
                view.bids += 1
            else:
                view.refusals += 1

    def _on_progress(self, ev: TaskProgress) -> None:
        view = self.tasks.get(ev.task_id)
        if view is not None and view.winner == ev.executor:
            if ev.percent is not None:
                view.progress = ev.percent
            if ev.message is not None:
                view.progress_message = ev.message

    def _on_award(self, ev: TaskAwarded | TaskReassigned) -> None:
        view = self.tasks.get(ev.task_id)
        if view is not None:
            if view.winner != ev.winner:  # another executor: its progress is not ours
                view.progress, view.progress_message = None, ""
            view.state = "awarded"
            view.winner = ev.winner
            view.epoch = ev.epoch
            view.awarded_at = view.awarded_at or time.time()
            if isinstance(ev, TaskAwarded):
                backups = ", ".join(b[:12] for b in ev.backups) or "none"
                # A new auction's award comes right after its TaskReassigned: one line
                # for both (it read as two moves, the second an award of the same epoch).
                moved = self._moving.pop(ev.task_id, None)
                what = f"{moved}: awarded" if moved else f"awarded to {ev.winner[:12]}"
                view.decisions.append(
                    f"epoch {ev.epoch}: {what} by {view.strategy or '?'}"
                    f" among {ev.bidders} bid(s), {view.refusals} refusal(s) so far;"
                    f" backups {backups}"
                )
            else:
                how = "a new auction" if ev.new_auction else "its backup"
                moved = f"moved from {ev.previous[:12]} to {ev.winner[:12]} ({ev.reason}; {how})"
                if ev.new_auction:
                    self._moving[ev.task_id] = moved
                else:
                    view.decisions.append(f"epoch {ev.epoch}: {moved}")

    def _on_outcome(self, ev: TaskCompleted | TaskFailed | TaskOutcomeUnknown) -> None:
        view = self.tasks.get(ev.task_id)
        now = time.time()
        if view is not None:
            view.finished_at = now
        fut = self._waiters.pop(ev.task_id, None)
        if view is not None:
            if isinstance(ev, TaskCompleted):
                took = f" after {now - view.started:.2f} s"
                view.decisions.append(f"completed by {ev.executor[:12]}{took}")
            elif isinstance(ev, TaskFailed):
                view.decisions.append(f"failed: {ev.reason}")
            else:
                view.decisions.append(f"outcome unknown: {ev.reason}")
        if isinstance(ev, TaskCompleted):
            if view is not None:
                view.state, view.winner = "completed", ev.executor
            if fut is not None and not fut.done():
                timings = {"total_s": now - view.started} if view is not None else {}
                if view is not None and view.awarded_at is not None:
                    timings["award_s"] = view.awarded_at - view.started
                fut.set_result(
                    Result(as_json(ev.result), ev.executor, ev.task_id, tuple(ev.attempts), timings)
                )
            return
        reason = ev.reason
        if isinstance(ev, TaskFailed):
            code = _failure_code(ev.reason)
            if view is not None and _nobody_invited(ev.attempts):
                reason = f"{reason}: {self._no_bidder_hint(view.capability, ev.attempts)}"
            elif "no-bidders" in reason and (hint := _refusal_hint(ev.attempts)):
                reason = f"{reason} ({hint})"
            elif view is not None and view.progress_message.startswith(WAITING_FOR_APPROVAL):
                reason = f"{reason} (its executor was {view.progress_message}: nobody decided)"
            elif any(a.endswith(_NO_TIME) for a in ev.attempts):
                reason = (
                    f"{reason} (no peer took it, and this node's own eta does not fit "
                    f"before the deadline: {_ETA_ADVICE})"
                )
            err = ContractNetError(reason, code=code, attempts=tuple(ev.attempts))
        else:
            err = ContractNetError(
                f"outcome unknown: {ev.reason}", code="outcome-unknown", attempts=(ev.executor,)
            )
        if view is not None:
            view.state, view.reason = err.code, reason
        if fut is not None and not fut.done():
            fut.set_exception(err)

    def _no_bidder_hint(self, capability: str, attempts: Sequence[str] = ()) -> str:
        """Why nobody was invited, in the user's terms (every round invited no one)."""
        peers = f"{len(self.peers)} peer(s) known"
        if capability in self.handlers and any(a.endswith(_NO_TIME) for a in attempts):
            return (
                f"no other node offers {capability!r} ({peers}), and this node's own eta "
                f"does not fit before the deadline: {_ETA_ADVICE}"
            )
        if capability in self.handlers:
            return (
                f"no other node offers {capability!r} ({peers}), and this node could not "
                "run it itself (every slot busy, a version that does not match, a budget "
                "below its price, or it failed here)"
            )
        return f"no known peer offers {capability!r} in a matching version ({peers})"

    # -- executor side -----------------------------------------------------

    def _on_assigned(self, ev: TaskAssigned) -> None:
        self._stop_handler(ev.task_id, SUPERSEDED)  # a newer epoch of the same task
        handler = self.handlers.get(ev.capability)
        now = time.time()
        if handler is None or not self.accepting:
            why = "no handler" if handler is None else "executor shutting down"
            self.core.fail(ev.task_id, why, now)
            self._dirty = True
            return
        task = Task(
            ev.task_id,
            ev.capability,
            as_json(ev.input),
            ev.deadline,
            requester=ev.requester,
            epoch=ev.epoch,
            semantics=ev.semantics,
            risk=ev.risk,
        )
        task._progress = lambda p, m, tid=ev.task_id: self._progress_from_any_thread(tid, p, m)
        self._remember(
            TaskView(ev.task_id, ev.capability, "executor", "running", now, risk=ev.risk)
        )
        assert self._loop is not None
        at = self._loop.create_task(self._run(handler, task))
        self.running[ev.task_id] = at
        self._given[ev.task_id] = task

    def _stop_handler(self, task_id: str, why: str | None = None) -> None:
        """Tell a running handler to stop: its Task's ``cancelled`` event, then
        ``CancelledError`` in the handler (``why``: its message, e.g. for an approval
        that stops waiting)."""
        given = self._given.pop(task_id, None)
        if given is not None:
            given.cancelled.set()
        self._started.discard(task_id)
        t = self.running.pop(task_id, None)
        if t is not None:
            t.cancel(why)

    def _progress_from_any_thread(
        self, task_id: str, percent: float | None, message: str | None
    ) -> None:
        """``task.progress``: a plain ``def`` handler calls it from its worker thread,
        which used to drive the core and send on the ZeroMQ sockets itself, at the same
        time as the event loop (neither is thread-safe): it goes to the loop instead."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._progress(task_id, percent, message)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._progress, task_id, percent, message)

    def _progress(self, task_id: str, percent: float | None, message: str | None) -> None:
        report = getattr(self.core, "report_progress", None)
        if callable(report) and task_id in self.running and not self.closed:
            report(task_id, time.time(), percent=percent, message=message)
            self._pump()

    async def _run(self, handler: Handler, task: Task) -> None:
        outcome: tuple[bool, Any]
        final = False  # a failure no retry can cure: the requester is told so
        # asyncio.timeout, not wait_for: no inner task, so no extra loop turns.
        deadline = asyncio.timeout(max(0.01, task.remaining()))
        view = self.tasks.get(_run_key(task.task_id))
        waiting = False  # for a person's decision (an approver that has not answered)
        try:
            async with deadline:
                approver = self._approvers.get(task.capability)
                if approver is not None:
                    waiting = True
                    if view is not None:  # it read "running" while nothing ran
                        view.state = "awaiting-approval"
                    verdict = await approver(task)
                    waiting = False
                    if verdict is not True:
                        why = verdict if isinstance(verdict, str) and verdict else "denied"
                        raise HandlerFailed(f"not approved: {why}")
                    if view is not None:
                        view.state = "running"
                slot = self._slots.get(task.capability)
                if slot is None:
                    self._started.add(task.task_id)
                    value = await handler(task)
                else:
                    async with slot:
                        if not self.accepting:  # stopping: hand it back, do not start it
                            raise HandlerFailed("executor shutting down")
                        self._started.add(task.task_id)
                        value = await handler(task)
            outcome = (True, value)
        except asyncio.CancelledError:
            if self.running.get(task.task_id) is asyncio.current_task():
                self.running.pop(task.task_id, None)
                self._given.pop(task.task_id, None)
                self._started.discard(task.task_id)
            raise
        except TimeoutError as exc:
            if deadline.expired() and waiting:  # the handler never ran
                outcome = (False, "no approval before the deadline (the handler never ran)")
            elif deadline.expired():
                # Told as on a cancel: a plain def handler runs on in its thread (it
                # cannot be cancelled) and had no way to learn that its time was up.
                task.cancelled.set()
                outcome = (False, "handler missed the deadline")
            else:  # the handler's own timeout (a call it made): it used to read as ours
                why = self._handler_error(task, exc).rstrip(":")
                outcome = (False, f"{why} (the handler's own, before the deadline)")
        except HandlerFailed as exc:
            outcome = (False, exc.reason)
            final = not exc.retry
        except KeyboardInterrupt:
            raise  # the user's Ctrl-C, not the handler's: it goes on up
        except BaseException as exc:
            # A handler bug fails its task, never the node: sys.exit() in a handler
            # (SystemExit) used to end the daemon, and any other BaseException left the
            # task "running", its lease renewed, until the request's deadline.
            outcome = (False, self._handler_error(task, exc))
        if outcome[0]:
            outcome = self._sendable(outcome[1])
            final = not outcome[0]  # a result no frame can carry: never on a retry either
        if self.running.get(task.task_id) is not asyncio.current_task() or self.closed:
            return  # superseded or cancelled meanwhile
        del self.running[task.task_id]
        self._given.pop(task.task_id, None)
        self._started.discard(task.task_id)
        if view is not None:
            view.state, view.finished_at = ("done" if outcome[0] else "failed"), time.time()
            view.reason = "" if outcome[0] else str(outcome[1])  # it failed with no why
        if outcome[0]:
            self.core.complete(task.task_id, outcome[1], time.time())
        elif final:
            self.core.fail(task.task_id, str(outcome[1]), time.time(), final=True)
        else:
            self.core.fail(task.task_id, str(outcome[1]), time.time())
        self._run_ended(task, outcome[0], "" if outcome[0] else str(outcome[1]), final=final)
        self._pump()

    def _run_ended(self, task: Task, ok: bool, reason: str, *, final: bool) -> None:
        """Tell how a run here ended (``TaskRunEnded``: listeners, the audit log)."""
        self._dispatch(
            TaskRunEnded(
                task_id=task.task_id,
                requester=task.requester,
                capability=task.capability,
                epoch=task.epoch,
                ok=ok,
                reason=reason,
                final=final,
            )
        )

    def _handler_error(self, task: Task, exc: BaseException) -> str:
        """A handler's own exception: counted, logged, and its one-line reason."""
        self.counters["runtime.handler_errors"] += 1
        log.warning("handler of %s raised %s: %s", task.capability, type(exc).__name__, exc)
        return _one_line(f"{type(exc).__name__}: {exc}")

    def _sendable(self, value: Any, what: str = "result") -> tuple[bool, Any]:
        """``(True, value)`` if a frame can carry ``value`` (a handler's result, a
        request's input), else ``(False, why)``: msgpack cannot encode it, the
        receiver's strict decoder would refuse it (a non-string map key, too deep), or
        it is over a frame's size. Checked before sending, so the other side is not left waiting
        for a frame that will never arrive (or that it would refuse as too large)."""
        try:
            data = packb({"v": value})  # as it sits in a payload: one level down
        except (TypeError, ValueError, OverflowError) as exc:
            return False, _one_line(f"{what} cannot be encoded: {exc}")
        size = len(data) - 3  # the wrapping map's own bytes
        wire = getattr(self.core, "wire", None)
        limit = (wire.config.max_frame if wire is not None else MAX_FRAME) - _ENVELOPE_ROOM
        if size > limit:
            return False, f"{what} of {size:,} bytes is over the {limit:,}-byte limit of a frame"
        try:
            unpack_payload(data)  # what the receiver will run on it
        except MeshError as exc:
            return False, _one_line(
                f"{what} would be refused by the receiver ({exc.message}): map keys must be "
                f"strings or bytes, and at most {MAX_DEPTH - 1} levels of nesting"
            )
        return True, value

    def _on_cancelled(self, ev: TaskCancelled) -> None:
        # With a reason: a task waiting for approval is then "withdrawn" with it, not
        # "expired" (its deadline had not passed; its requester gave it up).
        why = SUPERSEDED if ev.reason == "superseded" else CANCELLED
        self._stop_handler(ev.task_id, why)
        view = self.tasks.get(_run_key(ev.task_id))
        if view is not None:
            view.state, view.reason = "cancelled", ev.reason

    # -- views -------------------------------------------------------------

    def statistics(self) -> dict[str, int]:
        stats = dict(self.core.statistics())
        stats.update(self.transport.counters)
        stats.update(self.counters)
        stats["runtime.running"] = len(self.running)
        stats["runtime.peers"] = len(self.peers)
        return stats


def _one_line(text: str, limit: int = 256) -> str:
    """A reason as one line of at most ``limit`` characters (exception texts such as
    pydantic's span several lines)."""
    return short_reason(" ".join(text.split()), limit)


#: How the core's attempts say that the local fallback had no time for its eta.
_NO_TIME = "does not fit before the deadline"


def _nobody_invited(attempts: Sequence[str]) -> bool:
    """True when every round of a failed task found no candidate to invite (the
    deadline's own line, and the fallback's lack of time, aside: a short timeout ends
    the task mid-way through its auctions, and the hint then went missing)."""
    rounds = [a for a in attempts if not a.endswith((": timeout", _NO_TIME))]
    return bool(rounds) and all("(0 invited" in a for a in rounds)


#: What to do about a timeout shorter than a capability's expected run time.
_ETA_ADVICE = "give a longer timeout, or the capability a smaller eta"

#: What a bidder's refusal reason means to the person who asked.
_REFUSALS = {
    "deadline": "the timeout leaves less than an executor's expected run time (its "
    f"capability's eta, 1 s by default): {_ETA_ADVICE}",
    "budget": "every price was over the request's budget",
    "full": "every executor was busy",
    "not-permitted": "the executors' trust policy does not let this node request it",
    "leaving": "the executors are shutting down",
}


def _refusal_hint(attempts: Sequence[str]) -> str:
    """Why the bidders said no, from the last round that had refusals ("" if none):
    "attempts exhausted: no-bidders" alone left a user with timeout=1 guessing."""
    for line in reversed(attempts):
        head, sep, tail = line.rpartition(" refused: ")
        if not sep or not tail.endswith(")") or tail == "-)":
            continue
        reasons = tail[:-1].split(",")
        told = "; ".join(_REFUSALS.get(r, r) for r in reasons)
        return f"{head.rpartition('(')[2]} refused: {', '.join(reasons)}: {told}"
    return ""


def _failure_code(reason: str) -> str:
    codes = ("attempts-exhausted", "no-bidders", "lease-expired", "timeout", "cancelled")
    for code in codes:
        if code in reason or code.replace("-", " ") in reason:
            return code
    return "task-failed"


_HANDLERS: dict[type[Event], Callable[[Runtime, Any], None]] = {
    PeerJoined: Runtime._on_peer,
    PeerSuspected: Runtime._on_peer,
    PeerAlive: Runtime._on_peer,
    PeerDead: Runtime._on_peer,
    PeerLeft: Runtime._on_peer,
    CapabilitiesChanged: Runtime._on_record,
    TaskBid: Runtime._on_bid,
    TaskAwarded: Runtime._on_award,
    TaskReassigned: Runtime._on_award,
    TaskProgress: Runtime._on_progress,
    TaskCompleted: Runtime._on_outcome,
    TaskFailed: Runtime._on_outcome,
    TaskOutcomeUnknown: Runtime._on_outcome,
    TaskAssigned: Runtime._on_assigned,
    TaskCancelled: Runtime._on_cancelled,
}
