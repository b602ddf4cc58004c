"""A requester that survives an executor crash.

Two executors offer `render`; the one that wins the award vanishes mid-task
(no goodbye: its sockets just close). The requester's award named a ranked
backup, so the task moves there with a higher epoch (a fencing token) and the
request still returns a result. Run: `python examples/crash_survivor.py`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mesh.events import TaskReassigned
from node import LocalOrg, Node, Task


async def render(task: Task) -> Any:
    await asyncio.sleep(1.0)
    return {"frame": task.input, "epoch": task.epoch}


async def main() -> None:
    org = LocalOrg("acme")
    a = Node.from_org(org, "executor-a", preset="local")
    a.add_capability("render", render)
    async with a:
        b = Node.from_org(org, "executor-b", seeds=[a.endpoint], preset="local")
        b.add_capability("render", render)
        async with b:
            req = Node.from_org(org, "requester", seeds=[a.endpoint], preset="local")
            async with req:
                if not await req.wait_for_peers(2):
                    raise SystemExit(
                        "no peer joined within 10 s: check the seeds and the trust stores"
                    )
                moves: list[TaskReassigned] = []

                async def watch() -> None:
                    async for ev in req.events():
                        if isinstance(ev, TaskReassigned):
                            moves.append(ev)

                watcher = asyncio.create_task(watch())
                pending = asyncio.create_task(req.request("render", 7, timeout=30, lease=2.0))
                busy: list[Node] = []
                for _ in range(200):  # bounded: wait until one executor runs it
                    busy = [n for n in (a, b) if n.runtime is not None and n.runtime.running]
                    if busy:
                        break
                    await asyncio.sleep(0.01)
                if not busy:
                    raise SystemExit("no executor started the task within 2 s")
                victim = busy[0]
                print(f"crashing {victim.certificate.name} mid-task")
                assert victim.runtime is not None
                victim.runtime.abort()
                result = await pending
                watcher.cancel()
                names = {a.node_id: "executor-a", b.node_id: "executor-b"}
                print(f"result {result.value} from {names[result.executor]}")
                print(f"re-awards: {len(moves)}")
                survived = result.executor != victim.node_id and len(moves) > 0
                print(f"survived the crash of {victim.certificate.name}: {survived}")


if __name__ == "__main__":
    asyncio.run(main())
