"""The asyncio runtime around a core, with a tiny fake core (the real one is
exercised by the process tests). The fake executes its own tasks and echoes
frames, which covers the pump, timers, handlers, cancellation and stop."""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from mesh.events import (
    Event,
    TaskAssigned,
    TaskAwarded,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskReassigned,
)
from node.handlers import HandlerFailed, Task
from node.runtime import Runtime, TaskView
from protocols.contract_net.task import TaskSpec
from protocols.errors import ContractNetError


def aio(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 30))

    return run


class FakeCore:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.events: list[Event] = []
        self.outbox: list[tuple[str, bytes]] = []
        self.received: list[tuple[bytes, str]] = []
        self.timer: float | None = time.time() + 0.05
        self.timers = 0
        self.ids = itertools.count()
        self.failed: dict[str, str] = {}
        self.left = False

    def receive(self, frame: bytes, endpoint: str, now: float) -> None:
        self.received.append((frame, endpoint))

    def frames_to_send(self, now: float) -> list[tuple[str, bytes]]:
        out, self.outbox = self.outbox, []
        return out

    def get_timer(self) -> float | None:
        return self.timer

    def handle_timer(self, now: float) -> None:
        self.timers += 1
        self.timer = now + 0.05 if self.timers < 3 else None

    def next_event(self) -> Event | None:
        return self.events.pop(0) if self.events else None

    def join(self, seeds: Sequence[str], now: float) -> None:
        for s in seeds:
            self.outbox.append((s, b"hello"))

    def leave(self, now: float) -> None:
        self.left = True

    def submit(self, task: Any, now: float) -> str:
        tid = f"t{next(self.ids)}"
        self.events.append(
            TaskAssigned(tid, "me", task.capability, task.input, 1, now + 5, "at-least-once", "low")
        )
        return tid

    def complete(self, task_id: str, result: Any, now: float) -> None:
        self.events.append(TaskCompleted(task_id, "me", 1, result, ("me",)))

    def fail(self, task_id: str, reason: str, now: float) -> None:
        self.failed[task_id] = reason
        self.events.append(TaskFailed(task_id, reason, ("me",)))

    def statistics(self) -> dict[str, int]:
        return {"frames_in": len(self.received)}


async def double(task: Task) -> Any:
    task.progress(50, "half")
    return task.input * 2


async def broken(task: Task) -> Any:
    raise HandlerFailed("no can do")


async def slow(task: Task) -> Any:
    await asyncio.sleep(10)
    return "late"


GIVEN: list[Task] = []


async def shielded(task: Task) -> Any:
    """Work that cannot be interrupted mid-way (a thread, a subprocess) and polls
    ``task.cancelled`` instead of receiving CancelledError."""
    GIVEN.append(task)
    for _ in range(1000):
        if task.cancelled.is_set():
            return "stopped"
        await asyncio.shield(asyncio.sleep(0.01))
    return "late"


def _runtime(cores: list[FakeCore]) -> Runtime:
    def make(endpoint: str) -> FakeCore:
        cores.append(FakeCore(endpoint))
        return cores[-1]

    handlers = {"double": double, "broken": broken, "slow": slow, "shielded": shielded}
    return Runtime(make, handlers=handlers)  # type: ignore[arg-type]


@aio
async def test_request_runs_handler_and_resolves() -> None:
    cores: list[FakeCore] = []
    rt = _runtime(cores)
    rt.start()
    try:
        _, fut = rt.submit(TaskSpec("double", 21))
        result = await fut
        assert result.value == 42 and result.executor == "me"
        _, fut = rt.submit(TaskSpec("broken", 1))
        try:
            await fut
            raise AssertionError("expected a failure")
        except ContractNetError as exc:
            assert "no can do" in exc.message
        _, fut = rt.submit(TaskSpec("missing", 1))
        try:
            await fut
        except ContractNetError as exc:
            assert exc.message == "no handler"
        for _ in range(100):
            if cores[0].timers >= 3:
                break
            await asyncio.sleep(0.02)
        assert cores[0].timers == 3
        assert rt.tasks["t0"].state == "completed"
    finally:
        await rt.stop(0)
    assert cores[0].left


@aio
async def test_frames_between_runtimes_and_cancel() -> None:
    cores: list[FakeCore] = []
    a = _runtime(cores)
    b = _runtime(cores)
    a.start()
    b.start([a.endpoint])
    try:
        for _ in range(200):
            if cores[0].received:
                break
            await asyncio.sleep(0.01)
        assert cores[0].received == [(b"hello", b.endpoint)]
        tid, _fut = a.submit(TaskSpec("slow", 0))
        await asyncio.sleep(0.05)
        assert tid in a.running
        cores[0].events.append(TaskCancelled(tid, 1, "superseded"))
        a._pump()
        assert tid not in a.running
        (ran,) = [t for t in a.tasks.values() if t.task_id == tid and t.role == "executor"]
        assert ran.state == "cancelled"
    finally:
        await a.stop(0)
        await b.stop(0)
    assert _fut.done() and (_fut.cancelled() or _fut.exception() is not None)


