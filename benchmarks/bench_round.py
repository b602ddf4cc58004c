"""Where the time of one contract-net round goes, hop by hop, across processes.

    python benchmarks/bench_round.py                 # 1 and 4 bidders, 300 rounds each
    python benchmarks/bench_round.py --bidders 16 --rounds 500

The same rounds as ``mesh-node bench`` (``node.bench.bench_cnp``: a requester
``Node`` here, bidder ``Node``s in other processes, loopback TCP), with every frame
sent, received, opened (after ``core.receive``: checks, signature, protocol step,
the reply sealed) and every handler start time-stamped in each process
(``_round_trace.py``). Rounds are grouped by their sequence of steps; for the most
common sequence the median time of each step since ``request()`` was called is
printed, with the gap from the step before. A gap between a ``send`` and the
matching ``recv`` is the transport (ZeroMQ, TCP loopback, the receiver's wake-up);
between ``recv`` and ``opened`` it is ``core.receive`` (which holds the signature
checks and the signing of the reply); between ``opened`` and the next ``send`` it
is the runtime. The instrumentation costs about 1 µs per point.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import _round_trace  # noqa: E402

from node import bench  # noqa: E402
from node.api import LocalOrg, Node  # noqa: E402
from protocols.errors import TransportError  # noqa: E402


def _spawn_traced(k: int, seed: str, org: LocalOrg) -> subprocess.Popen[str]:
    args = [sys.executable, str(HERE / "_round_trace.py"), "--serve", str(k), seed, org.seed.hex()]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "READY":
        proc.kill()
        raise TransportError("traced bidder process did not start")
    return proc


def _request_marks() -> None:
    """Mark the start and the end of each ``Node.request`` in this process's log."""
    request = Node.request

    async def marked(self: Node, *args: Any, **kwargs: Any) -> Any:
        _round_trace._log.append((time.perf_counter_ns(), "request", "-", b""))
        try:
            return await request(self, *args, **kwargs)
        finally:
            _round_trace._log.append((time.perf_counter_ns(), "returned", "-", b""))

    Node.request = marked  # type: ignore[method-assign]


#: The milestones of a round, in order: (label, process, point, kind, first or last).
_MILESTONES = [
    ("request() called", "R", "request", "-", "first"),
    ("cfp: first copy sent", "R", "send", "cfp", "first"),
    ("cfp: last copy sent", "R", "send", "cfp", "last"),
    ("bidders: first cfp received", "B", "recv", "cfp", "first"),
    ("bidders: first bid sent", "B", "send", "propose", "first"),
    ("requester: first bid received", "R", "recv", "propose", "first"),
    ("bidders: last bid sent", "B", "send", "propose", "last"),
    ("requester: last bid received", "R", "recv", "propose", "last"),
    ("requester: award sent", "R", "send", "award", "first"),
    ("winner: award received", "B", "recv", "award", "first"),
    ("winner: award opened", "B", "opened", "award", "first"),
    ("winner: handler starts", "B", "handler", "-", "first"),
    ("winner: result sent", "B", "send", "result", "first"),
    ("requester: result received", "R", "recv", "result", "first"),
    ("requester: result opened", "R", "opened", "result", "first"),
    ("request() returns", "R", "returned", "-", "first"),
]


def _timeline(folder: Path, rounds: int) -> tuple[int, list[tuple[str, float, float]]]:
    """Median time of each milestone since ``request()``, over the rounds that have all."""
    rows = []
    for f in folder.glob("*.tsv"):
        for line in f.read_text().splitlines():
            stamp, pid, point, _node, kind, _task = line.split("\t")
            rows.append((int(stamp), pid, point, kind))
    rows.sort()
    requester = next((r[1] for r in rows if r[2] == "request"), "")
    per_round: list[list[tuple[int, str, str, str]]] = []
    current: list[tuple[int, str, str, str]] | None = None
    for t, pid, point, kind in rows:
        if point == "request":
            current = []
            per_round.append(current)
        if current is not None:
            current.append((t, "R" if pid == requester else "B", point, kind))
            if point == "returned":
                current = None
    samples = []
    for r in per_round[-rounds:]:
        marks = []
        for _label, who, point, kind, which in _MILESTONES:
            hits = [t for t, w, p, k in r if w == who and p == point and k == kind]
            if not hits:
                break
            marks.append(hits[0] if which == "first" else hits[-1])
        else:
            samples.append([(m - marks[0]) / 1000 for m in marks])
    if not samples:
        return 0, []
    medians = [(statistics.median(s[i] for s in samples), m[0]) for i, m in enumerate(_MILESTONES)]
    out, prev = [], 0.0
    for at, label in sorted(medians):  # in the order they happen (medians of each)
        out.append((label, at, at - prev))
        prev = at
    return len(samples), out


async def _rounds(k: int, rounds: int) -> float:
    org = LocalOrg("bench")
    req = Node.from_org(org, "requester", preset="local")
    async with req:
        groups = [k] if k < 4 else [k // 2, k - k // 2]  # as mesh-node bench
        procs = [await asyncio.to_thread(_spawn_traced, g, req.endpoint, org) for g in groups]
        try:
            if not await req.wait_for_peers(k, timeout=30):
                raise TransportError(f"only {len(req.peers())} of {k} bidders joined")
            await asyncio.sleep(0.5)
            samples = []
            for i in range(rounds + 10):
                t0 = time.perf_counter()
                await req.request(bench._CAP, i, timeout=10)
                samples.append((time.perf_counter() - t0) * 1000)
        finally:
            bench.stop_bidders(procs)
    return statistics.median(samples[10:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bidders", type=int, nargs="*", default=[1, 4])
    ap.add_argument("--rounds", type=int, default=300)
    args = ap.parse_args()
    _round_trace.install()
    _request_marks()
    import os

    for k in args.bidders:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["PARLEY_ROUND_TRACE"] = tmp
            _round_trace._log.clear()
            p50 = asyncio.run(_rounds(k, args.rounds))
            _round_trace._dump()
            _round_trace._log.clear()
            n, steps = _timeline(Path(tmp), args.rounds)
        print(f"\n{k} bidder(s): p50 {p50:.2f} ms; median over {n} rounds, µs since request():")
        print(f"  {'milestone':34s} {'at':>7s} {'gap':>7s}")
        for label, at, gap in steps:
            print(f"  {label:34s} {at:7.0f} {gap:7.0f}")


if __name__ == "__main__":
    main()
