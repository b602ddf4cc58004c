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
executors); a saga id is used once. Cancelling a saga (or a timeout around it) still
runs its compensations, in a task of their own.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from protocols.errors import ContractNetError

if TYPE_CHECKING:
    from node.api import Node
    from node.runtime import Result

__all__ = ["Saga", "SagaFailed", "fan_out"]


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


@dataclass(frozen=True, slots=True)
class _Undo:
    step: str
    capability: str
    input: Any


class SagaFailed(ContractNetError):
    """A saga stopped: ``failed_step`` failed (or the block raised), ``compensated`` were
    undone (newest first), ``unrecovered`` are steps that could not be undone (their
    compensation failed, or its input could not be computed): they need a person.
    ``uncertain``: the failed step ended with its outcome unknown (a timeout, a lost
    executor) and may have taken effect without a result to compensate from."""

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


#: Compensation tasks still running, referenced here so that none is collected
#: midway when its Saga object is gone (the event loop keeps only weak references).
_RUNNING: set[asyncio.Task[Any]] = set()


class Saga:
    """Steps on several agents that complete together or are undone together.

    A saga id is used once: the task ids of its steps and compensations derive from
    it, so after a failure start a new ``Saga`` (a new id) to try again.
    """

    def __init__(self, node: Node, *, saga_id: str | None = None, timeout: float = 60.0) -> None:
        self.node = node
        self.saga_id = saga_id or secrets.token_hex(8)
        self.timeout = timeout
        self._undo: list[_Undo] = []
        self._lost: list[str] = []  # steps done whose undo cannot even be built
        self._steps = 0
        self._failed = False
        self._background: set[asyncio.Task[Any]] = set()

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
        called with ``compensate_input(value)`` (default: the step's value)."""
        if self._failed:
            raise SagaFailed(
                f"saga {self.saga_id} has failed already: start a new saga",
                failed_step="",
                compensated=(),
                unrecovered=(),
                saga_id=self.saga_id,
            )
        self._steps += 1
        name = f"{self._steps}:{capability}"
        opts.setdefault("timeout", self.timeout)
        opts.setdefault("task_id", f"{self.saga_id}-{self._steps}")
        try:
            result = await self.node.request(capability, input, **opts)
        except asyncio.CancelledError:
            self._undo_in_background()
            raise
        except ContractNetError as exc:
            uncertain = exc.code in ("timeout", "outcome-unknown")
            note = " (it may have taken effect: outcome unknown)" if uncertain else ""
            await self._fail(
                name, f"step {name} failed: {exc.message}{note}", exc.attempts, uncertain
            )
        if compensate is not None:
            try:
                undo_input = compensate_input(result.value) if compensate_input else result.value
            except Exception as exc:
                self._lost.append(name)
                await self._fail(
                    name, f"step {name}: its compensation input failed: {exc!r}", (), False
                )
            self._undo.append(_Undo(name, compensate, undo_input))
        return result.value

    async def abort(self, reason: str = "aborted") -> NoReturn:
        """Undo the steps done so far and raise ``SagaFailed``."""
        await self._fail("", f"saga {self.saga_id} aborted: {reason}", (), False)

    async def __aenter__(self) -> Saga:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None or (isinstance(exc, SagaFailed) and exc.saga_id == self.saga_id):
            return  # our own failure: compensated already
        # Another saga's failure (one nested in this block, or run by a helper called
        # from it) is this block failing: it used to pass as ours, and this saga's
        # completed steps were never undone.
        if isinstance(exc, asyncio.CancelledError):
            self._undo_in_background()
            return
        if isinstance(exc, Exception):  # the block failed between steps: undo, then say so
            await self._fail("", f"saga {self.saga_id}: {type(exc).__name__}: {exc}", (), False)

    def _undo_in_background(self) -> None:
        """Cancelled: the compensations still run (in a task of their own, which a
        second cancellation of the caller does not stop)."""
        if self._failed:
            return
        self._failed = True
        self._compensating()

    def _compensating(self) -> asyncio.Task[tuple[list[str], list[str]]]:
        """The compensations, in a task of their own (kept referenced until it ends)."""
        task = asyncio.ensure_future(self._compensate())
        _RUNNING.add(task)
        task.add_done_callback(_RUNNING.discard)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _compensate(self) -> tuple[list[str], list[str]]:
        """Run every pending compensation, newest first; (undone, not undone)."""
        todo, self._undo = list(self._undo), []
        done: list[str] = []
        lost: list[str] = list(self._lost)
        for i, undo in enumerate(reversed(todo)):
            try:
                await self.node.request(
                    undo.capability,
                    undo.input,
                    timeout=self.timeout,
                    task_id=f"{self.saga_id}-undo-{len(todo) - i}",
                )
                done.append(undo.step)
            except Exception:  # a failed, refused or impossible request: a person must look
                lost.append(undo.step)
        return done, lost

    async def _fail(
        self, step: str, message: str, attempts: tuple[str, ...], uncertain: bool
    ) -> NoReturn:
        self._failed = True
        # Shielded: a caller cancelled while the steps are being undone (a timeout
        # around the saga) stops waiting, not the undoing; it used to drop every
        # compensation not yet run.
        done, lost = await asyncio.shield(self._compensating())
        detail = f"; undone: {', '.join(done) or 'nothing'}"
        if lost:
            detail += f"; NOT undone: {', '.join(lost)}"
        raise SagaFailed(
            message + detail,
            failed_step=step,
            compensated=tuple(done),
            unrecovered=tuple(lost),
            uncertain=uncertain,
            attempts=attempts,
            saga_id=self.saga_id,
        )