@aio
async def test_stop_hands_back_unfinished_work() -> None:
    cores: list[FakeCore] = []
    rt = _runtime(cores)
    rt.start()
    tid, _fut = rt.submit(TaskSpec("slow", 0))
    await asyncio.sleep(0.05)
    out = await rt.stop(0.1)
    assert out == {"finished": 0, "handed_back": 1}
    assert cores[0].failed[tid] == "executor shutting down"
    assert cores[0].left
    # The request this node made itself is failed, not left hanging.
    assert isinstance(_fut.exception(), ContractNetError)


@aio
async def test_cancel_and_stop_set_the_tasks_cancelled_event() -> None:
    cores: list[FakeCore] = []
    rt = _runtime(cores)
    rt.start()
    GIVEN.clear()
    try:
        tid, _fut = rt.submit(TaskSpec("shielded", 0))
        await asyncio.sleep(0.05)
        (given,) = GIVEN
        assert not given.cancelled.is_set()
        cores[0].events.append(TaskCancelled(tid, 1, "superseded"))
        rt._pump()
        assert given.cancelled.is_set() and tid not in rt.running
        tid2, _fut2 = rt.submit(TaskSpec("shielded", 0))
        await asyncio.sleep(0.05)
    finally:
        out = await rt.stop(0.05)
    for fut in (_fut, _fut2):
        assert fut.done() and (fut.cancelled() or fut.exception() is not None)
    assert GIVEN[1].cancelled.is_set()
    assert out == {"finished": 0, "handed_back": 1}
    assert cores[0].failed[tid2] == "executor shutting down"


@aio
async def test_a_core_exception_costs_one_frame_not_the_batch_or_the_node() -> None:
    """The core should refuse bad input with a typed rejection; when a bug makes it
    raise instead, the runtime counts it, logs it, and goes on with the other frames
    of the batch, its timers and its requests."""
    cores: list[FakeCore] = []
    rt = _runtime(cores)
    rt.start()
    try:
        core = cores[0]
        real_receive = core.receive

        def receive(frame: bytes, endpoint: str, now: float) -> None:
            if frame == b"poison":
                raise ValueError("a bug in the core")
            real_receive(frame, endpoint, now)

        core.receive = receive  # type: ignore[method-assign]
        rt._on_frames([("tcp://a:1", b"one"), ("tcp://a:1", b"poison"), ("tcp://a:1", b"two")])
        assert [f for f, _ in core.received] == [b"one", b"two"]
        assert rt.statistics()["runtime.core_errors"] == 1

        def timer(now: float) -> None:
            raise KeyError("another bug")

        core.handle_timer = timer  # type: ignore[method-assign]
        rt._on_timer()
        assert rt.statistics()["runtime.core_errors"] == 2
        _, fut = rt.submit(TaskSpec("double", 4))  # still serving
        assert (await fut).value == 8
    finally:
        await rt.stop(0)


@aio
async def test_a_move_to_a_new_auction_is_one_decision_line() -> None:
    """`tasks --why` showed "epoch 2: moved from X to Y (peer-dead; a new auction)" and
    then "epoch 2: awarded to Y ...", which read as two moves (the core emits
    TaskReassigned(new_auction=True) and then the TaskAwarded of that epoch)."""
    cores: list[FakeCore] = []
    rt = _runtime(cores)
    rt.start()
    try:
        rt.tasks["t9"] = TaskView("t9", "slow", "requester", "auction", time.time(), strategy="x")
        x, y, z = "x" * 52, "y" * 52, "z" * 52
        cores[0].events += [
            TaskAwarded("t9", x, 1, (y,), 2),
            TaskReassigned("t9", x, y, 2, "lease-expired", False),  # to its backup
            TaskReassigned("t9", y, z, 3, "peer-dead", True),  # to a new auction
            TaskAwarded("t9", z, 3, (), 1),
        ]
        rt._pump()
        assert rt.tasks["t9"].decisions == [
            f"epoch 1: awarded to {x[:12]} by x among 2 bid(s), 0 refusal(s) so far;"
            f" backups {y[:12]}",
            f"epoch 2: moved from {x[:12]} to {y[:12]} (lease-expired; its backup)",
            f"epoch 3: moved from {y[:12]} to {z[:12]} (peer-dead; a new auction): awarded"
            " by x among 1 bid(s), 0 refusal(s) so far; backups none",
        ]
        assert rt.tasks["t9"].winner == z and rt.tasks["t9"].epoch == 3
    finally:
        await rt.stop(0)
