"""The simulator engine with toy nodes: ordering, lazy timers, skew, crashes, hashing."""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import partial

from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.events import Event, PeerJoined
from simulations.engine import Simulator, endpoint, index_of
from simulations.network import Latency, LinkClass, SimNetwork


class EchoNode:
    """Sends a numbered frame to a peer every ``period``; records what it receives."""

    def __init__(self, index: int, n: int, now: float, period: float = 1.0) -> None:
        self.node_id = f"e{index}"
        self.index = index
        self.n = n
        self.period = period
        self.next = now + period
        self.out: list[tuple[str, bytes]] = []
        self.got: list[tuple[float, str, bytes]] = []
        self.timer_calls: list[float] = []
        self.events: list[Event] = []
        self.count = 0

    def receive(self, frame: bytes, ep: str, now: float) -> None:
        self.got.append((now, ep, frame))
        self.events.append(PeerJoined(ep, ep, "o"))

    def frames_to_send(self, now: float) -> list[tuple[str, bytes]]:
        out, self.out = self.out, []
        return out

    def get_timer(self) -> float | None:
        return self.next

    def handle_timer(self, now: float) -> None:
        self.timer_calls.append(now)
        assert now >= self.next
        self.next = now + self.period
        self.count += 1
        dst = (self.index + 1) % self.n
        self.out.append((endpoint(dst), f"{self.index}:{self.count}".encode()))

    def next_event(self) -> Event | None:
        return self.events.pop(0) if self.events else None

    def join(self, seeds: Sequence[str], now: float) -> None:
        pass

    def leave(self, now: float) -> None:
        pass

    def statistics(self) -> dict[str, int]:
        return {"count": self.count}

    def discard(self) -> None:
        pass


class EchoFactory:
    def __init__(self, n: int, period: float = 1.0) -> None:
        self.n = n
        self.period = period
        self.made: dict[int, EchoNode] = {}

    def create(self, index: int, now: float, *, restart: int, durable: bool) -> EchoNode:
        node = EchoNode(index, self.n, now, self.period)
        self.made[index] = node
        return node


def make(
    n: int, *, seed: int = 1, loss: float = 0.0, period: float = 1.0
) -> tuple[Simulator, EchoFactory]:
    link = LinkClass(Latency("constant", 0.01, 0.0), loss=loss, link_spread=0.0)
    net = SimNetwork(
        [0] * n,
        [random.Random(seed * 1000 + i) for i in range(n)],
        local=link,
        remote=link,
        salt=seed,
    )
    factory = EchoFactory(n, period)
    return Simulator(n, factory, net), factory


def test_endpoints_round_trip() -> None:
    assert index_of(endpoint(42)) == 42
    assert index_of("tcp://127.0.0.1:1") is None
    assert index_of("sim://x") is None


def test_frames_arrive_after_latency_and_timers_fire_on_time() -> None:
    sim, f = make(3)
    for i in range(3):
        sim.start(i)
    sim.run_until(3.5)
    assert sim.now == 3.5
    node1 = f.made[1]
    assert [round(t, 6) for t, _, _ in node1.got] == [1.01, 2.01, 3.01]
    assert node1.got[0][1] == "sim://0"
    assert f.made[0].timer_calls == [1.0, 2.0, 3.0]


def test_ties_break_by_insertion_order() -> None:
    sim, _ = make(1)
    order: list[int] = []
    for k in range(50):
        sim.at(1.0, partial(lambda k, now: order.append(k), k))
    sim.run_until(2.0)
    assert order == list(range(50))


def test_lazy_timer_invalidation_wakes_once_per_deadline() -> None:
    sim, f = make(2)
    sim.start(0)
    sim.start(1)
    node = f.made[0]
    # Re-flushing many times must not multiply the timer entries that fire.
    for _ in range(20):
        sim.flush(0)
    node.next = 0.5  # the node moves its timer earlier
    sim.flush(0)
    sim.run_until(1.2)
    assert node.timer_calls == [0.5]


def test_skew_each_node_sees_its_own_clock() -> None:
    sim, f = make(2)
    sim.skew[1] = 0.25
    sim.start(0)
    sim.start(1)  # created at local time 0.25: first timer at local 1.25 = global 1.0
    sim.run_until(1.5)
    assert f.made[1].timer_calls == [1.25]
    assert [round(t, 6) for t, _, _ in f.made[1].got] == [round(1.01 + 0.25, 6)]
    sim.set_skew(1, -0.5)  # a clock jump backwards
    sim.run_until(3.0)
    assert f.made[1].timer_calls[-1] == 2.25  # local deadline kept, reached later


def test_crash_drops_frames_and_timers_restart_makes_new_object() -> None:
    sim, f = make(2)
    sim.start(0)
    sim.start(1)
    first = f.made[1]
    sim.at(1.5, lambda now: sim.crash(1))
    sim.at(3.5, lambda now: sim.start(1, durable=False))
    sim.run_until(5.0)
    assert len(first.got) == 1 and first.timer_calls == [1.0]
    assert f.made[1] is not first
    assert sim.network.stats.dropped_down >= 1
    assert sim.restarts[1] == 1


def test_loss_drops_about_the_configured_fraction() -> None:
    sim, _ = make(4, loss=0.3, period=0.01)
    for i in range(4):
        sim.start(i)
    sim.run_until(50.0)
    st = sim.network.stats
    assert 0.25 < st.dropped_loss / st.sent < 0.35


def test_same_seed_same_trace_different_seed_differs() -> None:
    hashes = []
    for seed in (1, 1, 2):
        sim, _ = make(5, seed=seed, loss=0.2, period=0.1)
        for i in range(5):
            sim.start(i)
        sim.run_until(5.0)
        hashes.append(sim.trace_hash())
    assert hashes[0] == hashes[1] != hashes[2]


def test_events_reach_the_observer_with_time_and_node() -> None:
    seen: list[tuple[float, int, str]] = []
    sim, _ = make(2)
    sim.observer = lambda t, i, ev: seen.append((round(t, 6), i, type(ev).__name__))
    sim.start(0)
    sim.start(1)
    sim.run_until(1.5)
    assert (1.01, 1, "PeerJoined") in seen and (1.01, 0, "PeerJoined") in seen


def test_inject_reports_rejection_codes() -> None:
    results = []
    sim, f = make(2)
    sim.injection_observer = lambda *a: results.append(a)
    sim.start(0)
    sim.start(1)
    sim.at(0.5, lambda now: sim.inject(0, 1, b"junk", "malformed", frozenset({"malformed"})))
    sim.run_until(1.0)
    # EchoNode rejects nothing: the engine reports an empty list of codes.
    assert results == [(0.51, 1, 0, "malformed", frozenset({"malformed"}), (), False)]
    assert f.made[1].got[0][2] == b"junk"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=60))
def test_scheduled_calls_run_in_time_then_insertion_order(times: list[int]) -> None:
    sim, _ = make(1)
    ran: list[tuple[float, int]] = []
    for k, t in enumerate(times):
        sim.at(t / 4, partial(lambda k, now: ran.append((now, k)), k))
    sim.run_until(10.0)
    assert ran == sorted(((t / 4, k) for k, t in enumerate(times)))
    assert sim.now == 10.0 and sim.pending() == 0
