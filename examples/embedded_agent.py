"""A Parley node embedded in an asyncio agent.

Two agents of one organization in one process, on loopback: "writer" offers a
`summarize` capability; "planner" joins through writer's endpoint and asks the
mesh for summaries. Run: `python examples/embedded_agent.py`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from node import LocalOrg, Node, Task


async def main() -> None:
    org = LocalOrg("acme")
    writer = Node.from_org(org, "writer", preset="local")

    @writer.capability("summarize", version="1.2", max_concurrency=4)
    async def summarize(task: Task) -> Any:
        task.progress(50, "reading")
        words = str(task.input["text"]).split()
        return {"summary": " ".join(words[:5]) + ("…" if len(words) > 5 else "")}

    async with writer:
        planner = Node.from_org(org, "planner", seeds=[writer.endpoint], preset="local")
        async with planner:
            if not await planner.wait_for_peers(1):
                raise SystemExit("no peer joined within 10 s: check the seeds and the trust stores")
            text = "Parley lets agents find each other and bid for work without a broker."
            result = await planner.request("summarize", {"text": text}, timeout=10)
            print("summary:", result.value["summary"])
            print("ran on writer:", result.executor == writer.node_id)


if __name__ == "__main__":
    asyncio.run(main())
