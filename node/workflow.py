"""Workflows over the mesh: fan a job out to many agents and compose the results, and
run several agents' operations as one unit that is undone when a step fails (a saga).

Both are built on ``Node.request`` alone: every step is an ordinary contract-net task,
bid for, awarded, re-awarded on failure, with its idempotency key.

``fan_out(node, "summarize", chunks, concurrency=8)`` runs one request per input, at
most ``concurrency`` at a time, and returns the results in input order (the first
failure raises, the others are cancelled; ``return_exceptions=True`` keeps going).

A ``Saga`` gives transactional integrity across agents without a coordinator or
locks: each ``step`` names how to undo it (a compensating capability and its input,
computed from the step's result). When a step fails, or the ``async with`` block
raises, the completed steps are compensated newest first, and ``SagaFailed`` says
which step failed, what was undone, and which compensation failed (those need a
person). Task ids are derived from the saga's id (idempotency keys for the
executors): ``<id>-<n>`` for step ``n``, ``<id>-undo-<n>`` for its compensation; a
saga id is used once, and one in use by a saga still in its block is refused.

A saga entered in another's block is nested in it: once it completes, its steps are
the outer saga's too (undone, newest first, if the outer saga fails); if it fails, the
outer saga fails. Steps run in parallel (``asyncio.gather`` or an ``asyncio.TaskGroup``
inside the saga's block) are undone too when one of them fails: the failure waits (at
most the saga's ``timeout``) for the others, and one completing later still is undone
at once. With ``gather`` the caller gets the ``SagaFailed``; with a ``TaskGroup`` it
gets an ``ExceptionGroup`` of ``SagaFailed`` (one per step that raised it: catch it
with ``except* SagaFailed``; ``except SagaFailed`` does not).

Cancelling a saga (or a timeout around it) still runs its compensations, in a task of
their own: ``Node.stop`` waits for them (within its grace), and what could not be
undone there is logged as an error (logger ``parley.workflow``) and kept on the saga
(``Saga.unrecovered``). ``Node.stop`` first cancels the saga steps its node has in
flight: their sagas fail (``SagaFailed``, "its node is stopping") and undo their
completed steps before the node closes.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import secrets
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from protocols.errors import ContractNetError, LocalProtocolError

if TYPE_CHECKING:
    from node.api import Node
    from node.runtime import Result

__all__ = ["SAGA_ID_MAX", "Saga", "SagaFailed", "fan_out"]

log = logging.getLogger("parley.workflow")

#: The longest saga id: its compensations' task ids (``<id>-undo-<n>``) must fit the
#: 64 characters of a task id, with room for 10 digits of ``n``.
SAGA_ID_MAX = 48


async def fan_out(
    node: Node,
    capability: str,
    inputs: Sequence[Any],
    *,
    concurrency: int = 8,
    return_exceptions: bool = False,
    **opts: Any,
) -> list[Any]:
    """One request per input, ``concurrency`` at a time; results (``Result``) in order."""
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    gate = asyncio.Semaphore(concurrency)

    async def one(value: Any) -> Result:
        async with gate:
            return await node.request(capability, value, **opts)

    tasks = [asyncio.ensure_future(one(v)) for v in inputs]
    try:
        return list(await asyncio.gather(*tasks, return_exceptions=return_exceptions))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class _Undo:
    """How to undo one completed step: a request to its compensating capability."""

    __slots__ = ("capability", "done", "input", "node", "step", "task_id", "timeout")

    def __init__(
        self, step: str, capability: str, input: Any, node: Node, task_id: str, timeout: float
    ) -> None:
        self.step = step
        self.capability = capability
        self.input = input
        self.node = node
        self.task_id = task_id
        self.timeout = timeout
        #: the compensation pass that ran it, once that pass has ended
        self.done: asyncio.Future[_Pass] = asyncio.get_running_loop().create_future()

    def moved(self, saga_id: str) -> _Undo:
        """This undo, owned by the saga a completed nested saga ``saga_id`` ran in."""
        return _Undo(
            f"{saga_id}/{self.step}",
            self.capability,
            self.input,
            self.node,
            self.task_id,
            self.timeout,
        )


class SagaFailed(ContractNetError):
    """A saga stopped: ``failed_step`` failed (or the block raised), ``compensated`` were
    undone (newest first), ``unrecovered`` are steps that could not be undone (their
    compensation failed, or its input could not be computed): they need a person.
    ``uncertain``: the failed step ended with its outcome unknown (a timeout, a lost
    executor) and may have taken effect without a result to compensate from.

    Steps of a nested saga are named ``<nested saga id>/<step>`` (``"a1b2/1:charge"``):
    a nested saga's failure is the outer saga's, with the nested failed step, and what
    the nested saga undid (or could not) is listed before the outer saga's steps."""

    default_code = "saga-failed"

    def __init__(
        self,
        message: str,
        *,
        failed_step: str,
        compensated: tuple[str, ...],
        unrecovered: tuple[str, ...],
        uncertain: bool = False,
        attempts: tuple[str, ...] = (),
        saga_id: str = "",
    ) -> None:
        super().__init__(message, attempts=attempts)
        #: the saga that failed (a saga nested in another's block fails that one too)
        self.saga_id = saga_id
        self.failed_step = failed_step
        self.compensated = compensated
        self.unrecovered = unrecovered
        self.uncertain = uncertain
        self._origin: Saga | None = None  # the Saga object that raised it


