"""Transition tables of the contract-net machines (h11's ``_state.py`` is the model).

Each machine is a dict ``{(state, event): next_state}``. A transition that is not
in the table is illegal: ``transition`` raises ``IllegalTransition`` and nothing
changes. Terminal states have no outgoing key at all, so no event can leave them.

The requester machine lives in the node that submitted a task; the executor
machine in each node that won an award for it. ``docs/protocol.md (section 15)`` shows
both tables as diagrams rendered by ``protocols.contract_net.diagram``.
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from protocols.errors import LocalProtocolError

__all__ = [
    "EXECUTOR_TABLE",
    "EXECUTOR_TERMINAL",
    "REQUESTER_TABLE",
    "REQUESTER_TERMINAL",
    "ExecEvent",
    "ExecState",
    "IllegalTransition",
    "ReqEvent",
    "ReqState",
    "transition",
]


class IllegalTransition(LocalProtocolError):
    """An event arrived in a state whose table row has no key for it."""

    default_code = "illegal-transition"


class ReqState(Enum):
    AUCTION = "auction"  # cfp sent, collecting propose/refuse until reply-by
    AWARDED = "awarded"  # award sent (a lease with an epoch); no `started` yet
    STARTED = "started"  # the holder said `started`: side effects may have happened
    COMPLETED = "completed"
    FAILED = "failed"
    UNKNOWN = "unknown"  # at-most-once, started, holder lost: a human decides
    CANCELLED = "cancelled"


class ReqEvent(Enum):
    PROPOSE = "propose"
    REFUSE = "refuse"
    AWARD = "award"  # the auction closed with at least one eligible bid
    STARTED = "started"
    PROGRESS = "progress"
    RESULT = "result"  # first result of the current epoch: committed
    REAWARD = "reaward"  # next backup, new epoch, no new auction
    REAUCTION = "reauction"  # no bids, or backups exhausted: a new round
    GIVE_UP = "give-up"  # attempts exhausted, deadline passed, or failed after start
    UNKNOWN = "unknown"  # at-most-once holder lost after `started`
    CANCEL = "cancel"  # the local user cancelled


class ExecState(Enum):
    CLAIMING = "claiming"  # at-most-once: `started` sent, waiting for `proceed`
    RUNNING = "running"  # the handler runs (TaskAssigned emitted)
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"  # superseded by a higher epoch, or `cancel`


class ExecEvent(Enum):
    PROCEED = "proceed"  # requester confirmed our `started` (at-most-once)
    PROGRESS = "progress"  # local report_progress / heartbeat
    REAWARDED = "reawarded"  # a higher epoch names us again: keep going, new epoch
    SUPERSEDED = "superseded"  # a higher epoch names someone else
    CANCEL = "cancel"
    COMPLETE = "complete"
    FAIL = "fail"


_R, _E = ReqState, ReqEvent
_LIVE = (_R.AUCTION, _R.AWARDED, _R.STARTED)

REQUESTER_TABLE: dict[tuple[ReqState, ReqEvent], ReqState] = {
    (_R.AUCTION, _E.PROPOSE): _R.AUCTION,
    (_R.AUCTION, _E.REFUSE): _R.AUCTION,
    (_R.AUCTION, _E.AWARD): _R.AWARDED,
    (_R.AUCTION, _E.REAUCTION): _R.AUCTION,
    (_R.AWARDED, _E.STARTED): _R.STARTED,
    (_R.AWARDED, _E.PROGRESS): _R.AWARDED,
    (_R.AWARDED, _E.RESULT): _R.COMPLETED,
    (_R.AWARDED, _E.REAWARD): _R.AWARDED,
    (_R.AWARDED, _E.REAUCTION): _R.AUCTION,
    (_R.STARTED, _E.STARTED): _R.STARTED,
    (_R.STARTED, _E.PROGRESS): _R.STARTED,
    (_R.STARTED, _E.RESULT): _R.COMPLETED,
    (_R.STARTED, _E.REAWARD): _R.AWARDED,  # at-least-once only (the agent checks)
    (_R.STARTED, _E.REAUCTION): _R.AUCTION,  # at-least-once only
    (_R.STARTED, _E.UNKNOWN): _R.UNKNOWN,
    **{(s, _E.GIVE_UP): _R.FAILED for s in _LIVE},
    **{(s, _E.CANCEL): _R.CANCELLED for s in _LIVE},
}
REQUESTER_TERMINAL = frozenset({_R.COMPLETED, _R.FAILED, _R.UNKNOWN, _R.CANCELLED})

_X, _V = ExecState, ExecEvent
EXECUTOR_TABLE: dict[tuple[ExecState, ExecEvent], ExecState] = {
    (_X.CLAIMING, _V.PROCEED): _X.RUNNING,
    (_X.CLAIMING, _V.REAWARDED): _X.CLAIMING,
    (_X.CLAIMING, _V.SUPERSEDED): _X.CANCELLED,
    (_X.CLAIMING, _V.CANCEL): _X.CANCELLED,
    (_X.RUNNING, _V.PROCEED): _X.RUNNING,  # a duplicate confirmation
    (_X.RUNNING, _V.PROGRESS): _X.RUNNING,
    (_X.RUNNING, _V.REAWARDED): _X.RUNNING,
    (_X.RUNNING, _V.SUPERSEDED): _X.CANCELLED,
    (_X.RUNNING, _V.CANCEL): _X.CANCELLED,
    (_X.RUNNING, _V.COMPLETE): _X.COMPLETED,
    (_X.RUNNING, _V.FAIL): _X.FAILED,
}
EXECUTOR_TERMINAL = frozenset({_X.COMPLETED, _X.FAILED, _X.CANCELLED})


S = TypeVar("S", bound=Enum)
V = TypeVar("V", bound=Enum)


def transition(table: dict[tuple[S, V], S], state: S, event: V) -> S:
    """The next state, or ``IllegalTransition`` if the table has no such key."""
    try:
        return table[(state, event)]
    except KeyError:
        raise IllegalTransition(
            f"illegal transition: {event.value!r} in state {state.value!r}"
        ) from None
