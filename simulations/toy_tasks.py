"""The toy contract net of ``ToyNode``: cfp, bids, awards with epochs, backups."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from simulations.toy import ToyNode

__all__ = ["ToyContracts"]

BID_WINDOW = 0.1
MAX_BIDDERS = 6
MAX_AUCTIONS = 3


class _Task:
    __slots__ = (
        "attempts",
        "auctions",
        "backups",
        "bid_deadline",
        "bids",
        "cap",
        "done",
        "epoch",
        "input",
        "lease",
        "semantics",
        "task_id",
        "timeout",
        "winner",
    )

    def __init__(self, task_id: str, spec: dict[str, Any]) -> None:
        self.task_id = task_id
        self.cap: str = spec["capability"]
        self.input: Any = spec.get("input")
        self.semantics: str = spec.get("semantics", "at-least-once")
        self.timeout: float = float(spec.get("timeout", 10.0))
        self.epoch = 0
        self.winner = ""
        self.backups: list[str] = []
        self.bids: list[tuple[float, float, str]] = []
        self.bid_deadline: float | None = None
        self.lease: float | None = None
        self.attempts: list[str] = []
        self.auctions = 0
        self.done = False


class ToyContracts:
    def __init__(self, node: ToyNode, price: float) -> None:
        self.node = node
        self.price = price
        self.mine: dict[str, _Task] = {}
        self.counter = 0
        self.epochs: dict[str, int] = {}  # executor: highest epoch seen per task
        self.running: dict[str, tuple[str, int]] = {}  # task -> (requester, epoch)

    # --- requester ----------------------------------------------------------

    def submit(self, spec: dict[str, Any], now: float) -> str:
        self.counter += 1
        task = _Task(f"{self.node.node_id}-{self.node.inc}-{self.counter}", spec)
        self.mine[task.task_id] = task
        self._auction(task, now)
        return task.task_id

    def _auction(self, task: _Task, now: float) -> None:
        node = self.node
        task.auctions += 1
        task.bids = []
        capable = [i for i in node.alive_ids if task.cap in node.members[i][5]]
        if len(capable) > MAX_BIDDERS:
            capable = [capable[j] for j in node.rng.sample(range(len(capable)), MAX_BIDDERS)]
        for nid in capable:
            node.send_to("cfp", nid, now, [task.task_id, task.cap])
        task.bid_deadline = now + BID_WINDOW

    def _award(self, task: _Task, now: float) -> None:
        task.bid_deadline = None
        if not task.bids:
            if task.auctions < MAX_AUCTIONS:
                self._auction(task, now)
            else:
                self._finish(task)
                self.node.emit(TaskFailed(task.task_id, "no-bidders", tuple(task.attempts)))
            return
        ranked = [b[2] for b in sorted(task.bids)]
        previous = task.winner
        task.winner, task.backups = ranked[0], ranked[1:3]
        task.epoch += 1
        if task.auctions == 1 and task.epoch == 1:
            self.node.emit(
                TaskAwarded(task.task_id, task.winner, 1, tuple(task.backups), len(task.bids))
            )
        else:
            self.node.emit(
                TaskReassigned(task.task_id, previous, task.winner, task.epoch, "auction", True)
            )
        self._send_award(task, now)

    def _send_award(self, task: _Task, now: float) -> None:
        task.attempts.append(f"{task.winner}@{task.epoch}")
        task.lease = now + task.timeout
        data = [task.task_id, task.epoch, task.cap, task.input, task.lease, task.semantics]
        self.node.send_to("award", task.winner, now, data)

    def _next(self, task: _Task, reason: str, now: float) -> None:
        node = self.node
        node.send_to("cancel", task.winner, now, [task.task_id, task.epoch])
        if task.semantics == "at-most-once":
            self._finish(task)
            if reason == "failed":
                node.emit(TaskFailed(task.task_id, reason, tuple(task.attempts)))
            else:
                node.emit(TaskOutcomeUnknown(task.task_id, task.winner, task.epoch, reason))
            return
        if task.backups:
            previous = task.winner
            task.winner = task.backups.pop(0)
            task.epoch += 1
            node.emit(
                TaskReassigned(task.task_id, previous, task.winner, task.epoch, reason, False)
            )
            self._send_award(task, now)
        elif task.auctions < MAX_AUCTIONS:
            task.lease = None
            self._auction(task, now)
        else:
            self._finish(task)
            node.emit(
                TaskFailed(task.task_id, f"attempts-exhausted: {reason}", tuple(task.attempts))
            )

    def _finish(self, task: _Task) -> None:
        task.done = True
        task.lease = None
        task.bid_deadline = None
        del self.mine[task.task_id]

    # --- executor -----------------------------------------------------------

    def complete(self, task_id: str, result: Any, now: float) -> None:
        self._report(task_id, "res", result, now)

    def fail(self, task_id: str, reason: str, now: float) -> None:
        self._report(task_id, "fl", reason, now)

    def _report(self, task_id: str, kind: str, value: Any, now: float) -> None:
        entry = self.running.pop(task_id, None)
        if entry is None:
            return
        requester, epoch = entry
        self.node.send_to(kind, requester, now, [task_id, epoch, value])

    # --- messages and timers --------------------------------------------------

    def on_message(self, kind: str, sender: str, data: Any, now: float) -> None:
        node = self.node
        if kind == "cfp":
            task_id, cap = data
            if cap in node.caps:
                load = float(len(self.running))
                node.send_to("bid", sender, now, [task_id, True, self.price, load])
        elif kind == "bid":
            task = self.mine.get(data[0])
            if task is not None and task.bid_deadline is not None:
                task.bids.append((data[2] + data[3], node.rng.random(), sender))
                node.emit(TaskBid(task.task_id, sender, bool(data[1]), data[2], data[3]))
        elif kind == "award":
            self._on_award(sender, data)
        elif kind == "cancel":
            task_id, epoch = data
            if self.running.get(task_id, ("", -1))[1] == epoch:
                del self.running[task_id]
                node.emit(TaskCancelled(task_id, epoch, "cancelled"))
        elif kind in ("res", "fl"):
            self._on_result(kind, sender, data, now)
        else:
            node.count("rejected.unknown-kind")

    def _on_award(self, requester: str, data: Any) -> None:
        task_id, epoch, cap, payload, deadline, semantics = data
        if epoch <= self.epochs.get(task_id, 0):
            return
        self.epochs[task_id] = epoch
        old = self.running.get(task_id)
        if old is not None:
            self.node.emit(TaskCancelled(task_id, old[1], "superseded"))
        self.running[task_id] = (requester, epoch)
        self.node.emit(
            TaskAssigned(task_id, requester, cap, payload, epoch, deadline, semantics, "low")
        )

    def _on_result(self, kind: str, sender: str, data: Any, now: float) -> None:
        task_id, epoch, value = data
        task = self.mine.get(task_id)
        if task is None:
            return
        if epoch != task.epoch or sender != task.winner:
            self.node.emit(TaskStaleResult(task_id, sender, epoch, task.epoch))
            return
        if kind == "res":
            self._finish(task)
            self.node.emit(TaskCompleted(task_id, sender, epoch, value, tuple(task.attempts)))
        else:
            self._next(task, "failed", now)

    def get_timer(self) -> float | None:
        t: float | None = None
        for task in self.mine.values():
            for d in (task.bid_deadline, task.lease):
                if d is not None and (t is None or d < t):
                    t = d
        return t

    def handle_timer(self, now: float) -> None:
        members = self.node.members
        for task in list(self.mine.values()):
            if task.bid_deadline is not None and now >= task.bid_deadline:
                self._award(task, now)
            elif task.lease is not None and now >= task.lease:
                self._next(task, "lease-expired", now)
            elif task.lease is not None and members.get(task.winner, [0] * 5)[4] == 2:
                self._next(task, "dead", now)