class _Pass:
    """One run of a saga's compensations, in a task of its own: it waits (bounded) for
    the saga's steps still running, then undoes every pending step, newest first.

    A pass whose ``SagaFailed`` reaches nobody (the saga was cancelled, its caller
    stopped waiting, or a step completed after the saga had failed and reported)
    logs its outcome instead."""

    def __init__(
        self,
        saga: Saga,
        step: str,
        message: str,
        *,
        wait: bool,
        background: bool,
        attempts: tuple[str, ...] = (),
        uncertain: bool = False,
        compensated: tuple[str, ...] = (),
        unrecovered: tuple[str, ...] = (),
    ) -> None:
        self.saga = saga
        self.step = step
        self.message = message
        self.attempts = attempts
        self.uncertain = uncertain
        self.wait = wait
        self.background = background
        self.earlier_done = compensated  # undone already (by a nested saga that failed)
        self.earlier_lost = unrecovered
        self.todo: list[_Undo] | None = None  # taken when the running steps have ended
        self.left: list[str] = []  # steps of ``todo`` not tried yet, newest first
        self.done: list[str] = []
        self.lost: list[str] = []
        self.why: dict[str, str] = {}
        self.logged = False
        saga._passes.append(self)
        self.task: asyncio.Task[None] = asyncio.ensure_future(saga._run(self))
        # Referenced here so that no pass is collected midway when its Saga object is
        # gone (the event loop keeps only weak references to tasks).
        _RUNNING[self.task] = self
        self.task.add_done_callback(_forget)

    def uses(self, node: Node) -> bool:
        undos = self.saga._undo if self.todo is None else self.todo
        return node is self.saga.node or any(u.node is node for u in undos)

    def not_undone_yet(self) -> list[str]:
        if self.todo is None:
            return [u.step for u in reversed(self.saga._undo)] + self.saga._lost
        return [*self.earlier_lost, *self.lost, *self.left]

    def error(self) -> SagaFailed:
        done = (*self.earlier_done, *self.done)
        lost = (*self.earlier_lost, *self.lost)
        detail = f"; undone: {', '.join(done) or 'nothing'}"
        if lost:
            detail += f"; NOT undone: {', '.join(lost)}"
        err = SagaFailed(
            self.message + detail,
            failed_step=self.step,
            compensated=done,
            unrecovered=lost,
            uncertain=self.uncertain,
            attempts=self.attempts,
            saga_id=self.saga.saga_id,
        )
        err._origin = self.saga
        return err

    def report(self) -> None:
        """Log the outcome, once: an error naming each step not undone."""
        if self.logged:
            return
        self.logged = True
        lost = [*self.earlier_lost, *self.lost]
        done = [*self.earlier_done, *self.done]
        if lost:
            named = ", ".join(f"{s} ({self.why[s]})" if s in self.why else s for s in lost)
            log.error(
                "saga %s: NOT undone, a person must look: %s; undone: %s; after: %s",
                self.saga.saga_id,
                named,
                ", ".join(done) or "nothing",
                self.message,
            )
        elif done:
            log.info(
                "saga %s: undone: %s; after: %s", self.saga.saga_id, ", ".join(done), self.message
            )


