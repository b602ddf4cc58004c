"""The embedding API as an agent author uses it (found by a review helper, each
reproduced first): a handler's exotic exception, progress reports, JSON arrays, plain
``def`` handlers, and a requester node stopped with requests in flight."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from mesh.events import Event, TaskProgress
from node import LocalOrg, Node, Task
from protocols.errors import ContractNetError

Body = Callable[[Node, Node], Awaitable[Any]]


async def _pair(setup: Callable[[Node], None], body: Body) -> Any:
    org = LocalOrg("acme")
    worker = Node.from_org(org, "worker", preset="local")
    setup(worker)
    async with worker:
        req = Node.from_org(org, "requester", seeds=[worker.endpoint], preset="local")
        async with req:
            assert await req.wait_for_peers(1, timeout=10)
            return await body(worker, req)


def run(setup: Callable[[Node], None], body: Body) -> Any:
    return asyncio.run(asyncio.wait_for(_pair(setup, body), 60))


class Weird(BaseException):
    pass


def test_a_handler_raising_a_base_exception_fails_its_task_at_once() -> None:
    """It escaped the runtime: the task stayed 'running', its lease renewed, and the
    request ended in a bare timeout at its deadline."""

    def setup(w: Node) -> None:
        @w.capability("base")
        async def base(task: Task) -> None:
            raise Weird("boom")

    async def body(w: Node, req: Node) -> ContractNetError:
        with pytest.raises(ContractNetError) as caught:
            await req.request("base", {}, timeout=20, max_auctions=1)
        assert w.statistics()["runtime.handler_errors"] == 1
        return caught.value

    err = run(setup, body)
    assert "Weird: boom" in err.message and err.code != "timeout"


def test_progress_reaches_the_requester_as_events_and_in_its_task_view() -> None:
    def setup(w: Node) -> None:
        @w.capability("steps")
        async def steps(task: Task) -> str:
            for i in range(3):
                task.progress(33 * (i + 1), f"step {i}")
                await asyncio.sleep(0.05)
            return "done"

    async def body(w: Node, req: Node) -> tuple[list[Event], list[dict[str, Any]]]:
        seen: list[Event] = []

        async def watch() -> None:
            async for ev in req.events():
                if isinstance(ev, TaskProgress):
                    seen.append(ev)

        watcher = asyncio.ensure_future(watch())
        await asyncio.sleep(0)
        assert (await req.request("steps", None, timeout=10)).value == "done"
        watcher.cancel()
        return seen, req.tasks()

    seen, views = run(setup, body)
    assert [(e.percent, e.message) for e in seen] == [  # type: ignore[attr-defined]
        (33, "step 0"),
        (66, "step 1"),
        (99, "step 2"),
    ]
    (view,) = views
    assert view["progress"] == 99 and view["progress_message"] == "step 2"


def test_json_arrays_are_lists_in_the_handlers_input_and_the_result() -> None:
    def setup(w: Node) -> None:
        @w.capability("append")
        async def append(task: Task) -> dict[str, Any]:
            task.input["items"].append(4)  # AttributeError on a tuple
            return {"items": task.input["items"], "nested": [[1], [2, [3]]]}

    async def body(w: Node, req: Node) -> Any:
        return (await req.request("append", {"items": [1, 2, 3]}, timeout=10)).value

    assert run(setup, body) == {"items": [1, 2, 3, 4], "nested": [[1], [2, [3]]]}


def test_a_plain_def_handler_runs_in_a_thread() -> None:
    """It ran on the loop and failed "object int can't be used in 'await'
    expression", three times (each auction re-ran it)."""
    calls: list[int] = []

    def setup(w: Node) -> None:
        @w.capability("double")
        def double(task: Task) -> int:
            calls.append(task.input)
            return int(task.input) * 2

    async def body(w: Node, req: Node) -> Any:
        return (await req.request("double", 21, timeout=10)).value

    assert run(setup, body) == 42 and calls == [21]


def test_stopping_a_requester_cancels_its_requests_in_the_mesh_and_ends_its_events() -> None:
    """The executor ran on for a requester that was gone; events() never ended; a
    stopped node still listed its peers alive; two stop() calls counted twice."""
    from test_node_cancel import _with_slow_executor

    async def body(req: Node) -> None:
        pending = asyncio.ensure_future(req.request("slow", 1, timeout=10))
        for _ in range(100):  # bounded: until it is awarded
            if any(t["state"] == "awarded" for t in req.tasks()):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # and running on the executor
        ended = asyncio.ensure_future(_drain(req))
        await asyncio.sleep(0)
        outs = await asyncio.gather(req.stop(1), req.stop(1))
        assert outs[0] == outs[1]
        with pytest.raises(ContractNetError, match="node stopped"):
            await pending
        await asyncio.wait_for(ended, 5)  # the iterator ended with the node
        assert req.peers() == []
        assert [ev async for ev in req.events()] == []  # a stopped node: no wait

    seen = asyncio.run(asyncio.wait_for(_with_slow_executor(body), 60))
    assert seen == {"started": 1, "stopped": 1, "finished": 0}


