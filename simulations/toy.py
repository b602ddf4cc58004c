"""ToyNode: a small stand-in for MeshNodeCore with the same surface.

It speaks a toy protocol (msgpack lists, a truncated SHA-256 "signature") with
push gossip of records, SWIM-lite probing (no indirect probes), suspicion with
incarnation refutation, and a contract net with epochs (fencing) and backups.
It exists so the engine, faults, checkers, report and CLI can be exercised
before and besides the real core (``--node toy``); it is not the protocol.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any

import msgpack

from mesh.events import (
    CapabilitiesChanged,
    Event,
    FrameRejected,
    PeerDead,
    PeerJoined,
    PeerSuspected,
)
from simulations.toy_tasks import ToyContracts

__all__ = ["MAX_FRAME", "ToyNode", "seal", "toy_sig"]

MAX_FRAME = 64 * 1024
ALIVE, SUSPECT, DEAD = 0, 1, 2


def toy_sig(sender: str, body: bytes) -> bytes:
    return hashlib.sha256(sender.encode() + body).digest()[:8]


def seal(kind: str, sender: str, org: str, to: str, nonce: int, now: float, data: Any) -> bytes:
    body = msgpack.packb([kind, sender, org, to, nonce, now, data])
    return bytes(msgpack.packb([body, toy_sig(sender, body)]))


class ToyNode:
    """One toy node. ``rng`` is its only source of randomness."""

    def __init__(
        self,
        node_id: str,
        ep: str,
        org: str,
        *,
        rng: random.Random,
        now: float,
        trusted: frozenset[str],
        capabilities: Sequence[str] = (),
        incarnation: int = 0,
        gossip_interval: float = 0.2,
        fanout: int = 3,
        probe_interval: float = 1.0,
        probe_timeout: float = 0.5,
        suspicion_timeout: float = 3.0,
        price: float = 1.0,
    ) -> None:
        self.node_id = node_id
        self.endpoint = ep
        self.org = org
        self.rng = rng
        self.trusted = trusted
        self.caps = list(capabilities)
        self.inc = incarnation
        self.seq = 0
        self.fanout = fanout
        self.gossip_interval = gossip_interval
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.suspicion_timeout = suspicion_timeout
        # id -> [endpoint, org, inc, seq, status, caps, deadline]
        self.members: dict[str, list[Any]] = {}
        self.alive_ids: list[str] = []
        self._pos: dict[str, int] = {}
        self.updates: list[list[Any]] = []
        self.outbox: list[tuple[str, bytes]] = []
        self.events: list[Event] = []
        self._ev_pos = 0
        self.stats: dict[str, int] = {}
        self.nonce = rng.getrandbits(31) << 32
        self.window: dict[tuple[str, int], list[int]] = {}
        self.next_gossip = now + rng.uniform(0, gossip_interval)
        self.next_probe = now + rng.uniform(0, probe_interval)
        self.probing: dict[str, float] = {}
        self.dead_ids: list[str] = []
        self.suspects: dict[str, float] = {}
        self.sync_interval = 10 * gossip_interval
        self.next_sync = now + rng.uniform(0, self.sync_interval)
        self.tasks = ToyContracts(self, price)

    # --- plumbing -----------------------------------------------------------

    def count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    def emit(self, ev: Event) -> None:
        self.events.append(ev)

    def send(self, kind: str, to: str, ep: str, now: float, data: Any) -> None:
        self.nonce += 1
        self.outbox.append((ep, seal(kind, self.node_id, self.org, to, self.nonce, now, data)))
        self.count("frames_out")

    def send_to(self, kind: str, peer: str, now: float, data: Any) -> bool:
        m = self.members.get(peer)
        if m is None:
            return False
        self.send(kind, peer, m[0], now, data)
        return True

    def record(self) -> list[Any]:
        return [self.node_id, self.endpoint, self.org, self.inc, self.seq, ALIVE, self.caps]

    def _set_alive(self, nid: str, alive: bool) -> None:
        if alive and nid not in self._pos:
            self._pos[nid] = len(self.alive_ids)
            self.alive_ids.append(nid)
        elif not alive and nid in self._pos:
            p = self._pos.pop(nid)
            last = self.alive_ids.pop()
            if last != nid:
                self.alive_ids[p] = last
                self._pos[last] = p

    def pick(self, k: int) -> list[str]:
        ids = self.alive_ids
        if len(ids) <= k:
            return list(ids)
        return [ids[j] for j in self.rng.sample(range(len(ids)), k)]

    # --- SimNode surface ----------------------------------------------------

    def frames_to_send(self, now: float) -> list[tuple[str, bytes]]:
        out, self.outbox = self.outbox, []
        return out

    def next_event(self) -> Event | None:
        if self._ev_pos < len(self.events):
            ev = self.events[self._ev_pos]
            self._ev_pos += 1
            if self._ev_pos == len(self.events):
                self.events.clear()
                self._ev_pos = 0
            return ev
        return None

    def statistics(self) -> dict[str, int]:
        return dict(self.stats)

    def discard(self) -> None:
        """Break the node <-> contracts cycle so a crashed toy node is freed at once."""
        del self.tasks

    def get_timer(self) -> float | None:
        t = min(self.next_gossip, self.next_probe, self.next_sync)
        for d in self.probing.values():
            t = min(t, d)
        for d in self.suspects.values():
            t = min(t, d)
        tt = self.tasks.get_timer()
        return t if tt is None else min(t, tt)

    def join(self, seeds: Sequence[str], now: float) -> None:
        self.updates.append([*self.record(), 0])
        for ep in seeds:
            if ep != self.endpoint:
                self.send("join", "", ep, now, self.record())

    def leave(self, now: float) -> None:
        for nid in self.pick(self.fanout * 2):
            self.send_to(
                "gossip",
                nid,
                now,
                [[self.node_id, self.endpoint, self.org, self.inc, self.seq, DEAD, self.caps]],
            )

    def publish_record(self, now: float) -> None:
        self.seq += 1
        self.updates.append([*self.record(), 0])

    def handle_timer(self, now: float) -> None:
        if now >= self.next_gossip:
            self.next_gossip = now + self.gossip_interval
            self._gossip(now)
        if now >= self.next_probe:
            self.next_probe = now + self.probe_interval
            target = self.pick(1)
            if target and target[0] not in self.probing:
                self.probing[target[0]] = now + self.probe_timeout
                self.send_to("ping", target[0], now, None)
        if now >= self.next_sync:
            self.next_sync = now + self.sync_interval
            self._sync(now)
        for nid, deadline in list(self.probing.items()):
            if now >= deadline:
                del self.probing[nid]
                self._suspect(nid, now)
        for nid, deadline in list(self.suspects.items()):
            m = self.members[nid]
            if m[4] != SUSPECT:
                del self.suspects[nid]
            elif now >= deadline:
                del self.suspects[nid]
                m[4] = DEAD
                self._set_alive(nid, False)
                self.dead_ids.append(nid)
                self.emit(PeerDead(nid, m[2]))
                self.updates.append([nid, m[0], m[1], m[2], m[3], DEAD, m[5], 0])
        self.tasks.handle_timer(now)

    def _suspect(self, nid: str, now: float) -> None:
        m = self.members.get(nid)
        if m is None or m[4] != ALIVE:
            return
        m[4] = SUSPECT
        m[6] = now + self.suspicion_timeout
        self.suspects[nid] = m[6]
        self.emit(PeerSuspected(nid, m[2]))
        self.updates.append([nid, m[0], m[1], m[2], m[3], SUSPECT, m[5], 0])

    def _sync(self, now: float) -> None:
        """Push-pull anti-entropy with a random member, sometimes a dead one
        (so that the two sides of a healed partition find each other again)."""
        self.dead_ids = [d for d in self.dead_ids if self.members[d][4] == DEAD][-32:]
        if self.dead_ids and self.rng.random() < 0.3:
            target = [self.rng.choice(self.dead_ids)]
        else:
            target = self.pick(1)
        if target:
            self.send_to("sync", target[0], now, [1, self._all_records()])

    def _all_records(self) -> list[list[Any]]:
        ids = self.alive_ids if len(self.alive_ids) <= 200 else self.pick(200)
        out = [self.record()]
        for nid in [*ids, *self.dead_ids]:
            m = self.members[nid]
            out.append([nid, m[0], m[1], m[2], m[3], m[4], m[5]])
        return out

    def _gossip(self, now: float) -> None:
        limit = 3 * max(1, len(self.alive_ids).bit_length())
        self.updates = [u for u in self.updates if u[7] < limit][-64:]
        batch = [u[:7] for u in self.updates[-12:]]
        for u in self.updates[-12:]:
            u[7] += 1
        if not batch:
            return
        for nid in self.pick(self.fanout):
            self.send_to("gossip", nid, now, batch)

    # --- receive ------------------------------------------------------------

    def _reject(self, code: str, ep: str) -> None:
        self.count(f"rejected.{code}")
        self.emit(FrameRejected(code, code, ep))

    def receive(self, frame: bytes, ep: str, now: float) -> None:
        self.count("frames_in")
        if len(frame) > MAX_FRAME:
            return self._reject("too-large", ep)
        try:
            body, sig = msgpack.unpackb(frame)
            kind, sender, org, to, nonce, _created, data = msgpack.unpackb(body)
        except Exception:
            return self._reject("malformed", ep)
        if not isinstance(sender, str) or toy_sig(sender, body) != sig:
            return self._reject("bad-signature", ep)
        if org not in self.trusted:
            return self._reject("untrusted-org", ep)
        if to not in ("", self.node_id):
            return self._reject("wrong-recipient", ep)
        if not self._fresh(sender, nonce):
            return self._reject("replayed", ep)
        self._dispatch(kind, sender, data, ep, now)
        return None

    def _fresh(self, sender: str, nonce: int) -> bool:
        """A 64-frame sliding replay window per (sender, boot)."""
        if not isinstance(nonce, int):
            return False
        key = (sender, nonce >> 32)
        w = self.window.get(key)
        if w is None:
            self.window[key] = [nonce, 1]
            return True
        high, mask = w
        if nonce > high:
            w[0], w[1] = nonce, ((mask << (nonce - high)) | 1) & 0xFFFFFFFFFFFFFFFF
            return True
        bit = high - nonce
        if bit >= 64 or mask >> bit & 1:
            return False
        w[1] = mask | (1 << bit)
        return True

    def _dispatch(self, kind: str, sender: str, data: Any, ep: str, now: float) -> None:
        if kind == "gossip":
            for rec in data:
                self._merge(rec, now)
        elif kind == "join":
            self._merge(data, now)
            snapshot = [m for m in self._records()][:48]
            self.send("gossip", sender, ep, now, [self.record(), *snapshot])
        elif kind == "sync":
            for rec in data[1]:
                self._merge(rec, now)
            if data[0] == 1:
                self.send("sync", sender, ep, now, [0, self._all_records()])
        elif kind == "ping":
            if not self.send_to("ack", sender, now, None):
                self.send("ack", sender, ep, now, None)
        elif kind == "ack":
            self.probing.pop(sender, None)
        else:
            self.tasks.on_message(kind, sender, data, now)

    def _records(self) -> list[list[Any]]:
        out = []
        for nid in self.alive_ids[:48]:
            m = self.members[nid]
            out.append([nid, m[0], m[1], m[2], m[3], ALIVE, m[5]])
        return out

    def _merge(self, rec: list[Any], now: float) -> None:
        nid, ep, org, inc, seq, status, caps = rec
        if nid == self.node_id:
            if status != ALIVE and inc >= self.inc:
                self.inc = inc + 1
                self.updates.append([*self.record(), 0])
            return
        if org not in self.trusted:
            return
        m = self.members.get(nid)
        if m is None:
            if status == DEAD:
                return
            self.members[nid] = [ep, org, inc, seq, ALIVE, caps, 0.0]
            self._set_alive(nid, True)
            self.emit(PeerJoined(nid, ep, org))
            self.emit(CapabilitiesChanged(nid, inc, seq))
            self.updates.append([*rec[:5], ALIVE, caps, 0])
            return
        self._merge_known(m, rec, now)

    def _merge_known(self, m: list[Any], rec: list[Any], now: float) -> None:
        nid, ep, org, inc, seq, status, caps = rec
        newer = (inc, seq) > (m[2], m[3])
        if status == ALIVE and newer:
            was_down = m[4] == DEAD
            m[0], m[2], m[3], m[5] = ep, inc, seq, caps
            if m[4] != ALIVE:
                m[4] = ALIVE
                self._set_alive(nid, True)
            if was_down:
                self.emit(PeerJoined(nid, ep, org))
            self.emit(CapabilitiesChanged(nid, inc, seq))
            self.updates.append([*rec, 0])
        elif status == SUSPECT and inc >= m[2] and m[4] == ALIVE:
            m[2] = inc
            self._suspect(nid, now)
        elif status == DEAD and inc >= m[2] and m[4] != DEAD:
            m[4] = DEAD
            self._set_alive(nid, False)
            self.dead_ids.append(nid)
            self.emit(PeerDead(nid, inc))
            self.updates.append([*rec, 0])

    def submit(self, task: dict[str, Any], now: float) -> str:
        return self.tasks.submit(task, now)

    def complete(self, task_id: str, result: Any, now: float) -> None:
        self.tasks.complete(task_id, result, now)

    def fail(self, task_id: str, reason: str, now: float) -> None:
        self.tasks.fail(task_id, reason, now)

    def view(self) -> dict[str, tuple[int, int]]:
        """Record versions of the members this node believes alive or suspect."""
        return {k: (m[2], m[3]) for k, m in self.members.items() if m[4] != DEAD}
