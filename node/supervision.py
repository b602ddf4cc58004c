"""People on the loop: tasks above a risk level wait for a person's decision.

A capability may be gated: before its handler runs, a task whose ``risk`` is at or
above a threshold waits (within its deadline, its lease kept alive by the executor's
heartbeats) until someone approves or denies it: ``mesh-node approve TASK`` /
``mesh-node deny TASK --reason ...`` against a daemon (``approve_at`` in node.toml),
or ``ApprovalDesk.approve`` / ``deny`` for an embedded node. A denied task fails on this
executor with ``not approved: <reason>``; the requester may then give it to another
executor (whose operator decides for their own machine), and a re-award of the same
task here is denied again without asking twice.

Risk levels, lowest first: ``low``, ``medium``, ``high``, ``critical``. A risk string
outside them counts as ``critical``: an unknown risk never slips past a gate. The risk
is what the requester declares (default ``low``): to hold every task of a capability
for a person, whatever its requester says, gate it at ``low``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from protocols.errors import ConfigError, LocalProtocolError

if TYPE_CHECKING:  # node.handlers imports node.config, which imports this module
    from node.handlers import Task

__all__ = [
    "RISK_LEVELS",
    "WAITING_FOR_APPROVAL",
    "ApprovalDesk",
    "Approver",
    "Decision",
    "NotWaiting",
    "risk_rank",
]

RISK_LEVELS = ("low", "medium", "high", "critical")

#: The progress message an executor sends while a task waits for a person's decision.
WAITING_FOR_APPROVAL = "waiting for a person's approval"

#: Before a handler runs: True to go ahead; False or a reason (str) to deny.
Approver = Callable[["Task"], Awaitable["bool | str"]]

#: A task id prefix must be at least this long (a stale listing must not approve
#: another task that happens to share a short prefix).
MIN_PREFIX = 6

#: Denials remembered so that a re-award of the same task is denied without asking.
_REMEMBERED = 1024


#: Characters of a waiting task's input shown in ``pending()``'s ``input_preview``.
PREVIEW = 200


def _as_json(value: Any) -> tuple[Any, str]:
    """``(value, its JSON text)`` if ``value`` is plain JSON (a task input from the wire
    may hold bytes, or a float NaN); else ``(None, repr(value))``."""
    try:
        return value, json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        try:
            return None, repr(value)
        except RecursionError:
            return None, f"({type(value).__name__}, nested too deep to show)"


def risk_rank(risk: str) -> int:
    """The position of ``risk`` in ``RISK_LEVELS``; unknown strings rank as critical."""
    try:
        return RISK_LEVELS.index(risk)
    except ValueError:
        return len(RISK_LEVELS) - 1


@dataclass(frozen=True, slots=True)
class Decision:
    """What happened to a gated task (given to the desk's listener: audit logs)."""

    # "requested", "approved", "denied", "expired" (its deadline passed), "withdrawn"
    # (reason: "node stopping", "cancelled by its requester", "superseded by a newer award")
    event: str
    task_id: str
    capability: str
    risk: str
    requester: str
    by: str = ""
    reason: str = ""


@dataclass
class _Pending:
    task: Task
    since: float
    future: asyncio.Future[bool | str]


class NotWaiting(LocalProtocolError):
    """No task waits under the id given to ``approve`` / ``deny`` (unknown, ambiguous,
    expired or decided already): code ``not-found``; or the id is a prefix shorter than
    ``MIN_PREFIX`` and not a whole waiting task's id: code ``local-misuse``, the same
    as ``mesh-node approve``."""

    default_code = "not-found"


class ApprovalDesk:
    """The tasks of one node waiting for a person's decision.

    A denial is remembered by task id *and* requester: ids are chosen by requesters
    (``task_id=``, an idempotency key), and a denial of one requester's task used to
    deny another's with the same id, without asking anyone."""

    def __init__(self, on_decision: Callable[[Decision], None] | None = None) -> None:
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._denied: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._on_decision = on_decision

    def gate(self, at: str) -> Approver:
        """An approver for a capability: tasks of risk ``at`` or above wait for a decision."""
        if at not in RISK_LEVELS:
            raise ConfigError(f"approve_at: {at!r} is not one of {', '.join(RISK_LEVELS)}")
        threshold = risk_rank(at)

        async def approver(task: Task) -> bool | str:
            if risk_rank(task.risk) < threshold:
                return True
            return await self.wait(task)

        return approver

    async def wait(self, task: Task) -> bool | str:
        """Wait for a decision on ``task`` (a re-award of a denied task: denied at once)."""
        key = (task.task_id, task.requester)
        if key in self._denied:
            reason = self._denied[key]
            self._tell("denied", task, by="(denied before)", reason=reason)
            return reason
        loop = asyncio.get_running_loop()
        entry = _Pending(task, time.time(), loop.create_future())
        self._pending[key] = entry
        try:
            self._tell("requested", task)
            # The requester learns why its task does not start (a TaskProgress event,
            # its task view; a timeout then says so), not just that it timed out.
            task.progress(None, f"{WAITING_FOR_APPROVAL} (risk {task.risk})")
            return await entry.future
        except asyncio.CancelledError as exc:
            # Cancelled with a reason (the node stops: the task goes back to the
            # requester, undecided; the requester cancelled it), or by its deadline.
            why = str(exc.args[0]) if exc.args and exc.args[0] else ""
            self._tell("withdrawn" if why else "expired", task, reason=why)
            raise
        finally:
            if self._pending.get(key) is entry:
                del self._pending[key]

    def pending(self) -> list[dict[str, Any]]:
        """The waiting tasks, oldest first: ``input`` is the task's input as it is when
        it is plain JSON (else None), ``input_preview`` its JSON text (else its repr),
        cut to ``PREVIEW`` characters."""
        out = []
        for (task_id, _), p in sorted(self._pending.items(), key=lambda kv: kv[1].since):
            value, text = _as_json(p.task.input)
            out.append(
                {
                    "task_id": task_id,
                    "capability": p.task.capability,
                    "risk": p.task.risk,
                    "requester": p.task.requester,
                    "waiting_s": round(time.time() - p.since, 1),
                    "deadline": p.task.deadline,
                    "input": value,
                    "input_preview": text if len(text) <= PREVIEW else text[: PREVIEW - 1] + "…",
                }
            )
        return out

    def approve(self, task_id: str, by: str = "") -> str:
        """Let a waiting task run; returns its full id (``task_id`` may be a unique prefix).
        ``NotWaiting`` (a ``LocalProtocolError``, code ``not-found``) if no one task waits
        under ``task_id``; code ``local-misuse`` for a prefix under ``MIN_PREFIX``
        characters."""
        entry = self._find(task_id)
        entry.future.set_result(True)
        self._tell("approved", entry.task, by=by)
        return entry.task.task_id

    def deny(self, task_id: str, reason: str = "denied", by: str = "") -> str:
        """Fail a waiting task with ``not approved: reason``; returns its full id. An empty
        reason is ``denied``; one over several lines is joined into one. ``NotWaiting`` as
        for ``approve``."""
        entry = self._find(task_id)
        reason = " ".join(reason.split()) or "denied"
        self._denied[(entry.task.task_id, entry.task.requester)] = reason
        while len(self._denied) > _REMEMBERED:
            self._denied.popitem(last=False)
        entry.future.set_result(reason)
        self._tell("denied", entry.task, by=by, reason=reason)
        return entry.task.task_id

    def _find(self, task_id: str) -> _Pending:
        if not task_id:
            raise NotWaiting("no task '' is waiting for approval")
        exact = [p for (tid, _), p in self._pending.items() if tid == task_id]
        if not exact and len(task_id) < MIN_PREFIX:
            # Checked before the lookup: a short prefix matching nothing said "no task
            # ... is waiting", as if the id were wrong rather than too short.
            raise NotWaiting(
                f"task id prefix {task_id!r} is too short: give at least {MIN_PREFIX} "
                "characters of it",
                code="local-misuse",
            )
        matches = exact or [p for (tid, _), p in self._pending.items() if tid.startswith(task_id)]
        if not matches:
            raise NotWaiting(f"no task {task_id!r} is waiting for approval")
        if len(matches) > 1:
            raise NotWaiting(f"{task_id!r} matches {len(matches)} waiting tasks: give more of it")
        if matches[0].future.cancelled():  # its deadline passed: it stops waiting now
            raise NotWaiting(f"task {task_id!r} expired before a decision")
        if matches[0].future.done():
            raise NotWaiting(f"task {task_id!r} was decided already")
        return matches[0]

    def _tell(self, event: str, task: Task, *, by: str = "", reason: str = "") -> None:
        if self._on_decision is not None:
            self._on_decision(
                Decision(
                    event, task.task_id, task.capability, task.risk, task.requester, by, reason
                )
            )
