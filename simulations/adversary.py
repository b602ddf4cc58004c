"""Adversarial nodes: they run the protocol *and* inject bad frames.

``forge`` corrupts the signature of an authentic frame in flight, ``replay``
re-sends a frame that was just delivered to the same recipient, ``malformed``
sends garbage or a truncated frame, ``oversized`` sends a frame above the size
limit. Each injection carries the set of rejection codes it must cause; the
``bad-frames-rejected`` checker compares. (``abandon``: bids low and never
finishes; ``untrusted``: presents records of an org nobody trusts; both are
node roles handled by the world and the executor.)
"""

from __future__ import annotations

from functools import partial

from simulations.engine import Simulator
from simulations.factories import ShellFactory
from simulations.world import ATTACKS, World

__all__ = ["EXPECTED", "Adversaries"]

EXPECTED: dict[str, frozenset[str]] = {
    "forge": frozenset({"bad-signature"}),
    "replay": frozenset({"replayed", "expired"}),
    "malformed": frozenset({"malformed"}),
    "oversized": frozenset({"too-large"}),
}


class Adversaries:
    def __init__(self, sim: Simulator, world: World, factory: ShellFactory) -> None:
        self.sim = sim
        self.world = world
        self.factory = factory
        self.rate = world.scenario.adversaries.rate
        self.stop = 0.0
        self.injected = 0

    def start(self, t0: float, stop: float) -> None:
        self.stop = stop
        for spec in self.world.specs:
            if spec.role in ATTACKS:
                rng = self.world.rng("adversary", spec.index)
                t = t0 + rng.expovariate(self.rate)
                self.sim.at(t, partial(self._tick, spec.index, spec.role))

    def _tick(self, i: int, attack: str, now: float) -> None:
        if now >= self.stop:
            return
        rng = self.world.rng("adversary", i, self.injected)
        if self.sim.alive[i]:
            self._inject(i, attack)
        self.sim.at(now + rng.expovariate(self.rate), partial(self._tick, i, attack))

    def _inject(self, i: int, attack: str) -> None:
        sim, world = self.sim, self.world
        rng = world.rng("adversary", i, "frame", self.injected)
        last = sim.last_delivery
        frame: bytes | None = None
        dst = -1
        if attack in ("forge", "replay"):
            if last is None:
                return
            dst, src, original = last[3], last[4], last[5]
            if dst == i or not world.trusted_by_all(src):
                return
            if world.specs[src].org not in world.specs[dst].trusted:
                return
            if attack == "forge":
                frame = self.factory.forge(original, rng)
            elif self.factory.replayable(original):
                frame = original
        else:
            live = [j for j in range(sim.n) if sim.alive[j] and j != i] if sim.n < 64 else []
            dst = rng.choice(live) if live else rng.randrange(sim.n)
            if dst == i or not sim.alive[dst]:
                return
            if attack == "oversized":
                frame = b"\x00" * (self.factory.max_frame + 1 + rng.randrange(1024))
            elif rng.random() < 0.5 and last is not None:
                frame = last[5][: rng.randrange(1, max(2, len(last[5]) - 1))]
            else:
                frame = b"\xc1" + rng.randbytes(rng.randrange(0, 64))
        if frame is None:
            return
        self.injected += 1
        sim.inject(i, dst, frame, attack, EXPECTED[attack])
