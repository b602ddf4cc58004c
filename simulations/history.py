"""The recorded history of a run: what the checkers and the report read.

The recorder is the engine's observer. Task events are kept per task (small);
membership events are folded as they arrive (a 10,000-node run emits ~10^8 of
them), keeping only what the detection and convergence figures need.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mesh.events import (
    CapabilitiesChanged,
    Event,
    FrameRejected,
    PeerDead,
    PeerJoined,
    PeerSuspected,
    TaskAssigned,
    TaskAwarded,
    TaskCompleted,
    TaskFailed,
    TaskOutcomeUnknown,
    TaskReassigned,
    TaskStaleResult,
)

__all__ = ["History", "Injection", "TaskRecord"]


@dataclass(slots=True)
class TaskRecord:
    task_id: str
    requester: int
    submitted_at: float
    semantics: str
    #: (time, epoch, winner id) of every award and reassignment
    epochs: list[tuple[float, int, str]] = field(default_factory=list)
    #: (time, executor id, epoch, was the current epoch at that time)
    commits: list[tuple[float, str, int, bool]] = field(default_factory=list)
    #: (time, node index, epoch) of every TaskAssigned (a handler start)
    runs: list[tuple[float, int, int]] = field(default_factory=list)
    failed: tuple[float, str] | None = None
    #: the requester's account of the tries of a failed task (``TaskFailed.attempts``)
    attempts: tuple[str, ...] = ()
    unknown: float | None = None
    stale: int = 0
    reassigned: int = 0
    requester_crashed: bool = False

    def ended(self) -> float | None:
        if self.commits:
            return self.commits[0][0]
        if self.failed is not None:
            return self.failed[0]
        return self.unknown


@dataclass(frozen=True, slots=True)
class Injection:
    time: float
    dst: int
    src: int
    attack: str
    expected: frozenset[str]
    got: tuple[str, ...]
    exempt: bool


class History:
    """Observer of every event; ``ids`` maps node ids to indexes."""

    def __init__(self, n: int, mutual: Callable[[int, int], bool] | None = None) -> None:
        self.n = n
        #: whether two nodes accept each other's frames (None: all do)
        self.mutual = mutual
        self.ids: dict[str, int] = {}
        self.tasks: dict[str, TaskRecord] = {}
        self.outcomes: list[tuple[float, str]] = []
        self.rejected: dict[str, int] = {}
        self.injections: list[Injection] = []
        self.crashes: dict[int, float] = {}
        self.down: set[int] = set()
        self.left: set[int] = set()
        self.first_suspicion: dict[int, float] = {}
        #: crashed node -> {node that emitted PeerDead about it while it was down: time}
        self.dead_seen: dict[int, dict[int, float]] = {}
        #: node -> when it last started or restarted (a node never recorded: at 0)
        self.up_since: dict[int, float] = {}
        self.false_deaths = 0
        #: PeerDead about a running node that drops the observer's frames (it does not
        #: trust the observer's org, though the observer trusts its): not a detector error
        self.one_way_deaths = 0
        self.untrusted_admitted: list[tuple[float, int, str]] = []
        self.untrusted_ids: set[str] = set()
        self.untrusted_nodes: set[int] = set()
        self.marker: str | None = None
        self.marker_at: float | None = None
        self.marker_base: tuple[int, int] = (-1, -1)
        self.learned: dict[int, float] = {}
        self.events = 0
        self._dispatch: dict[type, Any] = {
            TaskAwarded: self._awarded,
            TaskReassigned: self._reassigned,
            TaskCompleted: self._completed,
            TaskFailed: self._failed,
            TaskOutcomeUnknown: self._unknown,
            TaskStaleResult: self._stale,
            TaskAssigned: self._assigned,
            PeerSuspected: self._suspected,
            PeerDead: self._dead,
            PeerJoined: self._joined,
            CapabilitiesChanged: self._changed,
            FrameRejected: self._rejected,
        }

    # --- shell facts ----------------------------------------------------------

    def submitted(self, t: float, requester: int, task_id: str, semantics: str) -> None:
        self.tasks[task_id] = TaskRecord(task_id, requester, t, semantics)

    def crashed(self, t: float, i: int) -> None:
        self.crashes[i] = t
        self.down.add(i)
        for rec in self.tasks.values():
            if rec.requester == i and rec.ended() is None:
                rec.requester_crashed = True

    def started(self, t: float, i: int) -> None:
        self.up_since[i] = t

    def restarted(self, t: float, i: int) -> None:
        self.down.discard(i)
        self.up_since[i] = t

    def watch_marker(self, node_id: str) -> None:
        """Follow this node's record: versions seen before ``publish_marker`` are the base."""
        self.marker = node_id

    def publish_marker(self, t: float) -> None:
        self.marker_at = t

    # --- events -----------------------------------------------------------------

    def __call__(self, t: float, i: int, ev: Event) -> None:
        self.events += 1
        handler = self._dispatch.get(type(ev))
        if handler is not None:
            handler(t, i, ev)

    def _awarded(self, t: float, i: int, ev: Any) -> None:
        rec = self.tasks.get(ev.task_id)
        if rec is not None:
            rec.epochs.append((t, ev.epoch, ev.winner))

    def _reassigned(self, t: float, i: int, ev: Any) -> None:
        rec = self.tasks.get(ev.task_id)
        if rec is not None:
            rec.epochs.append((t, ev.epoch, ev.winner))
            rec.reassigned += 1

    def _completed(self, t: float, i: int, ev: Any) -> None:
        rec = self.tasks.get(ev.task_id)
        if rec is not None:
            current = bool(rec.epochs) and rec.epochs[-1][1:] == (ev.epoch, ev.executor)
            rec.commits.append((t, ev.executor, ev.epoch, current))
            self.outcomes.append((t, "completed"))

    def _failed(self, t: float, i: int, ev: Any) -> None:
        rec = self.tasks.get(ev.task_id)
        if rec is not None and rec.failed is None:
            rec.failed = (t, ev.reason)
            rec.attempts = tuple(ev.attempts)
            self.outcomes.append((t, "failed"))

    def _unknown(self, t: float, i: int, ev: Any) -> None:
        rec = self.tasks.get(ev.task_id)
        if rec is not None and rec.unknown is None:
            rec.unknown = t
            self.outcomes.append((t, "outcome-unknown"))

    def _stale(self, t: float, i: int, ev: Any) -> None:
        rec = self.tasks.get(ev.task_id)
        if rec is not None:
            rec.stale += 1

    def _assigned(self, t: float, i: int, ev: Any) -> None:
        rec = self.tasks.get(ev.task_id)
        if rec is not None:
            rec.runs.append((t, i, ev.epoch))

    def _suspected(self, t: float, i: int, ev: Any) -> None:
        target = self.ids.get(ev.node_id)
        if target is not None and target in self.down and target not in self.first_suspicion:
            self.first_suspicion[target] = t

    def _dead(self, t: float, i: int, ev: Any) -> None:
        target = self.ids.get(ev.node_id)
        if target is None:
            return
        if target in self.down or target in self.left:
            self.dead_seen.setdefault(target, {}).setdefault(i, t)
        elif self.mutual is not None and not self.mutual(i, target):
            self.one_way_deaths += 1
        else:
            self.false_deaths += 1

    def _joined(self, t: float, i: int, ev: Any) -> None:
        if ev.node_id in self.untrusted_ids and i not in self.untrusted_nodes:
            self.untrusted_admitted.append((t, i, ev.node_id))

    def _changed(self, t: float, i: int, ev: Any) -> None:
        if ev.node_id != self.marker:
            return
        version = (ev.incarnation, ev.seq)
        if self.marker_at is None:
            self.marker_base = max(self.marker_base, version)
        elif version > self.marker_base and i not in self.learned:
            origin = self.ids.get(ev.node_id)
            if self.mutual is None or origin is None or self.mutual(i, origin):
                self.learned[i] = t

    def injected(
        self,
        t: float,
        dst: int,
        src: int,
        attack: str,
        expected: frozenset[str],
        got: tuple[str, ...],
        exempt: bool,
    ) -> None:
        self.injections.append(Injection(t, dst, src, attack, expected, got, exempt))

    def _rejected(self, t: float, i: int, ev: Any) -> None:
        self.rejected[ev.code] = self.rejected.get(ev.code, 0) + 1
