"""ContractAgent inside real MeshNodeCores: signed frames, real membership, virtual time."""

from __future__ import annotations

import heapq
import random
from typing import Any

from helpers import START, Org, seed32

from mesh.core import CoreConfig, MeshNodeCore
from mesh.events import TaskAssigned, TaskAwarded, TaskCompleted
from protocols.capabilities.records import CapabilitySpec
from protocols.contract_net import TaskSpec
from protocols.crypto import FastSigner, FastVerifier
from protocols.identity import NodeIdentity
from protocols.trust import TrustStore, issue_certificate


class CoreNet:
    def __init__(self, n_exec: int, seed: int = 1) -> None:
        self.now = START
        self.registry = FastVerifier()
        self.org = Org("acme", FastSigner(seed32(f"org-{seed}"), self.registry))
        self.cores: list[MeshNodeCore] = []
        self.by_endpoint: dict[str, int] = {}
        self.heap: list[tuple[float, int, int, str, bytes]] = []
        self.seq = 0
        self.events: list[tuple[int, Any]] = []
        self.rng = random.Random(seed)
        self.signed: dict[str, int] = {}
        self.copies: dict[str, int] = {}
        for i in range(n_exec + 1):
            caps = [] if i == 0 else [CapabilitySpec(name="echo", max_concurrency=4)]
            self._add(i, caps, seed)
        for i, core in enumerate(self.cores[1:], start=1):
            core.join([self.cores[0].endpoint], self.now)
            self.flush(i)

    def _add(self, i: int, caps: list[CapabilitySpec], seed: int) -> None:
        signer = FastSigner(seed32(f"n-{seed}-{i}"), self.registry)
        identity = NodeIdentity.from_signer(signer)
        cert = issue_certificate(
            self.org.signer,
            "acme",
            identity.public_key,
            f"n{i}",
            not_before=START - 60,
            not_after=START + 86400,
        )
        core = MeshNodeCore(
            CoreConfig.lan(),
            identity,
            cert,
            TrustStore([self.org.policy]),
            rng=random.Random(f"{seed}-{i}"),
            verifier=self.registry,
            endpoint=f"sim://{i}",
            capabilities=caps,
            now=self.now,
        )
        self.cores.append(core)
        self.by_endpoint[core.endpoint] = i
        original = core.send

        def counting_send(kind: str, payload: Any, to: Any, now: float, **kw: Any) -> bytes:
            self.signed[kind] = self.signed.get(kind, 0) + 1
            copies = 1 if isinstance(to, str) else len(to)
            self.copies[kind] = self.copies.get(kind, 0) + copies
            return original(kind, payload, to, now, **kw)

        core.send = counting_send  # type: ignore[method-assign]

    def flush(self, i: int) -> None:
        core = self.cores[i]
        for endpoint, frame in core.frames_to_send(self.now):
            self.seq += 1
            t = self.now + self.rng.uniform(0.001, 0.005)
            heapq.heappush(self.heap, (t, self.seq, self.by_endpoint[endpoint], endpoint, frame))
        while (ev := core.next_event()) is not None:
            self.events.append((i, ev))
            if isinstance(ev, TaskAssigned):
                self.seq += 1
                heapq.heappush(
                    self.heap, (self.now + 0.2, self.seq, i, "work", ev.task_id.encode())
                )

    def run_until(self, t_end: float) -> None:
        for _ in range(1_000_000):
            timers = [(c.get_timer(), i) for i, c in enumerate(self.cores)]
            nxt = min(((t, i) for t, i in timers if t is not None), default=None)
            head = self.heap[0][0] if self.heap else None
            if nxt is not None and (head is None or nxt[0] <= head) and nxt[0] <= t_end:
                self.now = max(self.now, nxt[0])
                self.cores[nxt[1]].handle_timer(self.now)
                self.flush(nxt[1])
            elif head is not None and head <= t_end:
                t, _, i, endpoint, frame = heapq.heappop(self.heap)
                self.now = max(self.now, t)
                if endpoint == "work":
                    self.cores[i].complete(frame.decode(), "ok", self.now)
                else:
                    self.cores[i].receive(frame, endpoint, self.now)
                self.flush(i)
            else:
                self.now = t_end
                return
        raise AssertionError("did not settle")


def test_one_negotiation_over_the_real_wire_counts_messages_and_signatures() -> None:
    n = 4
    net = CoreNet(n)
    net.run_until(START + 10.0)
    req = net.cores[0]
    assert len(req.index.find("echo", "*")) == n, "membership did not converge"
    checked: list[bytes] = []
    inner = req.wire.verifier

    class Counting:
        def verify(self, key: bytes, signature: bytes, data: bytes) -> bool:
            checked.append(data[: len(b"parley/1/propose")])
            return inner.verify(key, signature, data)

    req.wire.verifier = Counting()
    task_id = req.submit(TaskSpec("echo", input={"x": 1}, reply_timeout=0.5), net.now)
    net.flush(0)
    net.run_until(net.now + 0.6)
    awarded = [e for _, e in net.events if isinstance(e, TaskAwarded)]
    assert len(awarded) == 1 and awarded[0].bidders == n
    # n cfp copies + n replies + 1 award (the winner's); n + 2 signatures before execution
    negotiation = ("cfp", "propose", "refuse", "award")
    assert [net.copies.get(k, 0) for k in negotiation] == [n, n, 0, 1]
    assert sum(net.signed.get(k, 0) for k in negotiation) == n + 2
    # of the n bids the requester verified one: the winner's
    assert checked.count(b"parley/1/propose") == 1
    net.run_until(net.now + 5.0)
    done = [e for _, e in net.events if isinstance(e, TaskCompleted)]
    assert [(d.task_id, d.result) for d in done] == [(task_id, "ok")]
    assert net.copies.get("started", 0) == 0 and net.copies["result"] == 1
    assert sum(c.statistics().get("contract.stale_result", 0) for c in net.cores) == 0


def test_a_node_that_stops_bidding_gets_no_new_work_but_others_do() -> None:
    net = CoreNet(3, seed=5)
    net.run_until(START + 10.0)
    leaving = net.cores[1]
    leaving.stop_bidding(net.now)
    req = net.cores[0]
    ids = [
        req.submit(TaskSpec("echo", input={"k": k}, reply_timeout=0.5), net.now) for k in range(6)
    ]
    net.flush(0)
    net.run_until(net.now + 10.0)
    done = {e.task_id: e.executor for _, e in net.events if isinstance(e, TaskCompleted)}
    assert sorted(done) == sorted(ids)
    assert leaving.node_id not in done.values()
    assert set(done.values()) <= {net.cores[2].node_id, net.cores[3].node_id}