#: Compensation passes not ended yet, by task (``Node.stop`` waits for its own).
_RUNNING: dict[asyncio.Task[None], _Pass] = {}
#: Sagas inside their ``async with`` block, by id: an id in use is refused.
_ACTIVE: weakref.WeakValueDictionary[str, Saga] = weakref.WeakValueDictionary()
#: Every saga not collected yet (``Node.stop`` cancels the steps its node has in flight).
_SAGAS: weakref.WeakSet[Saga] = weakref.WeakSet()
#: The saga whose block the code runs in (a saga entered there is nested in it).
_CURRENT: contextvars.ContextVar[Saga | None] = contextvars.ContextVar("parley_saga", default=None)


def _forget(task: asyncio.Task[None]) -> None:
    _RUNNING.pop(task, None)


async def stop_steps(node: Node, timeout: float) -> None:
    """Cancel the saga steps ``node`` has in flight and wait, at most ``timeout``
    seconds, for them to end (``Node.stop`` does, first): their sagas fail and start
    undoing their completed steps while the node can still send the compensations.
    The stop used to fail those steps as it closed, and every compensation with them
    ("node is stopped"): nothing was undone."""
    running: dict[asyncio.Future[None], str] = {}
    for saga in list(_SAGAS):
        if saga.node is node:
            steps = {f: t for f, t in saga._running.items() if not f.done()}
            if steps:
                saga._stopping = True
                running.update(steps)
    for task_id in running.values():
        node.cancel(task_id)
    if running:
        await asyncio.wait(list(running), timeout=max(0.0, timeout))


async def finish_compensations(node: Node, timeout: float) -> None:
    """Wait, at most ``timeout`` seconds, for the saga compensations that use ``node``
    (``Node.stop`` does, before stopping the runtime); those still running then are
    logged as an error naming the saga and the steps not undone yet."""
    me = asyncio.current_task()
    passes = [p for t, p in _RUNNING.items() if t is not me and not t.done() and p.uses(node)]
    if not passes:
        return
    await asyncio.wait([p.task for p in passes], timeout=max(0.0, timeout))
    for p in passes:
        left = p.not_undone_yet()
        if not p.task.done() and left:
            log.error(
                "saga %s: its node stops while the compensations run; NOT undone yet: %s",
                p.saga.saga_id,
                ", ".join(left),
            )


