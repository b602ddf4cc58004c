"""Benchmarks of the simulator (run by hand; `make bench` may call it).

    python benchmarks/bench_sim.py lan            # 1,000 nodes, 60 s, fast crypto: events/s
    python benchmarks/bench_sim.py real           # 1,000 nodes, real Ed25519: signature share
    python benchmarks/bench_sim.py scale          # 10,000 nodes, 30 s, fast crypto: peak RSS
    python benchmarks/bench_sim.py convergence    # fanout 3, no loss, 1,000 nodes: rounds
    python benchmarks/bench_sim.py convergence-10000  # the same at 10,000 nodes (formed start)
    python benchmarks/bench_sim.py engine         # the engine alone, with do-nothing nodes
    python benchmarks/bench_sim.py toy            # lan-1000 with the toy node (no crypto)
    python benchmarks/bench_sim.py chaos          # chaos-1000 (crashes, loss, partitions...)
    ... --nodes N --duration S --profile          # smaller runs; cProfile summary by area
    ... --by-kind                                 # time inside the core per message kind

Each case prints one JSON line with the figures and the goal it is held to.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulations.memory import available_bytes, check_memory
from simulations.report import peak_rss_mb
from simulations.runner import run_scenario
from simulations.scenario import Scenario, apply_overrides, load_scenario

CASES: dict[str, tuple[str, dict[str, Any], str]] = {
    "lan": ("lan-1000.toml", {"crypto": "fast"}, "events_per_second >= 150000"),
    "real": ("lan-1000.toml", {"crypto": "real", "duration": 20.0}, "signature share >= 0.70"),
    "scale": ("scale-10000.toml", {"crypto": "fast"}, "peak_rss_mb <= 4096"),
    "convergence": (
        "lan-1000.toml",
        {"crypto": "fast", "tasks_per_s": 0.0, "duration": 20.0, "liveness": 0.0},
        "rounds_to_99pct <= 8 and rounds_to_100pct <= 10",
    ),
    "convergence-10000": (
        "lan-1000.toml",
        {
            "crypto": "fast",
            "tasks_per_s": 0.0,
            "duration": 20.0,
            "liveness": 0.0,
            "nodes": 10_000,
            "start": "formed",
        },
        "rounds_to_99pct <= 10 and rounds_to_100pct <= 14",
    ),
    "toy": ("lan-1000.toml", {"crypto": "fast", "node": "toy"}, "toy nodes (no crypto)"),
    "chaos": ("chaos-1000.toml", {"crypto": "fast"}, "every checker passes"),
}


class NullNode:
    """The cheapest node: every ``period`` it sends one frame to a random peer."""

    __slots__ = ("n", "next", "node_id", "out", "rng")

    def __init__(self, index: int, n: int, now: float, rng: Any) -> None:
        self.node_id = f"z{index}"
        self.n = n
        self.rng = rng
        self.next: float = now + rng.random() * 0.1
        self.out: list[tuple[str, bytes]] = []

    def receive(self, frame: bytes, endpoint: str, now: float) -> None:
        pass

    def frames_to_send(self, now: float) -> list[tuple[str, bytes]]:
        out, self.out = self.out, []
        return out

    def get_timer(self) -> float | None:
        return self.next

    def handle_timer(self, now: float) -> None:
        self.next = now + 0.1
        self.out.append((f"sim://{self.rng.randrange(self.n)}", b"x" * 200))

    def next_event(self) -> None:
        return None

    def join(self, seeds: Any, now: float) -> None:
        pass

    def leave(self, now: float) -> None:
        pass

    def statistics(self) -> dict[str, int]:
        return {}

    def discard(self) -> None:
        pass


def engine_only(nodes: int, seconds: float) -> dict[str, Any]:
    """Events per second of the engine with nodes that do nothing (its own overhead)."""
    import random

    from simulations.engine import Simulator
    from simulations.network import LinkClass, SimNetwork

    class Factory:
        def create(self, index: int, now: float, *, restart: int, durable: bool) -> NullNode:
            return NullNode(index, nodes, now, random.Random(index))

    net = SimNetwork(
        [0] * nodes,
        [random.Random(i) for i in range(nodes)],
        local=LinkClass(),
        remote=LinkClass(),
        salt=1,
    )
    sim = Simulator(nodes, Factory(), net)
    for i in range(nodes):
        sim.start(i)
    t0 = time.perf_counter()
    sim.run_until(seconds)
    wall = time.perf_counter() - t0
    return {
        "case": "engine",
        "goal": "engine overhead per event",
        "nodes": nodes,
        "events": sim.events,
        "wall_seconds": round(wall, 2),
        "events_per_second": round(sim.events / wall),
        "us_per_event": round(1e6 * wall / sim.events, 2),
        "peak_rss_mb": peak_rss_mb(),
    }


class SignTimer:
    """Accumulates wall time spent inside signer.sign / verifier.verify."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, cls: type, name: str) -> None:
        original: Callable[..., Any] = getattr(cls, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1

        setattr(cls, name, timed)


class KindTimer:
    """Time inside ``MeshNodeCore.receive`` per message kind, and inside ``handle_timer``.

    The kind is read from the frame after the timed call (outside the measurement)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def _add(self, kind: str, seconds: float) -> None:
        self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def install(self) -> None:
        import msgpack

        from mesh.core import MeshNodeCore

        receive, handle_timer = MeshNodeCore.receive, MeshNodeCore.handle_timer

        def timed_receive(core: MeshNodeCore, frame: bytes, endpoint: str, now: float) -> None:
            t0 = time.perf_counter()
            receive(core, frame, endpoint, now)
            spent = time.perf_counter() - t0
            try:
                kind = str(msgpack.unpackb(msgpack.unpackb(frame)[0])[1])
            except Exception:
                kind = "<malformed>"
            self._add(kind, spent)

        def timed_timer(core: MeshNodeCore, now: float) -> None:
            t0 = time.perf_counter()
            handle_timer(core, now)
            self._add("<timer>", time.perf_counter() - t0)

        MeshNodeCore.receive = timed_receive  # type: ignore[method-assign,assignment]
        MeshNodeCore.handle_timer = timed_timer  # type: ignore[method-assign,assignment]

    def table(self, wall: float) -> dict[str, dict[str, float]]:
        rows = sorted(self.seconds.items(), key=lambda kv: -kv[1])
        return {
            kind: {
                "messages": self.counts[kind],
                "share_of_wall": round(sec / wall, 3),
                "us_per_message": round(1e6 * sec / self.counts[kind], 1),
            }
            for kind, sec in rows
        }


def _areas(stats: pstats.Stats) -> dict[str, float]:
    """Own time (tottime) grouped by area of the code base."""
    areas: dict[str, float] = {}
    for (filename, _line, _fn), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        f = filename.replace("\\", "/")
        if "/simulations/" in f:
            area = "simulations/" + f.rsplit("/", 1)[-1]
        elif "/mesh/" in f:
            area = "mesh/" + f.rsplit("/", 1)[-1]
        elif "/protocols/" in f:
            area = "protocols/" + f.split("/protocols/")[-1]
        elif "pydantic" in f:
            area = "pydantic"
        elif "msgpack" in f:
            area = "msgpack"
        elif "cryptography" in f:
            area = "cryptography"
        else:
            area = "builtins/other" if f.startswith("~") or "<" in f else "stdlib/other"
        areas[area] = areas.get(area, 0.0) + tt
    total = sum(areas.values()) or 1.0
    top = sorted(areas.items(), key=lambda kv: -kv[1])[:15]
    return {k: round(v / total, 3) for k, v in top}


def run_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    path, overrides, goal = CASES[name]
    sc: Scenario = load_scenario(path)
    flags = dict(overrides)
    if args.nodes:
        flags["nodes"] = args.nodes
    if args.duration is not None:
        flags["duration"] = args.duration
    sc = apply_overrides(sc, **flags)
    formed = sc.topology.start == "formed"
    verdict = check_memory(sc.run.nodes, 1, available_bytes(), formed=formed)
    if not verdict.ok and not args.no_memory_check:
        # A size that cannot fit would swap or be killed hours in: say so at once.
        return {"case": name, "goal": goal, "nodes": sc.run.nodes, "not_run": verdict.message}
    timer = SignTimer()
    if name == "real":
        from protocols.crypto import Ed25519Signer, Ed25519Verifier

        timer.wrap(Ed25519Signer, "sign")
        timer.wrap(Ed25519Verifier, "verify")
    kinds = KindTimer() if args.by_kind else None
    if kinds is not None:
        kinds.install()
    prof = cProfile.Profile() if args.profile else None
    t0 = time.perf_counter()
    if prof is not None:
        prof.enable()
    result = run_scenario(sc)
    if prof is not None:
        prof.disable()
    wall = time.perf_counter() - t0
    r = result.report
    out: dict[str, Any] = {
        "case": name,
        "goal": goal,
        "nodes": r["nodes"],
        "virtual_seconds": r["virtual_seconds"],
        "wall_seconds": round(wall, 2),
        "events": r["events"],
        "events_per_second": r["events_per_second"],
        "peak_rss_mb": r["peak_rss_mb"],
        "convergence": r["convergence"],
        "tasks_completed": r["tasks"]["completed"],
        "checkers": r["checkers"],
        "trace_hash": r["trace_hash"][:16],
    }
    if name == "real":
        out["signature_seconds"] = round(timer.seconds, 2)
        out["signature_calls"] = timer.calls
        out["signature_share"] = round(timer.seconds / wall, 3)
    if prof is not None:
        out["profile_share_by_area"] = _areas(pstats.Stats(prof))
    if kinds is not None:
        out["time_by_kind"] = kinds.table(wall)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "cases", nargs="*", default=["engine", "lan"], choices=sorted([*CASES, "engine"])
    )
    ap.add_argument("--nodes", type=int)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--no-memory-check", action="store_true", help="run even if it cannot fit")
    ap.add_argument("--by-kind", action="store_true", help="time inside the core per message kind")
    args = ap.parse_args()
    for name in args.cases:
        if name == "engine":
            print(json.dumps(engine_only(args.nodes or 1000, args.duration or 30.0)), flush=True)
        else:
            print(json.dumps(run_case(name, args)), flush=True)


if __name__ == "__main__":
    main()
