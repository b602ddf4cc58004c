"""Events a MeshNodeCore hands to its shell through ``next_event()``.

Frozen, slotted dataclasses (h11's ``_events.py`` is the model). The shell
reacts to them: the real node runs a handler on ``TaskAssigned``, the
simulator records everything for its checkers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CapabilitiesChanged",
    "Event",
    "FrameRejected",
    "IdentityConflict",
    "PeerAlive",
    "PeerDead",
    "PeerJoined",
    "PeerLeft",
    "PeerSuspected",
    "TaskAssigned",
    "TaskAwarded",
    "TaskBid",
    "TaskCancelled",
    "TaskCompleted",
    "TaskFailed",
    "TaskOutcomeUnknown",
    "TaskProgress",
    "TaskReassigned",
    "TaskRunEnded",
    "TaskStaleResult",
]


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of every core event."""


# --- membership -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerJoined(Event):
    node_id: str
    endpoint: str
    org: str


@dataclass(frozen=True, slots=True)
class PeerSuspected(Event):
    node_id: str
    incarnation: int


@dataclass(frozen=True, slots=True)
class PeerAlive(Event):
    """A suspected peer refuted the suspicion (or came back with a higher incarnation)."""

    node_id: str
    incarnation: int


@dataclass(frozen=True, slots=True)
class PeerDead(Event):
    node_id: str
    incarnation: int


@dataclass(frozen=True, slots=True)
class PeerLeft(Event):
    node_id: str


@dataclass(frozen=True, slots=True)
class IdentityConflict(Event):
    """Another live process signs records with this node's key, at ``endpoint``: it
    superseded our record again after we had moved past it. This node yields (stops
    raising its incarnation over the other's), so the mesh reaches only the other
    process until one of them stops."""

    endpoint: str
    incarnation: int


@dataclass(frozen=True, slots=True)
class CapabilitiesChanged(Event):
    """A peer's signed capability record changed (new incarnation or seq)."""

    node_id: str
    incarnation: int
    seq: int


@dataclass(frozen=True, slots=True)
class FrameRejected(Event):
    """A frame was rejected; ``code`` is a ``RemoteProtocolError`` code."""

    code: str
    message: str
    endpoint: str


# --- contract net: requester side ----------------------------------------


@dataclass(frozen=True, slots=True)
class TaskBid(Event):
    """A bid (propose) or refusal arrived for one of our tasks."""

    task_id: str
    bidder: str
    accepted: bool
    price: float = 0.0
    load: float = 0.0
    #: False for a bid whose signature is checked only if the bid is acted on
    #: (``protocols.contract_net.messages.DEFERRED_KINDS``); a forgery found then
    #: is reported as ``FrameRejected`` (bad-signature).
    verified: bool = True


@dataclass(frozen=True, slots=True)
class TaskAwarded(Event):
    task_id: str
    winner: str
    epoch: int
    backups: tuple[str, ...]
    bidders: int


@dataclass(frozen=True, slots=True)
class TaskReassigned(Event):
    """The task moved to a backup (new epoch, no new auction) or to a new auction."""

    task_id: str
    previous: str
    winner: str
    epoch: int
    reason: str
    new_auction: bool


@dataclass(frozen=True, slots=True)
class TaskProgress(Event):
    """The holder of one of our tasks reported progress (``task.progress``): a
    ``progress`` frame with a percent or a message (a bare heartbeat makes none)."""

    task_id: str
    executor: str
    epoch: int
    percent: float | None
    message: str | None


@dataclass(frozen=True, slots=True)
class TaskCompleted(Event):
    task_id: str
    executor: str
    epoch: int
    result: Any
    attempts: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class TaskFailed(Event):
    task_id: str
    reason: str
    attempts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TaskOutcomeUnknown(Event):
    """An at-most-once task whose executor started and then vanished: a human decides."""

    task_id: str
    executor: str
    epoch: int
    reason: str


@dataclass(frozen=True, slots=True)
class TaskStaleResult(Event):
    """A result or failure from a superseded epoch was rejected (fencing)."""

    task_id: str
    executor: str
    epoch: int
    current_epoch: int


# --- contract net: executor side -----------------------------------------


@dataclass(frozen=True, slots=True)
class TaskAssigned(Event):
    """We won an award: the shell runs the handler, then calls complete/fail."""

    task_id: str
    requester: str
    capability: str
    input: Any
    epoch: int
    deadline: float
    semantics: str
    risk: str


@dataclass(frozen=True, slots=True)
class TaskRunEnded(Event):
    """The executor's side of a task's end: our handler's outcome was handed to the
    core to send (``ok``; else ``reason``, and ``final`` if no retry can cure it).
    Emitted by the real node's runtime, not by the core (the simulator runs no
    handlers), so that an executor's audit log holds what it ran and how it ended."""

    task_id: str
    requester: str
    capability: str
    epoch: int
    ok: bool
    reason: str = ""
    final: bool = False


@dataclass(frozen=True, slots=True)
class TaskCancelled(Event):
    """Stop working on this task (superseded epoch, or the requester cancelled)."""

    task_id: str
    epoch: int
    reason: str