async def _drain(node: Node) -> int:
    n = 0
    async for _ in node.events():
        n += 1
    return n


def test_a_final_failure_is_not_retried_elsewhere_and_an_unsendable_result_neither() -> None:
    """A failure that no retry can cure ran again on a backup and in new auctions (a
    lone node: three times), repeating its side effects."""
    runs: list[str] = []

    def setup(w: Node) -> None:
        @w.capability("check", max_concurrency=4)
        async def check(task: Task) -> Any:
            runs.append(task.input)
            if task.input == "bad":
                from node import HandlerFailed

                raise HandlerFailed("not a valid order", retry=False)
            if task.input == "set":
                return {1, 2}  # msgpack cannot carry a set
            from node import HandlerFailed

            raise HandlerFailed("try again later")  # retried: max_auctions rounds

    async def body(w: Node, req: Node) -> list[ContractNetError]:
        errors = []
        for value in ("bad", "set", "transient"):
            with pytest.raises(ContractNetError) as caught:
                await req.request("check", value, timeout=20)
            errors.append(caught.value)
        return errors

    bad, unsendable, transient = run(setup, body)
    assert runs.count("bad") == 1 and bad.message == "failed: not a valid order"
    assert runs.count("set") == 1 and "result cannot be encoded" in unsendable.message
    assert runs.count("transient") == 3  # the default: up to max_auctions attempts
    assert "try again later" in transient.message
    assert "failure (final)" in bad.attempts[-1]


def test_a_lone_node_queues_its_own_concurrent_requests_for_its_slots() -> None:
    """The local fallback turned concurrent requests away once the node's own slot
    was taken ('failure: full', then 'no bids (0 invited)'): they now wait for a slot,
    as they do for a busy peer."""
    active: list[int] = [0, 0]  # now, most at once

    async def main() -> list[Any]:
        node = Node.from_org(LocalOrg("acme"), "alone", preset="local")

        @node.capability("slow", max_concurrency=1)
        async def slow(task: Task) -> Any:
            active[0] += 1
            active[1] = max(active)
            await asyncio.sleep(0.2)
            active[0] -= 1
            return task.input

        async with node:
            results = await asyncio.gather(
                *(node.request("slow", i, timeout=30) for i in range(6))
            )
            return [r.value for r in results]

    assert asyncio.run(asyncio.wait_for(main(), 60)) == list(range(6))
    assert active[1] == 1


def test_the_local_fallback_keeps_to_the_requests_budget() -> None:
    async def main() -> ContractNetError:
        node = Node.from_org(LocalOrg("acme"), "alone", preset="local")

        @node.capability("dear", bid=5.0)
        async def dear(task: Task) -> str:
            return "ran"

        async with node:
            with pytest.raises(ContractNetError) as caught:
                await node.request("dear", 1, timeout=10, budget=1.0)
            return caught.value

    err = asyncio.run(asyncio.wait_for(main(), 30))
    assert "could not run it itself" in err.message


def test_the_local_fallback_keeps_to_its_eta_and_says_so() -> None:
    """A timeout shorter than the capability's eta (1 s by default) is refused by every
    bidder; the requester does not run the task itself either, and the error says why
    (it used to be a bare "timeout")."""

    async def main() -> tuple[ContractNetError, Any]:
        node = Node.from_org(LocalOrg("acme"), "alone", preset="local")

        @node.capability("echo")
        async def echo(task: Task) -> Any:
            return task.input

        async with node:
            with pytest.raises(ContractNetError) as caught:
                await node.request("echo", 1, timeout=0.5)
            ok = await node.request("echo", 2, timeout=3)
            return caught.value, ok.value

    err, value = asyncio.run(asyncio.wait_for(main(), 30))
    assert err.code == "timeout"
    assert "eta does not fit before the deadline" in err.message
    assert value == 2  # with time for its eta, the lone node runs it


def test_a_request_with_a_deadline_later_than_its_timeout_waits_for_the_deadline() -> None:
    """``deadline`` is the task's end in the mesh; the request gave up at ``timeout`` +
    2 s anyway ("no result in 1s"), cancelling a task that would have completed."""

    def setup(worker: Node) -> None:
        @worker.capability("slow", eta=0.1)
        async def slow(task: Task) -> str:
            await asyncio.sleep(task.input)
            return "done"

    async def body(worker: Node, req: Node) -> None:
        result = await req.request("slow", 3.5, timeout=1, deadline=time.time() + 8)
        assert result.value == "done"

    run(setup, body)


def test_a_handlers_own_timeout_is_not_reported_as_a_missed_deadline() -> None:
    """A handler whose upstream call timed out (its own ``TimeoutError``) 30 s before
    its deadline failed with "handler missed the deadline"."""

    def setup(worker: Node) -> None:
        @worker.capability("upstream", eta=0.1)
        async def upstream(task: Task) -> None:
            await asyncio.wait_for(asyncio.sleep(5), 0.05)  # the upstream call

    async def body(worker: Node, req: Node) -> None:
        with pytest.raises(ContractNetError) as caught:
            await req.request("upstream", 1, timeout=30, max_auctions=1)
        assert "missed the deadline" not in caught.value.message
        assert "TimeoutError" in caught.value.message
        assert worker.statistics()["runtime.handler_errors"] == 1

    run(setup, body)


