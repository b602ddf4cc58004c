"""A request its caller gives up on is cancelled in the mesh: the executor is told
and its handler stopped. It used to run on for nobody: a Saga cancelled during a
step left that step's effect in place with no compensation."""

from __future__ import annotations

import asyncio

import pytest

from node import LocalOrg, Node, Task
from protocols.errors import ContractNetError


async def _with_slow_executor(body: object) -> dict[str, int]:
    seen = {"started": 0, "stopped": 0, "finished": 0}
    org = LocalOrg("acme")
    executor = Node.from_org(org, "executor", preset="local")

    @executor.capability("slow", max_concurrency=4)
    async def slow(task: Task) -> str:
        seen["started"] += 1
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            seen["stopped"] += 1
            raise
        seen["finished"] += 1
        return "late"

    async with executor:
        req = Node.from_org(org, "requester", seeds=[executor.endpoint], preset="local")
        async with req:
            assert await req.wait_for_peers(1, timeout=10)
            await body(req)  # type: ignore[operator]
            for _ in range(100):  # bounded: the cancel reaches the executor
                if seen["stopped"]:
                    break
                await asyncio.sleep(0.05)
    return seen


def test_a_request_cancelled_by_its_caller_stops_the_handler() -> None:
    async def body(req: Node) -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await req.request("slow", 1, timeout=30)

    seen = asyncio.run(asyncio.wait_for(_with_slow_executor(body), 60))
    assert seen == {"started": 1, "stopped": 1, "finished": 0}


def test_node_cancel_ends_a_request_and_says_so() -> None:
    async def body(req: Node) -> None:
        task_id, fut = req.submit_nowait("slow", 1, timeout=30)
        for _ in range(100):  # bounded: wait until it runs
            if any(t["state"] == "awarded" for t in req.tasks()):
                break
            await asyncio.sleep(0.05)
        assert req.cancel(task_id) is True
        with pytest.raises(ContractNetError) as caught:
            await fut
        assert caught.value.code == "cancelled"
        assert req.cancel(task_id) is False  # ended already

    seen = asyncio.run(asyncio.wait_for(_with_slow_executor(body), 60))
    assert seen["stopped"] == 1 and seen["finished"] == 0
