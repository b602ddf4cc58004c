"""How much memory a simulation will need, checked before it starts.

Every simulated node holds a full member table: its own entry, capability index
slot, probe-order slot and seen-digest entry for every other node. Memory
therefore grows with the number of node pairs, not the number of nodes, and a
10,000-node run needs about 100 times the memory of a 1,000-node run. Without a
check, a run too big for the machine swaps or is killed by the kernel hours in;
with it, ``mesh-node simulate`` refuses at once with a one-line message.

The model is a lower bound fitted to measured peaks (fast crypto, core nodes,
LAN scenarios: 683 MB at 1,000 nodes, 4,750-4,770 MB at 3,000, MB of 2^20 bytes
as ``peak_rss_mb`` reports them; chaos runs peak higher, 1.5 GB at 1,000 nodes): ``BASE_MB`` for the interpreter, the engine and
the history, plus ``PAIR_BYTES`` per ordered pair of nodes. A run refused by it
would not have fitted; a run it lets through may still need more (faults, long
runs). Real crypto costs about the same since its nodes share one verifier (613 MB
for lan-1000's 20 + 10 s at 1,000 nodes; 1,013 MB when each node parsed every
peer's key). Toy nodes keep no member table and are not checked.

A mesh that starts formed (``[topology] start = "formed"``) shares one member
table between all nodes, each keeping only its own changes on top of it
(``protocols.membership.formed``): memory then grows with the nodes, ``NODE_KB``
each (a lower bound fitted to LAN runs: 388 MB at 3,000 nodes, 901-1,113 MB at 10,000).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = [
    "BASE_MB",
    "NODE_KB",
    "PAIR_BYTES",
    "MemoryVerdict",
    "available_bytes",
    "cgroup_room",
    "check_memory",
    "estimate_mb",
    "largest_fitting",
]

#: Interpreter, engine, network and history of a run, before any node pair.
BASE_MB = 170.0
#: Bytes per ordered (node, peer) pair once the mesh has formed (measured peaks).
PAIR_BYTES = 536.0
#: KB per node of a mesh that starts formed (its own state over the shared table).
NODE_KB = 70.0

_MB = 1024 * 1024


def estimate_mb(nodes: int, *, formed: bool = False) -> float:
    """Lower bound of one core-node run's peak RSS in MB."""
    if formed:
        return BASE_MB + NODE_KB * 1024 * nodes / _MB
    return BASE_MB + PAIR_BYTES * nodes * max(0, nodes - 1) / _MB


def largest_fitting(budget_bytes: float, *, formed: bool = False) -> int:
    """The most nodes whose estimate fits in ``budget_bytes`` (0 if none does)."""
    room = budget_bytes / _MB - BASE_MB
    if room <= 0:
        return 0
    if formed:
        n = int(room * _MB / (NODE_KB * 1024)) + 1
    else:
        n = int((room * _MB / PAIR_BYTES) ** 0.5) + 1
    while n > 0 and estimate_mb(n, formed=formed) * _MB > budget_bytes:
        n -= 1
    return n


@dataclass(frozen=True, slots=True)
class MemoryVerdict:
    ok: bool
    need_mb: float
    available_mb: float
    max_nodes: int
    message: str


def check_memory(
    nodes: int, jobs: int, available: int | None, *, formed: bool = False
) -> MemoryVerdict:
    """Whether ``jobs`` runs of ``nodes`` core nodes fit in ``available`` bytes.

    ``available`` None (unknown on this platform) always passes."""
    need = estimate_mb(nodes, formed=formed) * max(1, jobs)
    if available is None:
        return MemoryVerdict(True, need, float("nan"), nodes, "")
    have = available / _MB
    fit = largest_fitting(available / max(1, jobs), formed=formed)
    if need <= have:
        return MemoryVerdict(True, need, have, fit, "")
    runs = f"{jobs} runs of {nodes:,} nodes" if jobs > 1 else f"{nodes:,} nodes"
    why = (
        f"~{NODE_KB:.0f} kB per node over the shared formed table"
        if formed
        else f'every node holds the whole member table: ~{PAIR_BYTES:.0f} B per node pair; [topology] start = "formed" shares one'
    )
    message = (
        f"{runs} need at least {need / 1024:,.1f} GB ({why}) and this machine has "
        f"{have / 1024:,.1f} GB available; use at most {fit:,} nodes"
        + (" or fewer --jobs" if jobs > 1 else "")
        + ", or --no-memory-check to try anyway"
    )
    return MemoryVerdict(False, need, have, fit, message)


def available_bytes() -> int | None:
    """Memory available to a new process: ``MemAvailable`` on Linux (else free pages),
    and no more than our control group's limit minus its usage (in a container the
    kernel kills at the cgroup limit, whatever the host has free)."""
    host: int | None = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    host = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if host is None:
        try:
            host = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            host = None
    room = cgroup_room()
    if room is None:
        return host
    return room if host is None else min(host, room)


def cgroup_room(root: str = "/sys/fs/cgroup", proc: str = "/proc/self/cgroup") -> int | None:
    """Our memory cgroup's limit minus its usage (v2 or v1); None when unlimited/unknown."""
    try:
        with open(proc, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2 unified hierarchy
            files = (f"{root}{path}/memory.max", f"{root}{path}/memory.current")
        elif "memory" in controllers.split(","):  # v1
            base = f"{root}/memory{path}"
            files = (f"{base}/memory.limit_in_bytes", f"{base}/memory.usage_in_bytes")
        else:
            continue
        try:
            with open(files[0], encoding="ascii") as f:
                limit_text = f.read().strip()
            with open(files[1], encoding="ascii") as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or not limit_text.isdigit() or int(limit_text) >= 1 << 60:
            continue  # unlimited
        return max(0, int(limit_text) - usage)
    return None
