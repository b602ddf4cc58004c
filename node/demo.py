"""``mesh-node demo``: a small mesh on loopback, in one process, in under a minute.

Five nodes of two organizations that trust each other (acme ×3, globex ×2)
join through one seed and find each other by gossip; acme-1 then hands a batch
of tasks to the others through contract-net bidding while a live table shows
who bid, who won and each node's load. One executor is killed mid-task; its
task is re-awarded to a backup. A summary closes the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from mesh.events import TaskAwarded, TaskBid, TaskCompleted, TaskFailed, TaskReassigned
from node.api import LocalOrg, Node
from node.handlers import Task
from protocols.errors import ContractNetError

__all__ = ["run_demo"]

_CAP = "render"


@dataclass
class _Row:
    task_id: str
    bidders: list[str] = field(default_factory=list)
    winner: str = ""
    state: str = "bidding"
    moves: list[str] = field(default_factory=list)


@dataclass
class _Board:
    names: dict[str, str]
    rows: dict[str, _Row] = field(default_factory=dict)
    killed: str = ""
    done_by: dict[str, int] = field(default_factory=dict)

    def n(self, node_id: str) -> str:
        return self.names.get(node_id, node_id[:8])

    def row(self, task_id: str) -> _Row:
        return self.rows.setdefault(task_id, _Row(task_id))


async def _render(task: Task) -> Any:
    await asyncio.sleep(random.uniform(0.4, 1.2))
    return {"frame": task.input, "pixels": 640 * 480}


def _tables(board: _Board, nodes: list[Node]) -> Group:
    tasks = Table(title="tasks (requested by acme-1)", expand=False)
    for col in ("task", "bids from", "winner", "state"):
        tasks.add_column(col)
    for r in list(board.rows.values())[-14:]:
        state = r.state + (f" ({', '.join(r.moves)})" if r.moves else "")
        bids = ", ".join(board.n(b) for b in r.bidders)
        tasks.add_row(r.task_id[:8], bids, board.n(r.winner) if r.winner else "", state)
    load = Table(title="nodes")
    for col in ("node", "org", "running", "done", "peers"):
        load.add_column(col)
    for node in nodes:
        name = board.n(node.node_id)
        rt = node.runtime
        if rt is None or rt.closed:
            status = "[red]killed[/red]" if name == board.killed else "stopped"
            load.add_row(name, node.certificate.org, status, str(board.done_by.get(name, 0)), "-")
            continue
        bar = "█" * len(rt.running)
        alive = sum(p.state == "alive" for p in rt.peers.values())
        done = str(board.done_by.get(name, 0))
        load.add_row(name, node.certificate.org, bar or "·", done, str(alive))
    return Group(tasks, load)


async def _watch(requester: Node, board: _Board) -> None:
    async for ev in requester.events():
        if isinstance(ev, TaskBid) and ev.accepted:
            board.row(ev.task_id).bidders.append(ev.bidder)
        elif isinstance(ev, TaskAwarded):
            r = board.row(ev.task_id)
            r.winner, r.state = ev.winner, "running"
        elif isinstance(ev, TaskReassigned):
            r = board.row(ev.task_id)
            r.moves.append(f"{board.n(ev.previous)}→{board.n(ev.winner)}")
            r.winner = ev.winner
        elif isinstance(ev, TaskCompleted):
            r = board.row(ev.task_id)
            r.state, r.winner = "[green]done[/green]", ev.executor
            name = board.n(ev.executor)
            board.done_by[name] = board.done_by.get(name, 0) + 1
        elif isinstance(ev, TaskFailed):
            board.row(ev.task_id).state = f"[red]failed[/red] {ev.reason}"


async def _kill_one(nodes: list[Node], board: _Board, after: float) -> None:
    await asyncio.sleep(after)
    for _ in range(100):  # bounded: wait for an executor that is busy
        busy = [n for n in nodes[1:] if n.runtime is not None and n.runtime.running]
        if busy:
            victim = busy[0]
            board.killed = board.n(victim.node_id)
            assert victim.runtime is not None
            victim.runtime.abort()
            return
        await asyncio.sleep(0.05)


async def run_demo(*, n_tasks: int = 24, live: bool = True) -> int:
    console = Console()
    acme, globex = LocalOrg("acme"), LocalOrg("globex")
    layout = [("acme-1", acme), ("acme-2", acme), ("acme-3", acme)]
    layout += [("globex-1", globex), ("globex-2", globex)]
    nodes: list[Node] = []
    t0 = time.monotonic()
    for i, (name, org) in enumerate(layout):
        other = globex if org is acme else acme
        seeds = [nodes[0].endpoint] if nodes else []
        node = Node.from_org(org, name, trust=[other], seeds=seeds, preset="local", grace=1)
        if i > 0:
            node.add_capability(_CAP, _render, max_concurrency=4)
        await node.start()
        nodes.append(node)
    board = _Board({n.node_id: name for n, (name, _) in zip(nodes, layout, strict=True)})
    console.print(f"[bold]5 nodes on loopback[/bold]: {', '.join(n for n, _ in layout)}")
    ok = all([await n.wait_for_peers(4, timeout=15) for n in nodes])
    console.print(
        f"discovery: every node sees the other four: {ok} ({time.monotonic() - t0:.1f}s, "
        "one seed + gossip; orgs acme and globex trust each other)"
    )
    requester = nodes[0]
    watcher = asyncio.create_task(_watch(requester, board))
    killer = asyncio.create_task(_kill_one(nodes, board, 1.0))

    failures: list[str] = []

    async def one(i: int) -> bool:
        await asyncio.sleep(i * 0.15)
        try:
            await requester.request(_CAP, i, timeout=30, lease=2.0)
            return True
        except ContractNetError as exc:
            failures.append(f"{exc.code}: {exc.message}")
            return False

    batch = asyncio.gather(*(one(i) for i in range(n_tasks)))
    if live:
        with Live(_tables(board, nodes), console=console, refresh_per_second=8) as view:
            while not batch.done():
                view.update(_tables(board, nodes))
                await asyncio.sleep(0.12)
            view.update(_tables(board, nodes))
        if not console.is_terminal:
            console.print()  # a redirected Live ends without a newline
    results = await batch
    killer.cancel()
    watcher.cancel()
    for t in (killer, watcher):
        with contextlib.suppress(asyncio.CancelledError):
            await t
    moved = sum(len(r.moves) for r in board.rows.values())
    console.print(
        f"[bold]summary[/bold]: {sum(results)}/{n_tasks} tasks completed in "
        f"{time.monotonic() - t0:.1f}s; killed {board.killed or 'nobody'} mid-task; "
        f"{moved} re-award(s) to a backup"
    )
    for why in failures:
        console.print(f"  [red]failed[/red] {why}")
    for name, count in sorted(board.done_by.items()):
        console.print(f"  {name:<9} completed {count}")
    for node in nodes:
        await node.stop(0.5)
    return 0 if all(results) else 1