class Saga:
    """Steps on several agents that complete together or are undone together.

    A saga id is used once: the task ids of its steps (``<id>-<n>``) and compensations
    (``<id>-undo-<n>``, ``n`` the number of the step undone) derive from it, so after a
    failure start a new ``Saga`` (a new id) to try again. Entering a saga whose id is
    in use by a saga still in its block raises ``LocalProtocolError``, and so does an
    id over ``SAGA_ID_MAX`` (48) characters.

    A saga entered in another saga's block is nested in it: when it completes, its
    steps join the outer saga's, and are undone if the outer saga fails; when it fails,
    the outer saga fails too. Steps may run in parallel (``asyncio.gather``, or an
    ``asyncio.TaskGroup`` inside the block): a failure waits (at most ``timeout``) for
    the steps still running before undoing, and a step that completes after that is
    undone at once and raises ``SagaFailed``. Out of a ``TaskGroup`` the failure comes
    as an ``ExceptionGroup`` of ``SagaFailed`` (``except* SagaFailed`` catches it, not
    ``except SagaFailed``); out of ``gather``, as the ``SagaFailed`` itself.

    ``compensated`` and ``unrecovered`` sum up every compensation run so far, including
    those run in the background after a cancellation, whose failures are also logged
    (logger ``parley.workflow``).
    """

    def __init__(self, node: Node, *, saga_id: str | None = None, timeout: float = 60.0) -> None:
        if saga_id is not None and (
            not isinstance(saga_id, str) or not 1 <= len(saga_id) <= SAGA_ID_MAX
        ):
            # A longer id let its steps run (``<id>-<n>`` fits a task id) and every
            # compensation fail (``<id>-undo-<n>`` does not): nothing could be undone.
            raise LocalProtocolError(f"saga id: 1 to {SAGA_ID_MAX} characters, not {saga_id!r}")
        self.node = node
        self.saga_id = saga_id or secrets.token_hex(8)
        self.timeout = timeout
        #: steps undone so far (newest first within each run of compensations)
        self.compensated: tuple[str, ...] = ()
        #: steps that could not be undone (they need a person), as ``SagaFailed`` says
        self.unrecovered: tuple[str, ...] = ()
        self._undo: list[_Undo] = []
        self._lost: list[str] = []  # steps done whose undo cannot even be built
        self._steps = 0
        self._failed = False
        self._closed = False  # a pass took the pending undos: later ones run on their own
        #: steps whose request runs, with its task id
        self._running: dict[asyncio.Future[None], str] = {}
        self._stopping = False  # its node is stopping: its steps in flight are cancelled
        self._passes: list[_Pass] = []
        self._outer: Saga | None = None
        _SAGAS.add(self)
        self._token: contextvars.Token[Saga | None] | None = None

    async def step(
        self,
        capability: str,
        input: Any = None,
        *,
        compensate: str | None = None,
        compensate_input: Callable[[Any], Any] | None = None,
        **opts: Any,
    ) -> Any:
        """Run one step; its value. ``compensate`` names the capability that undoes it,
        called with ``compensate_input(value)`` (default: the step's value). A step
        that fails (in the mesh or locally) raises ``SagaFailed`` naming it; one that
        completes after the saga failed (run in parallel) is undone and raises it."""
        if self._failed:
            raise SagaFailed(
                f"saga {self.saga_id} has failed already: start a new saga",
                failed_step="",
                compensated=(),
                unrecovered=(),
                saga_id=self.saga_id,
            )
        self._steps += 1
        number = self._steps
        name = f"{number}:{capability}"
        opts.setdefault("timeout", self.timeout)
        opts.setdefault("task_id", f"{self.saga_id}-{number}")
        running: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._running[running] = opts["task_id"]
        try:
            try:
                result = await self.node.request(capability, input, **opts)
            except asyncio.CancelledError:
                self._settle(running)
                self._undo_in_background()
                raise
            except ContractNetError as exc:
                self._settle(running)
                uncertain = exc.code in ("timeout", "outcome-unknown")
                note = " (it may have taken effect: outcome unknown)" if uncertain else ""
                if self._stopping and exc.code == "cancelled":
                    note = " (its node is stopping)"
                await self._fail(
                    name, f"step {name} failed: {exc.message}{note}", exc.attempts, uncertain
                )
            except Exception as exc:  # refused before it was sent (bad input), or a bug
                self._settle(running)
                await self._fail(
                    name,
                    f"step {name} failed: {type(exc).__name__}: {exc}",
                    (),
                    not isinstance(exc, LocalProtocolError),
                )
            undo = None
            if compensate is not None:
                try:
                    value = compensate_input(result.value) if compensate_input else result.value
                except Exception as exc:
                    self._lost.append(name)
                    self._settle(running)
                    await self._fail(
                        name, f"step {name}: its compensation input failed: {exc!r}", (), False
                    )
                undo = _Undo(
                    name,
                    compensate,
                    value,
                    self.node,
                    f"{self.saga_id}-undo-{number}",
                    self.timeout,
                )
            await self._take(name, [] if undo is None else [undo], running)
        finally:
            self._settle(running)
        return result.value

    async def abort(self, reason: str = "aborted") -> NoReturn:
        """Undo the steps done so far and raise ``SagaFailed``."""
        await self._fail("", f"saga {self.saga_id} aborted: {reason}", (), False)

    async def __aenter__(self) -> Saga:
        if _ACTIVE.get(self.saga_id) is not None:
            raise LocalProtocolError(
                f"saga id {self.saga_id!r} is in use by an active saga: each saga needs its own id"
            )
        _ACTIVE[self.saga_id] = self
        outer = _CURRENT.get()  # (a task started in a block that has ended sees it too)
        self._outer = outer if outer is not None and outer._token is not None else None
        self._token = _CURRENT.set(self)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        try:
            await self._exit(exc)
        finally:
            if _ACTIVE.get(self.saga_id) is self:
                del _ACTIVE[self.saga_id]
            if self._token is not None:
                try:
                    _CURRENT.reset(self._token)
                except ValueError:  # left in another context than entered
                    _CURRENT.set(self._outer)
                self._token = None

    async def _exit(self, exc: BaseException | None) -> None:
        if exc is None:
            if self._outer is not None and not self._failed and self._undo:
                # Nested and completed: the outer saga undoes these steps if it fails.
                undos, self._undo = [u.moved(self.saga_id) for u in self._undo], []
                await self._outer._take(f"nested saga {self.saga_id}", undos)
            return
        if self._ours(exc):
            return  # our own failure: compensated already
        if isinstance(exc, BaseExceptionGroup) and exc.split(lambda e: self._ours(e))[1] is None:
            return  # parallel steps in a task group, each raising our failure
        # Another saga's failure (one nested in this block, or run by a helper called
        # from it) is this block failing: it used to pass as ours, and this saga's
        # completed steps were never undone.
        if isinstance(exc, asyncio.CancelledError):
            self._undo_in_background()
            return
        message = f"saga {self.saga_id}: {type(exc).__name__}: {exc}"
        if isinstance(exc, SagaFailed):  # name its steps as theirs
            inner = exc.saga_id

            def named(steps: tuple[str, ...]) -> tuple[str, ...]:
                return tuple(f"{inner}/{s}" for s in steps)

            await self._fail(
                f"{inner}/{exc.failed_step}" if exc.failed_step else "",
                message,
                exc.attempts,
                exc.uncertain,
                compensated=named(exc.compensated),
                unrecovered=named(exc.unrecovered),
            )
        if isinstance(exc, Exception):  # the block failed between steps: undo, then say so
            await self._fail("", message, (), False)

    def _ours(self, exc: BaseException) -> bool:
        if not isinstance(exc, SagaFailed):
            return False
        return exc._origin is self or (exc._origin is None and exc.saga_id == self.saga_id)

    def _settle(self, running: asyncio.Future[None]) -> None:
        self._running.pop(running, None)
        if not running.done():
            running.set_result(None)

    async def _take(
        self, what: str, undos: list[_Undo], running: asyncio.Future[None] | None = None
    ) -> None:
        """Undos of completed work (a step, a nested saga's steps) join the pending ones.
        If the saga failed meanwhile, they are undone at once, and ``SagaFailed``."""
        self._undo.extend(undos)
        if running is not None:
            self._settle(running)
        if not self._failed:
            return
        first = self._passes[0]
        if not undos:  # nothing to undo: the saga's failure, once reported
            await asyncio.shield(first.task)
            raise first.error()
        if self._closed:  # the failure took the pending undos already: undo these now
            _Pass(
                self,
                first.step,
                f"saga {self.saga_id} had failed when {what} completed",
                wait=False,
                background=True,
            )
        done_by = await asyncio.shield(undos[0].done)
        raise done_by.error()

    def _undo_in_background(self) -> None:
        """Cancelled: the compensations still run (in a task of their own, which a
        second cancellation of the caller does not stop), and their outcome is logged."""
        if self._failed:
            return
        self._failed = True
        _Pass(self, "", f"saga {self.saga_id} cancelled", wait=True, background=True)

    async def _run(self, p: _Pass) -> None:
        """The pass ``p``: wait for the steps still running (bounded), then undo every
        pending step, newest first."""
        if p.wait:
            running = [f for f in self._running if not f.done()]
            if running:
                await asyncio.wait(running, timeout=self.timeout)
        self._closed = True
        todo, self._undo = self._undo, []
        p.lost, self._lost = list(self._lost), []
        p.todo = todo
        p.left = [u.step for u in reversed(todo)]
        for undo in reversed(todo):
            try:
                await undo.node.request(
                    undo.capability, undo.input, timeout=undo.timeout, task_id=undo.task_id
                )
                p.done.append(undo.step)
            except Exception as exc:  # a failed, refused or impossible request: a person must look
                p.lost.append(undo.step)
                p.why[undo.step] = f"{undo.task_id} {undo.capability}: {exc}"
            p.left.pop(0)
        self.compensated += (*p.earlier_done, *p.done)
        self.unrecovered += (*p.earlier_lost, *p.lost)
        for undo in todo:
            if not undo.done.done():
                undo.done.set_result(p)
        if p.background:
            p.report()

    async def _fail(
        self,
        step: str,
        message: str,
        attempts: tuple[str, ...],
        uncertain: bool,
        *,
        compensated: tuple[str, ...] = (),
        unrecovered: tuple[str, ...] = (),
    ) -> NoReturn:
        again = self._failed  # reported already: what this pass does goes to the log
        self._failed = True
        p = _Pass(
            self,
            step,
            message,
            wait=True,
            background=again,
            attempts=attempts,
            uncertain=uncertain,
            compensated=compensated,
            unrecovered=unrecovered,
        )
        # Shielded: a caller cancelled while the steps are being undone (a timeout
        # around the saga) stops waiting, not the undoing; it used to drop every
        # compensation not yet run. Its outcome then goes to the log.
        try:
            await asyncio.shield(p.task)
        except asyncio.CancelledError:
            if p.task.done():
                p.report()
            else:
                p.background = True
            raise
        raise p.error()