def test_a_plain_def_handler_learns_that_its_deadline_passed() -> None:
    """The thread of a plain ``def`` handler runs on after its deadline (cancellation
    cannot stop it), and ``task.cancelled`` was never set: it ran for nobody, and kept
    the program from exiting."""
    seen: list[bool] = []

    def setup(worker: Node) -> None:
        @worker.capability("spin", eta=0.1)
        def spin(task: Task) -> int:
            end = time.monotonic() + 4
            while not task.cancelled.is_set() and time.monotonic() < end:
                time.sleep(0.02)
            seen.append(task.cancelled.is_set())
            return 1

    async def body(worker: Node, req: Node) -> None:
        with pytest.raises(ContractNetError):
            await req.request("spin", 1, timeout=0.5, max_auctions=1)
        for _ in range(50):  # bounded: the thread notices within a poll or two
            if seen:
                break
            await asyncio.sleep(0.02)
        assert seen == [True]

    run(setup, body)


def test_progress_from_a_plain_def_handler_is_sent_by_the_event_loop() -> None:
    """``task.progress`` in a plain ``def`` handler (run in a worker thread) drove the
    core and sent on the ZeroMQ sockets from that thread, while the loop used them too
    (neither is thread-safe)."""

    def setup(worker: Node) -> None:
        @worker.capability("work", eta=0.1)
        def work(task: Task) -> str:
            for i in range(5):
                task.progress(i * 20, f"step {i}")
                time.sleep(0.01)
            return threading.current_thread().name

    async def body(worker: Node, req: Node) -> None:
        assert worker.runtime is not None
        transport = worker.runtime.transport
        send = transport.send
        senders: set[str] = set()

        def watched(endpoint: str, frame: bytes) -> None:
            senders.add(threading.current_thread().name)
            send(endpoint, frame)

        transport.send = watched  # type: ignore[method-assign]
        result = await req.request("work", 1, timeout=10)
        assert result.value != threading.current_thread().name  # it ran in a thread
        assert senders == {threading.current_thread().name}
        views = [t for t in req.tasks() if t["task_id"] == result.task_id]
        assert views and views[0]["progress"] is not None  # the reports arrived

    run(setup, body)


def test_events_taken_before_a_request_see_that_requests_events() -> None:
    """``node.events()`` subscribed only at its first iteration: the events of a
    request made between the call and the loop were lost."""

    def setup(worker: Node) -> None:
        @worker.capability("echo", eta=0.1)
        async def echo(task: Task) -> Any:
            return task.input

    async def body(worker: Node, req: Node) -> None:
        events = req.events()
        result = await req.request("echo", 1, timeout=10)
        seen: list[Event] = []
        async with asyncio.timeout(5):
            async for ev in events:
                seen.append(ev)
                if getattr(ev, "task_id", None) == result.task_id and type(ev).__name__ == (
                    "TaskCompleted"
                ):
                    break
        assert any(type(ev).__name__ == "TaskAwarded" for ev in seen)
        assert req.runtime is not None
        del events  # dropped after a break: unsubscribed
        assert req.runtime._subscribers == []

    run(setup, body)


def test_a_reload_that_widens_a_partners_policy_takes_effect_at_once() -> None:
    """acme takes only globex's ``translate``; a reload that also takes ``summarize``
    used to change nothing for the globex node already known until its next record
    (up to 30 minutes): "no known peer offers 'summarize'". Now the held record's
    offers are checked again at the reload."""
    from protocols.trust import OrgPolicy, TrustStore

    async def main() -> tuple[dict[str, list[str]], Any]:
        acme, globex = LocalOrg("acme"), LocalOrg("globex")
        g_ident, g_cert = globex.issue("g")
        g_trust = TrustStore([globex.policy(), OrgPolicy("acme", acme.signer.public_key)])
        worker = Node(g_ident, g_cert, g_trust, preset="local")

        @worker.capability("translate")
        async def translate(task: Task) -> Any:
            return "t"

        @worker.capability("summarize")
        async def summarize(task: Task) -> Any:
            return "s"

        async with worker:
            a_ident, a_cert = acme.issue("a")

            def trust(offers: tuple[str, ...]) -> TrustStore:
                partner = OrgPolicy("globex", globex.signer.public_key, may_offer=offers)
                return TrustStore([acme.policy(), partner])

            app = Node(a_ident, a_cert, trust(("translate",)), seeds=[worker.endpoint])
            async with app:
                assert await app.wait_for_peers(1, timeout=10)
                with pytest.raises(ContractNetError, match="no known peer offers"):
                    await app.request("summarize", 1, timeout=2)
                changes = app.reload_trust(trust(("translate", "summarize")))
                return changes, (await app.request("summarize", 1, timeout=5)).value

    changes, value = asyncio.run(asyncio.wait_for(main(), 40))
    assert len(changes["offers"]) == 1 and changes["changed"] == ["globex"]
    assert value == "s"
