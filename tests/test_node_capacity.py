"""Graceful degradation on real nodes: a capability never runs more handlers at once
than its ``max_concurrency``, and when every executor is full a request waits for
capacity (until its timeout) instead of failing after three quick auctions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from node import Node, Task
from node.api import LocalOrg


async def _with_one_slot(
    body: Callable[[Node, dict[str, int], asyncio.Event], Awaitable[None]],
) -> None:
    org = LocalOrg("acme")
    executor = Node.from_org(org, "executor", preset="local")
    seen = {"running": 0, "most": 0}
    started = asyncio.Event()

    @executor.capability("slow", max_concurrency=1)
    async def slow(task: Task) -> int:
        seen["running"] += 1
        seen["most"] = max(seen["most"], seen["running"])
        started.set()
        await asyncio.sleep(0.4)
        seen["running"] -= 1
        return int(task.input)

    async with executor:
        requester = Node.from_org(org, "requester", seeds=[executor.endpoint], preset="local")
        async with requester:
            assert await requester.wait_for_peers(1, timeout=10)
            await body(requester, seen, started)


def test_overlapping_awards_never_run_more_handlers_than_max_concurrency() -> None:
    # Four requests at once: all four bids leave before any award (bids reserve
    # nothing), so the executor holds four tasks; it runs them one at a time.
    async def body(requester: Node, seen: dict[str, int], _started: asyncio.Event) -> None:
        results = await asyncio.gather(
            *(requester.request("slow", i, timeout=15) for i in range(4))
        )
        assert sorted(r.value for r in results) == [0, 1, 2, 3]
        assert seen["most"] == 1

    asyncio.run(asyncio.wait_for(_with_one_slot(body), 60))


def test_requests_to_a_full_executor_wait_for_capacity_and_complete() -> None:
    # The executor is busy when three more requests come: it refuses them ("full",
    # retry_after). They wait and try again instead of failing "no-bidders".
    async def body(requester: Node, seen: dict[str, int], started: asyncio.Event) -> None:
        first = asyncio.ensure_future(requester.request("slow", 0, timeout=15))
        await asyncio.wait_for(started.wait(), 10)
        later = await asyncio.gather(*(requester.request("slow", i, timeout=15) for i in (1, 2, 3)))
        assert (await first).value == 0
        assert sorted(r.value for r in later) == [1, 2, 3]
        assert requester.statistics().get("contract.busy_round", 0) >= 1
        assert seen["most"] == 1

    asyncio.run(asyncio.wait_for(_with_one_slot(body), 60))


def test_a_stopping_executor_hands_back_queued_tasks_without_starting_them() -> None:
    async def body() -> None:
        org = LocalOrg("acme")
        executor = Node.from_org(org, "executor", preset="local")
        starts: list[int] = []
        first_started = asyncio.Event()

        @executor.capability("slow", max_concurrency=1)
        async def slow(task: Task) -> int:
            starts.append(int(task.input))
            first_started.set()
            await asyncio.sleep(0.5)
            return int(task.input)

        await executor.start()
        requester = Node.from_org(org, "requester", seeds=[executor.endpoint], preset="local")
        async with requester:
            assert await requester.wait_for_peers(1, timeout=10)
            calls = [
                asyncio.ensure_future(requester.request("slow", i, timeout=10)) for i in (0, 1)
            ]
            await asyncio.wait_for(first_started.wait(), 10)
            await executor.stop(3.0)  # the running one finishes; the queued one must not start
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert starts == [starts[0]]
        done = [o for o in outcomes if not isinstance(o, BaseException)]
        assert [r.value for r in done] == starts

    asyncio.run(asyncio.wait_for(body(), 60))


def test_a_requested_task_carries_its_decision_summary() -> None:
    async def body(requester: Node, seen: dict[str, int], _started: asyncio.Event) -> None:
        result = await requester.request("slow", 7, timeout=15, strategy="first_idle")
        (view,) = [t for t in requester.tasks() if t["task_id"] == result.task_id]
        assert view["strategy"] == "first_idle" and view["risk"] == "low"
        first, last = view["decisions"][0], view["decisions"][-1]
        assert first.startswith("epoch 1: awarded to ") and "by first_idle among 1 bid(s)" in first
        assert last.startswith(f"completed by {result.executor[:12]} after ")

    asyncio.run(asyncio.wait_for(_with_one_slot(body), 60))
